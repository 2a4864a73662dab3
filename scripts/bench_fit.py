"""Time featx's heads on cached vectors: logreg fit, a 12-point sweep, 10 softmax epochs.

    nice -n 5 python3 scripts/bench_fit.py                 # synthetic 25,000 x 4,096 store
    nice -n 5 python3 scripts/bench_fit.py --store FILE.h5 # a real store
    nice -n 5 python3 scripts/bench_fit.py --sweep-only --backends loky,ray,dask  # joblib backends

The synthetic store mimics VGG16 fc2 vectors (non-negative, ReLU'd, 2 classes, noisy): 25,000 rows
so the 70/15/15 split trains on 17,500 x 4,096 float32, the size in the issue. Timings are wall
clock; the sweep includes joblib's start-up (loky worker processes, each importing Keras).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def synthetic_store(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    import numpy as np

    from featx.store import Features, save_features

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = rng.normal(size=(2, dim)).astype(np.float32) * 0.03
    X = np.empty((n, dim), np.float32)
    for s in range(0, n, 2048):  # bounded temporaries
        block = rng.normal(size=(min(2048, n - s), dim)).astype(np.float32)
        X[s:s + len(block)] = np.maximum(block + signal[y[s:s + len(block)]], 0)
    meta = dict(model="vgg16", layer="fc2", pooling="none", weights="none", weights_id="none",
                precision="float32", input_size=224, resize="squash", resample="bilinear")
    hashes = np.array([f"{i:064x}" for i in range(n)])
    save_features(path, Features(X, y, [f"{i}.jpg" for i in range(n)], hashes,
                                 ["cat", "dog"], meta))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a real featx store (default: synthetic)")
    ap.add_argument("--n", type=int, default=25_000, help="synthetic rows (70%% train)")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sweep-clf", default="logreg,softmax")
    ap.add_argument("--sweep-C", default="0.001,0.01,0.1,1,10,100")
    ap.add_argument("--backends", default="loky", help="the sweep on each joblib backend in turn")
    ap.add_argument("--sweep-only", action="store_true", help="skip the single logreg/softmax fits")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from featx.fit import fit_split, load_split
    from featx.sweep import run_sweep

    tmp = tempfile.TemporaryDirectory(prefix="bench_fit_")
    t = time.perf_counter()
    store = args.store or synthetic_store(Path(tmp.name) / "synthetic.h5", args.n, args.dim)
    gen_s = time.perf_counter() - t
    split = load_split(store)
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                            f"{os.cpu_count()} cores", "store": str(args.store or "synthetic"),
                 "train_shape": list(split.X("train").shape), "n_val": split.n("val"),
                 "generate_s": round(gen_s, 1)}

    if not args.sweep_only:
        head, s = fit_split(split, "logreg")
        res["logreg_fit_s"] = round(s, 2)
        res["logreg_val_acc"] = round(float((head.predict(split.X("val")) == split.y("val")).mean()),
                                      4)

        head, s = fit_split(split, "softmax", epochs=10, patience=100)
        res["softmax_10_epochs_s"] = round(s, 2)
        res["softmax_epochs_run"] = len(head.history["loss"])

    clfs = args.sweep_clf.split(",")
    grid = {"C": [float(c) for c in args.sweep_C.split(",")], "epochs": [10]}
    for backend in args.backends.split(","):
        t = time.perf_counter()
        sw = run_sweep(store, clfs, grid, n_jobs=args.jobs, backend=backend,
                       out_dir=Path(tmp.name) / "sweep")
        res[f"sweep_s_{backend}"] = round(sw.seconds, 1)  # the parallel grid (+ backend start-up)
        res[f"sweep_total_s_{backend}"] = round(time.perf_counter() - t, 1)  # + load, refit, test
    res["sweep_points"] = sw.n_points
    res["sweep_best"] = {k: sw.best[k] for k in ("clf", "C", "val_accuracy", "test_accuracy")
                         if k in sw.best} if sw.best else None
    res["sweep_rows"] = [{k: r.get(k) for k in ("clf", "C", "val_accuracy", "fit_seconds")}
                         for r in sw.rows]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            if k != "sweep_rows":
                print(f"{k:>22}: {v}")
        for r in res["sweep_rows"]:
            print(f"{'':>22}  {r['clf']:<10} C={r['C']:<6} val {r['val_accuracy']}  "
                  f"{r['fit_seconds']} s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
