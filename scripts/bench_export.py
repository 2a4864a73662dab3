"""featx export-model: file size, images/s in each runtime and test accuracy, float32 vs int8,
against ``featx predict``, on this CPU.

    nice -n 5 python3 scripts/bench_export.py --store /work/stores/pets-dev.h5 \\
        --weights ../shared/weights/vgg16_notop_imagenet.weights.h5 --out /tmp/bench-export --json

A logistic regression (C=10, l2: what ``featx fit`` picks on pets-dev) is fitted on the store's
train part and saved as a bundle (averaging over flips when the store has mirrored vectors), then
exported to ONNX and LiteRT, float32 and int8 (calibrated on ``--calibration`` training photos).
The test part's photos are decoded once (featx.decode) and run through each runtime in batches of
``--batch-size``; ``featx predict`` runs on the same files (its decode included, as a user sees it;
at the store's precision). Speed: ``--rounds`` interleaved rounds over the first ``--n-speed``
photos (a load change hits every runtime alike), median images/s. ``max_diff``: the largest
difference of a probability from float32 ONNX's on the test photos. Results are written to
``OUT/bench_export.json`` after every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def runners(paths: dict[str, Path]) -> dict:
    """name -> f(pixels) -> probabilities, for each exported file."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for name, path in paths.items():
        if path.suffix == ".onnx":
            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 2
            s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            out[name] = lambda x, s=s: s.run(["probabilities"], {"pixels": x})[0]
        else:
            runner = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 2) \
                .get_signature_runner("serving_default")
            out[name] = lambda x, r=runner: r(pixels=x)["probabilities"]
    return out


def run_all(f, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([f(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--weights", default=None, help="the store's weights file, if it moved")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-export"))
    ap.add_argument("--n-test", type=int, default=0, help="test photos (0: all)")
    ap.add_argument("--n-speed", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from featx.backbones import cpu_description
    from featx.bundle import load_bundle
    from featx.decode import DecodeSettings, decode_files
    from featx.export_model import calibration_batches, export_model
    from featx.fit import fit_store, load_split
    from featx.predict import predict

    args.out.mkdir(parents=True, exist_ok=True)
    fit = fit_store(args.store, "logreg", C=10.0, scale="l2", out=args.out / "logreg")
    b = load_bundle(fit.bundle)
    calibration = calibration_batches(b, n=args.calibration)
    files, sizes, export_s = {}, {}, {}
    for fmt, int8 in (("onnx", False), ("onnx", True), ("litert", False), ("litert", True)):
        name = f"{fmt} {'int8' if int8 else 'float32'}"
        r = export_model(b.path, fmt, weights=args.weights, int8=int8,
                         calibration=calibration if int8 else None)
        files[name], sizes[name], export_s[name] = r.path, r.size_bytes, r.seconds

    split = load_split(args.store)
    rows = split.rows["test"][:args.n_test or None]
    data_dir = Path(split.feats.meta["data_dir"])
    paths = [data_dir / split.feats.paths[i] for i in rows]
    labels = split.feats.labels[rows]
    pixels, ok, _ = decode_files(paths, DecodeSettings(size=b.extractor["input_size"],
                                                       resize=b.extractor["resize"]))
    assert len(ok) == len(paths)
    run = runners(files)
    result = {"cpu": cpu_description(), "store": str(args.store), "n_test": len(paths),
              "flips": b.tta, "batch_size": args.batch_size, "n_speed": args.n_speed,
              "predict_precision": b.extractor.get("precision"),
              "bundle_test_accuracy": (b.info.get("metrics") or {}).get("test", {}).get("accuracy"),
              "rows": {name: {"size_mb": round(sizes[name] / 1e6, 1),
                              "export_s": round(export_s[name], 1)} for name in run}}
    result["rows"]["featx predict"] = {}
    log = args.out / "bench_export.json"

    def save(stage: str) -> None:  # after every stage: a slow run still leaves its numbers
        result["load"], result["done"] = os.getloadavg(), stage
        log.write_text(json.dumps(result, indent=2))

    extractor = b.reader(args.weights)
    few = pixels[:args.n_speed]
    speed: dict[str, list[float]] = {name: [] for name in [*run, "featx predict"]}
    for _ in range(args.rounds):  # interleaved: a load change hits every runtime alike
        for name, f in run.items():
            t = time.perf_counter()
            run_all(f, few, args.batch_size)
            speed[name].append(len(few) / (time.perf_counter() - t))
        t = time.perf_counter()
        predict(b, paths[:args.n_speed], extractor=extractor, batch_size=args.batch_size)
        speed["featx predict"].append(len(few) / (time.perf_counter() - t))
    base = statistics.median(speed["onnx float32"])
    for name, v in speed.items():
        result["rows"][name].update(images_per_s=round(statistics.median(v), 2),
                                    speed_vs_onnx_float32=round(statistics.median(v) / base, 2))
    save("speed")

    proba = {}
    for name in ("onnx int8", "litert int8", "onnx float32", "litert float32", "featx predict"):
        if name == "featx predict":
            report = predict(b, paths, weights=args.weights, extractor=extractor,
                             batch_size=args.batch_size)
            p = np.array([[q.probabilities[c] for c in b.class_names] for q in report.predictions])
        else:
            p = run_all(run[name], pixels, args.batch_size)
        proba[name] = p
        row = result["rows"][name]
        row["test_accuracy"] = round(float(np.mean(p.argmax(axis=1) == labels)), 4)
        if "onnx float32" in proba:
            for other, q in proba.items():
                result["rows"][other]["max_diff_vs_onnx_float32"] = float(
                    np.abs(q - proba["onnx float32"]).max())
        save(name)
    print(json.dumps(result, indent=2) if args.json else "\n".join(
        f"{k}: {v}" for k, v in result["rows"].items()))


if __name__ == "__main__":
    main()
