"""Wall time of featx commands that need no Keras model, each in a fresh process (median of runs).

    nice -n 5 python3 scripts/bench_startup.py --store FILE.h5
    nice -n 5 python3 scripts/bench_startup.py --store FILE.h5 --before /tmp/c2554f1  # side by side

``--before DIR`` (repeatable): a folder holding another featx package (``mkdir DIR && git archive REV
featx | tar -x -C DIR``), timed in alternation with this checkout's, so the load of a shared
machine hits all alike.
Each run records whether TensorFlow was imported. The reference row times ``import keras`` alone.
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

from featx.backbones import cpu_description

# Runs main() and reports (to the last stderr line) whether TensorFlow was imported.
RUNNER = """\
import sys, atexit
atexit.register(lambda: print("TF" if "tensorflow" in sys.modules else "noTF", file=sys.stderr))
from featx.cli import main
main(sys.argv[1:])
"""


def commands(store: Path, out: Path) -> dict[str, list[str]]:
    import h5py

    with h5py.File(store, "r") as f:
        query = f["paths"][0].decode()
    s = str(store)
    return {
        "featx info": ["info", s],
        "featx fit --clf logreg": ["fit", s, "--clf", "logreg", "-o", str(out / "fit")],
        "featx sweep (logreg, linear-svm; 4 points)": [
            "sweep", s, "--clf", "logreg,linear-svm", "--C", "0.1,1", "-o", str(out / "sweep")],
        "featx neighbors (stored query)": ["neighbors", s, query, "-k", "5"],
    }


def run_once(args: list[str], featx_dir: Path, cwd: str, code: str = RUNNER) -> tuple[float, bool]:
    """Seconds and whether TensorFlow was imported; ``cwd`` holds no featx (``-c`` puts it first)."""
    env = {**os.environ, "PYTHONPATH": str(featx_dir)}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=env, cwd=cwd)
    seconds = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{args}: exit {res.returncode}\n{res.stderr[-2000:]}")
    return seconds, res.stderr.strip().splitlines()[-1:] == ["TF"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a featx store (.h5)")
    ap.add_argument("--before", type=Path, action="append", default=[],
                    help="folder holding an older featx package (repeatable; labelled by its name)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    here = Path(__file__).resolve().parents[1]
    versions = {**{d.name: d.resolve() for d in args.before}, "this checkout": here}
    keras_code = "import sys, keras; print('TF' if 'tensorflow' in sys.modules else 'noTF', file=sys.stderr)"
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        cmds = commands(args.store.resolve(), Path(tmp))
        times: dict[str, dict[str, list[float]]] = {name: {v: [] for v in versions} for name in cmds}
        imports_tf: dict[str, dict[str, bool]] = {name: {} for name in cmds}
        reference: list[float] = []
        for _ in range(args.repeats):  # alternate versions and commands: load hits all alike
            for name, argv in cmds.items():
                for version, folder in versions.items():
                    seconds, tf = run_once(argv, folder, tmp)
                    times[name][version].append(seconds)
                    imports_tf[name][version] = tf
            reference.append(run_once([], here, tmp, keras_code)[0])
    res = {
        "machine": cpu_description(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "store": str(args.store), "repeats": args.repeats,
        "commands": {name: {v: {"median_s": round(statistics.median(ts), 2),
                                "imports_tensorflow": imports_tf[name][v]}
                            for v, ts in by_version.items()}
                     for name, by_version in times.items()},
        "import_keras_s": round(statistics.median(reference), 2),
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['machine']}; load average {res['load_average']}; median of {args.repeats} runs")
    head = " | ".join(f"{v} (s, TF?)" for v in versions)
    print(f"| command | {head} |")
    for name, by_version in res["commands"].items():
        cells = " | ".join(f"{r['median_s']:.2f} ({'TF' if r['imports_tensorflow'] else 'no TF'})"
                           for r in by_version.values())
        print(f"| {name} | {cells} |")
    print(f"| python3 -c 'import keras' (reference) | {res['import_keras_s']:.2f} |")


if __name__ == "__main__":
    main()
