"""files: the file-system mechanics every writer shares: atomic replacement, checks, timestamps.

Anything featx writes (stores, part files, bundles, reports, exports, figures) is written to a
temporary sibling and renamed over its target, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> str:
    """The timestamp featx records (stores, bundles): ISO 8601, UTC, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fsync_replace(tmp: Path, path: Path) -> None:
    """Make ``tmp`` durable, then rename it over ``path`` and make the rename durable too."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform or file system
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
