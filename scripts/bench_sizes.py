"""Input size and flips: what they are worth (accuracy) and what they cost (model time).

    nice -n 5 python3 scripts/bench_sizes.py --stores features/pets-300_{224,288,352,448}.h5 \\
        --flips features/pets-dev_vgg16_block5_pool_avg_flip.h5 --json      # accuracy
    python3 scripts/bench_sizes.py --speed 32 --sizes 224,288,352,448 \\
        --weights ../shared/weights/vgg16_notop_imagenet.weights.h5        # model time, quiet

**Accuracy** of each store (one data set's images at one ``--input-size``): logistic regression as
``featx fit`` makes it (C and scale picked by 3-fold CV on the train part), its test accuracy on
the derived 70/15/15 split, and the mean accuracy of 5-fold cross-validation on train+val at the
C and scale picked (steadier on small sets than a test part of a few dozen images). For a store
with mirrored vectors (``--flips``), the same three ways: without them, trained on both copies,
and trained on both + predictions averaged over flips (``--tta flip``).

**Model time** (``--speed N``): VGG16 up to block5_pool + average pooling, ``predict_on_batch`` on
N random preprocessed images at each size, the sizes timed in turn for ``--rounds`` rounds (a load
change hits all alike); median images/s and the cost relative to 224.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

FLIP_MODES = {"no flips": (False, False), "train on flips": (True, False),
              "train on flips + tta": (True, True)}


def accuracy(store: Path, train_flips: bool = False, tta: bool = False) -> dict:
    """Test accuracy of `featx fit`'s logreg and 5-fold CV accuracy at its C and scale."""
    from featx.fit import fit_store
    from featx.sweep import run_sweep

    fit = fit_store(store, "logreg", train_flips=train_flips, tta=tta)
    picked = {k: fit.params[k] for k in ("C", "scale")}
    cv = run_sweep(store, ["logreg"], {k: [v] for k, v in picked.items()}, cv=5, n_jobs=2,
                   train_flips=train_flips, tta=tta)
    return {"test": round(fit.test["accuracy"], 4), "cv5": round(cv.rows[0]["cv_mean"], 4),
            "cv5_sd": round(cv.rows[0]["cv_std"], 4), **picked,
            "n": fit.split["n_train"] + fit.split["n_val"] + fit.split["n_test"],
            "n_test": fit.split["n_test"]}


def model_speed(sizes: list[int], n: int, rounds: int, weights: str | None) -> dict:
    """Median images/s of the VGG16 block5_pool/avg model alone at each size, interleaved."""
    import keras

    models = {}
    for s in sizes:
        m = keras.applications.VGG16(include_top=False, weights=None, input_shape=(s, s, 3),
                                     pooling="avg")
        if weights:
            m.load_weights(weights)
        batch = np.random.default_rng(0).normal(size=(n, s, s, 3)).astype(np.float32) * 50
        m.predict_on_batch(batch[:2])  # build and warm up
        models[s] = (m, batch)
    times: dict[int, list[float]] = {s: [] for s in sizes}
    for _ in range(rounds):
        for s, (m, batch) in models.items():
            t = time.perf_counter()
            for i in range(0, n, 16):
                m.predict_on_batch(batch[i:i + 16])
            times[s].append(time.perf_counter() - t)
    base = statistics.median(times[sizes[0]])
    return {str(s): {"images_per_s": round(n / statistics.median(t), 2),
                     "cost_vs_first": round(statistics.median(t) / base, 2)}
            for s, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=Path, nargs="*", default=[], help="one store per input size")
    ap.add_argument("--flips", type=Path, nargs="*", default=[], help="stores with mirrored vectors")
    ap.add_argument("--speed", type=int, default=0, help="images per size for the model timing")
    ap.add_argument("--sizes", default="224,288,352,448")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", help="real weights for the timing (speed does not depend on them)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from featx.backbones import cpu_description
    from featx.store import read_meta

    res: dict = {"machine": f"{cpu_description()}, load {os.getloadavg()[0]:.1f}"}
    for store in args.stores:
        res[store.name] = {"input_size": read_meta(store).get("input_size"), **accuracy(store)}
    for store in args.flips:
        res[store.name] = {mode: accuracy(store, *flags) for mode, flags in FLIP_MODES.items()}
    if args.speed:
        res["model_speed"] = model_speed([int(s) for s in args.sizes.split(",")], args.speed,
                                         args.rounds, args.weights)
    print(json.dumps(res, indent=2) if args.json else
          "\n".join(f"{k}: {v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
