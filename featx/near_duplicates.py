"""near_duplicates: exact duplicates (same content hash) and near-duplicates (cosine >= threshold).

Pairs are found by the store's :class:`featx.index.Index`: below its size threshold a blocked
all-pairs scan of the L2-normalised vectors (upper triangle only, so memory is bounded by
``block x N`` similarities), above it a range search of the approximate index, re-scored
exactly. Groups are tight, not chains: every two members of a group are a pair (complete-linkage
clustering, scipy, cut at the threshold, run within each connected component of the pairs), so
A~B and B~C do not put A and C together unless A~C. Pairs and groups whose images carry
different labels come first: they are likely label errors or leaks across classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from featx.errors import FeatxError
from featx.index import EXACT_BELOW, Index, exact_pairs, lazy_features

DEFAULT_THRESHOLD = 0.95
MAX_PAIRS = 200_000
MAX_LINKED = 5000  # images linked by pairs into one component: complete linkage is quadratic in it
Progress = Callable[[str, int, int], None]  # (stage, done, total)


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
    groups: list[list[int]]  # rows per group, every two of them a pair; cross-label groups first
    group_similarity: list[float]  # per group, the lowest similarity of two of its members
    paths: list[str]
    labels: list[str]  # class name per row
    data_dir: str | None

    def as_dict(self) -> dict:
        def row(i: int) -> dict:
            return {"path": self.paths[i], "label": self.labels[i]}

        return {
            "n": self.n, "threshold": self.threshold,
            "n_exact_pairs": sum(p.kind == "exact" for p in self.pairs),
            "n_near_pairs": sum(p.kind == "near" for p in self.pairs),
            "n_cross_label_pairs": sum(p.cross_label for p in self.pairs),
            "grouping": "complete linkage: every two members of a group are a pair",
            "pairs": [{"a": row(p.a), "b": row(p.b), "similarity": p.similarity, "kind": p.kind,
                       "cross_label": p.cross_label} for p in self.pairs],
            "groups": [{"cross_label": len({self.labels[i] for i in g}) > 1,
                        "labels": sorted({self.labels[i] for i in g}),
                        "min_similarity": s, "members": [row(i) for i in g]}
                       for g, s in zip(self.groups, self.group_similarity)],
        }


def find_duplicates(store: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD,
                    max_pairs: int = MAX_PAIRS, progress: Progress | None = None,
                    exact: bool | None = None, exact_below: int = EXACT_BELOW) -> DuplicateReport:
    """Exact and near-duplicate pairs of a store, in tight groups, cross-label ones first.

    ``progress(stage, done, total)`` follows the scan (stage ``"pairs"``, rows done). ``exact``:
    True for the exact scan, False for the index, None for exact below ``exact_below`` rows.
    """
    if not 0.0 < threshold <= 1.0:
        raise FeatxError(f"`threshold` must be in (0, 1], got {threshold}")
    feats = lazy_features(store)
    index = Index.for_store(store, exact=exact, exact_below=exact_below, progress=progress)
    pairs: dict[tuple[int, int], Pair] = {}
    for group in _hash_groups(feats.hashes):
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                pairs[(a, b)] = Pair(a, b, 1.0, "exact", bool(feats.labels[a] != feats.labels[b]))
    for a, b, s in index.range_pairs(threshold, max_pairs, progress):
        if (a, b) not in pairs:
            pairs[(a, b)] = Pair(a, b, round(s, 6), "near", bool(feats.labels[a] != feats.labels[b]))
    ordered = sorted(pairs.values(), key=lambda p: (not p.cross_label, -p.similarity, p.a, p.b))
    names = [feats.class_names[i] for i in feats.labels]
    groups = tight_groups(feats.features, ordered, threshold)
    groups.sort(key=lambda g: (len({names[i] for i in g[0]}) == 1, -g[1], g[0][0]))
    return DuplicateReport(feats.n, threshold, ordered, [g for g, _ in groups],
                           [s for _, s in groups], feats.paths, names, feats.meta.get("data_dir"))


def near_pairs(x: np.ndarray, threshold: float, max_pairs: int = MAX_PAIRS,
               progress: Progress | None = None) -> list[tuple[int, int, float]]:
    """(a, b, similarity) with a < b for rows of unit vectors ``x`` whose dot product >= threshold."""
    return exact_pairs(x, x, threshold, max_pairs, upper=True, progress=progress)


def cross_pairs(x: np.ndarray, y: np.ndarray, threshold: float,
                max_pairs: int = MAX_PAIRS) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for rows i of ``x`` and j of ``y`` (unit vectors) whose dot product
    >= threshold: the pairs between two sets, e.g. the test and the training part."""
    return exact_pairs(x, y, threshold, max_pairs)


def tight_groups(x: np.ndarray, pairs: list[Pair], threshold: float) -> list[tuple[list[int], float]]:
    """(rows, lowest similarity within) of each group of two or more rows in which every two rows
    of vectors ``x`` (any scale) have similarity >= ``threshold``: complete linkage on each
    connected component of ``pairs``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    groups = []
    for rows in _components(pairs):
        if len(rows) > MAX_LINKED:
            raise FeatxError(f"{len(rows):,} images are linked by pairs with similarity >= "
                             f"{threshold}: too many to group; raise `threshold`")
        dist = np.clip(pdist(x[rows].astype(np.float64), "cosine"), 0.0, 2.0)
        labels = fcluster(linkage(dist, method="complete"), t=1.0 - threshold + 1e-6,
                          criterion="distance")
        for k in np.unique(labels):
            members = sorted(int(r) for r in np.asarray(rows)[labels == k])
            if len(members) > 1:
                worst = pdist(x[members].astype(np.float64), "cosine").max()
                groups.append((members, round(min(1.0, 1.0 - float(worst)), 6)))
    return groups


def _hash_groups(hashes: np.ndarray) -> list[list[int]]:
    rows: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        rows.setdefault(str(h), []).append(i)
    return [g for g in rows.values() if len(g) > 1]


def _components(pairs: list[Pair]) -> list[list[int]]:
    """Rows of each connected component of the pair graph (union-find), sorted."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        parent[find(p.a)] = find(p.b)
    members: dict[int, list[int]] = {}
    for r in sorted(parent):
        members.setdefault(find(r), []).append(r)
    return list(members.values())
