"""Calibration of ``featx fit``'s automatic choice, before and after breaking accuracy ties by
log loss: the test part's accuracy, log loss and expected calibration error (ECE, 15 bins) of the
logreg head whose C and scale were picked by 3-fold CV on the train part, with ties going to the
smaller C (before) or to the lower log loss (after), side by side on the same split.

    nice -n 5 python3 scripts/bench_calibration.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5
    nice -n 5 python3 scripts/bench_calibration.py /work/stores/pets-dev.h5 --subset 40  # 80 photos
"""

from __future__ import annotations

import argparse
import json
import os

from featx.backbones import cpu_description


def measure(store: str, clf: str, jobs: int) -> dict:
    from featx.fit import fit_split
    from featx.metrics import expected_calibration_error, log_loss
    from featx.selection import choose_params, predict_proba
    from featx.split import load_split

    split = load_split(store)
    res: dict = {"n_train": split.n("train"), "n_test": split.n("test")}
    for tie_break in ("C", "log_loss"):
        sel = choose_params(split, clf, {}, n_jobs=jobs, tie_break=tie_break)
        head, _ = fit_split(split, clf, **(sel["picked"] or {}))
        proba = predict_proba(head, split.X("test"), split.X_flip("test"))
        y = split.y("test")
        res[f"ties_by_{tie_break}"] = {
            "picked": sel["picked"], "cv_mean": round(sel["cv_mean"], 4),
            "test_accuracy": round(float((proba.argmax(1) == y).mean()), 4),
            "test_log_loss": round(log_loss(y, proba), 4),
            "test_ece": round(expected_calibration_error(y, proba), 4),
            "mean_top_probability": round(float(proba.max(1).mean()), 4)}
    return res


def subset(store: str, per_class: int, seed: int, out: str) -> str:
    """A store of ``per_class`` random rows of each class of ``store`` (vectors copied)."""
    import numpy as np

    from featx.store import Features, load_features, save_features

    f = load_features(store)
    rng = np.random.default_rng(seed)
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(f.labels == c), per_class, False)
                                   for c in np.unique(f.labels)]))
    save_features(out, Features(f.features[rows], f.labels[rows], [f.paths[i] for i in rows],
                                f.hashes[rows], f.class_names, f.meta, [],
                                None if f.flipped is None else f.flipped[rows]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--clf", default="logreg")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--subset", type=int, help="images per class of random subsets instead")
    ap.add_argument("--seeds", type=int, default=3, help="subsets per store")
    args = ap.parse_args()
    out = {"machine": f"{cpu_description()}, load {os.getloadavg()[0]:.1f}"}
    for store in args.stores:
        if not args.subset:
            out[store] = measure(store, args.clf, args.jobs)
            continue
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                small = subset(store, args.subset, seed, f"{tmp}/s{seed}.h5")
                out[f"{store} ({args.subset} a class, subset {seed})"] = measure(
                    small, args.clf, args.jobs)
    out["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
