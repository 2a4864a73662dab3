"""store: the HDF5 feature store, the contract between the expensive and the cheap half of featx.

Layout of ``FILE.h5`` (plain HDF5; see the README for reading it with h5py alone)::

    /features      float32 (N, D)              one embedding per image
    /labels        int32   (N,)                index into /class_names
    /paths         utf-8   (N,)                relative to the data folder, POSIX separators
    /hashes        ascii   (N,)                sha256 of the file's bytes (hex)
    /class_names   utf-8   (C,)                class folder names, sorted; label i is class_names[i]
    /skipped/{paths,reasons,hashes}            files not embedded, and why
    attributes     featx_schema, model, layer, pooling, input_size, resize, resample, precision,
                   weights, weights_id, dim, data_dir, featx_version, keras_version, keras_backend,
                   created, updated

Crash safety: ``FILE.h5`` is only ever replaced whole (written to a temporary file, fsynced, then
renamed), so it is always readable. New vectors are first committed to small part files in
``FILE.h5.parts/`` (each also written then renamed); they are merged into the store as the run goes
and at its end, and a killed run's parts are merged by the next run. Vectors are keyed by content
hash, so merging twice never duplicates a row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np

from featx.errors import FeatxError
from featx.files import atomic_path, write_error

SCHEMA_VERSION = 1
FINGERPRINT_KEYS = (  # "augment" is checked on its own: a store may gain mirrored vectors
    "model", "layer", "pooling", "input_size", "resize", "resample", "precision", "weights_id",
    "store_dtype",
)
FINGERPRINT_DEFAULTS = {"augment": "none", "store_dtype": "float32"}  # stores written before them
FLIPPED = "features_flip"  # the mirrored images' vectors, row for row (``augment="flip"``)
BLOCK_BYTES = 32 << 20  # vectors copied at a time when a store is written: bounds memory
ROW_OVERHEAD = 128  # bytes a row of paths, hashes and labels, about (for size estimates)
FILE_OVERHEAD = 16 << 10  # bytes of an HDF5 file's own structures, about
STR = h5py.string_dtype("utf-8")


@dataclass
class Features:
    """A store's contents in memory: arrays plus metadata (see :func:`load_features`)."""

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int
    paths: list[str]
    hashes: np.ndarray  # (N,) str, sha256 hex
    class_names: list[str]
    meta: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    flipped: np.ndarray | None = None  # (N, D): the mirrored images' vectors, if stored

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return self.features.shape[1]


def open_store(path: str | os.PathLike) -> h5py.File:
    """Open a featx store read-only; a clear FeatxError when it is missing or not a featx store."""
    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"feature store not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise FeatxError(f"not an HDF5 file (so not a featx store): {path}") from None
    if "featx_schema" not in f.attrs or "features" not in f:
        f.close()
        raise FeatxError(f"not a featx feature store (no featx_schema attribute): {path}")
    if int(f.attrs["featx_schema"]) > SCHEMA_VERSION:
        f.close()
        raise FeatxError(f"{path} was written by a newer featx (schema {f.attrs['featx_schema']})")
    return f


def read_meta(path: str | os.PathLike) -> dict:
    """The store's metadata attributes as plain Python values, plus ``n`` and ``class_names``."""
    with open_store(path) as f:
        return _meta(f)


def load_features(path: str | os.PathLike) -> Features:
    """Read a whole store into memory (see :func:`iter_chunks` for stores larger than memory)."""
    with open_store(path) as f:
        return Features(
            features=f["features"][:].astype(np.float32, copy=False),
            labels=f["labels"][:].astype(np.int64),
            paths=strings(f["paths"]),
            hashes=np.array(strings(f["hashes"])),
            class_names=strings(f["class_names"]),
            meta=_meta(f),
            skipped=read_skipped(f),
            flipped=f[FLIPPED][:].astype(np.float32, copy=False) if FLIPPED in f else None,
        )


def iter_chunks(
    path: str | os.PathLike, chunk_rows: int = 4096
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield (rows, features, labels) blocks of at most ``chunk_rows`` rows, in store order."""
    with open_store(path) as f:
        n = f["labels"].shape[0]
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n))
            yield rows, f["features"][rows].astype(np.float32, copy=False), f["labels"][rows]


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    if "skipped" not in f:
        return []
    return list(zip(strings(f["skipped/paths"]), strings(f["skipped/reasons"])))


def fingerprint(meta: dict) -> dict:
    """The settings that must match for two vectors to be comparable."""
    return {k: meta.get(k, FINGERPRINT_DEFAULTS.get(k)) for k in FINGERPRINT_KEYS}


def check_fingerprint(path: Path, have: dict, want: dict, what: str = "store") -> None:
    """Refuse to mix vectors made with other settings, naming the ones that differ."""
    diff = [f"{k}: {have.get(k)} (stored) vs {want.get(k)} (now)"
            for k in FINGERPRINT_KEYS if have.get(k) != want.get(k)]
    if diff:
        raise FeatxError(
            f"{path} holds vectors made with other settings ({'; '.join(diff)}); featx will not "
            f"mix them in one {what}. Use another `out` file, or the stored settings."
        )


# --- writing ---------------------------------------------------------------------------------


@dataclass
class Rows:
    """The rows a store should hold, in order."""

    paths: list[str]
    labels: list[int]
    hashes: list[str]


def write_store(
    path: Path,
    rows: Rows,
    class_names: list[str],
    meta: dict,
    skipped: list[tuple[str, str, str]],
    vectors: Callable[[int, int], np.ndarray],
    flipped: Callable[[int, int], np.ndarray] | None = None,
) -> None:
    """Write a complete store atomically: a temporary file, fsync, then rename over ``path``.

    ``vectors(start, stop)`` (and ``flipped``, the mirrored images' vectors) returns the rows'
    vectors a block at a time (about :data:`BLOCK_BYTES`), so memory stays bounded. The vectors
    are datasets of ``meta["store_dtype"]`` (float32 by default), contiguous (the store is always
    written whole, and contiguous rows read fastest), except maps (:func:`vector_layout`). A
    failed write (a full disk) leaves no temporary file and raises one clear FeatxError.
    """
    dim, n = int(meta["dim"]), len(rows.hashes)
    dtype = np.dtype(meta.get("store_dtype", "float32"))
    columns = {"features": vectors, **({FLIPPED: flipped} if flipped else {})}
    needed = estimate_bytes(n, dim, dtype.itemsize, copies=len(columns))
    block = block_rows(dim * dtype.itemsize)
    with atomic_path(path, "the feature store", needed=needed) as tmp:
        with h5py.File(tmp, "w") as f:
            _write_rows(f, rows, class_names, skipped)
            for name, source in columns.items():
                ds = f.create_dataset(name, shape=(n, dim), dtype=dtype,
                                      **vector_layout(meta, n, dim))
                for start in range(0, n, block):
                    stop = min(start + block, n)
                    ds[start:stop] = source(start, stop)
            for key, value in meta.items():
                f.attrs[key] = value
            f.attrs["featx_schema"] = SCHEMA_VERSION


def vector_layout(meta: dict, n: int, dim: int) -> dict:
    """h5py dataset options of the vectors: contiguous, or for maps (``meta["map_shape"]``, e.g.
    block4_pool unpooled: 100,352 values a row, about 3/4 of them zeros) one chunk a row with
    HDF5's byte shuffle and gzip level 1, standard filters any HDF5 reader has. On pets-dev maps
    that stores 87 KB a row instead of 201 (float16); a shuffled batch of 32 rows, read a row at
    a time, takes about 0.14 s instead of 0.05 s (BENCHMARKS.md, "Fine-tuning")."""
    if not meta.get("map_shape") or n == 0:
        return {}
    return {"chunks": (1, dim), "shuffle": True, "compression": "gzip", "compression_opts": 1}


def read_rows_of(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Some rows of a vectors dataset, in the order given, read one row at a time (ten times
    faster than h5py's point selection on a chunked dataset)."""
    out = np.empty((len(rows), *ds.shape[1:]), dtype=ds.dtype)
    for j, i in enumerate(rows):
        ds.read_direct(out, np.s_[int(i):int(i) + 1], np.s_[j:j + 1])
    return out


def block_rows(row_bytes: int) -> int:
    """Rows copied at a time when a store is written: about BLOCK_BYTES of vectors."""
    return max(1, BLOCK_BYTES // max(row_bytes, 1))


def estimate_bytes(n_rows: int, dim: int, itemsize: int = 4, copies: int = 1) -> int:
    """The size of a store of ``n_rows`` vectors (``copies`` of each: 2 with mirrored images'):
    the vectors plus about 128 bytes a row of paths, hashes and labels."""
    return FILE_OVERHEAD + n_rows * (copies * dim * itemsize + ROW_OVERHEAD)


def _write_rows(f: h5py.File, rows: Rows, class_names, skipped) -> None:
    n = len(rows.paths)
    f.create_dataset("labels", data=np.asarray(rows.labels, dtype=np.int32).reshape(n))
    f.create_dataset("paths", data=np.asarray(rows.paths, dtype=object).reshape(n), dtype=STR)
    f.create_dataset("hashes", data=np.asarray(rows.hashes, dtype="S64").reshape(n))
    f.create_dataset("class_names", data=np.asarray(class_names, dtype=object), dtype=STR)
    g = f.create_group("skipped")
    for j, name in enumerate(("paths", "reasons", "hashes")):
        g.create_dataset(name, data=np.asarray([s[j] for s in skipped], dtype=object).reshape(-1),
                         dtype=STR)


def save_features(path: str | os.PathLike, feats: Features) -> None:
    """Write an in-memory :class:`Features` as a store (``meta`` must hold the extractor settings)."""
    meta = {k: v for k, v in feats.meta.items() if k not in ("n", "class_names")}
    meta["dim"] = feats.dim
    rows = Rows(list(feats.paths), [int(x) for x in feats.labels], [str(h) for h in feats.hashes])
    skipped = [(p, r, "") for p, r in feats.skipped]
    flipped = feats.flipped
    write_store(Path(path), rows, list(feats.class_names), meta, skipped,
                lambda a, b: feats.features[a:b],
                (lambda a, b: flipped[a:b]) if flipped is not None else None)


def write_part(
    parts_dir: Path, seq: int, hashes: list[str], vectors: np.ndarray | None,
    failures: list[tuple[str, str]], fp: dict, flipped: np.ndarray | None = None,
) -> Path:
    """Commit new vectors (and files that failed to decode) as one small part file, atomically.
    Vectors are stored as ``fp["store_dtype"]``; ``flipped``: the mirrored images' vectors (alone,
    with ``vectors=None``, when a store gains them for content it already has)."""
    dtype = np.dtype(fp.get("store_dtype") or "float32")
    columns = {name: data for name, data in (("features", vectors), (FLIPPED, flipped))
               if data is not None}
    path = parts_dir / f"part-{seq:06d}.h5"
    try:
        parts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, parts_dir, "the part files of") from None
    dim = next(iter(columns.values())).shape[1]
    needed = estimate_bytes(len(hashes), dim, dtype.itemsize, copies=len(columns))
    with atomic_path(path, "a part file (vectors committed so far are kept)", needed=needed) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, data in columns.items():
                f.create_dataset(name, data=data.astype(dtype, copy=False))
            f.create_dataset("hashes", data=np.asarray(hashes, dtype="S64").reshape(-1))
            f.create_dataset("failed_hashes", data=np.asarray([h for h, _ in failures], dtype="S64"))
            f.create_dataset("failed_reasons", data=np.asarray([r for _, r in failures], dtype=object),
                             dtype=STR)
            f.attrs["fingerprint"] = json.dumps(fp, sort_keys=True)
    return path


def list_parts(parts_dir: Path) -> list[Path]:
    """Committed part files, oldest first (unfinished temporary files are not parts)."""
    if not parts_dir.is_dir():
        return []
    return sorted(parts_dir.glob("part-*.h5"))


def remove_stale_temporaries(store: Path) -> list[Path]:
    """Delete temporary files a killed writer left beside ``store`` and in its parts folder (call
    with the store's lock held: then no writer is using them)."""
    stale = [*store.parent.glob(f".{store.name}.tmp-*"), *store.parent.glob(f"{store.name}.tmp-*")]
    parts = parts_dir_for(store)
    if parts.is_dir():
        stale += [*parts.glob(".part-*.tmp-*"), *parts.glob("part-*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_part_header(path: Path) -> tuple[dict, list[tuple[str, str]]]:
    """A part's settings fingerprint and its (hash, reason) decode failures."""
    with h5py.File(path, "r") as f:
        fp = json.loads(f.attrs["fingerprint"])
        failures = list(zip(strings(f["failed_hashes"]), strings(f["failed_reasons"])))
    return fp, failures


def remove_parts(parts_dir: Path) -> None:
    for p in parts_dir.glob("part-*"):
        p.unlink(missing_ok=True)
    try:
        parts_dir.rmdir()
    except OSError:
        pass


def parts_dir_for(store: Path) -> Path:
    return store.with_name(store.name + ".parts")


# --- helpers ---------------------------------------------------------------------------------


def strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def read_attrs(f: h5py.File) -> dict:
    return {k: plain(v) for k, v in f.attrs.items()}


def read_rows(f: h5py.File) -> Rows:
    return Rows(strings(f["paths"]), f["labels"][:].tolist(), strings(f["hashes"]))


def read_failed_hashes(f: h5py.File) -> dict[str, str]:
    """content hash -> reason, for stored skips that were decode failures (not worth retrying)."""
    if "skipped" not in f:
        return {}
    pairs = zip(strings(f["skipped/hashes"]), strings(f["skipped/reasons"]))
    return {h: reason for h, reason in pairs if h}


def _meta(f: h5py.File) -> dict:
    meta = read_attrs(f)
    meta["n"] = int(f["labels"].shape[0])
    meta["class_names"] = strings(f["class_names"])
    return meta


def plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def describe(path: str | os.PathLike) -> dict:
    """A summary of a store for ``featx info``: counts per class, dims, metadata, skipped, parts.

    A store whose first run was interrupted before its first merge exists only as part files:
    then ``n`` is 0 and ``interrupted`` is True, with the parts' counts.
    """
    path = Path(path)
    parts_dir = parts_dir_for(path)
    parts = list_parts(parts_dir)
    pending = 0
    for p in parts:
        with h5py.File(p, "r") as f:
            pending += int(f["hashes"].shape[0])
    if not path.exists() and parts:
        return {"n": 0, "dim": None, "classes": {}, "meta": {}, "skipped": [], "interrupted": True,
                "pending_parts": len(parts), "pending_vectors": pending, "parts_dir": str(parts_dir)}
    with open_store(path) as f:
        meta = _meta(f)
        counts = np.bincount(f["labels"][:], minlength=len(meta["class_names"]))
        skipped = read_skipped(f)
        dim = int(f["features"].shape[1])
    return {
        "n": meta["n"], "dim": dim, "interrupted": bool(parts), "parts_dir": str(parts_dir),
        "classes": {name: int(c) for name, c in zip(meta["class_names"], counts)},
        "meta": {k: v for k, v in meta.items() if k not in ("n", "class_names")},
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "pending_parts": len(parts), "pending_vectors": pending,
    }
