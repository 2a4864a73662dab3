"""Time featx's heads on cached vectors, side by side in one run: logreg and the softmax head on
the same split, the automatic choice of C and scale, and a 12-point logreg/softmax sweep.

    nice -n 5 python3 scripts/bench_fit.py                 # synthetic 25,000 x 4,096 store
    nice -n 5 python3 scripts/bench_fit.py --store FILE.h5 # a real store
    python3 scripts/bench_fit.py --n 2000 --dim 256        # a quick check that it runs
    nice -n 5 python3 scripts/bench_fit.py --sweep-only --backend loky,ray,dask  # joblib backends

The synthetic store mimics VGG16 fc2 vectors (non-negative, ReLU'd, 2 classes, noisy): 25,000 rows
so the 70/15/15 split trains on 17,500 x 4,096 float32, the size in the issue. The automatic
choice (``featx fit`` without --C/--scale: 3-fold CV on the train part over AUTO_GRID) is timed on
a second synthetic store of 25,000 x 512 (block5_pool/avg size). Timings are wall clock; the sweep
includes joblib's start-up (with loky: worker processes, each importing its libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from featx.backbones import cpu_description


def synthetic_store(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    import numpy as np

    from featx.store import Features, save_features

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = rng.normal(size=(2, dim)).astype(np.float32) * 0.03 * (4096 / dim) ** 0.5
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


def accuracy(head, split, part: str) -> float:
    return round(float((head.predict(split.X(part)) == split.y(part)).mean()), 4)


def time_heads(split, adam: bool) -> dict:
    """logreg and the softmax head with the same (default) C and scale, on the same split."""
    from featx.fit import fit_split

    res: dict = {}
    for name, clf, params in [("logreg", "logreg", {}), ("softmax", "softmax", {}),
                              ("softmax_adam_10_epochs", "softmax",
                               {"solver": "adam", "epochs": 10, "scale": "standard"})]:
        if name.endswith("adam_10_epochs") and not adam:
            continue
        head, s = fit_split(split, clf, **params)
        res[name] = {"fit_s": round(s, 2), "iterations": head.n_iter,
                     "val_acc": accuracy(head, split, "val"), "test_acc": accuracy(head, split, "test")}
    res["softmax_over_logreg_time"] = round(res["softmax"]["fit_s"] / res["logreg"]["fit_s"], 2)
    return res


def time_auto_choice(store: Path | None, args, tmp: Path) -> dict:
    """`featx fit` without --C/--scale: 3-fold CV on the train part (on a 512-d store)."""
    from featx.fit import load_split
    from featx.sweep import choose_params

    split = load_split(store or synthetic_store(tmp / "auto.h5", args.n, args.auto_dim, seed=1))
    res = {}
    for clf in ("logreg", "softmax"):
        t = time.perf_counter()
        sel = choose_params(split, clf, {}, n_jobs=args.jobs)
        res[f"auto_choice_{clf}"] = {"train_shape": list(split.X("train").shape),
                                     "seconds": round(time.perf_counter() - t, 1),
                                     "points_x_folds": f"{len(sel['rows'])} x {sel['folds']}",
                                     "picked": sel["picked"]}
    return res


def time_gridsearch(split, args, rounds: int = 2) -> dict:
    """The automatic choice two ways on the same folds and grid, alternated: featx's loop
    (:func:`featx.selection.choose_params`: joblib threads, one task per point x fold) and
    scikit-learn's GridSearchCV over a head (StratifiedGroupKFold, the same n_jobs, threads)."""
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    from featx.heads import make_head
    from featx.selection import AUTO_FOLDS, AUTO_GRID, choose_params

    X, y, groups, _ = split.pool("train")
    res: dict = {"train_shape": list(X.shape), "grid": AUTO_GRID, "folds": AUTO_FOLDS}
    for clf in args.gridsearch_clf.split(","):
        times: dict[str, list[float]] = {"featx_loop": [], "gridsearchcv": []}
        picks = {}
        for _ in range(rounds):
            t = time.perf_counter()
            sel = choose_params(split, clf, {}, n_jobs=args.jobs)
            times["featx_loop"].append(time.perf_counter() - t)
            picks["featx_loop"] = sel["picked"]
            t = time.perf_counter()
            folds = StratifiedGroupKFold(AUTO_FOLDS, shuffle=True, random_state=0)
            with threadpool_limits(1, user_api="blas"), parallel_backend("threading", args.jobs):
                search = GridSearchCV(make_head(clf, seed=0), AUTO_GRID, cv=folds, refit=False,
                                      n_jobs=args.jobs).fit(X, y, groups=groups)
            times["gridsearchcv"].append(time.perf_counter() - t)
            picks["gridsearchcv"] = search.best_params_
        best = {k: round(min(v), 2) for k, v in times.items()}
        res[clf] = {"seconds_min_of_rounds": best, "rounds": rounds, "picked": picks,
                    "gridsearch_over_loop": round(best["gridsearchcv"] / best["featx_loop"], 2)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a real featx store (default: synthetic)")
    ap.add_argument("--n", type=int, default=25_000, help="synthetic rows (70%% train)")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--auto-dim", type=int, default=512, help="dims of the automatic-choice store")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--backend", default="threading",
                    help="the sweep's joblib backend(s), comma-separated: threading, loky, ray, dask")
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep (no single fits)")
    ap.add_argument("--sweep-clf", default="logreg,softmax")
    ap.add_argument("--sweep-C", default="0.001,0.01,0.1,1,10,100")
    ap.add_argument("--adam", action="store_true", help="also time 10 Adam epochs (the old head)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--gridsearch", action="store_true",
                    help="only the automatic choice: featx's loop vs GridSearchCV, alternated")
    ap.add_argument("--gridsearch-clf", default="logreg,softmax")
    args = ap.parse_args()
    if args.gridsearch:
        from featx.split import load_split as split_of

        with tempfile.TemporaryDirectory(prefix="bench_fit_") as tmp:
            store = args.store or synthetic_store(Path(tmp) / "auto.h5", args.n, args.auto_dim, 1)
            res = {"machine": f"{cpu_description()}, load {os.getloadavg()[0]:.1f}",
                   "store": str(args.store or "synthetic"),
                   **time_gridsearch(split_of(store, train_flips=False, tta=False), args)}
            res["load_after"] = round(os.getloadavg()[0], 1)
        print(json.dumps(res, indent=2, default=str))
        return

    from featx.fit import load_split
    from featx.sweep import run_sweep

    tmp = tempfile.TemporaryDirectory(prefix="bench_fit_")
    t = time.perf_counter()
    store = args.store or synthetic_store(Path(tmp.name) / "synthetic.h5", args.n, args.dim)
    gen_s = time.perf_counter() - t
    split = load_split(store)
    res: dict = {"machine": f"{cpu_description()}, load {os.getloadavg()[0]:.1f}",
                 "store": str(args.store or "synthetic"),
                 "train_shape": list(split.X("train").shape), "n_val": split.n("val"),
                 "generate_s": round(gen_s, 1)}
    if not args.sweep_only:
        res.update(time_heads(split, args.adam))
        res.update(time_auto_choice(args.store, args, Path(tmp.name)))

    grid = {"C": [float(c) for c in args.sweep_C.split(",")]}
    for backend in args.backend.split(","):
        t = time.perf_counter()
        sw = run_sweep(store, args.sweep_clf.split(","), grid, n_jobs=args.jobs, backend=backend,
                       out_dir=Path(tmp.name) / "sweep")
        res[f"sweep_{backend}"] = {"points": sw.n_points, "seconds": round(sw.seconds, 1),
                                   # + loading the store, the refit of the best, its test
                                   "total_seconds": round(time.perf_counter() - t, 1)}
    res["sweep_best"] = {k: sw.best[k] for k in ("clf", "C", "val_accuracy", "test_accuracy")
                         if k in sw.best} if sw.best else None
    res["sweep_rows"] = [{k: r.get(k) for k in ("clf", "C", "val_accuracy", "fit_seconds",
                                                "epochs_run")} for r in sw.rows]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            if k != "sweep_rows":
                print(f"{k:>24}: {v}")
        for r in res["sweep_rows"]:
            print(f"{'':>24}  {r['clf']:<8} C={r['C']:<6} val {r['val_accuracy']}  "
                  f"{r['fit_seconds']} s  {r['epochs_run'] or ''}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
