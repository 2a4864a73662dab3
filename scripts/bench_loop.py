"""Extraction before and after a change to the loop, alternated on the same photos.

Runs ``featx extract`` in a fresh process from each source tree in turn (before, after, before,
after, ...), each into a new store, and reports the model-busy throughput (``images_per_second``:
embedded images over the loop's wall time, model build excluded) and the total wall time of each
run, then the median of each side and their ratio::

    git archive main featx | tar -x -C /tmp/before    # the tree to compare against
    PYTHONPATH=. python3 scripts/bench_loop.py --before /tmp/before --after . \\
        --data ../shared/data/pets-dev --limit 64 --rounds 3 \\
        --weights ../shared/weights/vgg16_notop_imagenet.weights.h5 --precision bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def subset(data: Path, limit: int, dest: Path) -> Path:
    """``limit`` photos of ``data`` (spread over its classes), as symlinks under ``dest``."""
    classes = sorted(p for p in data.iterdir() if p.is_dir())
    per = max(1, limit // len(classes))
    for c in classes:
        (dest / c.name).mkdir(parents=True)
        for f in sorted(c.iterdir())[:per]:
            (dest / c.name / f.name).symlink_to(f.resolve())
    return dest


def run(tree: Path, data: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", "extract", str(data),
           "-o", str(out), "--layer", args.layer, "--weights", args.weights, "--precision",
           args.precision, "--batch-size", str(args.batch_size), "--json"]
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{tree}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout)
    return {"images_per_second": doc["images_per_second"], "embedded": doc["n_embedded"],
            "model_s": doc["timings"]["model"], "process_wall_s": round(wall, 1),
            "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layer", default="block5_pool")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    from featx.backbones import cpu_description

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        data = subset(args.data, args.limit, Path(tmp) / "data")
        for i in range(args.rounds):
            for side in ("before", "after"):
                tree = args.before if side == "before" else args.after
                runs[side].append(run(tree, data, Path(tmp) / f"{side}{i}.h5", args))
                print(side, i, runs[side][-1], file=sys.stderr, flush=True)
    med = {side: statistics.median(r["images_per_second"] for r in rs) for side, rs in runs.items()}
    print(json.dumps({"machine": cpu_description(), "photos": args.limit, "layer": args.layer,
                      "precision": args.precision, "rounds": args.rounds, "runs": runs,
                      "median_images_per_second": med,
                      "after_over_before": round(med["after"] / med["before"], 3)}, indent=2))


if __name__ == "__main__":
    main()
