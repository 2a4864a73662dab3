"""LiteRT int8 side by side: full-integer (calibrated on a representative dataset, what featx
exported before) against dynamic-range (int8 weights, activations quantised at run time: what
``featx export-model --format litert --int8`` writes now), against LiteRT float32.

    python3 scripts/bench_litert_int8.py --store /work/stores/pets-dev.h5 [--n-test 0] [--out /tmp/lite]

The bundle: logistic regression, C=10, l2, on the store's train part (averaging over flips when
the store has mirrored vectors), as in ``scripts/bench_export.py``. Speed: 3 interleaved rounds
over 16 decoded test photos in batches of 8, median images/s. Accuracy on the test part's photos
(``--n-test``: the first N; 0: all); ``max_diff``: the largest difference of a probability from
LiteRT float32's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import run_all, runners  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp/lite"))
    ap.add_argument("--n-test", type=int, default=0)
    ap.add_argument("--calibration", type=int, default=32)
    args = ap.parse_args()

    import tensorflow as tf

    from featx.backbones import cpu_description
    from featx.bundle import load_bundle
    from featx.decode import DecodeSettings, decode_files
    from featx.export_model import _quiet, build_pixel_model, calibration_batches, export_model
    from featx.fit import fit_store, load_split

    args.out.mkdir(parents=True, exist_ok=True)
    b = load_bundle(fit_store(args.store, "logreg", C=10.0, scale="l2", out=args.out / "logreg").bundle)
    files = {"litert float32": export_model(b.path, "litert", out=args.out / "f32.tflite").path,
             "litert int8 dynamic": export_model(b.path, "litert", int8=True,
                                                 out=args.out / "dynamic.tflite").path}
    batches = calibration_batches(b, n=args.calibration)
    model = build_pixel_model(b, flips=True)
    size = b.extractor["input_size"]
    model(np.zeros((1, size, size, 3), np.uint8))

    def representative():
        for batch in batches:
            for image in batch:
                yield [image[None]]

    with _quiet():
        model.export(str(args.out / "static.tflite"), format="litert", verbose=False,
                     optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative)
    files["litert int8 full-integer"] = args.out / "static.tflite"

    split = load_split(args.store)
    rows = split.rows["test"][:args.n_test or None]
    data_dir = Path(split.feats.meta["data_dir"])
    paths = [data_dir / split.feats.paths[i] for i in rows]
    labels = split.feats.labels[rows]
    pixels, ok, _ = decode_files(paths, DecodeSettings(size=size, resize=b.extractor["resize"]))
    assert len(ok) == len(paths)
    run = runners(files)
    res = {"cpu": cpu_description(), "load_before": os.getloadavg(), "n_test": len(paths),
           "flips": b.tta, "rows": {}}
    few, speed = pixels[:16], {name: [] for name in run}
    for _ in range(3):  # interleaved: a load change hits every model alike
        for name, f in run.items():
            t = time.perf_counter()
            run_all(f, few, 8)
            speed[name].append(len(few) / (time.perf_counter() - t))
    proba = {name: run_all(f, pixels, 8) for name, f in run.items()}
    base = statistics.median(speed["litert float32"])
    for name in run:
        res["rows"][name] = {
            "size_mb": round(files[name].stat().st_size / 1e6, 1),
            "images_per_s": round(statistics.median(speed[name]), 3),
            "vs_float32": round(statistics.median(speed[name]) / base, 2),
            "test_accuracy": round(float(np.mean(proba[name].argmax(1) == labels)), 4),
            "max_diff_vs_float32": round(float(np.abs(proba[name] - proba["litert float32"]).max()), 4)}
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
