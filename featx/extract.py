"""extract: the loop. DATA_DIR -> reader -> model -> writer -> FILE.h5, with per-stage timings.

The three seams are :mod:`featx.reader` (discover, hash, what is new, decode in a bounded window),
:class:`featx.embed.Extractor` (the model) and :class:`featx.writer.StoreWriter` (part files,
merges, lock). This module only connects them and times each stage:

=============  ===================================================================================
``hash``       reading every file once and keying it by content (so reruns cost no model time)
``decode``     worker threads reading and decoding (overlapped with the model)
``wait``       the model waiting for decoded input (0 when decoding keeps up)
``model``      the backbone on the main thread
``write``      committing part files and merging them into the store
=============  ===================================================================================

An **engine** turns the content to embed into :class:`featx.embed.EmbeddedBatch` es (hashes,
vectors, the mirror images' vectors, decode failures, seconds by stage) and never writes: the local
engine (:func:`local_batches`: decode threads, the model on this thread) or Ray's
(:func:`featx.engine_ray.embed`: decode tasks, an actor pool). One loop here,
:func:`write_batches`, hands every batch to the writer and owns the timings; scan, what is new and
the writer stay in this process whatever the engine. With Ray, ``decode`` and ``model`` are summed
over its tasks and actors (``wait``: the actors' models idle between batches), ``connect`` is
joining (or starting) Ray, and ``load_model`` the slowest actor's model build.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from featx import reader
from featx.backbones import check_precision, get_backbone
from featx.discover import discover
from featx.embed import EmbeddedBatch, Extractor, ExtractorSettings  # noqa: F401  (the contract)
from featx.errors import FeatxError
from featx.files import check_output, free_bytes, human_bytes
from featx.store import estimate_bytes, parts_dir_for
from featx.writer import StoreWriter

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) during ``extract``: what was kept, and where."""

    def __init__(self, out: Path, n_kept: int, n_new: int) -> None:
        super().__init__(f"interrupted: {n_kept} vectors kept in {out}")
        self.out, self.n_kept, self.n_new = out, n_kept, n_new


@dataclass
class ExtractReport:
    out: Path
    n_images: int  # rows in the store: n_embedded + n_reused + n_duplicates
    n_embedded: int  # distinct contents run through the model in this run
    n_reused: int  # rows whose content was stored before (the store, an interrupted run's parts)
    skipped: list[tuple[str, str]]  # (path, reason)
    dim: int
    wrote: bool  # False when the store was already complete
    timings: dict[str, float] = field(default_factory=dict)
    n_mirrored: int = 0  # stored images whose mirror image was embedded now (a store gaining flips)
    n_duplicates: int = 0  # rows whose content an earlier row has (no vector of their own)
    n_removed: int = 0  # rows of the previous store whose file and content are gone
    n_renamed: int = 0  # rows of the previous store whose content is now at another path
    engine: str = "local"
    workers: dict[str, int] = field(default_factory=dict)  # Ray: images embedded per actor

    @property
    def images_per_second(self) -> float:
        busy = self.timings.get("embed_wall", 0.0)
        return self.n_embedded / busy if busy > 0 else 0.0

    def as_dict(self) -> dict:
        """The JSON document of ``featx extract --json``."""
        return {
            "out": str(self.out), "n_images": self.n_images, "n_embedded": self.n_embedded,
            "n_reused": self.n_reused, "n_duplicates": self.n_duplicates,
            "n_removed": self.n_removed, "n_renamed": self.n_renamed,
            "n_mirrored": self.n_mirrored,
            "n_skipped": len(self.skipped), "dim": self.dim,
            "wrote": self.wrote, "images_per_second": round(self.images_per_second, 2),
            "timings": self.timings, "engine": self.engine, "workers": self.workers,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def default_output(data_dir: Path, settings: ExtractorSettings, folder: Path = Path("features")) -> Path:
    """features/<dataset>_<model>_<layer>[_<pooling>][_<size>][_flip][_mixed_<precision>][_float16].h5:
    one file per data set and settings (the parts at their defaults are left out; a 16-bit
    compute precision is named by its Keras policy, apart from a float16 store)."""
    s = settings.normalized()
    backbone = get_backbone(s.model)
    name = f"{data_dir.resolve().name}_{s.model}_{s.layer}"
    if s.layer in backbone.maps:
        name += f"_{s.pooling}"
    if s.input_size != backbone.input_size:
        name += f"_{s.input_size}"
    if s.augment != "none":
        name += f"_{s.augment}"
    if s.precision != "float32":
        name += f"_{check_precision(s.precision)}"  # mixed_bfloat16, mixed_float16
    if s.store_dtype != "float32":
        name += f"_{s.store_dtype}"
    return folder / f"{name}.h5"


def store_for(data_dir: Path, settings: ExtractorSettings, folder: Path = Path("features")) -> Path:
    """The default store of ``data_dir`` for ``settings``; with ``augment="flip"``, the store that
    differs only by ``augment`` when the ``_flip`` one was never started, so that it gains the
    mirror images' vectors (only those are embedded) instead of a second store from scratch."""
    out = default_output(data_dir, settings, folder)
    if settings.augment == "none" or out.exists() or parts_dir_for(out).exists():
        return out
    plain = default_output(data_dir, replace(settings, augment="none"), folder)
    return plain if plain.exists() else out


def extract(
    data_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    settings: ExtractorSettings = ExtractorSettings(),
    batch_size: int = 32,
    workers: int = 2,
    commit_every: int = 256,
    on_progress: Progress | None = None,
    strict: bool = False,
    on_warning: Callable[[str], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float | None = None,
    min_classes: int = 2,
    stop: threading.Event | None = None,
) -> ExtractReport:
    """Embed every image under ``data_dir`` into the store ``out``, resuming where it stands.

    Before any work the store's final size is estimated against the free space: too little is a
    warning (``on_warning``), or with ``strict`` a FeatxError. Ctrl-C raises :class:`Interrupted`,
    which says how many vectors were kept (committed vectors always are).

    ``engine="ray"`` decodes and embeds on Ray (the cluster at ``address``, else a local instance)
    with ``num_workers`` model actors of ``gpus_per_worker`` GPUs each (default: one per GPU).
    ``min_classes``: class folders ``data_dir`` must have (1 for photos to be labelled).
    ``stop``: once set (the CLI sets it on Ctrl-C or SIGTERM), the batch on the model is finished,
    every vector embedded so far is committed (however few) and :class:`Interrupted` is raised.
    """
    for name, value in (("batch_size", batch_size), ("workers", workers),
                        ("commit_every", commit_every), ("num_workers", num_workers or 1)):
        if value < 1:
            raise FeatxError(f"`{name}` must be at least 1, got {value}")
    _check_engine(engine, address, num_workers, gpus_per_worker)
    progress = on_progress or (lambda stage, done, total: None)
    extractor = Extractor(settings)
    t_start = time.perf_counter()
    dataset = discover(data_dir, min_classes, unlabelled=True)
    if not dataset.labelled and on_warning:
        on_warning(f"{dataset.root} has no class subfolders: an unlabelled store of its "
                   f"{len(dataset.paths)} images (neighbors, map, duplicates and export work on "
                   f"it; fit needs one subfolder per class)")
    out = Path(out) if out else store_for(dataset.root, extractor.settings)
    check_output(out, "the feature store")
    check_space(out, len(dataset.paths), extractor, strict, on_warning)
    _hint_size(dataset, extractor, on_warning)
    scan = reader.scan(dataset, workers, progress)
    timings = {"hash": time.perf_counter() - t_start, "decode": 0.0, "wait": 0.0, "model": 0.0}
    with StoreWriter(out, extractor.meta, commit_every, listing=scan) as writer:
        before = _stored_rows(out)
        todo = scan.new_content(writer, writer.failed)
        todo_mirrored = [item for item in scan.content() if writer.needs_flipped(item[0])]
        pool: dict[str, int] = {}
        # a few new images are one model call of their own size, not one padded to a full batch
        # after a warm-up batch: adding one photo to a store ran 64 images (BENCHMARKS.md)
        n_most = max(len(todo), len(todo_mirrored))
        batch_size = min(batch_size, n_most) if n_most else batch_size
        try:
            if n_most and engine == "local":
                t0 = time.perf_counter()
                if n_most > batch_size:  # builds the model; timings then measure steady state
                    extractor.warm_up(batch_size)
                else:
                    extractor.model  # noqa: B018  (builds it: one call follows)
                timings["load_model"] = time.perf_counter() - t0
            for items, mirrored_only in ((todo, False), (todo_mirrored, True)):
                if stop is not None and stop.is_set():
                    break
                if not items:
                    continue
                if engine == "ray":
                    from featx import engine_ray

                    batches = engine_ray.embed(items, extractor, batch_size, address, num_workers,
                                               gpus_per_worker, mirrored_only)
                else:
                    batches = local_batches(items, extractor, batch_size, workers, mirrored_only)
                pool.update(write_batches(batches, writer, len(items), timings, progress,
                                          "mirror" if mirrored_only else "embed", mirrored_only,
                                          stop))
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            wrote = writer.finish()
        except KeyboardInterrupt:
            writer.commit()  # what is embedded is kept, however few
            kept = writer.kept()
            raise Interrupted(out, kept, max(0, kept - writer.n_at_open)) from None
        rows = scan.rows(writer)
        timings["write"] = writer.seconds
        n_failed = sum(1 for h, _ in todo if h in writer.failed)
        skipped = [(p, r) for p, r, _ in scan.skipped(writer.failed)]
        dim = writer.dim or 0
    timings["total"] = time.perf_counter() - t_start
    n_embedded = len(todo) - n_failed
    n_duplicates = len(rows.hashes) - len(set(rows.hashes))
    n_removed, n_renamed = _gone(before, rows)
    return ExtractReport(out=out, n_images=len(rows.paths), n_embedded=n_embedded,
                         n_reused=len(rows.paths) - n_embedded - n_duplicates, skipped=skipped,
                         dim=dim, wrote=wrote, timings={k: round(v, 3) for k, v in timings.items()},
                         n_mirrored=len(todo_mirrored), n_duplicates=n_duplicates,
                         n_removed=n_removed, n_renamed=n_renamed, engine=engine, workers=pool)


def _stored_rows(out: Path) -> dict[str, str]:
    """path -> content hash of the rows the store holds before this run; none when it is new."""
    if not out.exists():
        return {}
    from featx.store import open_store, read_rows

    with open_store(out) as f:
        rows = read_rows(f)
    return dict(zip(rows.paths, rows.hashes))


def _gone(before: dict[str, str], rows) -> tuple[int, int]:
    """(removed, renamed): earlier rows whose path is gone, split by whether their content is
    now at a new path (a rename or a move: the same content, no model time) or gone too."""
    now = set(rows.paths)
    new_hashes = {h for p, h in zip(rows.paths, rows.hashes) if p not in before}
    gone = [h for p, h in before.items() if p not in now]
    renamed = sum(h in new_hashes for h in gone)
    return len(gone) - renamed, renamed


def _check_engine(engine: str, address: str | None, num_workers: int | None,
                  gpus_per_worker: float | None) -> None:
    """Before any work: a known engine, Ray importable and its address answering."""
    if engine == "local":
        for name, value in (("address", address), ("num_workers", num_workers),
                            ("gpus_per_worker", gpus_per_worker)):
            if value is not None:
                raise FeatxError(f"`{name}` applies to `engine`=ray only")
        return
    if engine != "ray":
        raise FeatxError(f"unknown `engine` {engine!r}; choose local or ray")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise FeatxError(f"`gpus_per_worker` must be at least 0, got {gpus_per_worker}")
    from featx import engine_ray

    engine_ray.import_ray()
    engine_ray.check_address(address)


def local_batches(todo: list[reader.Item], extractor: Extractor, batch_size: int, workers: int,
                  mirrored_only: bool = False) -> Iterator[EmbeddedBatch]:
    """The local engine: decode in ``workers`` threads (a bounded window), the model on this
    thread. ``mirrored_only``: embed the mirror images of content the store has (it gains
    flips)."""
    prepare = ((lambda x: extractor.preprocess(x[:, :, ::-1])) if mirrored_only
               else extractor.preprocess)
    batches = reader.decoded_batches(todo, extractor.decode_settings, batch_size, workers, prepare)
    while True:
        t_wait = time.perf_counter()
        batch = next(batches, None)
        wait = time.perf_counter() - t_wait
        if batch is None:
            return
        t_model = time.perf_counter()
        vectors = flipped = None
        if batch.hashes and mirrored_only:
            vectors = extractor.embed_preprocessed(batch.pixels, batch_size)
        elif batch.hashes:
            vectors, flipped = extractor.embed_batch(batch.pixels, batch_size)
        seconds = {"decode": batch.seconds, "wait": wait, "model": time.perf_counter() - t_model}
        yield EmbeddedBatch(batch.hashes, vectors, batch.failures, flipped, seconds)


def write_batches(batches: Iterable[EmbeddedBatch], writer: StoreWriter, total: int,
                  timings: dict[str, float], progress: Progress, stage: str = "embed",
                  mirrored_only: bool = False, stop: threading.Event | None = None
                  ) -> dict[str, int]:
    """The one loop that writes: every batch an engine yields to the writer, its seconds into
    ``timings``, progress after each; returns the images embedded per worker. Once ``stop`` is
    set, it stops after the batch in hand. ``embed_wall``: the loop's wall time less the
    workers' model builds (``load``, in parallel: the slowest)."""
    done, start, loads, pool = 0, time.perf_counter(), [], {}
    progress(stage, 0, total)
    try:
        for batch in batches:
            if mirrored_only:
                writer.add_flipped(batch.hashes, batch.vectors, batch.failures)
            else:
                writer.add(batch.hashes, batch.vectors, batch.failures, flipped=batch.flipped)
            for key, value in batch.seconds.items():
                if key == "load":
                    loads.append(value)
                else:
                    timings[key] = timings.get(key, 0.0) + value
            for name, n in batch.workers.items():
                pool[name] = pool.get(name, 0) + n
            done += len(batch)
            progress(stage, done, total)
            if stop is not None and stop.is_set():
                break
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()  # a generator engine lets go of its threads or its Ray session now
    load = max(loads, default=0.0)
    if loads:
        timings["load_model"] = timings.get("load_model", 0.0) + load
    timings["embed_wall"] = timings.get("embed_wall", 0.0) + time.perf_counter() - start - load
    return pool


def _hint_size(dataset, extractor: Extractor, on_warning: Callable[[str], None] | None) -> None:
    """Say so when the photos are much larger than the input: a larger input keeps detail."""
    s = extractor.settings
    size = reader.typical_size([dataset.root / p for p in dataset.paths])
    if on_warning and size and min(size) >= 1.5 * s.input_size and s.layer in extractor.backbone.maps:
        on_warning(f"the photos are about {size[0]}x{size[1]} pixels and are resized to "
                   f"{s.input_size}x{s.input_size}; a larger `input_size` (e.g. 352) keeps more "
                   f"detail (see the README: input size and flips)")


def check_space(out: Path, n_files: int, extractor: Extractor, strict: bool = False,
                on_warning: Callable[[str], None] | None = None) -> int:
    """Compare the free space with what the run needs at most: the final store, written next to
    the old one, plus the part files of new vectors. Returns the bytes needed."""
    s, dim = extractor.settings, extractor.expected_dim
    copies = 2 if s.augment == "flip" else 1
    final = estimate_bytes(n_files, dim, np.dtype(s.store_dtype).itemsize, copies)
    stored = out.stat().st_size if out.is_file() else 0
    needed = final + max(0, final - stored)  # new store + parts of the new vectors, at most
    free = free_bytes(out)
    if needed > free:
        message = (f"{out} needs about {human_bytes(needed)} of free space while it is written "
                   f"({n_files} images x {dim} dims, and the store is rewritten next to the old "
                   f"one at the end); {human_bytes(free)} are free")
        if strict:
            raise FeatxError(message)
        if on_warning:
            on_warning(message + "; continuing (a full disk stops the run cleanly and keeps what "
                       "was committed)")
    return needed
