"""near_duplicates: tight groups, not chains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import META


def test_duplicate_groups_are_tight_not_chains(tmp_path: Path):
    """a~b (cosine 0.88) and b~c (0.95) but a, c at 0.69: no group holds both a and c."""
    from featx.near_duplicates import find_duplicates
    from featx.store import Features, save_features

    def unit(deg: float) -> list[float]:
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0, 0.0]

    chain = [unit(0), unit(28.36), unit(46.55)]  # a, b, c
    tight = [[0, 0, 1, 0.05], [0, 0, 1, 0.0], [0, 0.05, 1, 0.0]]  # d, e, f: all >= 0.99
    far = [[0, 0, 0, 1.0]]
    X = np.array(chain + tight + far, np.float32)
    y = np.array([0, 0, 1, 0, 1, 1, 0])
    names = ["p", "q"]
    save_features(tmp_path / "s.h5", Features(
        X, y, [f"{names[k]}/{i}.jpg" for i, k in enumerate(y)],
        np.array([f"{i:064x}" for i in range(len(y))]), names, dict(META)))
    report = find_duplicates(tmp_path / "s.h5", threshold=0.85)
    assert {(p.a, p.b) for p in report.pairs} == {(0, 1), (1, 2), (3, 4), (3, 5), (4, 5)}
    assert sorted(report.groups) == [[1, 2], [3, 4, 5]]  # a (row 0) pairs with b only
    unit_x = X / np.linalg.norm(X, axis=1, keepdims=True)
    for g, low in zip(report.groups, report.group_similarity):
        sims = unit_x[g] @ unit_x[g].T
        assert sims.min() >= 0.85 and low == pytest.approx(sims.min(), abs=1e-5)
    doc = report.as_dict()
    assert [g["members"][0]["path"] for g in doc["groups"]] == ["p/3.jpg", "p/1.jpg"]
    assert [g["cross_label"] for g in doc["groups"]] == [True, True]  # d, e, f: p, q, q; b, c: p, q
