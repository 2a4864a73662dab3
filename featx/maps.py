"""maps: a 2-D picture of a store. Vectors -> (subsample) -> PCA -> t-SNE -> scatter / mosaic.

Vectors are L2-normalised first (so distances follow cosine similarity), reduced to at most 50
dimensions by PCA, then laid out by scikit-learn's Barnes-Hut t-SNE. Stores larger than
``max_points`` are subsampled (a seeded random sample, so a map is reproducible).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx.errors import FeatxError
from featx.neighbors import normalize
from featx.store import load_features

DEFAULT_MAX_POINTS = 5000
METHODS = ("tsne", "pca")


@dataclass
class Map2D:
    rows: np.ndarray  # store rows shown, ascending
    coords: np.ndarray  # (len(rows), 2)
    paths: list[str]
    labels: np.ndarray  # label index per shown row
    class_names: list[str]
    n_total: int  # rows in the store
    method: str
    data_dir: str | None

    def records(self) -> list[dict]:
        return [{"row": int(r), "path": p, "label": self.class_names[int(c)],
                 "x": round(float(x), 5), "y": round(float(y), 5)}
                for r, p, c, (x, y) in zip(self.rows, self.paths, self.labels, self.coords)]


def make_map(store: str | os.PathLike, method: str = "tsne", max_points: int = DEFAULT_MAX_POINTS,
             perplexity: float = 30.0, seed: int = 0) -> Map2D:
    """2-D coordinates for (a sample of at most ``max_points`` of) a store's images."""
    if method not in METHODS:
        raise FeatxError(f"unknown --method {method!r}; choose tsne or pca")
    if max_points < 3:
        raise FeatxError(f"--max-points must be at least 3, got {max_points}")
    feats = load_features(store)
    if feats.n < 3:
        raise FeatxError(f"{store} holds {feats.n} images; a map needs at least 3")
    rows = np.arange(feats.n)
    if feats.n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(feats.n, max_points, replace=False))
    coords = embed_2d(feats.features[rows], method, perplexity, seed)
    return Map2D(rows, coords, [feats.paths[i] for i in rows], feats.labels[rows],
                 feats.class_names, feats.n, method, feats.meta.get("data_dir"))


def embed_2d(x: np.ndarray, method: str = "tsne", perplexity: float = 30.0,
             seed: int = 0) -> np.ndarray:
    """(n, D) vectors -> (n, 2): PCA to <= 50 dims, then t-SNE (or the first 2 PCs)."""
    from sklearn.decomposition import PCA

    x = normalize(x)
    n_pcs = 2 if method == "pca" else min(50, x.shape[0] - 1, x.shape[1])
    reduced = PCA(n_components=n_pcs, random_state=seed).fit_transform(x)
    if method == "pca":
        return reduced.astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, (len(x) - 1) / 3)  # t-SNE needs perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed, n_jobs=2)
    return tsne.fit_transform(reduced).astype(np.float32)


def save_coords(m: Map2D, out: str | os.PathLike) -> Path:
    """Write the coordinates as CSV or JSON (chosen by the file's suffix)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = m.records()
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({"method": m.method, "n_total": m.n_total, "points": records},
                                  indent=1) + "\n")
    elif out.suffix.lower() == ".csv":
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["row", "path", "label", "x", "y"])
            w.writeheader()
            w.writerows(records)
    else:
        raise FeatxError(f"--coords must end in .csv or .json, got {out.name}")
    return out


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _title(m: Map2D, store_name: str) -> str:
    sample = f"{len(m.rows)} of {m.n_total} images" if len(m.rows) < m.n_total else f"{m.n_total} images"
    how = "PCA(50) + t-SNE" if m.method == "tsne" else "PCA, first 2 components"
    return f"{store_name}: {sample}, {how}"


def draw_scatter(m: Map2D, out: str | os.PathLike, title: str) -> Path:
    """A scatter of the map coloured by class, legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 7))
    size = max(3.0, min(30.0, 6000 / len(m.rows)))
    for c, (name, color) in enumerate(zip(m.class_names, _colors(len(m.class_names)))):
        pts = m.coords[m.labels == c]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=color, label=f"{name} ({len(pts)})",
                       alpha=0.8, linewidths=0)
    ax.set_title(_title(m, title), fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
              markerscale=max(1.0, 6 / size ** 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def draw_mosaic(m: Map2D, out: str | os.PathLike, title: str, canvas: int = 2400,
                thumb: int | None = None) -> Path:
    """The "image t-SNE": each image's thumbnail at its 2-D position, framed in its class colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from PIL import Image, ImageOps

    from featx.thumbs import resolve, thumbnail

    colors = [tuple(int(255 * v) for v in c[:3]) for c in _colors(len(m.class_names))]
    if thumb is None:  # large enough to see, small enough that most do not overlap
        thumb = int(np.clip(0.6 * canvas / np.sqrt(len(m.rows)), 24, 96))
    border = 3 if thumb >= 48 else 2
    board = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    lo, hi = m.coords.min(0), m.coords.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    room = canvas - thumb - 2 * border
    xy = ((m.coords - lo) / span * room).astype(int)
    xy[:, 1] = room - xy[:, 1]  # image rows grow downwards
    for (x, y), path, c in zip(xy, m.paths, m.labels):
        im = ImageOps.fit(thumbnail(resolve(path, m.data_dir), thumb * 2), (thumb, thumb))
        board.paste(ImageOps.expand(im, border=border, fill=colors[int(c)]), (int(x), int(y)))
    fig = plt.figure(figsize=(12, 12.6), dpi=200)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.93))
    ax.imshow(np.asarray(board))
    ax.axis("off")
    handles = [Patch(color=np.array(col) / 255, label=name)
               for name, col in zip(m.class_names, colors)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=10,
               bbox_to_anchor=(0.5, 0.985), frameon=False, title=_title(m, title),
               title_fontsize=12)
    return _save(fig, out)


def _save(fig, out: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
