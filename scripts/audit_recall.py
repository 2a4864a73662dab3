"""Recall of planted label errors: how many of them `featx audit` puts at the top of its list.

    python3 scripts/audit_recall.py STORE N [SEEDS] [--C 0.01]     # from the repository root

For each seed: a copy of STORE's data folder (symlinks) with N random files moved to another class
folder, its store made by `featx extract` from a copy of STORE (every vector reused by content
hash: no model time), then the audit. Prints, per seed, how many planted files are among the first
2 x N label issues, the list's length and cleanlab's estimate of the wrong labels.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featx.audit import audit_store  # noqa: E402
from tests.conftest import plant_label_errors, reuse_store  # noqa: E402


def main(store: Path, n: int, seeds: int = 3, C: float | None = None) -> None:
    hits = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            data, planted = plant_label_errors(store, Path(tmp) / store.stem, n, seed=seed)
            report = audit_store(reuse_store(store, data, Path(tmp) / "planted.h5"), C=C)
        ranked = [x.path for x in report.label_issues]
        hit = len(set(ranked[:2 * n]) & set(planted))
        hits.append(hit)
        print(f"seed {seed}: {hit} of {n} planted in the first {2 * n} (recall {hit / n:.3f}); "
              f"{len(ranked)} listed, cleanlab estimates {report.summary['estimated_wrong_labels']}"
              f" wrong; out-of-fold accuracy {report.summary['oof_accuracy']:.4f}", flush=True)
    print(f"{store.name}, {n} planted, C={report.settings['params']['C']}: mean recall at "
          f"{2 * n}: {sum(hits) / (n * len(hits)):.3f} over {len(hits)} seeds")


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(description="Recall of planted label errors in featx audit.")
    cli.add_argument("store", type=Path)
    cli.add_argument("n", type=int, help="label errors planted")
    cli.add_argument("seeds", type=int, nargs="?", default=3)
    cli.add_argument("--C", type=float, default=None, help="the head's C (default: audit's)")
    a = cli.parse_args()
    main(a.store, a.n, a.seeds, a.C)
