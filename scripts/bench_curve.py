"""Benchmark featx curve: its time from a fresh process, and how well the curve extrapolates.

For each store (and seeded subsets of it, with k photos a class, written as stores of their own):
``featx curve STORE --json`` in a fresh process, timed; the extrapolation check of its output
(the curve fitted on sizes up to half of the train part alone, its prediction at the whole train
part against the measured accuracy, with the test part's standard error as the measured spread);
with ``--modes``, the same for each ``--choose`` (once, size, point) side by side.

    python3 scripts/bench_curve.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5 \
        --subsets 150,300 --modes once,size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def subset_store(store: Path, per_class: int, out: Path, seed: int = 0) -> Path:
    """A store of ``per_class`` seeded photos a class of ``store`` (its own derived split)."""
    from featx.store import Features, load_features, save_features

    f = load_features(store)
    rng = np.random.default_rng(seed)
    rows = np.sort(np.concatenate([rng.permutation(np.flatnonzero(f.labels == c))[:per_class]
                                   for c in range(len(f.class_names))]))
    save_features(out, Features(f.features[rows], f.labels[rows], [f.paths[i] for i in rows],
                                np.asarray(f.hashes)[rows], f.class_names, dict(f.meta), [],
                                f.flipped[rows] if f.flipped is not None else None))
    return out


def run_curve(store: Path, choose: str, out: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", "curve", str(store),
           "--choose", choose, "-o", str(out), "--json", *extra]
    start, cpu0 = time.perf_counter(), _children_cpu()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if res.returncode:
        raise SystemExit(res.stderr)
    doc = json.loads(res.stdout)
    doc["cpu_seconds"] = _children_cpu() - cpu0
    return wall, doc


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes (less sensitive to load than wall)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def row(name: str, choose: str, wall: float, doc: dict) -> dict:
    k, fit = doc["check"], doc["fit"]
    full = [p["accuracy"] for p in doc["points"] if p["photos_per_class"] == doc["full"]][0]
    se = float(np.sqrt(max(full * (1 - full), 0.25 / doc["n_test"]) / doc["n_test"]))
    return {"store": name, "choose": choose, "seconds": round(wall, 1),
            "cpu_seconds": round(doc["cpu_seconds"], 1),
            "fits": len(doc["points"]), "full": doc["full"], "n_test": doc["n_test"],
            "measured": full, "test_se": se, "model": fit["model"] if fit else None,
            "gain_doubling": fit["gain"] if fit else None,
            "ceiling": fit["ceiling"] if fit else None,
            "check_upto": k["fitted_upto"] if k else None,
            "check_predicted": k["predicted"] if k else None,
            "check_error": k["error"] if k else None,
            "within": (abs(k["error"]) <= max(0.01, se)) if k else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="+", type=Path)
    ap.add_argument("--subsets", default="", help="photos a class of subset stores, e.g. 150,300")
    ap.add_argument("--modes", default="once", help="--choose values to compare")
    ap.add_argument("--extra", default="", help="more featx curve options, space-separated")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = []
        for store in args.stores:
            targets.append((store.stem, store))
            for k in [int(v) for v in args.subsets.split(",") if v]:
                small = subset_store(store, k, Path(tmp) / f"{store.stem}-{k}.h5")
                targets.append((f"{store.stem}-{k}", small))
        for name, store in targets:
            for choose in args.modes.split(","):
                wall, doc = run_curve(store, choose, Path(tmp) / f"{name}-{choose}", args.extra.split())
                rows.append(row(name, choose, wall, doc))
                r = rows[-1]
                print(f"{name} --choose {choose}: {r['seconds']} s ({r['cpu_seconds']} s CPU), "
                      f"{r['fits']} fits; at "
                      f"{r['full']:g} a class {100 * r['measured']:.1f}% (se {100 * r['test_se']:.1f}); "
                      f"from sizes <= {r['check_upto']}: predicted {100 * (r['check_predicted'] or 0):.1f}% "
                      f"({100 * (r['check_error'] or 0):+.1f} points, within: {r['within']}); "
                      f"doubling {100 * (r['gain_doubling'] or 0):+.2f}, ceiling "
                      f"{100 * (r['ceiling'] or 0):.1f}% ({r['model']})", flush=True)
    print(f"cpu: {_cpu()}; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
