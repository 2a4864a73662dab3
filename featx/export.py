"""export: a store's vectors, labels, paths and class names as .npz or .csv for other tools.

``.npz`` holds plain arrays (no pickled objects, so ``np.load`` needs no ``allow_pickle``):
``features`` (N, D) float32, ``labels`` (N,) int32, ``paths``, ``hashes`` and ``class_names``
(unicode), and ``features_flip`` (N, D) when the store has mirrored images' vectors (row for row,
no extra rows). ``.csv`` has one row per image: ``path,label,class,hash,f0..f{D-1}``, written a block of
rows at a time.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from featx.errors import FeatxError
from featx.files import atomic_path, check_output
from featx import store as st

FORMATS = ("npz", "csv")


def export(store: str | os.PathLike, out: str | os.PathLike | None = None,
           fmt: str = "npz", chunk_rows: int = 4096) -> Path:
    """Write the store to ``out`` (default: the store's name with the format's suffix)."""
    if fmt not in FORMATS:
        raise FeatxError(f"unknown `fmt` {fmt!r}; choose npz or csv")
    store = Path(store)
    out = Path(out) if out else store.with_suffix(f".{fmt}")
    if out.resolve() == store.resolve():
        raise FeatxError(f"refusing to overwrite the store itself: {out}")
    check_output(out, "the export")
    meta = st.read_meta(store)
    with atomic_path(out, "the export", needed=st.estimate_bytes(meta["n"], meta["dim"])) as tmp:
        _write(store, tmp, fmt, chunk_rows)
    return out


def _write(store: Path, tmp: Path, fmt: str, chunk_rows: int) -> None:
    if fmt == "npz":
        feats = st.load_features(store)
        flips = {} if feats.flipped is None else {st.FLIPPED: feats.flipped}
        with open(tmp, "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, features=feats.features, labels=feats.labels.astype(np.int32),
                     paths=np.array(feats.paths, dtype=str), hashes=np.array(feats.hashes, dtype=str),
                     class_names=np.array(feats.class_names, dtype=str), **flips)
        return
    with st.open_store(store) as f:
        paths, hashes = st.strings(f["paths"]), st.strings(f["hashes"])
        class_names = st.strings(f["class_names"])
        dim = int(f["features"].shape[1])
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "class", "hash", *(f"f{j}" for j in range(dim))])
        for rows, block, labels in st.iter_chunks(store, chunk_rows):
            for i, vec, label in zip(range(rows.start, rows.stop), block, labels):
                w.writerow([paths[i], int(label), class_names[label], hashes[i],
                            *(f"{v:.9g}" for v in vec)])
