"""featx audit: label issues (cleanlab on out-of-fold probabilities), leaks across the split,
outliers, the outputs, and ``fit --exclude``.

Mechanics run on generated stores (Gaussian blobs written with ``save_features``, no model). The
real test plants label swaps and a cross-split twin in a copy of the ``pets_store`` photos: the
store is rebuilt by ``featx extract``, which reuses every stored vector by content hash, so only
the one twin costs model time.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from featx.audit import (audit_store, find_leaks, fold_ids, knn_distance, out_of_fold_proba,
                         read_path_list)
from featx.errors import FeatxError
from featx.fit import fit_store, load_split
from featx.neighbors import normalize
from featx.split import split_indices
from featx.store import Features, load_features, save_features
from featx.sweep import run_sweep
from tests.conftest import META, cli, needs_shared, plant_label_errors, reuse_store, synthetic_store


def blobs(path: Path, counts=(60, 60, 60), dim=16, sep=4.0, seed=0, flip=(), twin=None) -> Path:
    """synthetic_store's blobs; ``flip``: rows moved to the next class (their paths say so);
    ``twin``: (row, part, twin_part) appends a near-copy of ``row`` with a new content hash,
    chosen so that the copy lands in ``twin_part`` and ``row`` in ``part``."""
    feats = load_features(synthetic_store(path, counts, dim, sep, seed))
    y = feats.labels.copy()
    paths = list(feats.paths)
    for i in flip:
        y[i] = (y[i] + 1) % len(counts)
        paths[i] = f"{feats.class_names[y[i]]}/flipped_{i}.jpg"
    X, hashes = feats.features, list(feats.hashes)
    if twin is not None:
        row, part, twin_part = twin
        X = np.vstack([X, X[row] + 0.01])
        y = np.append(y, y[row])
        paths.append(f"{feats.class_names[y[row]]}/twin.jpg")
        for k in range(1000):
            rows = split_indices(hashes + [f"{k:064x}"[::-1]], y)
            if row in rows[part] and len(y) - 1 in rows[twin_part]:
                hashes.append(f"{k:064x}"[::-1])
                break
    save_features(path, Features(X.astype(np.float32), y, paths, np.array(hashes),
                                 feats.class_names, dict(META)))
    return path


# --- the steps --------------------------------------------------------------------------------


def test_folds_are_stratified_seeded_and_keep_duplicates_together():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    hashes = np.array([f"h{i}" for i in range(100)])
    hashes[[1, 2, 60]] = "h0"  # rows 0, 1, 2 (class 0) and 60 (class 1) share one content
    fold = fold_ids(hashes, y, 5, seed=0)
    assert len({fold[0], fold[1], fold[2], fold[60]}) == 1
    for c in range(3):  # every class spread evenly over the folds (+- the duplicate group)
        counts = np.bincount(fold[y == c], minlength=5)
        assert counts.max() - counts.min() <= 4 and counts.min() >= 3
    assert (fold_ids(hashes, y, 5, seed=0) == fold).all()
    assert (fold_ids(hashes, y, 5, seed=1) != fold).any()


def test_out_of_fold_probabilities_come_from_heads_that_never_saw_the_row():
    # random labels and more dimensions than rows: a head fits its training rows perfectly,
    # so only probabilities from other folds' heads are near chance
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 400)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    proba = out_of_fold_proba(X, y, fold_ids(np.arange(200).astype(str), y, 5), 2, C=100.0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    from featx.heads import make_head
    in_sample = make_head("logreg", C=100.0).fit(X, y).predict(X)
    assert np.mean(in_sample == y) == 1.0
    assert 0.35 < np.mean(proba.argmax(1) == y) < 0.65


def test_flipped_labels_are_found_first_with_the_true_class_suggested(tmp_path: Path):
    flip = [3, 70, 100, 130, 150, 175]
    store = blobs(tmp_path / "flip.h5", flip=flip)
    report = audit_store(store, folds=5, top=10)
    top = report.label_issues[:len(flip)]
    assert sorted(x.row for x in top) == flip
    names = report.class_names
    for x in top:
        true = names[(names.index(x.label) - 1) % 3]  # blobs() moved each to the next class
        assert x.suggested == true and x.quality < 0.5
    s = report.summary
    assert s["n_label_issues"] >= len(flip) and 3 <= s["estimated_wrong_labels"] <= 12
    assert sum(c["label_issues"] for c in s["per_class"]) == s["n_label_issues"]
    assert {(c["given"], c["likely"]) for c in s["confused"]} >= {("class1", "class0")}


def test_a_near_twin_across_the_split_is_a_leak_and_duplicates_within_a_part_are_not(tmp_path):
    store = blobs(tmp_path / "leak.h5", twin=(5, "train", "test"))
    feats = load_features(store)
    rows = split_indices(feats.hashes, feats.labels)
    leaks = find_leaks(normalize(feats.features), feats.hashes, feats.labels, rows, 0.99)
    assert [(x.held, x.twin, x.held_part, x.twin_part, x.kind) for x in leaks] == [
        (180, 5, "test", "train", "near")]  # rows 0 and 1 (exact duplicates) share a part
    report = audit_store(store, threshold=0.99)
    assert report.summary["test_with_twin_in_train"] == 1
    assert report.as_dict()["leaks"][0]["twin"] == {"path": "class0/5.jpg", "label": "class0",
                                                    "part": "train"}


def test_an_image_far_from_its_class_is_the_first_outlier(tmp_path: Path):
    path = synthetic_store(tmp_path / "s.h5")
    feats = load_features(path)
    feats.features[42] = -feats.features[42]  # the opposite direction: far from every image
    save_features(path, feats)
    x, y = normalize(feats.features), feats.labels
    distance = knn_distance(x, y, k=5)
    assert int(np.argmax(distance)) == 42
    i = 7  # checked by brute force on one row
    same = np.flatnonzero((y == y[i]) & (np.arange(len(y)) != i))
    sims = np.sort(x[same] @ x[i])[::-1][:5]
    assert distance[i] == pytest.approx(1 - sims.mean(), abs=1e-5)
    assert distance[1] == pytest.approx(distance[0], abs=1e-6)  # exact duplicates
    assert audit_store(path, top=3).outliers[0].row == 42


# --- bad input --------------------------------------------------------------------------------


def test_one_class_or_a_class_too_small_is_one_clear_line(tmp_path: Path, capsys):
    one = synthetic_store(tmp_path / "one.h5", counts=(20,))
    code, _, err = cli(capsys, "audit", str(one), "-o", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "holds one class (class0); an audit needs at least two" in err
    tiny = synthetic_store(tmp_path / "tiny.h5", counts=(30, 3))
    report = audit_store(tiny, folds=5)
    assert report.settings["folds"] == 3 and "class 'class1' has only 3 distinct images" in report.notes[0]
    lone = synthetic_store(tmp_path / "lone.h5", counts=(30, 1))
    with pytest.raises(FeatxError, match="'class1' has 1 distinct image"):
        audit_store(lone)
    code, _, err = cli(capsys, "audit", str(tiny), "--folds", "1")
    assert code == 2 and err.strip() == "featx: error: --folds must be at least 2, got 1"
    (tmp_path / "taken").write_text("a file where the report folder should go")
    code, _, err = cli(capsys, "audit", str(tiny), "-o", str(tmp_path / "taken"))
    assert code == 2 and err.count("\n") == 1 and "a file is in the way" in err
    code, _, err = cli(capsys, "fit", str(tiny), "--exclude", str(tmp_path / "none.csv"))
    assert code == 2 and "--exclude file not found" in err


# --- fit --exclude ----------------------------------------------------------------------------


def test_exclude_drops_listed_paths_from_training_only_and_counts_the_unknown(tmp_path: Path):
    store = synthetic_store(tmp_path / "s.h5")
    plain = load_split(store)
    feats = plain.feats
    train = [feats.paths[i] for i in plain.rows["train"][:5]]
    test = [feats.paths[i] for i in plain.rows["test"][:2]]
    listing = tmp_path / "drop.csv"
    listing.write_text("path,finding\n" + "".join(f"{p},label\n" for p in train + test)
                       + "nowhere/x.jpg,label\n" + f"{train[0]},outlier\n")
    split = load_split(store, exclude=listing)
    assert split.n("train") == plain.n("train") - 5
    assert (split.rows["test"] == plain.rows["test"]).all() and split.n("val") == plain.n("val")
    x = split.info["excluded"]
    assert (x["listed"], x["train"], x["test"], x["kept"], x["not_in_store"]) == (
        8, 5, 0, {"val": 0, "test": 2}, 1) and x["not_in_store_examples"] == ["nowhere/x.jpg"]
    both = load_split(store, exclude=train + test, exclude_from_test=True)
    assert both.n("test") == plain.n("test") - 2 and both.info["excluded"]["file"] is None
    result = fit_store(store, exclude=listing)
    assert result.summary()["n_train"] == plain.n("train") - 5
    assert result.summary()["split"]["excluded"]["train"] == 5
    swept = run_sweep(store, ["logreg"], {"C": [1.0]}, n_jobs=1, backend="threading",
                      exclude=listing)
    assert swept.split["n_train"] == plain.n("train") - 5 and swept.split["excluded"]["train"] == 5


def test_path_lists_read_a_path_column_or_one_path_a_line(tmp_path: Path):
    (tmp_path / "a.csv").write_text('finding,path\nlabel,"cat/a, b.jpg"\noutlier,dog/c.jpg\n')
    (tmp_path / "b.txt").write_text("cat/a.jpg\n\n# a comment\ndog/c.jpg\n")
    assert read_path_list(tmp_path / "a.csv") == ["cat/a, b.jpg", "dog/c.jpg"]
    assert read_path_list(tmp_path / "b.txt") == ["cat/a.jpg", "dog/c.jpg"]
    with pytest.raises(FeatxError, match="exclude file not found"):
        read_path_list(tmp_path / "none.csv")


# --- the command ------------------------------------------------------------------------------


def test_cli_writes_every_output_and_its_csv_feeds_fit_exclude(tmp_path: Path, capsys):
    store = blobs(tmp_path / "flip.h5", flip=[3, 70, 100], twin=(5, "train", "test"))
    out = tmp_path / "audit"
    code, text, _ = cli(capsys, "audit", str(store), "-o", str(out), "--top", "4",
                        "--threshold", "0.99", "--json")
    doc = json.loads(text)
    assert code == 0 and doc["summary"]["n_label_issues"] == len(doc["label_issues"]) >= 3
    assert len(doc["outliers"]) == 4 and len(doc["leaks"]) == 1
    for key in ("label_issues", "leaks", "outliers", "html", "json", "suspects"):
        assert Path(doc["files"][key]).stat().st_size > 0
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "flipped_70.jpg" in page
    with open(out / "suspects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["finding"] for r in rows].count("label") == len(doc["label_issues"])
    assert {"path": "class0/5.jpg", "finding": "leak"}.items() <= next(
        r for r in rows if r["finding"] == "leak").items()
    listed = {r["path"] for r in rows if r["finding"] != "outlier"}  # outliers only when asked
    assert listed and any(r["finding"] == "outlier" for r in rows)
    train = {load_features(store).paths[i] for i in load_split(store).rows["train"]}
    code, text, _ = cli(capsys, "fit", str(store), "--exclude", str(out / "suspects.csv"),
                        "-o", str(tmp_path / "model"), "--json")
    excluded = json.loads(text)["split"]["excluded"]
    assert code == 0 and excluded["train"] == len(listed & train) > 0
    assert excluded["not_in_store"] == 0 and excluded["listed"] == len(listed)
    code, text, _ = cli(capsys, "fit", str(store), "--exclude", str(out / "suspects.csv"),
                        "-o", str(tmp_path / "model"))
    assert code == 0 and f"excluded {len(listed & train)} train images of {len(listed)} listed" in text


# --- real photos ------------------------------------------------------------------------------


@needs_shared
@pytest.mark.shared
def test_planted_swaps_and_a_cross_split_twin_in_real_photos_are_found(pets_store, tmp_path, capsys):
    data, planted = plant_label_errors(pets_store, tmp_path / "pets", 8, seed=1)
    store = reuse_store(pets_store, data, tmp_path / "planted.h5")
    # a twin: a training photo with a byte appended (same pixels, so the same vector; a new
    # content hash, chosen so that the split puts the twin in test). Its row is added with the
    # original's vector rather than by extract, which would spend a model run to compute it.
    feats = load_features(store)
    i = int(load_split(store).rows["train"][0])
    original, photo = feats.paths[i], (data / feats.paths[i]).read_bytes()
    for k in range(1, 200):
        h = hashlib.sha256(photo + bytes(k)).hexdigest()
        if len(feats.hashes) in split_indices([*feats.hashes, h], [*feats.labels, feats.labels[i]])["test"]:
            break
    twin = original.rsplit("/", 1)[0] + "/twin.jpg"
    (data / twin).write_bytes(photo + bytes(k))
    save_features(store, Features(np.vstack([feats.features, feats.features[i:i + 1]]),
                                  np.append(feats.labels, feats.labels[i]), [*feats.paths, twin],
                                  np.append(feats.hashes, h), feats.class_names, feats.meta))
    report = audit_store(store, out=tmp_path / "audit")
    found = {x.path for x in report.label_issues[:2 * len(planted)]}
    assert len(found & set(planted)) >= 5  # recall at k = 2 x planted; 5 to 8 of 8 over seeds
    leak = {(report.paths[x.held], report.paths[x.twin], x.held_part, x.twin_part): x.similarity
            for x in report.leaks}
    assert leak[(twin, original, "test", "train")] > 0.9999
    assert report.summary["test_with_twin_in_train"] >= 1
    code, text, _ = cli(capsys, "fit", str(store), "--exclude", report.files["suspects"],
                        "-o", str(tmp_path / "model"), "--json")
    excluded = json.loads(text)["split"]["excluded"]
    assert code == 0 and excluded["not_in_store"] == 0 and excluded["train"] > 0
    listed = set(read_path_list(report.files["suspects"], ("label", "leak")))
    assert original in listed and excluded["listed"] == len(listed)
