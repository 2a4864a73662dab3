"""Old defaults vs new on real stores: test accuracy of each, side by side, one split.

    nice -n 10 python3 scripts/bench_defaults.py STORE.h5 [STORE.h5 ...] [--json]
    python3 scripts/bench_defaults.py STORE.h5 --subset 1000 --out SUBSET.h5  # derive a store

Per store (its derived 70/15/15 split, seed 0):

* old default: logreg, C=1, no scaling (featx before the automatic choice);
* new default: ``featx fit`` without --C/--scale: C and scale picked by 3-fold CV on the train part;
* best by validation: a sweep over scale (none, l2, standard, l2+standard) x C (0.01 .. 1000),
  selected on the validation part (what a careful user would do by hand);
* the softmax head with the new default, and the old softmax head (Adam, lr 1e-3, batch 256,
  standardised, no L2 (C=inf), 50 epochs, early stopping with patience 5);

with the standard error of a test accuracy (the noise the comparison has to beat).
``--subset N`` writes a store of N rows drawn by a seeded ranking of their hashes, ``--per-class N``
one of the first N files (by name) of each class (derived data sets, no model time), and exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

WIDE = {"scale": ["none", "l2", "standard", "l2+standard"],
        "C": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}
OLD_SOFTMAX = dict(solver="adam", C=float("inf"), scale="standard", lr=1e-3, batch_size=256, epochs=50,
                   patience=5)


def subset_store(src: Path, n: int, out: Path, seed: int = 0) -> Path:
    """``n`` rows of ``src``, picked by the rank of sha256(f"subset{seed}:{hash}")."""
    from featx.store import Features, load_features, save_features

    f = load_features(src)
    rank = [hashlib.sha256(f"subset{seed}:{h}".encode()).hexdigest() for h in f.hashes]
    keep = np.sort(np.argsort(rank)[:n])
    save_features(out, Features(f.features[keep], f.labels[keep], [f.paths[i] for i in keep],
                                f.hashes[keep], f.class_names, dict(f.meta)))
    return out


def first_per_class(src: Path, per_class: int, out: Path) -> Path:
    """The rows of the first ``per_class`` files (sorted by path) of each class: the subsets of the
    README's baseline table (tests/conftest.py ``subset``)."""
    from featx.store import Features, load_features, save_features

    f = load_features(src)
    keep = []
    for c in range(len(f.class_names)):
        rows = list(np.flatnonzero(f.labels == c))
        keep += sorted(rows, key=lambda i: f.paths[i])[:per_class]
    keep = np.sort(np.array(keep))
    save_features(out, Features(f.features[keep], f.labels[keep], [f.paths[i] for i in keep],
                                f.hashes[keep], f.class_names, dict(f.meta)))
    return out


def compare(store: Path) -> dict:
    from featx.fit import fit_store, load_split
    from featx.sweep import run_sweep

    split = load_split(store)
    res: dict = {"store": str(store), "n": {p: split.n(p) for p in ("train", "val", "test")},
                 "classes": len(split.feats.class_names)}

    def run(name: str, clf: str, **params) -> None:
        t = time.perf_counter()
        r = fit_store(store, clf, split=split, **params)
        res[name] = {"val": round(r.val["accuracy"], 4), "test": round(r.test["accuracy"], 4),
                     "C": r.params["C"], "scale": r.params["scale"],
                     "seconds": round(time.perf_counter() - t, 1)}
        if r.selection:
            res[name]["cv"] = round(r.selection["cv_mean"], 4)

    run("old_default", "logreg", C=1.0, scale="none")
    run("new_default", "logreg")
    sw = run_sweep(store, ["logreg"], WIDE, n_jobs=2, backend="threading")
    b = sw.best
    res["best_by_val"] = {"val": round(b["val_accuracy"], 4), "test": round(b["test_accuracy"], 4),
                          "C": b["C"], "scale": b["scale"]}
    run("softmax_new_default", "softmax")
    run("softmax_old", "softmax", **OLD_SOFTMAX)
    p, n = res["old_default"]["test"], res["n"]["test"]
    res["test_se"] = round(float(np.sqrt(p * (1 - p) / n)), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", type=Path, nargs="+")
    ap.add_argument("--subset", type=int, help="write a store of this many rows and exit")
    ap.add_argument("--per-class", type=int, help="write a store of the first N files a class")
    ap.add_argument("--out", type=Path, help="where --subset writes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.subset or args.per_class:
        make = (subset_store(args.stores[0], args.subset, args.out) if args.subset
                else first_per_class(args.stores[0], args.per_class, args.out))
        print(make)
        return
    results = [compare(s) for s in args.stores]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['store']}: train/val/test {r['n']['train']}/{r['n']['val']}/{r['n']['test']}, "
              f"{r['classes']} classes, test s.e. {r['test_se']}")
        for key in ("old_default", "new_default", "best_by_val", "softmax_new_default",
                    "softmax_old"):
            print(f"  {key:>20}: {r[key]}")


if __name__ == "__main__":
    main()
