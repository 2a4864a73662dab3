"""extract: the runner. DATA_DIR -> discover -> hash -> decode (workers) -> embed -> store.

Stages, each timed: *hash* reads every file once and keys it by content (so reruns, renames and
duplicates cost no model time); *decode* runs in worker threads, a bounded window of batches ahead
of the model; *model* is the backbone on the main thread; *write* commits part files and merges
them into the store (see :mod:`featx.store` for why that is crash safe).
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from featx.decode import DecodeError, decode_bytes
from featx.discover import Dataset, discover, hash_file
from featx.embed import Extractor, ExtractorSettings
from featx.errors import FeatxError
from featx import store as st

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class ExtractReport:
    out: Path
    n_images: int  # rows in the store
    n_embedded: int  # run through the model in this run
    n_reused: int  # taken from the store or an interrupted run's parts
    skipped: list[tuple[str, str]]  # (path, reason)
    dim: int
    wrote: bool  # False when the store was already complete
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        busy = self.timings.get("embed_wall", 0.0)
        return self.n_embedded / busy if busy > 0 else 0.0


def default_output(data_dir: Path, settings: ExtractorSettings, folder: Path = Path("features")) -> Path:
    """features/<dataset>_<model>_<layer>[_<pooling>].h5: one file per (data set, model, layer)."""
    s = settings.normalized()
    name = f"{data_dir.resolve().name}_{s.model}_{s.layer}"
    if s.pooling != "none" or s.layer.startswith("block") or s.layer.endswith(("out", "relu")):
        name += f"_{s.pooling}"
    return folder / f"{name}.h5"


def extract(
    data_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    settings: ExtractorSettings = ExtractorSettings(),
    batch_size: int = 32,
    workers: int = 2,
    commit_every: int = 256,
    on_progress: Progress | None = None,
) -> ExtractReport:
    """Embed every image under ``data_dir`` into the store ``out``, resuming where it stands."""
    if batch_size < 1 or workers < 1 or commit_every < 1:
        raise FeatxError("--batch-size, --workers and commit size must be at least 1")
    dataset = discover(data_dir)
    extractor = Extractor(settings)
    out = Path(out) if out else default_output(dataset.root, extractor.settings)
    _check_writable(out)
    with _locked(out):
        run = _Run(dataset, extractor, out, batch_size, workers, commit_every, on_progress)
        try:
            return run.execute()
        finally:
            run.cache.close()


class _Run:
    """The state of one extraction: what is known, what is new, what is committed."""

    def __init__(self, dataset: Dataset, extractor: Extractor, out: Path, batch_size: int,
                 workers: int, commit_every: int, on_progress: Progress | None):
        self.dataset, self.extractor, self.out = dataset, extractor, out
        self.batch_size, self.workers, self.commit_every = batch_size, workers, commit_every
        self.progress = on_progress or (lambda stage, done, total: None)
        self.parts_dir = st.parts_dir_for(out)
        self.fp = st.fingerprint(extractor.meta)
        self.cache = st.VectorCache()
        self.failed: dict[str, str] = {}  # content hash -> decode failure reason
        self.timings = {"hash": 0.0, "decode": 0.0, "model": 0.0, "write": 0.0, "wait": 0.0,
                        "embed_wall": 0.0}
        self.old_rows: st.Rows | None = None
        self.old_class_names: list[str] | None = None
        self.old_meta: dict = {}
        self.dim: int | None = None
        self.hashes: list[str | None] = []
        self.read_failures: dict[int, str] = {}

    def execute(self) -> ExtractReport:
        start = time.perf_counter()
        self._load_known()
        self._hash_files()
        todo = self._todo()
        n_new = len(todo)
        if todo:
            self._embed(todo)
        wrote = self._finish()
        self.timings["total"] = time.perf_counter() - start
        rows = self._rows()
        return ExtractReport(
            out=self.out, n_images=len(rows.paths), n_embedded=n_new - self._n_new_failed(todo),
            n_reused=len(rows.paths) - (n_new - self._n_new_failed(todo)),
            skipped=[(p, r) for p, r, _ in self._skipped()], dim=self.dim or 0, wrote=wrote,
            timings={k: round(v, 3) for k, v in self.timings.items()},
        )

    # -- what is already known: the store, and parts left by an interrupted run -------------

    def _load_known(self) -> None:
        if self.out.exists():
            with st.open_store(self.out) as f:
                meta = st.read_attrs(f)
                st.check_fingerprint(self.out, st.fingerprint(meta), self.fp)
                self.old_rows = st.read_rows(f)
                self.old_class_names = st.strings(f["class_names"])
                self.failed.update(st.read_failed_hashes(f))
            self.old_meta, self.dim = meta, int(meta["dim"])
            self.cache.add(self.out)
        for part in st.list_parts(self.parts_dir):
            fp, failures = st.read_part_header(part)
            st.check_fingerprint(self.parts_dir, fp, self.fp, what="store (interrupted run)")
            self.failed.update(failures)
            self.cache.add(part)

    # -- stage 1: hash every file ------------------------------------------------------------

    def _hash_files(self) -> None:
        t0 = time.perf_counter()
        paths = [self.dataset.root / p for p in self.dataset.paths]
        self.hashes = [None] * len(paths)
        with ThreadPoolExecutor(self.workers) as pool:
            for i, (h, reason) in enumerate(pool.map(hash_file, paths, chunksize=64)):
                self.hashes[i] = h
                if reason:
                    self.read_failures[i] = reason
                if i % 256 == 0 or i == len(paths) - 1:
                    self.progress("hash", i + 1, len(paths))
        self.timings["hash"] = time.perf_counter() - t0

    def _todo(self) -> list[tuple[str, Path]]:
        """New content: one (hash, file) per hash neither stored nor known to fail."""
        todo, seen = [], set()
        for i, h in enumerate(self.hashes):
            if h is None or h in self.cache or h in self.failed or h in seen:
                continue
            seen.add(h)
            todo.append((h, self.dataset.root / self.dataset.paths[i]))
        return todo

    def _n_new_failed(self, todo) -> int:
        return sum(1 for h, _ in todo if h in self.failed)

    # -- stage 2: decode + model, committing part files ---------------------------------------

    def _embed(self, todo: list[tuple[str, Path]]) -> None:
        t_model = time.perf_counter()
        self.dim = self.dim or self.extractor.dim  # builds the model
        self.extractor.warm_up(self.batch_size)
        self.timings["load_model"] = time.perf_counter() - t_model
        seq = len(st.list_parts(self.parts_dir))
        pending_rows, done = 0, 0
        buf_h: list[str] = []
        buf_v: list[np.ndarray] = []
        buf_f: list[tuple[str, str]] = []
        t0 = time.perf_counter()
        self.progress("embed", 0, len(todo))
        for hashes, vectors, failures in self._stream(todo):
            buf_h += hashes
            buf_v.append(vectors)
            buf_f += failures
            done += len(hashes) + len(failures)
            self.progress("embed", done, len(todo))
            if len(buf_h) + len(buf_f) >= self.commit_every:
                seq, pending_rows = self._commit(seq, buf_h, buf_v, buf_f, pending_rows)
                buf_h, buf_v, buf_f = [], [], []
        if buf_h or buf_f:
            self._commit(seq, buf_h, buf_v, buf_f, pending_rows)
        self.timings["embed_wall"] = time.perf_counter() - t0

    def _stream(self, todo) -> Iterator[tuple[list[str], np.ndarray, list[tuple[str, str]]]]:
        """Decode batches in worker threads, at most ``workers + 1`` batches ahead of the model."""
        batches = iter([todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)])
        with ThreadPoolExecutor(self.workers) as pool:
            window = deque()
            for batch in batches:
                window.append(pool.submit(_decode_batch, batch, self.extractor))
                if len(window) > self.workers:
                    break
            while window:
                t_wait = time.perf_counter()
                hashes, x, failures, decode_s = window.popleft().result()
                self.timings["wait"] += time.perf_counter() - t_wait
                self.timings["decode"] += decode_s
                nxt = next(batches, None)
                if nxt is not None:
                    window.append(pool.submit(_decode_batch, nxt, self.extractor))
                t_model = time.perf_counter()
                vectors = (self.extractor.embed_preprocessed(x, self.batch_size) if hashes
                           else np.empty((0, self.dim), np.float32))
                self.timings["model"] += time.perf_counter() - t_model
                yield hashes, vectors, failures

    def _commit(self, seq, hashes, vectors, failures, pending_rows) -> tuple[int, int]:
        t0 = time.perf_counter()
        part = st.write_part(self.parts_dir, seq, hashes, np.concatenate(vectors), failures, self.fp)
        self.cache.add(part)
        self.failed.update(failures)
        pending_rows += len(hashes)
        stored = len(self.old_rows.paths) if self.old_rows else 0
        if pending_rows >= max(stored, 4 * self.commit_every):
            self._merge()  # geometric merging: the store is never less than half up to date
            pending_rows = 0
        self.timings["write"] += time.perf_counter() - t0
        return seq + 1, pending_rows

    # -- stage 3: the store --------------------------------------------------------------------

    def _rows(self) -> st.Rows:
        """Every discovered file whose content has a vector, in discovery order."""
        ds = self.dataset
        keep = [i for i, h in enumerate(self.hashes) if h is not None and h in self.cache]
        return st.Rows([ds.paths[i] for i in keep], [ds.labels[i] for i in keep],
                       [self.hashes[i] for i in keep])

    def _skipped(self) -> list[tuple[str, str, str]]:
        """(path, reason, hash) for every file not in the store: by name, unreadable, undecodable."""
        out = [(p, r, "") for p, r in self.dataset.skipped]
        for i, h in enumerate(self.hashes):
            if i in self.read_failures:
                out.append((self.dataset.paths[i], self.read_failures[i], ""))
            elif h in self.failed:
                out.append((self.dataset.paths[i], self.failed[h], h))
        return out

    def _merge(self) -> None:
        rows = self._rows()
        meta = {**self.extractor.meta, "dim": self.dim, "data_dir": str(self.dataset.root.resolve()),
                "created": self.old_meta.get("created", _now()), "updated": _now()}
        cache, dim = self.cache, self.dim
        st.write_store(self.out, rows, self.dataset.class_names, meta, self._skipped(),
                       lambda a, b: cache.gather(rows.hashes[a:b], dim))
        self.cache.close()
        st.remove_parts(self.parts_dir)
        self.cache = st.VectorCache()
        self.cache.add(self.out)
        self.old_rows, self.old_meta = rows, meta
        self.old_class_names = self.dataset.class_names

    def _finish(self) -> bool:
        """Write the store unless it already holds exactly these rows; True when written."""
        if self.dim is None:
            raise FeatxError(f"no image under {self.dataset.root} could be read; see the reasons "
                             f"with --json or in the skip list")
        unchanged = (
            self.old_rows is not None and not st.list_parts(self.parts_dir)
            and self._rows() == self.old_rows
            and self.dataset.class_names == self.old_class_names
            and [s[:2] for s in self._skipped()] == self._old_skipped()
        )
        if unchanged:
            return False
        t0 = time.perf_counter()
        self._merge()
        self.timings["write"] += time.perf_counter() - t0
        return True

    def _old_skipped(self) -> list[tuple[str, str]]:
        with st.open_store(self.out) as f:
            return st.read_skipped(f)


def _decode_batch(batch: list[tuple[str, Path]], extractor: Extractor):
    """Worker: read, decode and preprocess one batch; failures are returned, never raised."""
    t0 = time.perf_counter()
    hashes, pixels, failures = [], [], []
    for h, path in batch:
        try:
            pixels.append(decode_bytes(path.read_bytes(), extractor.decode_settings))
            hashes.append(h)
        except (DecodeError, OSError) as e:
            failures.append((h, str(e)))
    x = extractor.preprocess(np.stack(pixels)) if pixels else None
    return hashes, x, failures, time.perf_counter() - t0


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FeatxError(f"cannot create the output folder {out.parent}: {e.strerror or e}") from None
    if out.exists() and out.is_dir():
        raise FeatxError(f"output is a folder, expected a .h5 file path: {out}")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise FeatxError(f"cannot write to {out}: permission denied")


@contextmanager
def _locked(out: Path):
    """One writer per store: a second featx extract on the same file stops with a clear error."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the atomic writes still protect the store
        yield
        return
    lock_path = out.with_name(out.name + ".lock")
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FeatxError(f"another featx extract is writing {out}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)  # the file stays: unlinking it would race a new locker


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
