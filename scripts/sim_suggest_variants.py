"""Other ways to pick what to label, simulated like scripts/sim_suggest.py (which see): each
strategy here is a function of (probabilities, vectors, n, seed) swapped in for featx.suggest.rank.

    python3 scripts/sim_suggest_variants.py /work/stores/flowers5.h5 \
        random,md4,md16,typical,uncertain-typical,hybrid 5

md4: featx's margin-diverse (k-means over the 4n most uncertain); md16: over the 16n;
typical: k-means over the whole pool, the member nearest each centre; uncertain-typical: the
same clusters, the most uncertain member of each; hybrid: half margin-diverse, half random.
Prints the mean test accuracy after each round and the labels each needs to reach random's final
accuracy.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

sys.path.insert(0, str(Path(__file__).parent))
import sim_suggest  # noqa: E402
from featx import suggest as sg  # noqa: E402

orig = sg.rank

def unit(Z):
    Z = Z.astype(np.float64)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

def typical(p, X, n, seed):
    """k-means over the whole pool into n clusters; the member closest to each centre"""
    Z = unit(X)
    km = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(Z)
    d = ((Z - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    return np.array([np.flatnonzero(km.labels_ == c)[np.argmin(d[km.labels_ == c])] for c in range(n)])

def uncertain_typical(p, X, n, seed):
    """k-means over the whole pool into n clusters; in each, its most uncertain member"""
    Z = unit(X)
    km = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(Z)
    m = sg.margins(p)
    return np.array([np.flatnonzero(km.labels_ == c)[np.argmin(m[km.labels_ == c])] for c in range(n)])

def hybrid(p, X, n, seed):
    a = orig(p, X, n // 2, "margin-diverse", seed=seed)
    rest = np.setdiff1d(np.arange(len(p)), a)
    b = rest[np.random.default_rng(seed).permutation(len(rest))[:n - len(a)]]
    return np.concatenate([a, b])

S = {"random": lambda p, X, n, seed: orig(p, X, n, "random", seed=seed),
     "md4": lambda p, X, n, seed: orig(p, X, n, "margin-diverse", seed=seed),
     "md16": lambda p, X, n, seed: orig(p, X, n, "margin-diverse", seed=seed, pool=16),
     "typical": typical, "uncertain-typical": uncertain_typical, "hybrid": hybrid}

def main() -> None:
    store, names, repeats = Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
    res = {}
    for name in names:
        sim_suggest.rank = (lambda p, X, n, s, seed=0, f=S[name]: f(p, X, n, seed))
        t = time.perf_counter()
        runs = [sim_suggest.simulate(store, "x", r, 10, 20, 10) for r in range(repeats)]
        res[name] = np.mean(runs, axis=0)
        curve = " ".join(f"{100 * a:.1f}" for a in res[name])
        print(f"{name:18s}", round(time.perf_counter() - t), curve, flush=True)
    target = res["random"][-1]
    for k, v in res.items():
        print(k, "labels to reach random's final:", sim_suggest.labels_to_reach(v, target, 20), flush=True)


if __name__ == "__main__":
    main()
