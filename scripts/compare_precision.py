#!/usr/bin/env python3
"""Does --precision bfloat16 change what a classifier learns? Same photos, same split, two stores.

    python3 scripts/compare_precision.py DATA_DIR --weights W.weights.h5 [--out-dir features/]

Extracts DATA_DIR with VGG16 block5_pool/avg in float32 and in bfloat16 (reusing existing stores
of the same name), then fits logistic regression on each with the same derived split and prints
test accuracies and how close the vectors are (cosine similarity of matching rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from featx import load_features
from featx.embed import ExtractorSettings
from featx.extract import extract
from featx.fit import fit_store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--weights", required=True)
    p.add_argument("--out-dir", type=Path, default=Path("features"))
    p.add_argument("--clf", default="logreg")
    a = p.parse_args()
    result = {"data": str(a.data), "clf": a.clf}
    stores = {}
    for precision in ("float32", "bfloat16"):
        s = ExtractorSettings(layer="block5_pool", pooling="avg", weights=a.weights, precision=precision)
        out = a.out_dir / f"{a.data.resolve().name}_vgg16_block5_pool_avg_{precision}.h5"
        stores[precision] = extract(a.data, out, s).out
        fit = fit_store(stores[precision], a.clf)
        result[precision] = {"store": str(out), "val_accuracy": fit.metrics["val"]["accuracy"],
                             "test_accuracy": fit.metrics["test"]["accuracy"]}
    f32, bf16 = (load_features(stores[k]) for k in ("float32", "bfloat16"))
    assert f32.paths == bf16.paths
    cos = np.sum(f32.features * bf16.features, 1) / (
        np.linalg.norm(f32.features, axis=1) * np.linalg.norm(bf16.features, axis=1))
    result.update(n_images=f32.n, cosine_min=float(cos.min()), cosine_mean=float(cos.mean()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
