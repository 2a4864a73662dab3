"""writer: a store's own mechanics during a run. Known vectors, part files, merges, finish, lock.

A :class:`StoreWriter` is opened on a store path with the extractor's settings. It takes the
store's lock (one writer per store), reads what the store and an interrupted run's part files
already hold (refusing vectors made with other settings), and then takes new vectors as they come:

* every ``commit_every`` vectors become one part file in ``FILE.h5.parts/`` (written whole, then
  renamed), so a killed run loses at most one batch of work;
* whenever the parts hold as many vectors as the store (geometric merging, so the store is never
  less than half up to date), and at :meth:`StoreWriter.finish`, the store is rewritten whole with
  the rows of the listing it is given, and the parts are removed.

Vectors are keyed by content hash, so merging twice never duplicates a row and renamed or copied
files cost no model time. What rows the store holds is the listing's business
(:meth:`featx.reader.Scan.rows`): the writer only knows vectors.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Container, Iterator, Mapping, Protocol

import h5py
import numpy as np

from featx import store as st
from featx.errors import FeatxError
from featx.files import utc_now


class Listing(Protocol):
    """What the writer needs to know of the images: the rows, the skips, the classes."""

    root: Path | None  # the data folder (None: rows are absolute paths)
    class_names: list[str]

    def rows(self, has: Container[str]) -> st.Rows: ...

    def skipped(self, failed: Mapping[str, str]) -> list[tuple[str, str, str]]: ...


class VectorCache:
    """Find vectors by content hash in a set of HDF5 files (the store and part files).

    Only the hashes are held in memory; a file is opened while its rows are read, so a run with
    thousands of part files never holds thousands of open files.
    """

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._where: dict[str, dict[str, tuple[int, int]]] = {"features": {}, st.FLIPPED: {}}

    def add(self, path: Path) -> None:
        with h5py.File(path, "r") as f:
            hashes = st.strings(f["hashes"])
            names = [name for name in self._where if name in f]
        k = len(self._paths)
        self._paths.append(Path(path))
        for name in names:
            where = self._where[name]
            for i, h in enumerate(hashes):
                where.setdefault(h, (k, i))

    def __contains__(self, h: object) -> bool:
        return h in self._where["features"]

    def __len__(self) -> int:
        return len(self._where["features"])

    def has_flipped(self, h: str) -> bool:
        """Whether the mirrored image's vector of content ``h`` is known."""
        return h in self._where[st.FLIPPED]

    def gather(self, hashes: list[str], name: str = "features") -> np.ndarray:
        """The vectors of ``hashes`` (all must be present) from the dataset ``name`` of their
        files (``features``, or ``features_flip``: the mirrored images'), reading runs of rows as
        slices."""
        where = np.array([self._where[name][h] for h in hashes], dtype=np.int64).reshape(-1, 2)
        order = np.lexsort((where[:, 1], where[:, 0]))  # by file, then row
        out = None
        for k in np.unique(where[:, 0]):
            pos = order[where[order, 0] == k]
            rows = where[pos, 1]
            with h5py.File(self._paths[k], "r") as f:
                ds = f[name]
                if out is None:
                    out = np.empty((len(hashes), *ds.shape[1:]), dtype=ds.dtype)
                for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) > 1) + 1):
                    start, stop = rows[run[0]], rows[run[-1]] + 1
                    out[pos[run]] = ds[start:stop][rows[run] - start]
        return out if out is not None else np.empty((0, 0), np.float32)

    def close(self) -> None:
        self._paths.clear()
        for where in self._where.values():
            where.clear()


class StoreWriter:
    """Commit new vectors to a store as they come, crash-safely (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, meta: dict, commit_every: int = 256,
                 listing: Listing | None = None) -> None:
        self.path = Path(path)
        self.listing = listing  # the images' rows, given once (or to each call, as before)
        self.meta = meta  # the extractor's settings, stored as attributes
        self.commit_every = commit_every
        self.parts_dir = st.parts_dir_for(self.path)
        self.fp = st.fingerprint(meta)
        self.cache = VectorCache()
        self.failed: dict[str, str] = {}  # content hash -> decode failure reason
        self.dim: int | None = None
        self.seconds = 0.0  # time spent committing and merging
        self._stored: tuple[st.Rows, list[str], list[tuple[str, str]]] | None = None
        self._created: str | None = None
        self._stored_augment: str | None = None
        self._seq = 0
        self._pending = 0  # vectors in part files, not yet merged
        self._buffer: tuple[list[str], list[np.ndarray], list[tuple[str, str]], list[np.ndarray]] \
            = ([], [], [], [])
        self.flips = meta.get("augment") == "flip"  # mirrored images' vectors kept beside each
        self._lock = None

    # -- opening and closing -----------------------------------------------------------------

    def __enter__(self) -> "StoreWriter":
        self._lock = store_lock(self.path)
        self._lock.__enter__()
        try:
            self._load()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cache.close()
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def _load(self) -> None:
        st.remove_stale_temporaries(self.path)  # a killed writer's; we hold the lock
        if self.path.exists():
            with st.open_store(self.path) as f:
                meta = st.read_attrs(f)
                st.check_fingerprint(self.path, st.fingerprint(meta), self.fp)
                self._check_augment(meta.get("augment", "none"))
                self._stored = (st.read_rows(f), st.strings(f["class_names"]), st.read_skipped(f))
                self.failed.update(st.read_failed_hashes(f))
            self._created, self.dim = meta.get("created"), int(meta["dim"])
            self._stored_augment = meta.get("augment", "none")
            self.cache.add(self.path)
        parts = st.list_parts(self.parts_dir)
        for part in parts:
            fp, failures = st.read_part_header(part)
            st.check_fingerprint(self.parts_dir, fp, self.fp, what="store (interrupted run)")
            self.failed.update(failures)
            self.cache.add(part)
            rows, dim = _part_shape(part)
            self._pending += rows
            if rows:
                self.dim = self.dim or dim
        self._seq = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        self.n_at_open = len(self.cache)  # distinct vectors known when the run began

    def _check_augment(self, stored: str) -> None:
        """A store may gain mirrored vectors, never lose them."""
        if stored == "flip" and not self.flips:
            raise FeatxError(f"{self.path} keeps the mirrored images' vectors; run with "
                             f"`augment`=flip (or write another `out` file)")

    # -- what is known -----------------------------------------------------------------------

    def __contains__(self, h: object) -> bool:
        return h in self.cache

    @property
    def n_stored(self) -> int:
        return len(self._stored[0].paths) if self._stored else 0

    def needs_flipped(self, h: str) -> bool:
        """Content with a vector but not yet its mirrored image's (a store gaining flips)."""
        return self.flips and h in self.cache and not self.cache.has_flipped(h)

    def kept(self) -> int:
        """Distinct vectors safe on disk now, read back from the store and the part files (exact
        also when a run is interrupted halfway through a commit or a merge)."""
        return len(_hashes_on_disk(self.path))

    # -- taking new vectors ------------------------------------------------------------------

    def _listing(self, listing: Listing | None) -> Listing:
        listing = listing if listing is not None else self.listing
        if listing is None:
            raise ValueError("the writer needs the images' listing: pass `listing` once, to "
                             "StoreWriter")
        return listing

    def add(self, hashes: list[str], vectors: np.ndarray | None, failures: list[tuple[str, str]],
            listing: Listing | None = None, flipped: np.ndarray | None = None) -> None:
        """Take new vectors (and content that failed to decode; and with ``augment="flip"`` the
        mirrored images' vectors); commit and merge when due. ``listing``: the writer's own
        unless given."""
        if self.flips and hashes and flipped is None:
            raise ValueError("this store keeps the mirrored images' vectors: pass `flipped`")
        buf_h, buf_v, buf_f, buf_m = self._buffer
        buf_h += hashes
        if hashes:
            buf_v.append(vectors)
            if self.flips:
                buf_m.append(flipped)
            self.dim = self.dim or int(vectors.shape[1])
        buf_f += failures
        if len(buf_h) + len(buf_f) >= self.commit_every:
            self._commit(listing)

    def add_flipped(self, hashes: list[str], flipped: np.ndarray, failures: list[tuple[str, str]],
                    listing: Listing | None = None) -> None:
        """Take the mirrored images' vectors of content the store already has; committed as a
        part file of its own."""
        self._commit(listing)  # what is buffered goes first: parts hold one kind of rows
        self._buffer = (list(hashes), [], list(failures), [flipped] if len(hashes) else [])
        self._commit(listing, flipped_only=True)

    def commit(self, listing: Listing | None = None) -> None:
        """Commit the vectors taken so far now, as a part file (an interrupted run keeps them)."""
        self._commit(listing)

    def _commit(self, listing: Listing | None, flipped_only: bool = False) -> None:
        hashes, vectors, failures, flipped = self._buffer
        if not hashes and not failures:
            return
        with self._timed():
            empty = np.empty((0, self.dim or 0), np.float32)
            data = None if flipped_only else (np.concatenate(vectors) if vectors else empty)
            mirrored = (np.concatenate(flipped) if flipped else empty) if self.flips else None
            part = st.write_part(self.parts_dir, self._seq, hashes, data, failures, self.fp,
                                 flipped=mirrored)
            self._seq += 1
            self._buffer = ([], [], [], [])
            self.cache.add(part)
            self.failed.update(failures)
            self._pending += len(hashes)
            if self._pending >= max(self.n_stored, 4 * self.commit_every):
                self._merge(listing)

    def finish(self, listing: Listing | None = None) -> bool:
        """Commit what is buffered and write the store unless it already holds exactly these
        rows; True when it was written."""
        listing = self._listing(listing)
        self._commit(listing)
        if self.dim is None:
            raise FeatxError(f"no image under {listing.root} could be read; see the reasons "
                             f"with --json or in the skip list")
        rows = listing.rows(self.cache)
        skipped = [s[:2] for s in listing.skipped(self.failed)]
        if (self._stored == (rows, listing.class_names, skipped) and not st.list_parts(self.parts_dir)
                and self._stored_augment == self.meta.get("augment", "none")):
            return False
        with self._timed():
            self._merge(listing)
        return True

    def _merge(self, listing: Listing | None) -> None:
        listing = self._listing(listing)
        rows = listing.rows(self.cache)
        skipped = listing.skipped(self.failed)
        now = utc_now()
        self._created = self._created or now
        data_dir = str(Path(listing.root).resolve()) if listing.root is not None else ""
        meta = {**self.meta, "dim": self.dim, "data_dir": data_dir,
                "created": self._created, "updated": now}
        cache = self.cache
        flipped = (lambda a, b: cache.gather(rows.hashes[a:b], st.FLIPPED)) if self.flips else None
        st.write_store(self.path, rows, listing.class_names, meta, skipped,
                       lambda a, b: cache.gather(rows.hashes[a:b]), flipped)
        st.remove_parts(self.parts_dir)
        self.cache = VectorCache()
        self.cache.add(self.path)
        self._stored = (rows, list(listing.class_names), [s[:2] for s in skipped])
        self._stored_augment = meta.get("augment", "none")
        self._pending = 0

    @contextmanager
    def _timed(self) -> Iterator[None]:
        import time

        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def _hashes_on_disk(store: Path) -> set[str]:
    """Content hashes with a vector in ``store`` or its part files."""
    files = [store] if store.exists() else []
    files += st.list_parts(st.parts_dir_for(store))
    out: set[str] = set()
    for path in files:
        with h5py.File(path, "r") as f:
            if "features" in f:
                out.update(st.strings(f["hashes"]))
    return out


def _part_shape(part: Path) -> tuple[int, int]:
    """(rows, dim) of a part file's vectors (plain, or mirrored images' only)."""
    with h5py.File(part, "r") as f:
        vectors = f["features"] if "features" in f else f[st.FLIPPED]
        return int(f["hashes"].shape[0]), int(vectors.shape[1])


@contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """One writer per store: a second writer stops with a clear error.

    The lock file ``FILE.h5.lock`` exists only while a run holds it: it is removed before the lock
    is released, and a locker checks that the file it locked is still the one at that path.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the atomic writes still protect the store
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FeatxError(f"another featx process is writing {path}") from None
        try:
            current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # a finishing writer removed the file we locked: lock the new one
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # first: whoever waits then locks a fresh file
        os.close(fd)
