"""Time `featx audit` on a synthetic store: N x 512 vectors, 2 classes (the Cats-vs-Dogs size).

    python3 scripts/bench_audit.py [N]     # default N = 25000

The vectors are ReLU'd Gaussian blobs scaled like VGG16 block5_pool/avg vectors (non-negative, L2
norm about 100), with 2% of the labels moved to the other class and 50 near-duplicates (a row plus
a little noise, under a new content hash) that the split scatters. Prints the audit's stages
(load, out-of-fold logistic regression, cleanlab, leaks, outliers, writing the outputs), then the
same stages with OpenBLAS on 1 thread against its default, side by side in one run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from featx.audit import (load_labelled, audit_store, find_leaks, fold_ids, knn_distance, out_of_fold_proba)
from featx.neighbors import normalize
from featx.split import split_indices
from featx.store import Features, save_features

META = dict(model="vgg16", layer="block5_pool", pooling="avg", weights="none", weights_id="none",
            precision="float32", input_size=224, resize="squash", resample="bilinear")


def make_store(path: Path, n: int, dim: int = 512, seed: int = 0) -> tuple[Path, set[str]]:
    """The synthetic store; returns it and the paths of the rows whose label was moved."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centres = rng.normal(size=(2, dim)) * 0.5
    X = (np.maximum(centres[y] + rng.normal(size=(n, dim)), 0) * 6).astype(np.float32)
    twins = rng.choice(n - 50, 50, replace=False)
    X[n - 50:] = X[twins] + rng.normal(size=(50, dim)).astype(np.float32) * 0.05
    y[n - 50:] = y[twins]
    flipped = rng.choice(n, n // 50, replace=False)
    y[flipped] = 1 - y[flipped]
    names = ["cat", "dog"]
    paths = [f"{names[y[i]]}/{'flipped_' if i in set(flipped) else ''}{i}.jpg" for i in range(n)]
    hashes = np.array([f"{i:064x}" for i in range(n)])
    save_features(path, Features(X, y, paths, hashes, names, dict(META)))
    return path, {paths[i] for i in flipped}


def stages(store: Path, blas_threads: int | None) -> dict[str, float]:
    """The audit's compute stages with OpenBLAS limited to ``blas_threads`` (None: its default)."""
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        feats, y, names, *_ = load_labelled(store)
        times = {}
        t = time.perf_counter()
        fold = fold_ids(feats.hashes, y, 5)
        out_of_fold_proba(feats.features, y, fold, 2, blas_threads=blas_threads, C=0.01)
        times["out_of_fold"] = time.perf_counter() - t
        x = normalize(feats.features)
        t = time.perf_counter()
        find_leaks(x, feats.hashes, y, split_indices(feats.hashes, y))
        times["leaks"] = time.perf_counter() - t
        t = time.perf_counter()
        knn_distance(x, y)
        times["outliers"] = time.perf_counter() - t
    return times


def main(n: int = 25_000) -> None:
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        store, flipped = make_store(Path(tmp) / "synthetic.h5", n)
        t0 = time.perf_counter()
        report = audit_store(store, out=Path(tmp) / "audit")
        total = time.perf_counter() - t0
        s = report.seconds
        write = total - s["total"]
        print(f"audit of {n:,} x 512, 2 classes, logreg, 5 folds: {total:.1f} s in all")
        for key in ("load", "out_of_fold", "label_issues", "leaks", "outliers"):
            print(f"  {key:<13} {s[key]:6.2f} s")
        print(f"  {'rest':<13} {s['total'] - sum(s[k] for k in s if k != 'total'):6.2f} s "
              f"(imports of scikit-learn and cleanlab, folds, split, summary)")
        print(f"  {'write':<13} {write:6.2f} s (3 sheets of 50, page, JSON, CSV)")
        ranked = [x.path for x in report.label_issues]
        k = 2 * len(flipped)
        print(f"planted label errors: {len(flipped)}; cleanlab lists {len(ranked)}; recall at "
              f"{k}: {len(set(ranked[:k]) & flipped) / len(flipped):.3f}; leaks "
              f"{report.summary['n_leaks']} (test with a twin in train: "
              f"{report.summary['test_with_twin_in_train']})")
        print(f"side by side, BLAS threads (load average {os.getloadavg()[0]:.1f}):")
        for threads in (1, None):
            times = stages(store, threads)
            print(f"  {threads or 'default':>7}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25_000)
