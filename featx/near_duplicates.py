"""near_duplicates: exact duplicates (same content hash) and near-duplicates (cosine >= threshold).

Pairs are found by a blocked all-pairs scan of the L2-normalised vectors (upper triangle only, so
memory is bounded by ``block x N`` similarities), then joined into groups (connected components).
Pairs and groups whose images carry different labels come first: they are likely label errors or
leaks across classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featx.errors import FeatxError
from featx.neighbors import normalize
from featx.store import load_features

DEFAULT_THRESHOLD = 0.95
MAX_PAIRS = 200_000
BLOCK_CELLS = 1 << 24  # similarities computed at a time (64 MB of float32)


@dataclass
class Pair:
    a: int  # store rows, a < b
    b: int
    similarity: float
    kind: str  # "exact" (same content hash) or "near"
    cross_label: bool


@dataclass
class DuplicateReport:
    n: int
    threshold: float
    pairs: list[Pair]  # cross-label first, then by similarity, highest first
    groups: list[list[int]]  # rows per group; groups with a cross-label pair first
    paths: list[str]
    labels: list[str]  # class name per row
    data_dir: str | None

    def as_dict(self) -> dict:
        def row(i: int) -> dict:
            return {"path": self.paths[i], "label": self.labels[i]}

        cross_rows = {r for p in self.pairs if p.cross_label for r in (p.a, p.b)}
        return {
            "n": self.n, "threshold": self.threshold,
            "n_exact_pairs": sum(p.kind == "exact" for p in self.pairs),
            "n_near_pairs": sum(p.kind == "near" for p in self.pairs),
            "n_cross_label_pairs": sum(p.cross_label for p in self.pairs),
            "pairs": [{"a": row(p.a), "b": row(p.b), "similarity": p.similarity, "kind": p.kind,
                       "cross_label": p.cross_label} for p in self.pairs],
            "groups": [{"cross_label": bool(cross_rows & set(g)),
                        "labels": sorted({self.labels[i] for i in g}),
                        "members": [row(i) for i in g]} for g in self.groups],
        }


def find_duplicates(store: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD,
                    max_pairs: int = MAX_PAIRS) -> DuplicateReport:
    """Exact and near-duplicate pairs of a store, grouped, cross-label ones first."""
    if not 0.0 < threshold <= 1.0:
        raise FeatxError(f"`threshold` must be in (0, 1], got {threshold}")
    feats = load_features(store)
    x = normalize(feats.features)
    pairs: dict[tuple[int, int], Pair] = {}
    for group in _hash_groups(feats.hashes):
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                pairs[(a, b)] = Pair(a, b, 1.0, "exact", bool(feats.labels[a] != feats.labels[b]))
    for a, b, s in near_pairs(x, threshold, max_pairs):
        if (a, b) not in pairs:
            pairs[(a, b)] = Pair(a, b, round(s, 6), "near", bool(feats.labels[a] != feats.labels[b]))
    ordered = sorted(pairs.values(), key=lambda p: (not p.cross_label, -p.similarity, p.a, p.b))
    names = [feats.class_names[i] for i in feats.labels]
    return DuplicateReport(feats.n, threshold, ordered, _groups(ordered, feats.n), feats.paths,
                           names, feats.meta.get("data_dir"))


def near_pairs(x: np.ndarray, threshold: float,
               max_pairs: int = MAX_PAIRS) -> list[tuple[int, int, float]]:
    """(a, b, similarity) with a < b for rows of unit vectors ``x`` whose dot product >= threshold."""
    return _scan(x, x, threshold, max_pairs, upper=True)


def cross_pairs(x: np.ndarray, y: np.ndarray, threshold: float,
                max_pairs: int = MAX_PAIRS) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for rows i of ``x`` and j of ``y`` (unit vectors) whose dot product
    >= threshold: the pairs between two sets, e.g. the test and the training part."""
    return _scan(x, y, threshold, max_pairs, upper=False)


def _scan(x: np.ndarray, y: np.ndarray, threshold: float, max_pairs: int,
          upper: bool) -> list[tuple[int, int, float]]:
    """Blocks of rows of ``x`` against ``y`` (only columns after the row when ``upper``)."""
    n, m = len(x), len(y)
    block = max(1, min(n, BLOCK_CELLS // max(m, 1)))
    found: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        first = start if upper else 0  # upper triangle: columns from ``start`` on
        sims = x[start:stop] @ y[first:].T
        ii, jj = np.nonzero(sims >= threshold - 1e-6)
        if upper:  # j is offset by ``start``; drop the diagonal and the lower triangle
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
        for i, j in zip(ii, jj):
            found.append((start + int(i), first + int(j), min(float(sims[i, j]), 1.0)))
        if len(found) > max_pairs:
            raise FeatxError(
                f"more than {max_pairs:,} pairs have similarity >= {threshold}; "
                f"raise `threshold` (near-duplicates are usually above 0.95)")
    return found


def _hash_groups(hashes: np.ndarray) -> list[list[int]]:
    rows: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        rows.setdefault(str(h), []).append(i)
    return [g for g in rows.values() if len(g) > 1]


def _groups(pairs: list[Pair], n: int) -> list[list[int]]:
    """Connected components of the pair graph, groups holding a cross-label pair first."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        parent[find(p.a)] = find(p.b)
    members: dict[int, list[int]] = {}
    for p in pairs:
        for r in (p.a, p.b):
            root = find(r)
            if r not in members.setdefault(root, []):
                members[root].append(r)
    cross = {find(p.a) for p in pairs if p.cross_label}
    best = {}
    for p in pairs:
        best[find(p.a)] = max(best.get(find(p.a), 0.0), p.similarity)
    roots = sorted(members, key=lambda r: (r not in cross, -best[r], min(members[r])))
    return [sorted(members[r]) for r in roots]
