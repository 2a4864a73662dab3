"""files: the file-system mechanics every writer shares: outputs checked before work, atomic
replacement, write errors as one clear line, timestamps.

Anything featx writes (stores, part files, bundles, reports, exports, figures) is written to a
temporary sibling and renamed over its target (:func:`atomic_path`), so a reader never sees half a
file and a failed write leaves no temporary file behind. A failed write (a full disk, a read-only
file system, no permission, a file where a folder should be) becomes a :class:`FeatxError` that
names the path, what was being written and, for a full disk, the space needed and the space free.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import sys
import tempfile
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from featx.errors import FeatxError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def utc_now() -> str:
    """The timestamp featx records (stores, bundles): ISO 8601, UTC, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    """Free space on the file system that holds (or would hold) ``path``."""
    p = existing_ancestor(Path(path))
    return shutil.disk_usage(p if p.is_dir() else p.parent).free


def is_no_space(e: BaseException) -> bool:
    """True for a full disk or quota, also when HDF5 wraps it (h5py keeps only the text)."""
    return getattr(e, "errno", None) in NO_SPACE or "No space left on device" in str(e)


def write_error(e: OSError, path: str | os.PathLike, what: str,
                needed: int | None = None) -> FeatxError:
    """One clear line for a failed write of ``what`` to ``path``."""
    path = Path(path)
    if is_no_space(e):
        need = f"needs about {human_bytes(needed)}, " if needed else ""
        return FeatxError(f"no space left on the device for {what} {path} ({need}"
                          f"{human_bytes(free_bytes(path))} free); free some space and run the "
                          f"same command again")
    code = getattr(e, "errno", None)
    if code == errno.EROFS:
        why = "read-only file system"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        why = f"a file is in the way ({_in_the_way(path)})"
    elif code == errno.EISDIR:
        why = "it is a folder"
    else:
        why = e.strerror or str(e)
    return FeatxError(f"cannot write {what} {path}: {why}")


def _in_the_way(path: Path) -> Path:
    """The first component of ``path`` that is a file where a folder is needed."""
    for parent in reversed(Path(os.path.abspath(path)).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path


def check_output(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """Check, before any work, that ``path`` (a file, or with ``folder`` a folder) can be written:
    its folder is created and a probe file is written and removed there. A FeatxError says why not
    (read-only file system, permission denied, a file in the way, a folder in the way)."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise FeatxError(f"cannot write {what} {path}: {kind} is in the way")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise write_error(e, path, what) from None
    if path.exists() and not folder and not os.access(path, os.W_OK):
        raise FeatxError(f"cannot write {what} {path}: permission denied")
    return path


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def ensure_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """A clear FeatxError now, rather than a full disk halfway through writing ``needed`` bytes."""
    if free_bytes(path) < needed:
        raise write_error(OSError(errno.ENOSPC, "No space left on device"), path, what, needed)


@contextmanager
def atomic_path(path: str | os.PathLike, what: str, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; then fsync it and rename it over ``path``.

    With ``needed`` (bytes, estimated), too little free space is refused before writing. On any
    failure the temporary file is removed and a write error (also HDF5's, which h5py may raise as
    RuntimeError on a full disk) becomes one clear FeatxError (:func:`write_error`).
    """
    path = Path(path)
    tmp = temp_sibling(path)
    if needed:
        ensure_space(path, needed, what)
    try:
        yield tmp
        fsync_replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not is_no_space(e):
            raise
        _release_quietly(e)
        raise write_error(e, path, what, needed) from None
    finally:
        tmp.unlink(missing_ok=True)


def _release_quietly(e: BaseException) -> None:
    """Drop the objects a failed write left (h5py files that cannot flush) now, without the
    "Exception ignored in ..." lines their clean-up would print later."""
    traceback.clear_frames(e.__traceback__)
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not is_no_space(unraisable.exc_value) and "write failed" not in str(unraisable.exc_value):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous


@contextmanager
def atomic_folder(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; then swap it in for ``path`` whole."""
    path = Path(path)
    tmp, old = temp_sibling(path), temp_sibling(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if path.exists():
            os.replace(path, old)  # a folder cannot be renamed over a non-empty one
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise write_error(e, path, what) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, what: str) -> Path:
    """Write a text file atomically (see :func:`atomic_path`)."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text)
    return Path(path)


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
