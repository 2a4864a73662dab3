"""engine_ray: the extraction loop on Ray. The driver keeps the store; Ray only moves work.

``featx extract --engine ray`` replaces the local loop's decode threads and model call, nothing
else: the driver (this process) still discovers and hashes the files, decides what content is new,
and owns the :class:`featx.writer.StoreWriter` (part files, merges, lock, resume). Ray Data runs

* **decode** in CPU tasks: :func:`featx.reader.decode_batch`, the local engine's unit of work, on
  one batch of (hash, path) each; uint8 pixels travel, failures come back as reasons;
* **embed** in an actor pool: each actor builds the :class:`featx.embed.Extractor` once from the
  store's settings (``num_gpus`` per actor when asked), applies ``preprocess_input`` and the model;
  two calls per actor may overlap, so one batch is preprocessed while the previous one is on the
  device, and the model itself runs one batch at a time;

and the vectors stream back to the driver in bounded batches (Ray Data's streaming executor and its
backpressure), yielded as :class:`featx.embed.EmbeddedBatch` es to extract's one write loop,
exactly as the local engine's: this module never writes. The two steps ask for different
resources (decode 1 CPU, embed :data:`EMBED_CPUS`) so Ray Data never fuses decoding into the model
actors. Image files and a weights file must be readable at the same path on every node.

Killed workers are Ray's business (actors restart and their tasks are retried); whatever Ray cannot
recover from stops the run with one :class:`~featx.errors.FeatxError`, and the driver checks that
every image it sent came back, so a store is never silently short.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from featx import reader
from featx.decode import DecodeSettings
from featx.errors import FeatxError

EXTRA = "pip install 'featx[ray]'"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception): ")
EMBED_CPUS = 0.5  # per model actor: not 1, so that Ray Data keeps decoding in separate CPU tasks

Progress = Callable[[str, int, int], None]


def import_ray():
    """The ``ray`` module, or one clear line naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise FeatxError(f"`engine`=ray needs Ray, an optional extra: {EXTRA}") from None
    return ray


def check_address(address: str | None) -> None:
    """Fail fast when ``address`` (``host:port`` or ``ray://host:port``) does not answer."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except ValueError:
        raise FeatxError(f"`address`={address} is not auto, HOST:PORT or ray://HOST:PORT") from None
    except OSError as e:
        raise FeatxError(f"cannot reach a Ray cluster at `address`={address}: "
                         f"{e.strerror or e}") from None


@contextmanager
def session(address: str | None = None) -> Iterator[Any]:
    """Ray, connected: this process's connection if it has one, else the cluster at ``address``,
    else Ray's own choice (``RAY_ADDRESS``, a cluster started on this node with ``ray start``, or
    a new local instance). A connection made here is closed after."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    check_address(address)
    quiet_ray()
    try:
        with _captured():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise FeatxError(f"cannot connect to a Ray cluster at `address`={address}: "
                         f"{_reason(e)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet_ray() -> None:
    """Ray's start-up notices are not for featx's users (errors still surface as exceptions)."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # C++ notices, once per actor pool
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def _captured():
    """Ray's C++ start-up lines on descriptor 2, filtered like TensorFlow's (CLI runs only)."""
    from featx import quiet as q

    return q.stderr_captured() if os.environ.get(q.QUIET_ENV) else nullcontext()


def configure_ray_data(ray, object_store_bytes: float | None = None) -> None:
    """Ray Data settings for featx: no progress bars of its own, order not kept, no logs (its
    errors reach featx as exceptions, and the user as one line), an object store budget."""
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        object_store_memory=object_store_bytes)


def object_store_budget(cpus: float, actors: int, batch_bytes: int) -> float:
    """Decoded batches Ray Data may hold at once: two per decoding CPU and four per model actor
    (at least 128 MiB). It grows with the cluster, never with the number of images; without it,
    decoding that outruns the model queues up to a share of the whole object store."""
    return max(128 * 2**20, 2 * (cpus + 2 * actors) * batch_bytes)


# -- the two steps, run by Ray ----------------------------------------------------------------


def decode_step(batch: dict[str, np.ndarray], settings: DecodeSettings) -> dict[str, np.ndarray]:
    """A Ray task: decode one batch of files with :func:`featx.reader.decode_batch`.

    Every input row comes out: decoded ones first, then failures (zero pixels, a reason in ``err``).
    """
    items = [(str(h), Path(p)) for h, p in zip(batch["hash"], batch["path"])]
    b = reader.decode_batch(items, settings)
    n, n_ok = len(items), len(b.hashes)
    pixels = np.zeros((n, settings.size, settings.size, 3), np.uint8)
    if n_ok:
        pixels[:n_ok] = b.pixels
    return {"hash": np.array(b.hashes + [h for h, _ in b.failures], dtype=object),
            "err": np.array([""] * n_ok + [r for _, r in b.failures], dtype=object),
            "pixels": pixels, "decode_s": np.full(n, b.seconds / max(n, 1))}


class EmbedWorker:
    """A Ray actor: the store's Extractor, built once; preprocess + model on decoded batches.

    ``vec`` holds the images' vectors and, with ``augment="flip"``, ``flip`` their mirror images';
    ``mirrored_only`` (a store gaining flips): ``vec`` holds the mirror images' vectors only."""

    def __init__(self, settings, weights_id: str, batch_size: int, keras_backend: str,
                 gpus: float, mirrored_only: bool = False) -> None:
        import ray

        t0 = time.perf_counter()
        if "keras" not in sys.modules:  # the store's Keras backend, whatever the node's default
            os.environ["KERAS_BACKEND"] = keras_backend
        if 0 < gpus < 1:  # sharing a device: allocate GPU memory as needed, not all at once
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        from featx.embed import Extractor

        self.extractor = Extractor(settings, weights_id=weights_id)
        self.extractor.warm_up(batch_size)
        self.dim = self.extractor.dim
        self.batch_size = batch_size
        self.mirrored_only = mirrored_only
        self.flips = settings.augment == "flip" and not mirrored_only
        self.lock = threading.Lock()
        ids = ray.get_gpu_ids()
        self.name = f"{ray.util.get_node_ip_address()} pid {os.getpid()}" + (
            f" GPU {','.join(map(str, ids))}" if ids else "")
        self.load_s = time.perf_counter() - t0
        self.idle_since = 0.0  # end of the last model call

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["err"] == ""
        n = len(ok)
        vectors = np.zeros((n, self.dim), np.float32)
        flipped = np.zeros((n, self.dim), np.float32) if self.flips else None
        pixels = batch["pixels"][ok][:, :, ::-1] if self.mirrored_only else batch["pixels"][ok]
        x = self.extractor.preprocess(pixels) if ok.any() else None
        with self.lock:  # one model call at a time; preprocessing overlaps it
            t0 = time.perf_counter()
            wait_s = t0 - self.idle_since if self.idle_since else 0.0  # the model starved
            if x is not None and self.flips:
                vectors[ok], flipped[ok] = self.extractor.embed_batch(x, self.batch_size)
            elif x is not None:
                vectors[ok] = self.extractor.embed_preprocessed(x, self.batch_size)
            self.idle_since = time.perf_counter()
            model_s = self.idle_since - t0
            load_s, self.load_s = self.load_s, 0.0  # reported once, with the first batch
        per_row = {f"{k}_s": np.full(n, v / n) for k, v in
                   (("model", model_s), ("wait", wait_s), ("load", load_s))}
        if self.flips:
            per_row["flip"] = flipped
        return {"hash": batch["hash"], "err": batch["err"], "vec": vectors,
                "worker": np.full(n, self.name, dtype=object), "decode_s": batch["decode_s"],
                **per_row}


# -- the driver ---------------------------------------------------------------------------------


def plan_workers(ray, num_workers: int | None, gpus_per_worker: float | None) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU by default, one CPU actor without GPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if num_workers is None:
        num_workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1
    if num_workers * gpus_per_worker > gpus:
        raise FeatxError(f"{num_workers} workers x {gpus_per_worker:g} GPUs (`num_workers`, "
                         f"`gpus_per_worker`) need {num_workers * gpus_per_worker:g} GPUs; the "
                         f"Ray cluster has {gpus:g}")
    if num_workers * EMBED_CPUS + 1 > cpus:
        raise FeatxError(f"{num_workers} workers (`num_workers`) need {num_workers * EMBED_CPUS:g} "
                         f"CPUs plus one to decode; the Ray cluster has {cpus:g}")
    return num_workers, gpus_per_worker


def embedded_batches(ray, todo: list[reader.Item], extractor, batch_size: int, num_workers: int,
                     gpus_per_worker: float, mirrored_only: bool = False):
    """The Ray Data pipeline: (hash, path) -> decode tasks -> embed actors -> numpy batches."""
    import keras

    size = extractor.decode_settings.size
    cpus = ray.cluster_resources().get("CPU", 1.0)
    ds = decoded(ray, todo, extractor.decode_settings, batch_size,
                 object_store_budget(cpus, num_workers, batch_size * size * size * 3))
    ds = ds.map_batches(
        EmbedWorker, batch_size=batch_size, batch_format="numpy", num_cpus=EMBED_CPUS,
        num_gpus=gpus_per_worker,
        compute=ray.data.ActorPoolStrategy(size=num_workers, max_concurrent_calls_per_actor=2,
                                           enable_true_multi_threading=True),
        fn_constructor_kwargs={"settings": extractor.settings, "weights_id": extractor.weights_id,
                               "batch_size": batch_size, "keras_backend": keras.backend.backend(),
                               "gpus": gpus_per_worker, "mirrored_only": mirrored_only})
    return ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


def decoded(ray, todo: list[reader.Item], settings: DecodeSettings, batch_size: int,
            object_store_bytes: float | None = None):
    """The decode step alone, as a Ray Dataset (one input block per batch of files)."""
    configure_ray_data(ray, object_store_bytes)
    rows = [{"hash": h, "path": str(p)} for h, p in todo]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
    return ds.map_batches(decode_step, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                          fn_kwargs={"settings": settings})


def embed(todo: list[reader.Item], extractor, batch_size: int, address: str | None = None,
          num_workers: int | None = None, gpus_per_worker: float | None = None,
          mirrored_only: bool = False) -> Iterator:
    """The Ray engine: embed ``todo`` on Ray and yield :class:`featx.embed.EmbeddedBatch` es
    (each content once, a retry's repeats dropped); it never writes. ``mirrored_only``: the
    mirror images of content the store has (it gains flips). FeatxError when Ray stops, or when
    not every image sent came back."""
    from featx.embed import EmbeddedBatch

    t0 = time.perf_counter()
    seen: set[str] = set()  # content hashes back, vectors or failures
    with session(address) as ray:
        actors, gpus = plan_workers(ray, num_workers, gpus_per_worker)
        connect = time.perf_counter() - t0
        try:
            for b in embedded_batches(ray, todo, extractor, batch_size, actors, gpus,
                                      mirrored_only):
                new = np.array([h not in seen for h in b["hash"]], dtype=bool)
                ok, failed = new & (b["err"] == ""), new & (b["err"] != "")
                seen.update(b["hash"][new].tolist())
                hashes = b["hash"][ok].tolist()
                seconds = {"decode": float(b["decode_s"].sum()), "model": float(b["model_s"].sum()),
                           "wait": float(b["wait_s"].sum()), "connect": connect}
                if b["load_s"].any():
                    seconds["load"] = float(b["load_s"].sum())
                connect = 0.0
                workers: dict[str, int] = {}
                for name in b["worker"][ok]:
                    workers[name] = workers.get(name, 0) + 1
                yield EmbeddedBatch(
                    hashes, b["vec"][ok] if hashes else None,
                    list(zip(b["hash"][failed].tolist(), b["err"][failed].tolist())),
                    b["flip"][ok] if "flip" in b and hashes else None, seconds, workers)
        except ray.exceptions.RayError as e:
            raise FeatxError(f"the Ray run stopped: {_reason(e)}; the vectors committed so far "
                             f"are kept, run the same command to resume") from None
    missing = len({h for h, _ in todo} - seen)
    if missing:
        raise FeatxError(f"Ray returned {len(todo) - missing} of {len(todo)} images; the vectors "
                         f"committed so far are kept, run the same command to resume")


def _reason(e: BaseException) -> str:
    """What went wrong, in one line: a FeatxError's message, else the innermost error line of
    Ray's (multi-line, coloured) report, else its first line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, FeatxError):
        return str(cause)
    lines = [ln.strip() for ln in ANSI.sub("", str(e)).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ERROR_LINE.match(ln)]
    if errors:
        return ERROR_LINE.sub("", errors[-1]) if "FeatxError" in errors[-1] else errors[-1]
    return lines[0] if lines else type(e).__name__
