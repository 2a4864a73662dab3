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
from typing import Callable

import numpy as np

from featx.errors import FeatxError
from featx.files import atomic_path, check_output
from featx.neighbors import normalize
from featx.store import load_features

DEFAULT_MAX_POINTS = 5000
EXACT_UP_TO = 1000  # t-SNE: the exact method up to this many points, Barnes-Hut above
METHODS = ("tsne", "pca")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


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
             perplexity: float = 30.0, seed: int = 0, progress: Progress | None = None) -> Map2D:
    """2-D coordinates for (a sample of at most ``max_points`` of) a store's images.

    ``progress(stage, done, total)`` is told when PCA and t-SNE start and end.
    """
    if method not in METHODS:
        raise FeatxError(f"unknown `method` {method!r}; choose tsne or pca")
    if max_points < 3:
        raise FeatxError(f"`max_points` must be at least 3, got {max_points}")
    feats = load_features(store)
    if feats.n < 3:
        raise FeatxError(f"{store} holds {feats.n} images; a map needs at least 3")
    rows = np.arange(feats.n)
    if feats.n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(feats.n, max_points, replace=False))
    coords = embed_2d(feats.features[rows], method, perplexity, seed, progress)
    return Map2D(rows, coords, [feats.paths[i] for i in rows], feats.labels[rows],
                 feats.class_names, feats.n, method, feats.meta.get("data_dir"))


def embed_2d(x: np.ndarray, method: str = "tsne", perplexity: float = 30.0,
             seed: int = 0, progress: Progress | None = None) -> np.ndarray:
    """(n, D) vectors -> (n, 2): PCA to <= 50 dims, then t-SNE (or the first 2 PCs)."""
    from sklearn.decomposition import PCA

    progress = progress or (lambda stage, done, total: None)
    x = normalize(x)
    n_pcs = 2 if method == "pca" else min(50, x.shape[0] - 1, x.shape[1])
    progress("PCA", 0, 1)
    reduced = PCA(n_components=n_pcs, random_state=seed).fit_transform(x)
    progress("PCA", 1, 1)
    if method == "pca":
        return reduced.astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, (len(x) - 1) / 3)  # t-SNE needs perplexity < n
    # Up to EXACT_UP_TO points the exact gradient is faster than Barnes-Hut's tree and its
    # threads (loaded 2-core box: 90 points 2.4 s against 28 s, 500: 50 s against 163 s, 1,000:
    # 137 s against 219 s; the same or a lower KL divergence; scripts/bench_tsne.py, BENCHMARKS.md)
    small = len(x) <= EXACT_UP_TO
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed, method="exact" if small else "barnes_hut",
                n_jobs=1 if small else 2)
    progress("t-SNE", 0, 1)
    coords = tsne.fit_transform(reduced).astype(np.float32)
    progress("t-SNE", 1, 1)
    return coords


def save_coords(m: Map2D, out: str | os.PathLike) -> Path:
    """Write the coordinates as CSV or JSON (chosen by the file's suffix)."""
    out = check_coords(out)
    records = m.records()
    with atomic_path(out, "the coordinates") as tmp:
        if out.suffix.lower() == ".json":
            tmp.write_text(json.dumps({"method": m.method, "n_total": m.n_total, "points": records},
                                      indent=1) + "\n")
        else:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=["row", "path", "label", "x", "y"])
                w.writeheader()
                w.writerows(records)
    return out


def check_coords(out: str | os.PathLike) -> Path:
    """Before any work: a .csv or .json path that can be written."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise FeatxError(f"`coords` must end in .csv or .json, got {out.name}")
    return check_output(out, "the coordinates")
