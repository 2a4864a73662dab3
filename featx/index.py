"""index: one neighbour search over a store's vectors, exact or approximate, kept beside the store.

Every command that compares vectors with vectors (``neighbors``, ``duplicates``, the audit's leaks
and outliers, the review app, the ``--group near`` split) asks :meth:`Index.for_store` and then
:meth:`Index.search` (k nearest stored rows of some query vectors), :meth:`Index.self_join` (k
nearest other rows of stored rows, optionally among a subset such as one class) or
:meth:`Index.range_pairs` (every pair at or above a cosine similarity).

Below :data:`EXACT_BELOW` rows the search is exact: blocked dot products of the L2-normalised
vectors, memory bounded by a block. From there on it is approximate, with faiss:

* the unit vectors are projected by PCA to :data:`PCA_DIM` dimensions (an orthogonal projection
  of centred vectors, so distances only shrink: a pair within cosine ``t`` stays within the same
  L2 radius, and a range query in the projected space misses no pair for that reason), and
  stored in an inverted file (``IVF``, k-means cells, flat codes) searched in ``nprobe`` cells;
* the candidates are then re-scored exactly on the store's own vectors (memory-mapped), so every
  reported similarity is exact and only a missed candidate can make a result differ from exact.

faiss was chosen over usearch and faiss' HNSW by measurement on this 2-core CPU (BENCHMARKS.md,
"Neighbour index"): the IVF builds several times faster (k-means on a sample, then one
assignment pass), its range search serves the pair scans directly, and a bitmap selector restricts
a search to a class without another index.

The index is kept in ``FILE.h5.index/`` (``index.faiss``, ``hashes.npy``: the content hash of each
indexed vector, ``meta.json``), written whole to a temporary folder and swapped in
(:func:`featx.files.atomic_folder`), so a killed build leaves the previous index or none, never a
half one. It is never silently stale: it records the store's row count and ``created``/``updated``
stamps, and :meth:`Index.for_store` checks them on every open. When they differ the index is
brought in step by content hash: vectors of new rows are added (the cells are kept), removed rows
are masked out, and it is rebuilt when more than :data:`REBUILD_SHARE` of it is dead or the
extractor changed. ``featx extract`` need not know about it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np

from featx.errors import FeatxError
from featx.files import atomic_folder, utc_now
from featx import store as st

EXACT_BELOW = 50_000  # rows from which the index is approximate (exact self-joins grow as N^2)
PCA_DIM = 128  # dimensions the approximate index keeps (the re-scoring uses all)
NPROBE_PAIRS = 2  # cells searched per row for range pairs (near-twins share a cell or two)
NPROBE_JOIN = 16  # cells searched per row in a self-join (the audit's outliers)
NPROBE_KNN = 128  # cells searched per query for k nearest
RESCORE = 10  # candidates re-scored exactly per neighbour wanted (at least 40 for a query)
RESCORE_JOIN = 2  # the same in a self-join (every row: reading candidates' vectors dominates)
BLOCK_ROWS = 8192  # query rows per block
REBUILD_SHARE = 0.2  # rebuild instead of masking when this share of the indexed rows is gone
INDEX_VERSION = 1
MAX_PAIRS = 200_000
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _faiss():
    """faiss, its OpenMP threads waiting passively (spinning threads cost dearly on a shared
    machine: a single query took 40 ms instead of 1 at load 14 on 2 cores)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import faiss
    except ImportError:
        raise FeatxError("the approximate index needs faiss: pip install 'featx[index]', or "
                         "search exactly (`exact`)") from None
    return faiss


def index_dir(store: str | os.PathLike) -> Path:
    """Where a store's index lives: ``FILE.h5.index/`` beside it."""
    store = Path(store)
    return store.with_name(store.name + ".index")


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def store_vectors(f: h5py.File, path: str | os.PathLike) -> np.ndarray:
    """The store's vectors, memory-mapped when the dataset is contiguous (as ``featx extract``
    writes it), else read whole."""
    ds = f["features"]
    offset = ds.id.get_offset()
    if ds.chunks is None and ds.compression is None and offset is not None and ds.size:
        return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
    return ds[:]


def lazy_features(store: str | os.PathLike) -> st.Features:
    """A store's rows with the vectors memory-mapped (:func:`store_vectors`), mirrored ones left
    out: what the pair scans need, without the store in memory."""
    with st.open_store(store) as f:
        return st.Features(
            features=store_vectors(f, store), labels=f["labels"][:].astype(np.int64),
            paths=st.strings(f["paths"]), hashes=np.array(st.strings(f["hashes"])),
            class_names=st.strings(f["class_names"]), meta=st.read_attrs(f),
            skipped=st.read_skipped(f))


def _identity(f: h5py.File, path: Path) -> dict:
    """What says a store changed: row count, stamps, the file's size and time (a store is only
    ever replaced whole) and the extractor's fingerprint. Any change leads to a check by content
    hash (:func:`_sync_or_build`), so a copied store costs a check, not a rebuild."""
    meta, info = st.read_attrs(f), path.stat()
    return json.loads(json.dumps({  # as meta.json reads back
        "n": int(f["labels"].shape[0]), "created": str(meta.get("created", "")),
        "updated": str(meta.get("updated", "")), "bytes": info.st_size,
        "mtime_ns": info.st_mtime_ns, "fingerprint": st.fingerprint(meta)}, default=str))


@dataclass
class Index:
    """Neighbour search over one store's rows (see the module docstring)."""

    store: Path
    vectors: np.ndarray  # (N, D) the store's vectors (memory-mapped), not normalised
    kind: str  # "exact" or "ivf"
    ivf: object | None = None  # faiss.IndexIVFFlat over PCA-projected unit vectors
    pca: object | None = None  # faiss.PCAMatrix
    rows: np.ndarray | None = None  # store row of each indexed vector (-1: no longer stored)
    info: dict = field(default_factory=dict)  # how it was obtained: loaded/built/extended, seconds
    nprobe_knn: int = NPROBE_KNN
    nprobe_pairs: int = NPROBE_PAIRS
    nprobe_join: int = NPROBE_JOIN

    @property
    def n(self) -> int:
        return len(self.vectors)

    @classmethod
    def for_store(cls, store: str | os.PathLike, exact: bool | None = None,
                  exact_below: int = EXACT_BELOW, save: bool = True,
                  progress: Progress | None = None) -> "Index":
        """The store's index: exact below ``exact_below`` rows (or with ``exact=True``), else the
        approximate one kept beside the store, loaded, brought in step or built (and saved
        unless ``save=False``)."""
        store = Path(store)
        f = st.open_store(store)
        vectors = store_vectors(f, store)
        n, ident = len(vectors), _identity(f, store)
        if exact or (exact is None and n < exact_below) or n < 2:
            f.close()
            return cls(store, vectors, "exact", info={"how": "exact", "n": n})
        try:
            hashes = None
            t0 = time.perf_counter()
            loaded = _load(store, ident)
            if loaded is not None and loaded[2]["store"] == ident:
                ivf, pca, meta, rows = loaded
                how = "loaded"
            else:
                hashes = np.asarray(f["hashes"][:])
                ivf, pca, meta, rows, how = _sync_or_build(loaded, vectors, hashes, ident,
                                                           progress)
            info = {"how": how, "n": n, "nlist": int(ivf.nlist), "pca_dim": int(pca.d_out),
                    "seconds": round(time.perf_counter() - t0, 3), "path": str(index_dir(store))}
            index = cls(store, vectors, "ivf", ivf, pca, rows, info)
            if how != "loaded" and save:
                _save(store, index, ident, meta["hashes"])
        finally:
            f.close()
        return index

    # --- queries ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, among: np.ndarray | None = None,
               rescore: int = RESCORE) -> tuple[np.ndarray, np.ndarray]:
        """Store rows and cosine similarities of the ``k`` nearest rows to each query vector,
        best first, (n_queries, k') with k' = min(k, rows searched); ``among``: only these store
        rows (a boolean mask or row numbers); ``rescore``: candidates re-scored a neighbour."""
        q = normalize(queries)
        allowed = _mask(among, self.n)
        if self.kind == "exact":
            return _exact_topk(q, self.vectors, k, allowed)
        k = min(k, self.n if allowed is None else int(allowed.sum()))
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1 if len(q) <= 16 else threads)  # a few queries: no team
        try:
            got = [self._rescore(q[i:i + 256], self._candidates(
                       q[i:i + 256], max(rescore * k, 4 * rescore), self.nprobe_knn, allowed), k)
                   for i in range(0, len(q), 256)]  # 256 queries' candidates at a time
        finally:
            faiss.omp_set_num_threads(threads)
        return np.concatenate([r for r, _ in got]), np.concatenate([s for _, s in got])

    def row_neighbors(self, rows, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other rows of some stored rows (each row itself dropped), best first."""
        rows = np.asarray(rows, dtype=np.int64)
        return _drop_self(rows, *self.search(self.vectors[rows], k + 1), k)

    def self_join(self, k: int, among: np.ndarray | None = None,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``among`` (all rows by default; a boolean mask or row numbers) its
        ``k`` nearest other rows of ``among``: (rows, similarities), one line per row of
        ``among`` in store order, best first (approximate: :data:`NPROBE_JOIN` cells a row)."""
        allowed = _mask(among, self.n)
        members = np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
        k = min(k, len(members) - 1)
        if k < 1:
            return np.empty((len(members), 0), np.int64), np.empty((len(members), 0), np.float32)
        return self._join_by_search(members, k, allowed, progress)

    def range_pairs(self, threshold: float, max_pairs: int = MAX_PAIRS,
                    progress: Progress | None = None, stop_row: int | None = None
                    ) -> list[tuple[int, int, float]]:
        """(a, b, similarity), a < b store rows, of every pair with cosine >= ``threshold``
        (exact search: all; approximate: those in the ``nprobe_pairs`` cells searched, the
        projected distance being a contraction; re-scored exactly). ``stop_row``: search from
        the rows before it only (a sample, for benchmarks)."""
        if self.kind == "exact":
            x = _unit_rows(self.vectors)
            return exact_pairs(x, x, threshold, max_pairs, upper=True, progress=progress)
        faiss = _faiss()
        radius = 2.0 - 2.0 * threshold + 1e-4  # squared L2 between unit vectors
        params = faiss.SearchParametersIVF()
        params.nprobe = self.nprobe_pairs
        found: dict[tuple[int, int], float] = {}
        end = self.n if stop_row is None else min(stop_row, self.n)
        for start in range(0, end, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, end)
            q = normalize(self.vectors[start:stop])
            lims, _, ids = self.ivf.range_search(self.pca.apply(q), radius, params=params)
            qi = np.repeat(np.arange(start, stop), np.diff(lims).astype(np.int64))
            b = self.rows[ids]
            keep = (b >= 0) & (b != qi)  # removed rows are -1
            a, b = np.minimum(qi[keep], b[keep]), np.maximum(qi[keep], b[keep])
            sims = np.einsum("ij,ij->i", normalize(self.vectors[a]), normalize(self.vectors[b])) \
                if len(a) else np.empty(0, np.float32)
            hit = sims >= threshold - 1e-6
            for i, j, s in zip(a[hit].tolist(), b[hit].tolist(), sims[hit].tolist()):
                found[(i, j)] = min(s, 1.0)  # a pair seen from both of its rows counts once
            if len(found) > max_pairs:
                raise _too_many(max_pairs, threshold)
            if progress:
                progress("pairs", stop, end)
        return [(a, b, s) for (a, b), s in sorted(found.items())]

    def _join_by_search(self, members: np.ndarray, k: int, allowed: np.ndarray | None,
                        progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
        """Each row of ``members`` searched (``k + 1``, itself dropped), a block at a time."""
        out_rows = np.empty((len(members), k), np.int64)
        out_sims = np.empty((len(members), k), np.float32)
        nprobe, self.nprobe_knn = self.nprobe_knn, self.nprobe_join
        try:
            for start in range(0, len(members), BLOCK_ROWS):
                rows = members[start:start + BLOCK_ROWS]
                got = self.search(self.vectors[rows], k + 1, allowed, RESCORE_JOIN)
                out_rows[start:start + len(rows)], out_sims[start:start + len(rows)] = \
                    _drop_self(rows, *got, k)
                if progress:
                    progress("neighbours", start + len(rows), len(members))
        finally:
            self.nprobe_knn = nprobe
        return out_rows, out_sims

    # --- approximate internals ------------------------------------------------------------------

    def _candidates(self, q: np.ndarray, k: int, nprobe: int, allowed: np.ndarray | None
                    ) -> np.ndarray:
        """Store rows of up to ``k`` candidates per query (-1 pads), from the IVF."""
        faiss = _faiss()

        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        live = self.rows >= 0
        if allowed is not None:
            live &= allowed[np.maximum(self.rows, 0)]
        if not live.all():
            bits = np.packbits(live, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(bits))
        _, ids = self.ivf.search(self.pca.apply(q), k, params=params)
        return np.where(ids >= 0, self.rows[np.maximum(ids, 0)], -1)

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best candidates per query by exact cosine on the store's vectors."""
        safe = np.maximum(cand, 0)
        order = np.argsort(safe.ravel(), kind="stable")  # read rows in store order
        flat = np.empty((safe.size, self.vectors.shape[1]), dtype=np.float32)
        flat[order] = normalize(self.vectors[safe.ravel()[order]])
        sims = np.einsum("qkd,qd->qk", flat.reshape(*cand.shape, -1), q)
        sims[cand < 0] = -np.inf
        best = np.lexsort((cand, -sims), axis=1)[:, :k]
        return np.take_along_axis(cand, best, 1), np.take_along_axis(sims, best, 1)


GROUPINGS = ("hash", "near")
NEAR_THRESHOLD = 0.95  # --group near: cosine of a near-twin (as featx duplicates' default)
NEAR_CAP = 50  # --group near: rows a near-twin group may hold at most


def split_groups(store: str | os.PathLike, group: str = "hash", threshold: float = NEAR_THRESHOLD,
                 exact: bool | None = None, exact_below: int = EXACT_BELOW):
    """(groups, group_name) for :func:`featx.split.split_rows`: ``"hash"`` (exact duplicates,
    the default: None) or ``"near"`` (:func:`near_groups` of the store's rows, by its index)."""
    if group not in GROUPINGS:
        raise FeatxError(f"`group` must be one of {', '.join(GROUPINGS)}, got {group!r}")
    if group == "hash":
        return None, "content hash"

    def groups(table) -> np.ndarray:
        feats = lazy_features(store)
        if len(feats.hashes) != len(table.hashes) or (feats.hashes != table.hashes).any():
            raise FeatxError(f"`group` near needs the rows of {store} itself")
        index = Index.for_store(store, exact=exact, exact_below=exact_below)
        return near_groups(feats, threshold, index=index)

    return groups, f"near-twin (cosine >= {threshold})"


def near_groups(feats: st.Features, threshold: float = NEAR_THRESHOLD, cap: int = NEAR_CAP,
                index: Index | None = None) -> np.ndarray:
    """A group id per row of ``feats``: rows joined by near-twin pairs (cosine >= ``threshold``)
    and by equal content share one, for :func:`featx.split.split_indices`' ``groups``.

    Connected components of the pairs, taken strongest first, with no component grown past
    ``cap`` rows (so a chain of look-alikes cannot swallow a class). ``index``: the store's
    (for a ``feats`` holding every stored row, in order); else an exact scan of ``feats``.
    """
    hashes = [str(h) for h in feats.hashes]
    if index is not None and index.n == feats.n:
        pairs = index.range_pairs(threshold, max_pairs=10 * MAX_PAIRS)
    else:
        x = normalize(feats.features)
        pairs = exact_pairs(x, x, threshold, 10 * MAX_PAIRS, upper=True)
    parent = np.arange(feats.n)
    size = np.ones(feats.n, dtype=np.int64)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, h in enumerate(hashes):  # exact copies first: they are one image
        j = first.setdefault(h, i)
        if j != i:
            _union(find, parent, size, i, j, None)
    for a, b, _ in sorted(pairs, key=lambda p: -p[2]):
        _union(find, parent, size, a, b, cap)
    roots = np.array([find(i) for i in range(feats.n)])
    return np.array([hashes[r] for r in roots])


def _union(find, parent: np.ndarray, size: np.ndarray, a: int, b: int, cap: int | None) -> None:
    ra, rb = find(a), find(b)
    if ra == rb or (cap is not None and size[ra] + size[rb] > cap):
        return
    if ra > rb:
        ra, rb = rb, ra
    parent[rb] = ra  # the lowest row is the root: its hash names the group
    size[ra] += size[rb]


# --- exact search -----------------------------------------------------------------------------


def exact_pairs(x: np.ndarray, y: np.ndarray, threshold: float, max_pairs: int = MAX_PAIRS,
                upper: bool = False, progress: Progress | None = None,
                block_cells: int = 1 << 24) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for rows i of ``x`` and j of ``y`` (unit vectors) with dot product
    >= ``threshold``; with ``upper`` (``x`` is ``y``) only j > i. Blocks of rows of ``x``, so memory
    is bounded by ``block_cells`` similarities."""
    n, m = len(x), len(y)
    block = max(1, min(n, block_cells // max(m, 1)))
    found: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        first = start if upper else 0  # upper triangle: columns from ``start`` on
        sims = np.asarray(x[start:stop]) @ np.asarray(y[first:]).T
        ii, jj = np.nonzero(sims >= threshold - 1e-6)
        if upper:  # j is offset by ``start``; drop the diagonal and the lower triangle
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
        found += [(start + int(i), first + int(j), min(float(sims[i, j]), 1.0))
                  for i, j in zip(ii, jj)]
        if len(found) > max_pairs:
            raise _too_many(max_pairs, threshold)
        if progress:
            progress("pairs", stop, n)
    return found


def _too_many(max_pairs: int, threshold: float) -> FeatxError:
    return FeatxError(f"more than {max_pairs:,} pairs have similarity >= {threshold}; "
                      f"raise `threshold` (near-duplicates are usually above 0.95)")


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """All rows as unit vectors (exact search holds them: it is used below EXACT_BELOW rows, or
    when asked for)."""
    out = np.empty(vectors.shape, dtype=np.float32)
    for start, block in _blocks(vectors):
        out[start:start + len(block)] = block
    return out


def _blocks(vectors: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(vectors), rows):
        yield start, normalize(vectors[start:start + rows])


def topk_cosine(
    queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by cosine similarity for each query, scanning ``(start_row, block)`` pairs.

    Returns ``(rows, similarities)``, each (n_queries, k'), best first, where k' = min(k, rows seen);
    ties are broken by the lower row index so results are reproducible.
    """
    q = normalize(queries)
    best_rows = np.empty((len(q), 0), dtype=np.int64)
    best_sims = np.empty((len(q), 0), dtype=np.float32)
    for start, block in blocks:
        block = np.asarray(block, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))  # no normalised copy of the block
        sims = (q @ block.T) / np.maximum(norms, 1e-12)  # (n_queries, block_rows)
        rows = np.broadcast_to(np.arange(start, start + block.shape[0]), sims.shape)
        if sims.shape[1] > k:  # keep only this block's candidates before merging
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            sims, rows = np.take_along_axis(sims, part, 1), np.take_along_axis(rows, part, 1)
        all_sims = np.concatenate([best_sims, sims], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        order = np.lexsort((all_rows, -all_sims), axis=1)[:, :k]
        best_sims = np.take_along_axis(all_sims, order, 1)
        best_rows = np.take_along_axis(all_rows, order, 1)
    return best_rows, best_sims


def _exact_topk(q: np.ndarray, vectors: np.ndarray, k: int, allowed: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of all rows, or of the ``allowed`` ones, by a blocked scan."""
    step = 4 * BLOCK_ROWS
    if allowed is None:
        return topk_cosine(q, ((s, vectors[s:s + step]) for s in range(0, len(vectors), step)), k)
    members = np.flatnonzero(allowed)
    rows, sims = topk_cosine(q, ((s, vectors[members[s:s + step]])
                                 for s in range(0, len(members), step)), k)
    return members[rows], sims


def _drop_self(rows: np.ndarray, got_rows: np.ndarray, got_sims: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``k + 1`` neighbours per row, the row itself (or one copy) dropped."""
    out_rows = np.empty((len(rows), k), np.int64)
    out_sims = np.empty((len(rows), k), np.float32)
    for j, own in enumerate(rows):
        keep = np.flatnonzero(got_rows[j] != own)[:k]
        if len(keep) < k:
            keep = np.arange(1, k + 1)
        out_rows[j], out_sims[j] = got_rows[j, keep], got_sims[j, keep]
    return out_rows, out_sims


def _mask(among: np.ndarray | None, n: int) -> np.ndarray | None:
    if among is None:
        return None
    among = np.asarray(among)
    if among.dtype == bool:
        return among
    mask = np.zeros(n, dtype=bool)
    mask[among] = True
    return mask


# --- building, syncing, saving ------------------------------------------------------------------


def build(vectors: np.ndarray, pca_dim: int = PCA_DIM, nlist: int | None = None, seed: int = 0,
          progress: Progress | None = None) -> tuple[object, object]:
    """A trained PCA and an IVF holding every row of ``vectors`` (ids = row numbers)."""
    faiss = _faiss()

    n, d = vectors.shape
    nlist = nlist or int(np.clip(2 * np.sqrt(n), 1, 4096))
    nlist = max(1, min(nlist, n // 39))  # faiss wants 39 training points a cell
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, max(40 * nlist, 50_000)), replace=False))
    train = normalize(vectors[sample])
    pca = faiss.PCAMatrix(d, min(pca_dim, d), 0.0, False)
    pca.train(train)
    quantizer = faiss.IndexFlatL2(pca.d_out)
    ivf = faiss.IndexIVFFlat(quantizer, pca.d_out, nlist, faiss.METRIC_L2)
    ivf.cp.seed, ivf.cp.niter = seed, 10
    ivf.train(pca.apply(train[:40 * nlist]))
    _add(ivf, pca, vectors, 0, progress)
    return ivf, pca


def _add(ivf, pca, vectors: np.ndarray, first_id: int, progress: Progress | None) -> None:
    for start, block in _blocks(vectors, 4 * BLOCK_ROWS):
        ids = np.arange(first_id + start, first_id + start + len(block), dtype=np.int64)
        ivf.add_with_ids(pca.apply(block), ids)
        if progress:
            progress("index", start + len(block), len(vectors))


def _sync_or_build(loaded, vectors: np.ndarray, hashes: np.ndarray, ident: dict,
                   progress: Progress | None):
    """Bring a loaded index in step with the store by content hash (new rows added, removed
    ones masked), or build a new one when the extractor changed or too much is gone."""
    text = hashes.astype(str)
    if loaded is not None and loaded[2]["store"]["fingerprint"] == ident["fingerprint"]:
        ivf, pca, meta, _ = loaded
        old = meta["hashes"].astype(str)
        row_of = {h: i for i, h in enumerate(text)}
        rows = np.array([row_of.get(h, -1) for h in old], dtype=np.int64)
        new = np.setdiff1d(np.arange(len(text)), rows[rows >= 0])
        if (rows < 0).mean() <= REBUILD_SHARE:
            if len(new):
                _add(ivf, pca, vectors[new] if len(new) < len(text) else vectors, len(old), progress)
            rows = np.concatenate([rows, new])
            all_hashes = np.concatenate([meta["hashes"], hashes[new]])
            return ivf, pca, {**meta, "hashes": all_hashes}, rows, "extended"
    ivf, pca = build(vectors, progress=progress)
    return ivf, pca, {"hashes": hashes}, np.arange(len(vectors), dtype=np.int64), "built"


def _load(store: Path, ident: dict):
    """(ivf, pca, meta, rows) of the saved index, or None when there is none or it cannot be read
    (then it is rebuilt). ``meta["hashes"]``: the content hash of each indexed vector."""
    faiss = _faiss()

    folder = index_dir(store)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != INDEX_VERSION or meta["store"]["fingerprint"] != ident["fingerprint"]:
            return None
        # in step with the store: map the file (a 1M index opens in milliseconds, not seconds);
        # else read it whole, to be extended
        flags = faiss.IO_FLAG_MMAP if meta["store"] == ident else 0
        pre = faiss.read_index(str(folder / "index.faiss"), flags)
        meta["hashes"] = np.load(folder / "hashes.npy", mmap_mode="r")  # read when syncing
        rows = np.load(folder / "rows.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    pca = faiss.downcast_VectorTransform(pre.chain.at(0))
    ivf = faiss.extract_index_ivf(pre)
    pre.own_fields = False  # keep the parts alive after ``pre`` goes
    meta["_keep"] = pre
    return ivf, pca, meta, rows


def _save(store: Path, index: Index, ident: dict, hashes: np.ndarray) -> None:
    """Write the index whole, then swap it in for the old one (a kill -9 leaves either)."""
    faiss = _faiss()

    folder = index_dir(store)
    try:
        with atomic_folder(folder, "the neighbour index") as tmp:
            pre = faiss.IndexPreTransform(index.pca, index.ivf)
            pre.own_fields = False
            faiss.write_index(pre, str(tmp / "index.faiss"))
            np.save(tmp / "hashes.npy", np.asarray(hashes, dtype="S64"))
            np.save(tmp / "rows.npy", index.rows)
            (tmp / "meta.json").write_text(json.dumps({
                "version": INDEX_VERSION, "store": ident, "kind": index.kind,
                "nlist": int(index.ivf.nlist), "pca_dim": int(index.pca.d_out),
                "n_indexed": int(index.ivf.ntotal), "written": utc_now()}, indent=1))
            for name in ("index.faiss", "hashes.npy", "rows.npy", "meta.json"):
                with open(tmp / name, "rb+") as fh:
                    os.fsync(fh.fileno())
    except FeatxError as e:  # a read-only folder: the index still serves this run
        index.info["not_saved"] = str(e)
