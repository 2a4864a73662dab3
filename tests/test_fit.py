"""featx fit / sweep / predict: heads, the bundle, the sweep, predictions on new images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.bundle import load_bundle, read_bundle_info
from featx.errors import FeatxError
from featx.fit import fit_store, load_split
from featx.heads import CLASSIFIERS
from featx.split import split_indices
from featx.store import Features, load_features, save_features
from featx.sweep import build_grid, run_sweep
from tests.conftest import META, cli, needs_shared, synthetic_store

@pytest.fixture
def store(tmp_path: Path) -> Path:
    return synthetic_store(tmp_path / "syn.h5")


@pytest.mark.parametrize("clf", CLASSIFIERS)
def test_every_head_learns_and_gives_probabilities(store: Path, clf: str):
    result = fit_store(store, clf, epochs=30, lr=0.01)  # lr, epochs: softmax only
    assert result.val["accuracy"] >= 0.9 and result.test["accuracy"] >= 0.9
    split = load_split(store)
    proba = result.head.predict_proba(split.X("test"))
    assert proba.shape == (split.n("test"), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (result.head.predict(split.X("test")) == proba.argmax(1)).all()
    cm = np.array(result.test["confusion"])
    assert cm.sum() == split.n("test") and np.trace(cm) / cm.sum() == result.test["accuracy"]


def test_fit_uses_the_derived_split(store: Path):
    feats = load_features(store)
    rows = split_indices(feats.hashes, feats.labels, (0.7, 0.15, 0.15), seed=3)
    result = fit_store(store, "logreg", split_seed=3)
    assert [result.split[f"n_{p}"] for p in ("train", "val", "test")] == [
        len(rows[p]) for p in ("train", "val", "test")]
    part_of = {int(i): part for part, idx in rows.items() for i in idx}
    assert part_of[0] == part_of[1]  # rows 0 and 1 share a content hash: same part


def test_adam_softmax_head_early_stopping_and_history(tmp_path: Path):
    # more dimensions than training rows and overlapping classes: the head overfits quickly
    store = synthetic_store(tmp_path / "hard.h5", dim=256, sep=0.05)
    result = fit_store(store, "softmax", solver="adam", C=1e4, scale="standard", epochs=100,
                       patience=2, lr=0.01)
    h = result.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    n = len(h["loss"])
    assert n < 100 and all(len(v) == n for v in h.values())  # stopped early
    best = int(np.argmin(h["val_loss"]))
    assert result.extra["best_epoch"] == best + 1
    # restore_best_weights: the model's val loss is the best epoch's, not the last one's
    split = load_split(store)
    proba = result.head.predict_proba(split.X("val"))
    onehot = np.eye(3)[split.y("val")]
    ce = -np.mean(np.sum(onehot * np.log(np.clip(proba, 1e-7, 1)), axis=1))
    assert ce == pytest.approx(h["val_loss"][best], rel=1e-3)


def test_balanced_class_weights_raise_minority_recall(tmp_path: Path):
    path = synthetic_store(tmp_path / "imb.h5", counts=(400, 40), dim=8, sep=0.6, seed=1)
    plain = fit_store(path, "logreg", split=load_split(path))
    balanced = fit_store(path, "logreg", class_weight="balanced")
    recall = lambda r: r.val["recall"][1] + r.test["recall"][1]  # noqa: E731
    assert recall(balanced) > recall(plain)
    assert balanced.params["class_weight"] == "balanced"


def test_bundle_round_trip_via_cli(store: Path, tmp_path: Path, capsys):
    out_dir = tmp_path / "bundle"
    code, out, err = cli(capsys, "fit", str(store), "--clf", "logreg", "--C", "0.5", "--seed", "0",
                         "-o", str(out_dir), "--json")
    assert code == 0, err
    s = json.loads(out)
    for key in ("clf", "val_accuracy", "test_accuracy", "n_train", "n_val", "n_test", "fit_seconds"):
        assert key in s
    assert s["clf"] == "logreg" and s["params"]["C"] == 0.5
    assert s["n_train"] + s["n_val"] + s["n_test"] == 180
    info = read_bundle_info(out_dir)
    assert info["kind"] == "features" and info["class_names"] == ["class0", "class1", "class2"]
    assert {"model", "layer", "pooling", "weights_id", "resize", "dim"} <= set(info["extractor"])
    assert info["metrics"]["test"]["accuracy"] == s["test_accuracy"]
    shutil.move(str(store), tmp_path / "gone.h5")  # loading never needs the training data
    bundle = load_bundle(out_dir)
    split = load_split(tmp_path / "gone.h5")
    assert np.mean(bundle.head.predict(split.X("test")) == split.y("test")) == s["test_accuracy"]


def test_softmax_bundle_keeps_history(store: Path, tmp_path: Path):
    from featx.bundle import save_bundle

    r = fit_store(store, "softmax", epochs=5, C=0.01, scale="none")  # runs all 5 iterations
    path = save_bundle(tmp_path / "b", r.head, r.class_names, r.store_meta, metrics=r.metrics)
    b = load_bundle(path)
    assert b.history == r.history and len(b.history["val_accuracy"]) == 5
    X = load_features(store).features
    np.testing.assert_allclose(b.head.predict_proba(X), r.head.predict_proba(X), atol=1e-6)


def test_bad_inputs_one_line_and_exit_2(store: Path, tmp_path: Path, capsys):
    not_store = tmp_path / "x.h5"
    not_store.write_bytes(b"not hdf5")
    one = tmp_path / "one.h5"
    feats = load_features(store)
    keep = feats.labels == 0
    save_features(one, Features(feats.features[keep], feats.labels[keep] * 0,
                                [p for p, k in zip(feats.paths, keep) if k], feats.hashes[keep],
                                ["class0"], dict(META)))
    cases = [
        (("fit", str(not_store)), "not an HDF5 file"),
        (("fit", str(tmp_path / "missing.h5")), "not found"),
        (("fit", str(one)), "one class"),
        (("fit", str(store), "--clf", "forest"), "unknown classifier 'forest'"),
        (("sweep", str(store), "--clf", "logreg,forest"), "unknown classifier 'forest'"),
        (("fit", str(store), "--C", "-1"), "C must be positive"),
        (("fit", str(store), "--scale", "l3"), "--scale is one of none, l2, standard, l2+standard"),
        (("fit", str(store), "--clf", "softmax", "--solver", "sgd"), "--solver is one of lbfgs"),
        (("sweep", str(store), "--cv", "1"), "--cv takes at least 2 folds"),
        (("sweep", str(store), "--cv", "90"), "--cv 90 needs 90 distinct images of every class"),
        (("predict", str(tmp_path), str(tmp_path)), "not a featx bundle"),
    ]
    for args, message in cases:
        code, out, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("featx: error:") and message in err and err.count("\n") == 1, err


def test_sweep_grid_parallel_csv_json(store: Path, tmp_path: Path):
    grid = {"C": [0.01, 1.0], "lr": [1e-3, 1e-2], "class_weight": [], "epochs": [5]}
    points = build_grid(["logreg", "softmax"], grid)
    assert len(points) == 2 + 4  # lr and epochs apply to softmax only
    seen = []
    result = run_sweep(store, ["logreg", "softmax"], grid, n_jobs=2, backend="threading",
                       out_dir=tmp_path / "sw", bundle=tmp_path / "best",
                       on_row=lambda row, done, total: seen.append((done, total)))
    assert not result.interrupted and len(result.rows) == 6 and seen[-1] == (6, 6)
    accs = [r["val_accuracy"] for r in result.rows]
    assert accs == sorted(accs, reverse=True)
    best = result.best
    assert best["val_accuracy"] == accs[0]
    split = load_split(store)  # the saved best, scored independently on the test part
    saved = load_bundle(tmp_path / "best").head.predict(split.X("test"))
    assert best["test_accuracy"] == np.mean(saved == split.y("test"))
    assert best["refit_val_accuracy"] == pytest.approx(best["val_accuracy"])  # refit is the same
    with open(tmp_path / "sw" / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    doc = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert doc["best"]["clf"] == best["clf"] and doc["selection"].startswith("validation")
    assert read_bundle_info(tmp_path / "best")["clf"] == best["clf"]


def test_sweep_interrupt_keeps_finished_rows(store: Path, tmp_path: Path):
    def stop(row, done, total):
        if done == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    result = run_sweep(store, ["logreg"], {"C": [0.01, 0.1, 1, 10, 100]}, n_jobs=1,
                       out_dir=tmp_path / "sw", on_row=stop)
    assert result.interrupted and len(result.rows) == 2 and result.best is None
    with open(tmp_path / "sw" / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert json.loads((tmp_path / "sw" / "results.json").read_text())["interrupted"] is True


def test_predict_embeds_like_the_store(tiny_store: Path, tmp_path: Path, capsys):
    from featx.predict import predict

    bundle = tmp_path / "tiny_logreg"
    code, _, err = cli(capsys, "fit", str(tiny_store), "-o", str(bundle), "--json")
    assert code == 0, err
    feats = load_features(tiny_store)
    data = Path(feats.meta["data_dir"])
    new = tmp_path / "new"
    new.mkdir()
    for rel in feats.paths[:3]:
        shutil.copy(data / rel, new / Path(rel).name)
    (new / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (new / "notes.txt").write_text("not an image")  # not an image name: ignored in folders
    report = predict(bundle, [new, tmp_path / "missing.png"], k=2)
    assert sorted(Path(p.path).name for p in report.predictions) == sorted(
        Path(r).name for r in feats.paths[:3])
    assert {Path(p).name for p, _ in report.errors} == {"broken.jpg", "missing.png"}
    b = load_bundle(bundle)
    stored = b.head.predict_proba(feats.features[:3])
    by_name = {Path(p.path).name: p for p in report.predictions}
    for i, rel in enumerate(feats.paths[:3]):
        p = by_name[Path(rel).name]
        assert list(p.probabilities) == feats.class_names and len(p.top_k) == 2
        np.testing.assert_allclose([p.probabilities[c] for c in feats.class_names], stored[i],
                                   atol=1e-4)
        assert p.top_k[0][0] == feats.class_names[int(stored[i].argmax())]

    code, out, err = cli(capsys, "predict", str(bundle), str(new), "--top-k", "1", "--json")
    doc = json.loads(out)
    assert code == 3 and doc["n_predicted"] == 3 and doc["n_errors"] == 1
    assert [Path(e["path"]).name for e in doc["errors"]] == ["broken.jpg"]
    assert "broken.jpg" in err and err.startswith("featx: error:")  # also one line on stderr
    assert all(len(p["top_k"]) == 1 for p in doc["predictions"])


def test_predict_refuses_a_bundle_whose_extractor_does_not_match(tiny_store: Path, tmp_path: Path,
                                                                  capsys):
    bundle = tmp_path / "b"
    assert cli(capsys, "fit", str(tiny_store), "-o", str(bundle))[0] == 0
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 30), "red").save(img)
    info = json.loads((bundle / "bundle.json").read_text())
    info["extractor"]["weights_id"] = "sha256:" + "0" * 64
    (bundle / "bundle.json").write_text(json.dumps(info))
    code, _, err = cli(capsys, "predict", str(bundle), str(img))
    assert code == 2 and "--weights" in err and err.count("\n") == 1
    info["extractor"]["weights_id"] = load_features(tiny_store).meta["weights_id"]
    info["input"]["dim"] = 1280  # a head made for other vectors
    (bundle / "bundle.json").write_text(json.dumps(info))
    code, _, err = cli(capsys, "predict", str(bundle), str(img))
    assert code == 2 and "does not match" in err


@needs_shared
@pytest.mark.shared
def test_pets_logreg_accuracy(pets_store: Path):
    """300 pets-dev photos (150 a class; the split gives 210 train, 46 val, 44 test)."""
    result = fit_store(pets_store, "logreg")
    assert result.split["n_test"] >= 40
    assert result.test["accuracy"] >= 0.96


@needs_shared
@pytest.mark.shared
def test_flowers_logreg_clearly_above_chance(flowers_store: Path):
    """200 flowers5 photos (40 a class); chance is 0.2."""
    result = fit_store(flowers_store, "logreg")
    assert result.test["accuracy"] >= 0.6


def _shuffled(store: Path, parts: tuple[str, ...]):
    """The store's split with its labels permuted within ``parts`` (the rows of each part stay:
    shuffling the stored labels would move rows across parts, as the split is stratified)."""
    from dataclasses import replace

    split = load_split(store)
    labels = split.labels.copy()
    rng = np.random.default_rng(7)
    for part in parts:
        labels[split.rows[part]] = rng.permutation(labels[split.rows[part]])
    assert (labels != split.labels).any()
    return replace(split, labels=labels)


def test_fit_picks_C_and_scale_on_the_train_part_alone(tmp_path: Path):
    store = synthetic_store(tmp_path / "s.h5", dim=24, sep=0.5)  # errors to tell the grid apart
    first = fit_store(store, "logreg", out=tmp_path / "b")
    sel = first.selection
    assert sel["by"] == "3-fold cross-validation on the training part" and sel["folds"] == 3
    assert len(sel["rows"]) == 10 and {r["scale"] for r in sel["rows"]} == {"none", "l2"}
    assert {k: first.params[k] for k in ("C", "scale")} == sel["picked"]
    assert read_bundle_info(tmp_path / "b")["selection"]["picked"] == sel["picked"]
    assert len({round(r["cv_mean"], 6) for r in sel["rows"]}) > 2  # the grid is told apart

    def scores(result):
        return [(r["C"], r["scale"], r["cv_mean"]) for r in result.selection["rows"]]

    # reproducible, and blind to the validation and test parts: shuffling their labels changes
    # nothing in the choice (every point's cross-validated score included)
    assert scores(fit_store(store, "logreg")) == scores(first)
    blind = fit_store(store, "logreg", split=_shuffled(store, ("val", "test")))
    assert scores(blind) == scores(first) and blind.test["accuracy"] < first.test["accuracy"]
    # shuffling the training labels does change it, and so does another seed (other folds)
    assert scores(fit_store(store, "logreg", split=_shuffled(store, ("train",)))) != scores(first)
    assert sorted(scores(fit_store(store, "logreg", seed=1))) != sorted(scores(first))


def test_fit_with_C_and_scale_fits_exactly_that(store: Path, capsys):
    result = fit_store(store, "logreg", C=1.0, scale="none")
    assert result.selection is None and (result.params["C"], result.params["scale"]) == (1.0, "none")
    only_scale = fit_store(store, "logreg", C=3.0).selection  # the free one is still picked
    assert only_scale["grid"] == {"scale": ["none", "l2"]} and only_scale["picked"].keys() == {"scale"}
    code, out, err = cli(capsys, "fit", str(store), "--C", "1", "--scale", "none", "-o",
                         str(store.parent / "b"))
    assert code == 0 and "picked" not in out


def test_fit_reads_the_score_against_chance_and_the_majority_class(tmp_path: Path, capsys):
    store = synthetic_store(tmp_path / "imb.h5", counts=(100, 40, 20))
    code, out, _ = cli(capsys, "fit", str(store), "-o", str(tmp_path / "b"), "--json")
    s = json.loads(out)
    split = load_split(store)
    ref = s["reference"]
    assert ref["chance"] == pytest.approx(1 / 3) and ref["majority_class"] == "class0"
    assert ref["majority_test"] == np.mean(split.y("test") == 0)
    assert ref["majority_val"] == np.mean(split.y("val") == 0)
    code, out, _ = cli(capsys, "fit", str(store), "-o", str(tmp_path / "b"))
    assert f"(chance 0.333; always 'class0': val {ref['majority_val']:.3f}, test " \
           f"{ref['majority_test']:.3f})" in out


def test_fit_says_when_the_softmax_head_ran_out_of_epochs(tmp_path: Path, capsys):
    store = synthetic_store(tmp_path / "s.h5", dim=24, sep=0.5)
    code, out, _ = cli(capsys, "fit", str(store), "--clf", "softmax", "--C", "10", "--scale",
                       "none", "--epochs", "3", "-o", str(tmp_path / "b"))
    assert code == 0
    assert "did not converge: it used all 3 epochs while still improving; try --epochs 6" in out
    code, out, _ = cli(capsys, "fit", str(store), "--clf", "softmax", "--C", "10", "--scale",
                       "none", "-o", str(tmp_path / "b"), "--json")
    s = json.loads(out)
    assert s["converged"] is True and s["epochs_run"] < 1000 and s["solver"] == "lbfgs"
    code, out, _ = cli(capsys, "fit", str(store), "--C", "10", "--scale", "none", "--max-iter", "2",
                       "-o", str(tmp_path / "b"))
    assert "did not converge: it used all 2 iterations while still improving; try --max-iter 4" in out


def test_sweep_cv_selects_by_the_mean_of_its_fold_scores(tmp_path: Path):
    from sklearn.linear_model import LogisticRegression

    from featx.sweep import cv_folds

    store = synthetic_store(tmp_path / "s.h5", dim=24, sep=0.5)
    result = run_sweep(store, ["logreg", "softmax"], {"C": [0.01, 1.0], "scale": ["none", "l2"]},
                       cv=4, n_jobs=2, backend="threading", out_dir=tmp_path / "sw",
                       bundle=tmp_path / "best")
    assert len(result.rows) == 8 and result.as_dict()["selection"].startswith("4-fold")
    for row in result.rows:
        assert len(row["cv_scores"]) == 4 and "val_accuracy" not in row
        assert row["cv_mean"] == pytest.approx(np.mean(row["cv_scores"]))
        assert row["cv_std"] == pytest.approx(np.std(row["cv_scores"]))
    means = [r["cv_mean"] for r in result.rows]
    assert means == sorted(means, reverse=True) and result.best["cv_mean"] == max(means)
    # the fold scores are what they claim: refit one point on its folds independently
    split = load_split(store)
    rows = np.concatenate([split.rows["train"], split.rows["val"]])
    X, y, groups = split.feats.features[rows], split.feats.labels[rows], split.feats.hashes[rows]
    folds = cv_folds(y, groups, 4, seed=0)
    row = next(r for r in result.rows if (r["clf"], r["C"], r["scale"]) == ("logreg", 1.0, "none"))
    expect = [np.mean(LogisticRegression(C=1.0, max_iter=1000, random_state=0)
                      .fit(X[tr], y[tr]).predict(X[te]) == y[te]) for tr, te in folds]
    assert row["cv_scores"] == pytest.approx(expect)
    assert all(len(set(groups[tr]) & set(groups[te])) == 0 for tr, te in folds)  # hashes whole
    # the best is refitted on train+val and tested once
    best = result.best
    assert best["refit_on"] == "train+val" and best["refit_val_accuracy"] is None
    saved = load_bundle(tmp_path / "best").head.predict(split.X("test"))
    assert best["test_accuracy"] == np.mean(saved == split.y("test"))
    with open(tmp_path / "sw" / "results.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == 8 and all(len(r["cv_scores"].split(";")) == 4 for r in csv_rows)
    assert result.notes == []  # no small-validation note: the validation part is not used


def test_sweep_ties_go_to_the_lower_log_loss_and_small_val_parts_are_flagged(store: Path, capsys):
    # well separated blobs: every point scores 1.0 on val; the surer probabilities win the tie
    result = run_sweep(store, ["logreg"], {"C": [10.0, 0.1, 1.0]}, n_jobs=1)
    assert {r["val_accuracy"] for r in result.rows} == {1.0}
    losses = [r["log_loss"] for r in result.rows]
    assert losses == sorted(losses) and len(set(losses)) == 3 and result.best == {
        **result.best, **{k: result.rows[0][k] for k in ("C", "log_loss")}}
    assert result.as_dict()["tie_break"].startswith("ties go to the lower log loss")
    from featx.sweep import sort_rows  # a mean of folds that differs in its last bits is a tie

    rows = [{"clf": "logreg", "C": 10.0, "cv_mean": 0.9788235294117648, "point": 0},
            {"clf": "logreg", "C": 1.0, "cv_mean": 0.9788235294117646, "point": 1}]
    assert [r["C"] for r in sort_rows(rows)] == [1.0, 10.0]
    n_val = result.split["n_val"]
    assert f"the validation part has {n_val} images: one error is {100 / n_val:.2f} points" in \
        result.notes[0]
    code, out, _ = cli(capsys, "sweep", str(store), "--clf", "logreg", "--C", "1,0.1", "-o",
                       str(store.parent / "sw"), "--jobs", "1")
    assert code == 0 and "ties go to the lower log loss" in out and "note: the validation part" in out


def test_sweep_with_softmax_points_writes_rows_as_they_finish(store: Path, tmp_path: Path):
    seen = []

    def check(row, done, total):
        with open(tmp_path / "sw" / "results.csv") as fh:
            seen.append((done, len(list(csv.DictReader(fh))), row["clf"]))

    result = run_sweep(store, ["softmax", "logreg"], {"C": [0.1, 1.0]}, n_jobs=2,
                       backend="threading", out_dir=tmp_path / "sw", on_row=check)
    assert len(result.rows) == 4 and all(done == on_disk for done, on_disk, _ in seen)
    assert {clf for *_, clf in seen} == {"softmax", "logreg"}
    softmax = [r for r in result.rows if r["clf"] == "softmax"]
    assert all(r["converged"] and r["epochs_run"] >= 1 for r in softmax)


@needs_shared
@pytest.mark.shared
@pytest.mark.parametrize("fixture", ["pets_store", "flowers_store"])
def test_softmax_head_scores_as_logreg_on_real_vectors(fixture: str, request):
    """VGG16 vectors of real photos: with the same C and scale, the softmax head and logistic
    regression score the same on val and test (within half a point) and agree image by image."""
    store = request.getfixturevalue(fixture)
    split = load_split(store)
    for params in ({"C": 1.0, "scale": "none"}, {"C": 10.0, "scale": "l2"}):
        logreg = fit_store(store, "logreg", split=split, **params)
        softmax = fit_store(store, "softmax", split=split, **params)
        for part in ("val", "test"):
            assert abs(softmax.__dict__[part]["accuracy"] - logreg.__dict__[part]["accuracy"]) <= 0.005
            X = split.X(part)
            assert np.mean(softmax.head.predict(X) == logreg.head.predict(X)) >= 0.97
        assert softmax.extra["converged"] and softmax.extra["epochs_run"] < 1000


# --- what a user is told: degenerate heads, options that do not apply, small numbers, maps -------


def test_a_degenerate_svm_is_refused_and_below_chance_is_loud(tmp_path: Path):
    """RBF SVM, C=0.01, unscaled, on barely separable vectors: every probability 0.500 (to
    0.001), predictions flipping on noise. fit refuses to save it unless asked; the sweep ranks
    such points last."""
    store = synthetic_store(tmp_path / "s.h5", counts=(40, 40), dim=32, sep=0.3)
    with pytest.raises(FeatxError, match="same probabilities"):
        fit_store(store, "svm", C=0.01, scale="none", out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    kept = fit_store(store, "svm", C=0.01, scale="none", allow_degenerate=True)
    assert kept.val["accuracy"] < 0.5 and "below chance" in kept.warnings[0]
    swept = run_sweep(store, ["svm"], {"C": [0.01, 1.0], "scale": ["none"]}, n_jobs=1)
    assert swept.rows[-1]["C"] == 0.01 and swept.rows[-1]["degenerate"] is True
    assert "degenerate" not in swept.rows[0]


def test_options_a_head_ignores_are_one_line_each_and_accuracies_come_with_intervals(
        tmp_path: Path, capsys):
    store = synthetic_store(tmp_path / "s.h5", counts=(30, 30))
    code, _, err = cli(capsys, "fit", str(store), "--clf", "svm", "--solver", "adam", "--C", "1",
                       "--scale", "l2", "-o", str(tmp_path / "a"))
    assert code == 0 and "warning: --solver applies to the softmax head only; svm ignores it" in err
    code, out, err = cli(capsys, "fit", str(store), "--clf", "logreg", "--epochs", "5", "--lr",
                         "0.1", "--C", "1", "--scale", "l2", "--exclude-from-test",
                         "-o", str(tmp_path / "b"))
    assert code == 0 and "--epochs applies to the softmax head only" in err
    assert "--lr applies to the softmax head only" in err
    assert "--exclude-from-test applies with --exclude only" in err
    assert "test accuracy 1.0000 (95% CI 0.6" in out and "the test part has only 8 images" in err
    code, _, err = cli(capsys, "fit", str(store), "--clf", "softmax", "--lr", "0.1", "--C", "1",
                       "--scale", "l2", "-o", str(tmp_path / "c"))
    assert code == 0 and "--lr applies to the softmax head's adam solver only" in err
    code, out, _ = cli(capsys, "sweep", str(store), "--clf", "logreg", "--C", "1", "--lr", "0.1",
                       "-o", str(tmp_path / "sw"), "--jobs", "1")
    assert code == 0 and "note: --lr applies to the softmax head only; logreg ignores it" in out


def test_wilson_interval_and_log_loss_break_ties():
    from featx.metrics import wilson_interval
    from featx.selection import sort_rows

    assert wilson_interval(12, 12) == (0.7575, 1.0) and wilson_interval(0, 12)[0] == 0.0
    lo, hi = wilson_interval(80, 100)
    assert lo < 0.8 < hi and hi - lo < wilson_interval(8, 10)[1] - wilson_interval(8, 10)[0]
    rows = [{"clf": "logreg", "C": 0.01, "cv_mean": 0.9, "log_loss": 0.40, "point": 0},
            {"clf": "logreg", "C": 10.0, "cv_mean": 0.9, "log_loss": 0.20, "point": 1}]
    assert [r["C"] for r in sort_rows(rows)] == [10.0, 0.01]
    assert [r["C"] for r in sort_rows(rows, tie_break="C")] == [0.01, 10.0]


def test_fit_and_audit_refuse_a_block4_map_store(tmp_path: Path, capsys):
    from featx.store import Features, save_features

    rng = np.random.default_rng(0)
    meta = {**META, "layer": "block4_pool", "pooling": "none", "map_shape": [2, 2, 4],
            "data_dir": str(tmp_path / "photos")}
    y = np.arange(40) % 2
    save_features(tmp_path / "maps.h5", Features(
        rng.random((40, 16), dtype=np.float32), y, [f"{i}.jpg" for i in range(40)],
        np.array([f"{i:064x}" for i in range(40)]), ["a", "b"], meta))
    for command in ("fit", "audit"):
        code, _, err = cli(capsys, command, str(tmp_path / "maps.h5"), "-o", str(tmp_path / command))
        assert code == 2 and "holds block4_pool maps of shape (2, 2, 4)" in err, command
        assert f"featx extract {tmp_path / 'photos'} --weights none -o maps_vectors.h5" in err
