"""thumbs: stored paths -> thumbnails for the pictures of :mod:`featx.figures`.

Images are found under the store's ``data_dir``; a file that has moved or no longer decodes becomes
a grey placeholder, so a sheet is always drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from featx.decode import DecodeError, load_rgb, open_image


def resolve(path: str, data_dir: str | None) -> Path:
    """A stored path (relative to the data folder) or a query file, as a path on disk."""
    p = Path(path)
    if not p.is_absolute() and data_dir and (Path(data_dir) / p).exists():
        return Path(data_dir) / p
    return p


def thumbnail(path: str | os.PathLike, size: int) -> Image.Image:
    """An RGB thumbnail fitting in ``size`` x ``size`` (aspect kept); grey if unreadable (opened
    through :func:`featx.decode.open_image`, like every image featx reads)."""
    try:
        with open_image(path) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            rgb = load_rgb(im)
            rgb.thumbnail((size, size), Image.Resampling.BILINEAR)
            return rgb.copy()
    except DecodeError:
        return Image.new("RGB", (size, size), (160, 160, 160))


def short(path: str, width: int = 24) -> str:
    """A path's tail that fits a caption."""
    return path if len(path) <= width else "..." + path[-(width - 3):]
