"""thumbs: stored paths -> thumbnails, and captioned grids of them as PNG sheets.

Used by ``neighbors --grid``, ``duplicates --sheet`` and the ``map`` mosaic. Images are found under
the store's ``data_dir``; a file that has moved or no longer decodes becomes a grey placeholder, so a
sheet is always drawn.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def resolve(path: str, data_dir: str | None) -> Path:
    """A stored path (relative to the data folder) or a query file, as a path on disk."""
    p = Path(path)
    if not p.is_absolute() and data_dir and (Path(data_dir) / p).exists():
        return Path(data_dir) / p
    return p


def thumbnail(path: str | os.PathLike, size: int) -> Image.Image:
    """An RGB thumbnail fitting in ``size`` x ``size`` (aspect kept); grey if unreadable."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size), Image.Resampling.BILINEAR)
            return im.copy()
    except (OSError, ValueError, SyntaxError):
        return Image.new("RGB", (size, size), (160, 160, 160))


@dataclass
class Cell:
    """One image of a sheet with its caption; ``alert`` captions are drawn in red."""

    path: Path | None
    caption: str
    alert: bool = False


def draw_sheet(rows: list[list[Cell]], out: str | os.PathLike, title: str,
               thumb: int = 160) -> Path:
    """Draw rows of captioned thumbnails (rows may differ in length) to a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max((len(r) for r in rows), default=1)
    n_rows = max(len(rows), 1)
    cell_in = 1.9
    width = max(cell_in * n_cols, 6.0)
    title = textwrap.fill(title, width=int(width * 12))  # ~12 characters per inch at 10 pt
    head = 0.3 + 0.2 * title.count("\n")
    row_in = cell_in + 0.4  # room for two caption lines above each image
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, row_in * n_rows + head),
                             squeeze=False, layout="constrained")
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if i < len(rows) and j < len(rows[i]):
                cell = rows[i][j]
                img = thumbnail(cell.path, thumb) if cell.path else None
                if img is not None:
                    ax.imshow(np.asarray(img))
                ax.set_title(cell.caption, fontsize=7, color="crimson" if cell.alert else "black",
                             wrap=True)
    fig.suptitle(title, fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def short(path: str, width: int = 24) -> str:
    """A path's tail that fits a caption."""
    return path if len(path) <= width else "..." + path[-(width - 3):]
