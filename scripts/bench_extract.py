#!/usr/bin/env python3
"""Benchmark extraction: model-alone ceiling, featx end to end, and the tutorial's in-memory way.

Each measurement runs in a fresh subprocess, so its peak memory (RSS) is its own. Examples::

    # real photos, real weights: ceiling vs featx vs tutorial, float32 and bfloat16
    python scripts/bench_extract.py --data ../shared/data/pets-dev --limit 200 \
        --weights ../shared/weights/vgg16_notop_imagenet.weights.h5 --layer block5_pool

    # memory against image count, on generated 500x375 JPEGs, with a fast model
    python scripts/bench_extract.py --generate 1000,10000 --model mobilenet_v2 --layer out_relu \
        --weights none --precision float32 --skip-ceiling

    # both engines side by side (--engines local,ray): adds decode alone on Ray (all cores) and
    # featx extract --engine ray, with its driver RSS and Ray object store peaks
    python scripts/bench_extract.py --generate 1000 --engines local,ray --skip-reference

Prints a table (and --json FILE writes it) with machine, backend, image count and sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- children: one measurement each ----------------------------------------------------------


def child_ceiling(a) -> dict:
    """The model alone on random input already in memory: the most extraction can reach."""
    import numpy as np

    from featx.embed import Extractor

    ex = Extractor(_settings(a, a.precision))
    x = ex.preprocess(np.random.default_rng(0).integers(0, 256, (a.batch_size, 224, 224, 3)))
    ex.embed_preprocessed(x, a.batch_size)  # build + trace
    n, t0 = 0, time.perf_counter()
    while n < a.ceiling_images:
        ex.embed_preprocessed(x, a.batch_size)
        n += a.batch_size
    return {"images_per_s": n / (time.perf_counter() - t0), "images": n}


def child_decode(a) -> dict:
    """Read + decode + resize + preprocess alone, in featx's worker threads: the input ceiling."""
    from featx.discover import discover
    from featx.embed import Extractor
    from featx.reader import decoded_batches

    import numpy as np

    ex = Extractor(_settings(a, "float32"))
    ex.preprocess(np.zeros((1, 224, 224, 3), np.uint8))  # import Keras before the clock starts
    ds = discover(a.data)
    items = [(str(i), ds.root / p) for i, p in enumerate(ds.paths)]
    t0 = time.perf_counter()
    n = sum(len(b.hashes) for b in decoded_batches(items, ex.decode_settings, a.batch_size,
                                                   a.workers, prepare=ex.preprocess))
    return {"images_per_s": n / (time.perf_counter() - t0), "images": n}


def child_decode_ray(a) -> dict:
    """Decode alone in Ray tasks on every core (the Ray engine's decode step; pixels as uint8)."""
    from featx import engine_ray
    from featx.decode import DecodeSettings
    from featx.discover import discover

    ds = discover(a.data)
    items = [(str(i), ds.root / p) for i, p in enumerate(ds.paths)]
    with engine_ray.session() as ray, ObjectStorePeak(ray) as peak:
        batches = iter(engine_ray.decoded(ray, items, DecodeSettings(), a.batch_size).iter_batches(
            batch_size=None, batch_format="numpy"))
        first = next(batches)  # steady state: the clock starts once workers are up
        t0, n = time.perf_counter(), 0
        for b in batches:
            n += int((b["err"] == "").sum())
        seconds = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0)
    return {"images_per_s": n / seconds, "images": n + len(first["err"]), "cpus": cpus,
            **peak.result()}


def child_featx(a) -> dict:
    from featx.extract import extract

    with tempfile.TemporaryDirectory() as tmp, watched_ray(a.engine) as peak:
        t0 = time.perf_counter()
        r = extract(a.data, Path(tmp) / "b.h5", _settings(a, a.precision), batch_size=a.batch_size,
                    workers=a.workers, engine=a.engine)
        wall = time.perf_counter() - t0
    t = r.timings
    extra = {**peak.result(), "ray_workers": r.workers} if peak else {}
    return {"images_per_s": r.images_per_second, "images": r.n_embedded, "wall_s": wall,
            "decode_s": t["decode"], "model_s": t["model"], "wait_s": t["wait"],
            "write_s": t["write"], "hash_s": t["hash"], "load_model_s": t.get("load_model", 0.0),
            "connect_s": t.get("connect", 0.0), **extra}


@contextmanager
def watched_ray(engine: str):
    """For the Ray engine: a local Ray instance started here, its object store watched."""
    if engine != "ray":
        yield None
        return
    from featx import engine_ray

    with engine_ray.session() as ray, ObjectStorePeak(ray) as peak:
        yield peak


class ObjectStorePeak:
    """Peak use of Ray's object store (and spilled bytes), sampled every 0.25 s in a thread."""

    def __init__(self, ray) -> None:
        import threading

        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self._reply = get_memory_info_reply
        self.peak = self.spilled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            stats = self._reply(self._state).store_stats
            self.peak = max(self.peak, stats.object_store_bytes_used)
            self.spilled = max(self.spilled, stats.spilled_bytes_total)

    def __enter__(self) -> "ObjectStorePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        return {"object_store_peak_mb": self.peak / 2**20, "spilled_mb": self.spilled / 2**20}


def child_reference(a) -> dict:
    """The tutorial: every image into one array (keras load_img), then model.predict."""
    import numpy as np
    import keras

    from featx.discover import discover
    from featx.embed import Extractor

    ex = Extractor(_settings(a, a.precision))
    model = ex.model
    ds = discover(a.data)
    t0 = time.perf_counter()
    arrays = [keras.utils.img_to_array(keras.utils.load_img(ds.root / p, target_size=(224, 224)))
              for p in ds.paths]
    x = ex.preprocess(np.stack(arrays))
    del arrays
    model.predict(x, batch_size=a.batch_size, verbose=0)
    return {"images_per_s": len(ds.paths) / (time.perf_counter() - t0), "images": len(ds.paths)}


CHILDREN = {"decode": child_decode, "decode-ray": child_decode_ray, "ceiling": child_ceiling,
            "featx": child_featx, "reference": child_reference}


def _settings(a, precision: str):
    from featx.embed import ExtractorSettings

    return ExtractorSettings(model=a.model, layer=a.layer, pooling=a.pooling, weights=a.weights,
                             precision=precision)


# --- parent: data, runs, table -----------------------------------------------------------------


def generate(root: Path, n: int, size: tuple[int, int]) -> Path:
    """n distinct random-texture JPEGs of the given size in two classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for i in range(n):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        img = np.roll(base, shift=i * 7, axis=1)
        img[:8, :8] = (i % 256, (i // 256) % 256, i // 65536)  # every file distinct: no dedup
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=85)
    return root


def limited(src: Path, dest: Path, limit: int) -> Path:
    """A symlinked subset with ``limit`` images split over the classes."""
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    per = max(1, limit // len(classes))
    for c in classes:
        (dest / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[:per]:
            (dest / c.name / f.name).symlink_to(f.resolve())
    return dest


def run_child(kind: str, a, data: Path, precision: str, engine: str = "local") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--precision", precision,
           "--engine", engine,
           "--model", a.model, "--layer", a.layer, "--pooling", a.pooling, "--weights", a.weights,
           "--batch-size", str(a.batch_size), "--workers", str(a.workers),
           "--ceiling-images", str(a.ceiling_images)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import keras

    from featx.backbones import cpu_description

    return {"cpu": cpu_description(), "backend": keras.backend.backend(),
            "keras": keras.__version__, "python": platform.python_version()}


def _bound(r: dict, rows: list[dict]) -> None:
    """A featx row against the model-alone ceiling and decode alone: which stage bounds it."""
    def rate(method: str, same_precision: bool = True) -> float | None:
        return next((c["images_per_s"] for c in rows if c["method"] == method and c["data"] ==
                     r["data"] and (c["precision"] == r["precision"] or not same_precision)), None)

    ceiling = rate("ceiling")
    decode = rate("decode-ray" if r["method"].endswith("ray") else "decode", same_precision=False)
    line = f"{r['data']:>28} {r['precision']:>9} {r['method']}:"
    if ceiling:
        r["fraction_of_ceiling"] = r["images_per_s"] / ceiling
        line += f" {100 * r['fraction_of_ceiling']:.0f}% of the model-alone ceiling;"
    if decode:
        r["fraction_of_decode"] = r["images_per_s"] / decode
        line += f" {100 * r['fraction_of_decode']:.0f}% of decode alone;"
    if ceiling and decode:
        r["bound_by"] = "decode" if decode < ceiling else "model"
        line += f" bound by {r['bound_by']}"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="A data folder (one subfolder per class).")
    p.add_argument("--limit", type=int, help="Use at most this many images of --data.")
    p.add_argument("--generate", help="Comma-separated image counts of generated JPEGs.")
    p.add_argument("--size", default="500x375", help="Generated image size, WxH.")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--layer", default="block5_pool")
    p.add_argument("--pooling", default="avg")
    p.add_argument("--weights", default="none")
    p.add_argument("--precision", default="float32,bfloat16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ceiling-images", type=int, default=128)
    p.add_argument("--skip-ceiling", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--engines", default="local", help="featx extract engines: local, ray or both.")
    p.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="Also write the results here.")
    p.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.child:
        result = CHILDREN[a.child](a)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = []
        if a.data:
            data = limited(a.data, Path(tmp) / "subset", a.limit) if a.limit else a.data
            sets.append((str(a.data), data))
        for n in (int(x) for x in (a.generate or "").split(",") if x):
            w, h = (int(v) for v in a.size.split("x"))
            sets.append((f"generated {n} x {a.size}", generate(Path(tmp) / f"gen{n}", n, (w, h))))
        first = a.precision.split(",")[0]
        engines = a.engines.split(",")
        for label, data in sets:
            for precision in a.precision.split(","):
                ray = "ray" in engines
                runs = [(k, e) for k, e, skip in (
                    ("decode", "local", precision != first),
                    ("decode-ray", "ray", precision != first or not ray),
                    ("ceiling", "local", a.skip_ceiling),
                    *(("featx", e, False) for e in engines),
                    ("reference", "local", a.skip_reference)) if not skip]
                for kind, engine in runs:
                    r = run_child(kind, a, data, precision, engine)
                    method = f"{kind} --engine {engine}" if kind == "featx" else kind
                    rows.append({"data": label, "precision": precision, "method": method, **r})
                    store = (f", object store peak {r['object_store_peak_mb']:.0f} MB"
                             if "object_store_peak_mb" in r else "")
                    print(f"{label:>28} {precision:>9} {method:>20} {r['images_per_s']:7.2f} img/s "
                          f"{r['peak_rss_mb']:8.0f} MB peak  ({r['images']} images{store})",
                          flush=True)
    report = {"machine": machine(), "model": a.model, "layer": a.layer, "pooling": a.pooling,
              "weights": a.weights, "batch_size": a.batch_size, "workers": a.workers, "rows": rows}
    for r in rows:
        if r["method"].startswith("featx"):
            _bound(r, rows)
    print(json.dumps(report["machine"]))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
