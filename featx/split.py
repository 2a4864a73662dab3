"""split: a reproducible, stratified, duplicate-aware train / validation / test split.

The split is *derived*, not stored: each distinct content hash gets a rank from
``sha256(f"{seed}:{hash}")``, and within each class the hashes are ordered by that rank and cut at
the requested fractions. So every consumer (fit, sweep, baseline, report) that has the store's
hashes and labels gets the same split, rows with the same content (exact duplicates) always land
in the same part, and adding images to a data set moves few existing ones across parts.
"""

from __future__ import annotations

import hashlib

import numpy as np

from featx.errors import FeatxError

PARTS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'70/15/15' (shares adding up to 100) or '0.7,0.15,0.15' (adding up to 1) -> (0.7, 0.15, 0.15)."""
    try:
        values = [float(v) for v in text.replace("/", ",").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 0:
        raise FeatxError(f"`fractions` takes three non-negative numbers like 70/15/15, got {text!r}")
    total = sum(values)
    if not any(abs(total - whole) <= 1e-6 * whole for whole in (100.0, 1.0)):
        raise FeatxError(f"`fractions` shares must add up to 100 (e.g. 70/15/15), got {text} "
                         f"(sum {total:g})")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def split_indices(
    hashes, labels, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, np.ndarray]:
    """Row indices of each part: {"train": ..., "val": ..., "test": ...}, each sorted.

    Stratified by label; a group of rows sharing a hash is placed as one unit (by its first
    row's label), so exact duplicates never straddle parts.
    """
    hashes = [h.decode() if isinstance(h, bytes) else str(h) for h in hashes]
    labels = np.asarray(labels)
    if len(hashes) != len(labels):
        raise ValueError("hashes and labels differ in length")
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    by_class: dict[int, list[str]] = {}
    for h, rows in groups.items():
        by_class.setdefault(int(labels[rows[0]]), []).append(h)
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for label in sorted(by_class):
        ordered = sorted(by_class[label], key=lambda h: _rank(seed, h))
        n = len(ordered)
        n_train = int(round(fractions[0] * n))
        n_val = int(round((fractions[0] + fractions[1]) * n)) - n_train
        cuts = {"train": ordered[:n_train], "val": ordered[n_train:n_train + n_val],
                "test": ordered[n_train + n_val:]}
        for part, hs in cuts.items():
            for h in hs:
                parts[part].extend(groups[h])
    return {p: np.array(sorted(rows), dtype=np.int64) for p, rows in parts.items()}


def describe_split(parts: dict[str, np.ndarray], fractions, seed: int) -> dict:
    """The split as recorded in bundles and JSON output: method, fractions, seed, part sizes."""
    return {"method": "derived from content hashes (featx.split)", "fractions": list(fractions),
            "seed": seed, **{f"n_{p}": int(len(parts[p])) for p in PARTS}}


def _rank(seed: int, h: str) -> bytes:
    return hashlib.sha256(f"{seed}:{h}".encode()).digest()
