"""Time exact cosine kNN (featx.neighbors.topk_cosine) and the all-pairs duplicate scan.

    python3 scripts/bench_reuse.py [N]     # default N = 100000

In-memory random float32 vectors; the store is scanned in blocks of 16,384 rows as `featx
neighbors` does (reading the blocks from disk adds the HDF5 read time on top).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from featx.near_duplicates import near_pairs
from featx.neighbors import CHUNK_ROWS, normalize, topk_cosine


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(n: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    for dim in (512, 4096):
        base = rng.random((n, dim), dtype=np.float32)
        blocks = [(s, base[s:s + CHUNK_ROWS]) for s in range(0, n, CHUNK_ROWS)]
        for q in (1, 100):
            queries = rng.random((q, dim), dtype=np.float32)
            t = best_of(lambda q=queries, b=blocks: topk_cosine(q, b, k=8))
            print(f"kNN  {n:>7,} x {dim:<5} {q:>4} queries, k=8: {t:7.3f} s "
                  f"({t / q * 1000:.1f} ms per query)")
        base = blocks = None  # free before the next size
    m = 20_000
    x = normalize(rng.random((m, 512), dtype=np.float32))
    t = best_of(lambda: near_pairs(x, 0.999, max_pairs=10**9), repeat=1)
    print(f"pairs {m:>6,} x 512 all-pairs scan: {t:.2f} s "
          f"(quadratic: ~{t * (n / m) ** 2:.0f} s at {n:,})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
