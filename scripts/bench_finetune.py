"""What one fine-tuning epoch on cached maps costs against one pass of the full network, and how
map stores read and compress.

    nice -n 10 python3 scripts/bench_finetune.py --n 96 --rounds 3                  # epoch vs pass
    nice -n 10 python3 scripts/bench_finetune.py --n 96 --store MAPS.h5 --weights W  # real maps
    nice -n 10 python3 scripts/bench_finetune.py --layouts --store MAPS.h5 --rows 512

**epoch vs pass** (default). On the same ``--n`` images, side by side in one process, each method
timed ``--rounds`` times in turn (so a load change on a shared machine hits all of them alike;
medians reported):

* ``full pass``: VGG16 up to block5_pool + average pooling, ``predict_on_batch`` on preprocessed
  224x224 input already in memory: the model alone, what ``featx extract`` costs at best;
* ``epoch, tune 3``: one epoch of ``featx finetune`` training (block5's three convolutions + the
  head, forward and backward, Adam) through its own input pipeline (maps read from a float16 HDF5
  store a batch at a time, half of them mirrored);
* ``epoch, tune 1``: the same with only block5_conv3 trained (conv1 and conv2 frozen);
* ``block5 forward``: the block5 part's inference alone (what the head's start and predict cost).

Maps are the real ones of ``--store`` (its first ``--n`` rows) or random ReLU'd values of the same
shape; the weights are random unless ``--weights`` is given (speed does not depend on them).

**layouts** (``--layouts``): the first ``--rows`` maps of a real store written as contiguous float32,
contiguous float16 (featx's layout), and float16 in one-row chunks with HDF5's built-in filters
(shuffle + gzip at two levels, lzf): bytes a row, write time, and the time to read shuffled
batches of 32 rows (sorted within the batch, as finetune reads them) after the file is in the page
cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from featx.backbones import cpu_description

import h5py
import numpy as np

MAP_SHAPE = (14, 14, 512)


def load_maps(store: Path | None, n: int, seed: int = 0) -> np.ndarray:
    if store:
        with h5py.File(store, "r") as f:
            return f["features"][:n].astype(np.float32)
    rng = np.random.default_rng(seed)  # about half zeros, like ReLU'd, max-pooled maps
    return np.maximum(rng.normal(size=(n, int(np.prod(MAP_SHAPE)))), 0).astype(np.float32)


def map_store(path: Path, maps: np.ndarray):
    """A float16 map store of ``maps`` (two classes), as featx.finetune opens it."""
    from featx.finetune import MapStore

    y = np.arange(len(maps)) % 2
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=maps.astype(np.float16))
    return MapStore(path, {"store_dtype": "float16"}, MAP_SHAPE, y,
                    [f"{i:064x}" for i in range(len(maps))], [f"{i}.jpg" for i in range(len(maps))],
                    ["cat", "dog"])


def bench_epochs(args) -> dict:
    from featx.backbones import build_extractor, get_backbone
    from featx.finetune import FinetuneSettings, build_model, map_batches

    weights = args.weights or None
    bs, n = args.batch_size, args.n
    full = build_extractor(get_backbone("vgg16"), "block5_pool", "avg", weights, args.precision)
    convs = [layer.get_weights() for layer in full.layers if layer.name.startswith("block5_conv")]
    rng = np.random.default_rng(0)
    pixels = rng.normal(0, 60, size=(bs, 224, 224, 3)).astype(np.float32)  # one batch, reused
    tmp = tempfile.TemporaryDirectory(prefix="bench_finetune_")
    store = map_store(Path(tmp.name) / "maps.h5", load_maps(args.store, n))
    rows = np.arange(n)
    models = {tune: build_model(MAP_SHAPE, 2, convs, FinetuneSettings(
        tune=tune, batch_size=bs, precision=args.precision))[0] for tune in (3, 1)}
    pooled = build_model(MAP_SHAPE, 2, convs, FinetuneSettings(precision=args.precision))[1]

    def full_pass():
        for _ in range(0, n, bs):
            full.predict_on_batch(pixels)

    def epoch(tune):
        def run():
            data = map_batches(store, rows, bs, shuffle=True, augment="flip")
            models[tune].fit(data, epochs=1, verbose=0)
            data.close()
        return run

    def forward():
        data = map_batches(store, rows, bs, labelled=False)
        pooled.predict(data, verbose=0)
        data.close()

    methods = {"full pass": full_pass, "epoch, tune 3": epoch(3), "epoch, tune 1": epoch(1),
               "block5 forward": forward}
    for run in methods.values():  # trace every graph once before the clock starts
        run()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["full pass"])
    rows_out = [{"method": k, "median_s": round(statistics.median(v), 3),
                 "images_per_s": round(n / statistics.median(v), 2),
                 "vs_full_pass": round(statistics.median(v) / base, 3),
                 "all_s": [round(t, 3) for t in v]} for k, v in times.items()]
    return {"n": n, "batch_size": bs, "precision": args.precision, "rounds": args.rounds,
            "maps": str(args.store) if args.store else "random", "rows": rows_out}


LAYOUTS = {
    "contiguous float32": dict(dtype="float32"),
    "contiguous float16 (featx)": dict(dtype="float16"),
    "float16, row chunks": dict(dtype="float16", chunks=True),
    "float16, row chunks, shuffle+gzip 1": dict(dtype="float16", chunks=True, shuffle=True,
                                                compression="gzip", compression_opts=1),
    "float16, row chunks, shuffle+gzip 4": dict(dtype="float16", chunks=True, shuffle=True,
                                                compression="gzip", compression_opts=4),
    "float16, row chunks, lzf": dict(dtype="float16", chunks=True, compression="lzf"),
}


def bench_layouts(args) -> dict:
    maps = load_maps(args.store, args.rows)
    n, dim = maps.shape
    tmp = tempfile.TemporaryDirectory(prefix="bench_layouts_")
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.choice(n, 32, replace=False)) for _ in range(args.batches)]
    out = []
    for name, opts in LAYOUTS.items():
        opts = dict(opts)
        dtype = opts.pop("dtype")
        if opts.pop("chunks", False):
            opts["chunks"] = (1, dim)
        path = Path(tmp.name) / "layout.h5"
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("features", shape=(n, dim), dtype=dtype, **opts)
            for s in range(0, n, 64):
                ds[s:s + 64] = maps[s:s + 64].astype(dtype)
        write_s = time.perf_counter() - t0
        with h5py.File(path, "r") as f:  # warm the page cache, then time
            ds = f["features"]
            for idx in batches[:2]:
                ds[idx]
            t0 = time.perf_counter()
            for idx in batches:
                ds[idx].astype(np.float32)
            read_s = (time.perf_counter() - t0) / len(batches)
        size = path.stat().st_size
        out.append({"layout": name, "bytes_per_row": round(size / n), "ratio_vs_float32":
                    round(size / (n * dim * 4), 3), "write_mb_per_s": round(n * dim * 4 / 1e6 / write_s, 1),
                    "read_batch_ms": round(read_s * 1000, 2)})
        path.unlink()
    zeros = float((maps == 0).mean())
    return {"rows": n, "dim": dim, "store": str(args.store), "share_of_zeros": round(zeros, 3),
            "batches": len(batches), "layouts": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="images (maps) per epoch / pass")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--store", type=Path, help="a block4_pool map store (real maps)")
    ap.add_argument("--weights", help="a VGG16 weights file (default: random weights)")
    ap.add_argument("--layouts", action="store_true", help="compare store layouts instead")
    ap.add_argument("--rows", type=int, default=512, help="--layouts: maps written")
    ap.add_argument("--batches", type=int, default=40, help="--layouts: batches read")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    result = bench_layouts(args) if args.layouts else bench_epochs(args)
    result["machine"] = {"cpu": cpu_description(),
                         "cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
