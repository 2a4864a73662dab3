"""featx curve (accuracy against photos a class, the fitted curve) and featx suggest (what to label
next): synthetic stores for the mechanics, generated photos and the tiny extractor for suggest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featx.curve import default_sizes, fit_curve, learning_curve
from featx.errors import FeatxError
from featx.fit import load_split
from featx.store import load_features, save_features
from featx.suggest import margins, rank
from tests.conftest import TINY, cli, make_images, synthetic_store

FIXED = dict(C=1.0, scale="l2")  # no automatic choice: the tests stay fast


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Three overlapping classes of 60: a curve that still climbs between 5 and 42 a class."""
    return synthetic_store(tmp_path_factory.mktemp("curve") / "blobs.h5", sep=0.5)


@pytest.fixture(scope="module")
def result(store: Path):
    return learning_curve(store, seeds=3, n_jobs=1, **FIXED)


def test_default_sizes_are_log_spaced_and_end_at_the_whole_train_part():
    assert default_sizes(700) == [5, 10, 20, 50, 100, 200, 500, 700]
    assert default_sizes(500) == [5, 10, 20, 50, 100, 200, 500]
    assert default_sizes(7) == [2, 5, 7]
    assert default_sizes(3) == [2, 3]


def test_points_are_nested_draws_scored_on_the_one_test_part(store: Path, result):
    split = load_split(store)
    counts = np.bincount(split.y("train"))  # 42 rows a class, one a duplicate of another
    assert result.sizes == [5, 10, 20, 42]
    assert result.n_test == split.n("test")
    by_size = {n: [p for p in result.points if p["size"] == n] for n in result.sizes}
    assert [len(by_size[n]) for n in result.sizes] == [3, 3, 3, 1]  # the whole part: one draw
    for n in (5, 10, 20):
        assert sorted(p["seed"] for p in by_size[n]) == [0, 1, 2]
        assert all(p["photos_per_class"] == n for p in by_size[n])
        assert all(n * 3 <= p["n_train"] <= n * 3 + 1 for p in by_size[n])  # +1: the duplicate
    assert by_size[42][0]["n_train"] == counts.sum()
    assert len({p["accuracy"] for p in by_size[5]}) > 1  # the draws differ
    doc = json.loads(json.dumps(result.as_dict()))
    assert {"photos_per_class", "seed", "accuracy"} <= set(doc["points"][0])
    assert doc["fit"]["predicted"] == pytest.approx(result.fit(result.full), abs=1e-6)
    assert len(doc["per_class"]) == 3


def test_more_photos_help_on_blobs_and_the_summary_says_by_how_much(result):
    small, _ = result.measured(5)
    large, _ = result.measured(result.full)
    assert large > small
    assert result.fit.gain >= 0 and result.fit.ceiling >= result.fit.predicted - 1e-9
    text = " ".join(result.summary())
    assert "twice as many photos" in text and f"{100 * result.fit.gain:+.1f} points" in text
    gains = [r["gain"] for r in result.per_class]
    assert gains == sorted(gains, reverse=True)


def test_fit_curve_recovers_a_known_power_law():
    rng = np.random.default_rng(0)
    a, b, c = 0.95, 0.6, 0.7
    points = [{"photos_per_class": n, "seed": s,
               "accuracy": a - b * n ** -c + rng.normal(scale=0.002)}
              for n in (5, 10, 20, 50, 100, 200, 500) for s in range(4)]
    fit = fit_curve(points, 500, n_test=2000, model="power")
    assert fit.ceiling == pytest.approx(a, abs=0.01)
    assert fit.gain == pytest.approx(b * 500 ** -c * (1 - 2 ** -c), abs=0.003)
    flat = (0.002 / (b * (1 - 2 ** -c))) ** (-1 / c)  # doubling gains 0.2 points from here on
    assert fit.flat_from == pytest.approx(flat, rel=0.15)
    assert fit_curve(points[:8], 10) is None  # two sizes: no curve


def test_exclusions_leave_the_draws_and_the_test_part_as_fit_sees_them(store: Path, tmp_path):
    feats = load_features(store)
    train = load_split(store).rows["train"]
    dropped = [feats.paths[i] for i in train if feats.labels[i] == 0][:10]
    (tmp_path / "drop.txt").write_text("\n".join(dropped) + "\n")
    r = learning_curve(store, sizes=[5, 42], seeds=1, exclude=tmp_path / "drop.txt", n_jobs=1,
                       **FIXED)
    whole = [p for p in r.points if p["size"] == 42][0]  # every photo the part still has
    assert whole["n_train"] == len(train) - 10
    assert r.split["excluded"]["train"] == 10


def test_corrections_relabel_the_photos_the_curve_draws(store: Path, tmp_path):
    from featx import corrections

    copy = tmp_path / "corrected.h5"
    shutil.copyfile(store, copy)
    feats = load_features(copy)
    train = load_split(copy).rows["train"]
    moved = [i for i in train if feats.labels[i] == 0 and i > 1][:12]  # 12 photos to class1
    distinct0 = len({feats.hashes[i] for i in train if feats.labels[i] == 0})  # 41: a duplicate
    for i in moved:
        corrections.record(copy, feats.hashes[i], feats.paths[i], "class0", "class1")
    r = learning_curve(copy, sizes=[5, 54], seeds=1, n_jobs=1, **FIXED)
    assert r.split["corrections"]["relabelled"] == 12
    assert max(p["photos_per_class"] for p in r.points) == pytest.approx(
        (distinct0 - 12 + 54 + 42) / 3, abs=1e-3)
    plain = learning_curve(copy, sizes=[5, 42], seeds=1, n_jobs=1, corrections=False, **FIXED)
    assert "corrections" not in plain.split


def test_flips_are_trained_on_and_averaged_like_fit(store: Path, tmp_path):
    feats = load_features(store)
    rng = np.random.default_rng(1)
    feats.flipped = (feats.features + 0.3 * rng.normal(size=feats.features.shape)).astype(np.float32)
    flip = save_features(tmp_path / "flip.h5", feats) or tmp_path / "flip.h5"
    with_flips = learning_curve(flip, sizes=[5, 20], seeds=2, n_jobs=1, **FIXED)
    without = learning_curve(flip, sizes=[5, 20], seeds=2, n_jobs=1, train_flips=False, tta=False,
                             **FIXED)
    assert with_flips.split["flips"] == {"train": True, "tta": True}
    assert [p["accuracy"] for p in with_flips.points] != [p["accuracy"] for p in without.points]
    with pytest.raises(FeatxError, match="mirrored"):
        learning_curve(store, sizes=[5, 20], tta=True)


def test_the_automatic_choice_is_made_once_or_per_size(store: Path):
    once = learning_curve(store, sizes=[5, 20], seeds=2, n_jobs=2)
    assert once.selection["picked"] is not None
    assert {(p["C"], p["scale"]) for p in once.points} == {tuple(once.selection["picked"][k]
                                                                 for k in ("C", "scale"))}
    per_size = learning_curve(store, sizes=[5, 20], seeds=2, choose="size", n_jobs=2)
    assert per_size.selection is None
    for n in (5, 20):
        same = {(p["C"], p["scale"]) for p in per_size.points if p["size"] == n}
        assert len(same) == 1  # the size's first draw's pick, used by its other draw


@pytest.mark.parametrize("clf", ["svm", "linear-svm", "softmax"])
def test_every_head_draws_a_curve(store: Path, clf: str):
    r = learning_curve(store, clf, sizes=[5, 42], seeds=1, n_jobs=1, **FIXED)
    assert r.clf == clf and [p["size"] for p in r.points] == [5, 42]
    assert all(0 <= p["accuracy"] <= 1 for p in r.points)


def test_cli_writes_the_files_and_one_json_document(store: Path, tmp_path, capsys):
    code, out, _ = cli(capsys, "curve", str(store), "--sizes", "5,10,20,42", "--seeds", "2",
                       "--C", "1", "--scale", "l2", "-o", str(tmp_path / "c"), "--json")
    assert code == 0
    doc = json.loads(out)
    assert {Path(p).name for p in doc["files"].values()} == {"curve.json", "points.csv", "curve.png"}
    assert json.loads((tmp_path / "c" / "curve.json").read_text())["points"] == doc["points"]
    rows = list(csv.DictReader((tmp_path / "c" / "points.csv").open()))
    assert len(rows) == len(doc["points"]) == 7
    code, out, _ = cli(capsys, "curve", str(store), "--sizes", "5,10,20,42", "--seeds", "2",
                       "--C", "1", "--scale", "l2", "-o", str(tmp_path / "c"))
    assert code == 0 and "twice as many photos" in out


def test_bad_input_is_one_line(store: Path, tmp_path, capsys):
    code, _, err = cli(capsys, "curve", str(store), "--sizes", "5,500")
    assert code == 2 and err.count("\n") == 1 and "--sizes asks for 500" in err and "42" in err
    code, _, err = cli(capsys, "curve", str(store), "--sizes", "10,10")
    assert code == 2 and err.count("\n") == 1 and "two different sizes" in err
    tiny = synthetic_store(tmp_path / "tiny.h5", counts=(3, 3))
    code, _, err = cli(capsys, "curve", str(tiny))
    assert code == 2 and err.count("\n") == 1 and "at most 2 photos a class" in err


def test_report_has_a_section_when_a_curve_exists(store: Path, result, tmp_path, monkeypatch):
    from featx.curve import default_output, write_curve
    from featx.fit import fit_store
    from featx.report import make_report

    monkeypatch.chdir(tmp_path)
    bundle = fit_store(store, out=tmp_path / "blobs_logreg", **FIXED).bundle
    write_curve(result, default_output(store))
    report = make_report(store, tmp_path / "report", bundles=[bundle])
    assert Path(report.files["photos"]).is_file()
    page = (tmp_path / "report" / "report.md").read_text()
    assert result.summary()[1] in page


# --- suggest ------------------------------------------------------------------------------------


def test_near_copies_of_one_hard_photo_yield_one_suggestion():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X[:50] = X[0] + 0.001 * rng.normal(size=(50, 16))  # 50 near-copies of one photo
    proba = np.column_stack([np.linspace(0.6, 1.0, 300), np.zeros(300)])
    proba[:50, 0] = 0.5 + rng.uniform(0, 0.005, 50)  # ... the most uncertain of all
    proba[:, 1] = 1 - proba[:, 0]
    plain = rank(proba, X, 20, "margin")
    spread = rank(proba, X, 20, "margin-diverse")
    assert np.sum(plain < 50) == 20  # margin alone: all near-copies
    assert np.sum(spread < 50) == 1 and len(set(spread.tolist())) == 20
    m = margins(proba[spread])
    assert spread[0] == plain[0] and (np.diff(m) >= 0).all()  # most uncertain first
    assert sorted(rank(proba, X, 20, "random", seed=1).tolist()) != sorted(plain.tolist())


def test_suggest_embeds_a_flat_folder_and_lists_what_to_label(tiny_store: Path, tmp_path, capsys):
    folder = make_images(tmp_path / "src", {"a": 6, "b": 6}, seed=3)
    flat = tmp_path / "new"
    flat.mkdir()
    for p in sorted(folder.rglob("*.jpg")):
        shutil.copy(p, flat / p.name)
    known = Path(load_features(tiny_store).meta["data_dir"]) / load_features(tiny_store).paths[0]
    shutil.copy(known, flat / "known.jpg")  # already labelled: never suggested
    shutil.copy(flat / "a_000.jpg", flat / "again.jpg")  # an exact repeat: suggested once at most
    args = ["suggest", str(tiny_store), str(flat), "-n", "5", "--C", "1", "--scale", "l2",
            "--unlabelled-store", str(tmp_path / "new.h5"), "-o", str(tmp_path / "out"), "--json"]
    code, out, _ = cli(capsys, *args)
    assert code == 0
    doc = json.loads(out)
    assert doc["n_photos"] == 14 and doc["n_known"] == 1 and doc["n_duplicates"] == 1
    paths = [r["path"] for r in doc["suggestions"]]
    assert len(paths) == 5 and all(Path(p).is_file() and Path(p).parent == flat for p in paths)
    assert str(flat / "known.jpg") not in paths
    assert not {str(flat / "a_000.jpg"), str(flat / "again.jpg")} <= set(paths)
    rows = list(csv.DictReader((tmp_path / "out" / "suggestions.csv").open()))
    assert [r["path"] for r in rows] == paths
    assert (tmp_path / "out" / "suggestions.png").stat().st_size > 0
    code, out, _ = cli(capsys, *args)  # a rerun reuses the stored vectors
    assert code == 0 and [r["path"] for r in json.loads(out)["suggestions"]] == paths
    assert TINY["input_size"] == load_features(tmp_path / "new.h5").meta["input_size"]
