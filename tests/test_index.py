"""featx.index: approximate search against exact, staleness, atomic saving, the commands' use."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from featx.errors import FeatxError
from featx.index import Index, index_dir, near_groups
from featx.store import load_features, save_features
from tests.conftest import structured_store

N = 3000


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    """A 3,000 x 32 store with clusters along few directions and 30 planted near-twins."""
    path, twins = structured_store(tmp_path_factory.mktemp("ix") / "s.h5", N, dim=32, twins=30)
    return path, twins


def fresh_copy(structured, tmp_path):
    path = tmp_path / "s.h5"
    shutil.copy(structured[0], path)
    return path


def pair_set(pairs):
    return {(a, b) for a, b, _ in pairs}


def test_approximate_matches_exact_on_structured_vectors(structured, tmp_path):
    path = fresh_copy(structured, tmp_path)
    approx = Index.for_store(path, exact_below=100)
    exact = Index.for_store(path, exact=True)
    assert approx.kind == "ivf" and exact.kind == "exact"
    assert (index_dir(path) / "index.faiss").is_file()
    queries = np.asarray(approx.vectors[::10])
    rows, sims = approx.search(queries, 10)
    rows0, sims0 = exact.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, rows0)])
    assert recall >= 0.97
    assert np.allclose(sims[:, 0], sims0[:, 0], atol=1e-5)  # re-scored exactly
    got, want = pair_set(approx.range_pairs(0.97)), pair_set(exact.range_pairs(0.97))
    assert len(want) >= 30 and len(got & want) >= 0.99 * len(want) and got <= want
    planted = {tuple(sorted(t)) for t in structured[1]}
    assert planted <= got


def test_self_join_among_a_subset(structured, tmp_path):
    path = fresh_copy(structured, tmp_path)
    feats = load_features(path)
    among = feats.labels == 1
    rows, sims = Index.for_store(path, exact_below=100).self_join(5, among=among)
    rows0, _ = Index.for_store(path, exact=True).self_join(5, among=among)
    assert rows.shape == (among.sum(), 5)
    assert among[rows].all() and not (rows == np.flatnonzero(among)[:, None]).any()
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, rows0)]) >= 0.97
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first


def test_loaded_then_extended_when_rows_are_added_and_removed(structured, tmp_path):
    path = fresh_copy(structured, tmp_path)
    first = Index.for_store(path, exact_below=100)
    assert first.info["how"] == "built"
    assert Index.for_store(path, exact_below=100).info["how"] == "loaded"
    feats = load_features(path)
    keep = np.arange(feats.n) != 7  # one row removed, two new ones (a near copy of row 5)
    new = np.stack([feats.features[5] * 1.001, feats.features[9] + 0.5]).astype(np.float32)
    feats.features = np.concatenate([feats.features[keep], new])
    feats.labels = np.concatenate([feats.labels[keep], [0, 0]])
    feats.paths = [p for p, k in zip(feats.paths, keep) if k] + ["new/a.jpg", "new/b.jpg"]
    feats.hashes = np.concatenate([feats.hashes[keep], ["a" * 64, "b" * 64]])
    save_features(path, feats)
    index = Index.for_store(path, exact_below=100)
    assert index.info["how"] == "extended" and index.n == N + 1
    rows, sims = index.search(feats.features[-2:], 2)
    assert rows[0, 0] == N - 1 and rows[1, 0] == N  # the new rows are found
    exact_rows, _ = Index.for_store(path, exact=True).search(feats.features[:50], 3)
    assert (index.search(feats.features[:50], 3)[0] == exact_rows).mean() >= 0.97
    saved = json.loads((index_dir(path) / "meta.json").read_text())
    assert saved["store"]["n"] == N + 1 and saved["n_indexed"] == N + 2
    assert Index.for_store(path, exact_below=100).info["how"] == "loaded"


def test_rebuilt_when_most_rows_are_gone(structured, tmp_path):
    path = fresh_copy(structured, tmp_path)
    Index.for_store(path, exact_below=100)
    feats = load_features(path)
    keep = slice(0, N // 2)
    feats.features, feats.labels = feats.features[keep], feats.labels[keep]
    feats.paths, feats.hashes = feats.paths[keep], feats.hashes[keep]
    save_features(path, feats)
    index = Index.for_store(path, exact_below=100)
    assert index.info["how"] == "built" and index.ivf.ntotal == N // 2


def test_half_written_or_damaged_index_is_never_used(structured, tmp_path, monkeypatch):
    import faiss

    path = fresh_copy(structured, tmp_path)
    Index.for_store(path, exact_below=100)
    before = (index_dir(path) / "index.faiss").read_bytes()
    # a save killed half-way: the temporary folder holds part of a new index; the old one stays
    real_write = faiss.write_index

    def dies_half_way(index, name):
        real_write(index, name)
        with open(name, "r+b") as fh:
            fh.truncate(100)
        raise OSError("killed")

    monkeypatch.setattr(faiss, "write_index", dies_half_way)
    feats = load_features(path)
    feats.features = feats.features[:-1]
    feats.labels, feats.paths, feats.hashes = feats.labels[:-1], feats.paths[:-1], feats.hashes[:-1]
    save_features(path, feats)
    index = Index.for_store(path, exact_below=100)  # works in memory, says it was not saved
    assert index.info["how"] == "extended" and "not_saved" in index.info
    assert (index_dir(path) / "index.faiss").read_bytes() == before
    monkeypatch.undo()
    again = Index.for_store(path, exact_below=100)  # the old one, brought in step again
    assert again.info["how"] == "extended" and "not_saved" not in again.info
    # a damaged file in place (disk trouble): rebuilt, not read
    with open(index_dir(path) / "index.faiss", "r+b") as fh:
        fh.truncate(200)
    assert Index.for_store(path, exact_below=100).info["how"] == "built"


def test_duplicates_and_neighbors_use_the_index_above_the_threshold(structured, tmp_path):
    from featx.near_duplicates import find_duplicates
    from featx.neighbors import find_neighbors

    path = fresh_copy(structured, tmp_path)
    small = find_duplicates(path, threshold=0.97, exact_below=10**9)
    assert not index_dir(path).exists()
    big = find_duplicates(path, threshold=0.97, exact_below=100)
    assert index_dir(path).is_dir()
    assert len(big.pairs) >= 0.99 * len(small.pairs) and len(small.pairs) >= 30
    queries = load_features(path).paths[:20]
    by_index = find_neighbors(path, queries, k=5, exact_below=100)
    by_scan = find_neighbors(path, queries, k=5, exact=True)
    same = np.mean([[a.path == b.path for a, b in zip(r.neighbors, s.neighbors)]
                    for r, s in zip(by_index, by_scan)])
    assert same >= 0.95 and all(r.neighbors[0].path == r.query for r in by_index)


def test_near_groups_keep_twins_together_and_cap_chains(structured):
    feats = load_features(structured[0])
    groups = near_groups(feats, threshold=0.97)
    for a, b in structured[1]:
        assert groups[a] == groups[b]
    sizes = np.unique(groups, return_counts=True)[1]
    assert sizes.max() <= 50 and (sizes == 1).sum() > N // 2
    # a chain a~b~c~d~e: with cap 3 no group holds more than three of them
    x = np.zeros((5, 8), np.float32)
    for i in range(5):
        x[i, 0], x[i, 1] = np.cos(0.2 * i), np.sin(0.2 * i)  # neighbours at cosine 0.98
    chain = type(feats)(x, np.zeros(5, int), [str(i) for i in range(5)],
                        np.array([f"{i:064x}" for i in range(5)]), ["a"], {})
    got = near_groups(chain, threshold=0.97, cap=3)
    assert np.unique(got, return_counts=True)[1].max() == 3
    assert len(set(near_groups(chain, threshold=0.97, cap=50))) == 1


def test_exact_below_counts_rows_and_errors_stay_featx(structured, tmp_path):
    path = fresh_copy(structured, tmp_path)
    assert Index.for_store(path).kind == "exact"  # 3,000 rows: below the default
    with pytest.raises(FeatxError, match="raise"):
        Index.for_store(path, exact_below=100).range_pairs(0.3, max_pairs=10)


def test_group_near_keeps_planted_twins_in_one_part(structured):
    from featx.split import split_indices

    feats = load_features(structured[0])
    groups = near_groups(feats, threshold=0.97)
    part_of = {}
    for name, rows in split_indices(feats.hashes, feats.labels, groups=groups).items():
        part_of.update({int(r): name for r in rows})
    assert all(part_of[a] == part_of[b] for a, b in structured[1])
    plain = split_indices(feats.hashes, feats.labels)  # by hash alone some twins straddle
    plain_of = {int(r): name for name, rows in plain.items() for r in rows}
    assert any(plain_of[a] != plain_of[b] for a, b in structured[1])


def test_audit_uses_the_index_and_cli_group_near(structured, tmp_path):
    import subprocess
    import sys

    from featx.audit import audit_store

    path = fresh_copy(structured, tmp_path)
    every = -1e9  # list every row as an outlier, ranked, to compare the rankings
    by_index = audit_store(path, folds=2, threshold=0.97, exact_below=100, outlier_z=every)
    assert index_dir(path).is_dir()
    by_scan = audit_store(path, folds=2, threshold=0.97, exact=True, outlier_z=every)
    pairs = {(x.held, x.twin) for x in by_index.leaks}
    assert pairs == {(x.held, x.twin) for x in by_scan.leaks} and pairs
    worst = {x.path for x in by_index.outliers[:20]} & {x.path for x in by_scan.outliers[:20]}
    assert len(worst) >= 12  # 16 of 76 cells searched a row: a rough neighbourhood at this size
    exact_distance = {x.path: x.distance for x in by_scan.outliers}
    assert np.mean([abs(x.distance - exact_distance[x.path]) for x in by_index.outliers
                    if x.path in exact_distance]) < 0.01
    near = audit_store(path, folds=2, threshold=0.97, group="near")
    assert near.split["groups"].startswith("near-twin") and len(near.leaks) < len(by_scan.leaks)
    got = subprocess.run([sys.executable, "-c", "from featx.cli import main; main()", "fit",
                          str(path), "--C", "1", "--scale", "none", "--group", "near", "--json",
                          "-o", str(tmp_path / "bundle")], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["split"]["groups"].startswith("near-twin")
    bad = subprocess.run([sys.executable, "-c", "from featx.cli import main; main()", "fit",
                          str(path), "--group", "nearby"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--group" in bad.stderr
