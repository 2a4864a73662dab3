"""t-SNE on a small store: where the time goes, and the settings featx.maps uses by size.

python3 scripts/bench_tsne.py [STORE|-] [N] [--two]   (default: generated blobs, 90 x 512;
--two: only the old Barnes-Hut setting and the exact method)
Runs each variant on the same PCA-50 vectors, in one process, side by side.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from featx.neighbors import normalize

    two = "--two" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--two"]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 90
    if len(sys.argv) > 1 and sys.argv[1] != "-":
        from featx.store import load_features

        x = load_features(sys.argv[1]).features[:n]
    else:
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(3, 512))[rng.integers(0, 3, n)] * 3 + rng.normal(size=(n, 512)))
    x = normalize(x.astype(np.float32))
    reduced = PCA(n_components=min(50, len(x) - 1), random_state=0).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3)
    variants = {
        "before: barnes_hut, n_jobs=2, 1000 iterations": dict(method="barnes_hut", n_jobs=2),
        "barnes_hut, n_jobs=1": dict(method="barnes_hut", n_jobs=1),
        "exact, n_jobs=1": dict(method="exact", n_jobs=1),
        "exact, n_jobs=1, 500 iterations": dict(method="exact", n_jobs=1, max_iter=500),
    }
    if two:
        variants = {k: v for k, v in variants.items() if k.startswith("before") or k == "exact, n_jobs=1"}
    t0 = time.perf_counter()
    TSNE(n_components=2, perplexity=5, init="pca", random_state=0, max_iter=250,
         n_jobs=1).fit_transform(reduced[:20] if len(reduced) > 20 else reduced)  # warm-up
    print(f"warm-up (first call: imports, threads) {time.perf_counter() - t0:.2f} s")
    base = None
    for name, kw in variants.items():
        t0 = time.perf_counter()
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=0, **kw)
        tsne.fit_transform(reduced)
        dt = time.perf_counter() - t0
        base = base or dt
        print(f"{name}: {dt:.2f} s ({dt / base:.2f}x), KL {tsne.kl_divergence_:.3f}")


if __name__ == "__main__":
    main()
