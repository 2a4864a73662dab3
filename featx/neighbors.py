"""neighbors: cosine k-nearest-neighbour search over a store's vectors, by :mod:`featx.index`.

Vectors are L2-normalised, so cosine similarity is a dot product. Small stores are scanned exactly
a block of rows at a time (a running top-k per query, memory bounded by ``queries x chunk_rows``);
from :data:`featx.index.EXACT_BELOW` rows on the store's approximate index answers. A query is a
stored image (by its path in the store) or a new image file, embedded with the store's own
extractor settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from featx.discover import hash_file
from featx.errors import FeatxError
from featx.index import EXACT_BELOW, Index, normalize, topk_cosine  # noqa: F401  (moved)
from featx import store as st

CHUNK_ROWS = 16384


@dataclass
class Neighbor:
    rank: int
    path: str
    label: str
    similarity: float


@dataclass
class QueryResult:
    query: str
    source: str  # "stored" (a row of the store) or "file" (embedded now, or found by content)
    label: str | None  # the stored class, for stored queries
    neighbors: list[Neighbor] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"query": self.query, "source": self.source, "label": self.label,
                "neighbors": [vars(n) for n in self.neighbors]}


def find_neighbors(
    store: str | os.PathLike, queries: list[str], k: int = 8, weights: str | None = None,
    chunk_rows: int = CHUNK_ROWS, exact: bool | None = None, exact_below: int = EXACT_BELOW,
) -> list[QueryResult]:
    """The ``k`` most similar stored images for each query (a stored path or an image file).

    A stored query is its own first neighbour (similarity 1). A file whose content is already in
    the store uses the stored vector; other files are embedded with the store's extractor
    (``weights`` overrides the weights path recorded in the store). ``exact``: True for an exact
    scan, False for the index, None for exact below ``exact_below`` rows (:class:`Index`).
    """
    if k < 1:
        raise FeatxError(f"`k` must be at least 1, got {k}")
    if not queries:
        raise FeatxError("give at least one query: a path stored in the store, or an image file")
    with st.open_store(store) as f:
        meta = st.read_attrs(f)
        paths = st.strings(f["paths"])
        hashes = st.strings(f["hashes"])
        labels = f["labels"][:]
        class_names = st.strings(f["class_names"])
        row_of_path = {p: i for i, p in enumerate(paths)}
        row_of_hash = {h: i for i, h in reversed(list(enumerate(hashes)))}
        results, vectors, to_embed = [], [None] * len(queries), []
        self_rows: list[int | None] = [None] * len(queries)  # store row of each stored query
        for j, q in enumerate(queries):
            row = _stored_row(q, row_of_path, row_of_hash, meta.get("data_dir"))
            if row is not None:
                vectors[j] = f["features"][row].astype(np.float32)
                stored = _as_stored(q, row_of_path, meta.get("data_dir"))
                self_rows[j] = row if stored else None
                results.append(QueryResult(q, "stored" if stored else "file",
                                           class_names[labels[row]]))
            elif Path(q).exists():  # the reader says why a FIFO or a folder is refused
                to_embed.append(j)
                results.append(QueryResult(q, "file", None))
            else:
                raise FeatxError(f"{q} is neither a path stored in {store} nor an image file")
    if to_embed:
        _embed_queries(meta, weights, [queries[j] for j in to_embed], to_embed, vectors)
    index = Index.for_store(store, exact=exact, exact_below=exact_below)
    if index.kind == "exact":
        rows, sims = topk_cosine(np.stack(vectors), st_blocks(store, chunk_rows), k)
    else:
        rows, sims = index.search(np.stack(vectors), k)
    for j, own in enumerate(self_rows):
        if own is not None:  # a stored query comes first among its exact copies
            _self_first(rows[j], sims[j], own)
    for res, r_row, s_row in zip(results, rows, sims):
        res.neighbors = [
            Neighbor(rank + 1, paths[r], class_names[labels[r]], round(float(s), 6))
            for rank, (r, s) in enumerate(zip(r_row, s_row))
        ]
    return results


def _self_first(rows: np.ndarray, sims: np.ndarray, own: int) -> None:
    """Move ``own`` to rank 1 (in place) when it ties with the best similarity."""
    hit = np.flatnonzero(rows == own)
    if len(hit) and hit[0] > 0 and sims[hit[0]] >= sims[0] - 1e-6:
        i, own_sim = hit[0], sims[hit[0]]
        rows[1:i + 1], sims[1:i + 1] = rows[:i].copy(), sims[:i].copy()
        rows[0], sims[0] = own, own_sim


def st_blocks(store: str | os.PathLike, chunk_rows: int) -> Iterable[tuple[int, np.ndarray]]:
    """(start_row, features) blocks of a store, read lazily."""
    for rows, block, _ in st.iter_chunks(store, chunk_rows):
        yield rows.start, block


def _as_stored(q: str, row_of_path: dict, data_dir: str | None) -> bool:
    return q in row_of_path or _relative_to_data(q, data_dir) in row_of_path


def _stored_row(q: str, row_of_path: dict, row_of_hash: dict, data_dir: str | None) -> int | None:
    """The store row of a query: by stored path, by file inside the data folder, or by content."""
    if q in row_of_path:
        return row_of_path[q]
    rel = _relative_to_data(q, data_dir)
    if rel in row_of_path:
        return row_of_path[rel]
    h, _ = hash_file(Path(q))  # through featx.decode.read_file: a FIFO is refused, not read
    return row_of_hash.get(h) if h else None


def _relative_to_data(q: str, data_dir: str | None) -> str | None:
    if not data_dir or not Path(q).exists():
        return None
    for path in (Path(os.path.abspath(q)), Path(q).resolve()):  # symlinks kept, then resolved
        for root in (Path(os.path.abspath(data_dir)), Path(data_dir).resolve()):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
    return None


def _embed_queries(meta: dict, weights: str | None, files: list[str], slots: list[int],
                   vectors: list) -> None:
    from featx.embed import Extractor

    extractor = Extractor.from_meta(meta, weights=weights)
    got, ok, failures = extractor.embed_files(files)
    if failures:
        path, reason = failures[0]
        raise FeatxError(f"cannot embed {path}: {reason}")
    for vec, i in zip(got, ok):
        vectors[slots[i]] = vec
