"""Stores with mirrored images' vectors (``--augment flip``): training on both copies, averaging
predictions over flips (``--tta flip``) in fit, sweep, predict and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featx.bundle import load_bundle
from featx.fit import fit_store, load_split
from featx.store import load_features, save_features
from featx.sweep import run_sweep
from tests.conftest import TINY, cli, make_images, synthetic_store


def with_mirrors(store: Path, out: Path, noise: float = 1.0, seed: int = 1) -> Path:
    """The store plus made-up mirrored vectors: each row's own vector with its own noise."""
    feats = load_features(store)
    rng = np.random.default_rng(seed)
    feats.flipped = (feats.features + noise * rng.normal(size=feats.features.shape)).astype(np.float32)
    save_features(out, feats)
    return out


@pytest.fixture
def flip_store(tmp_path: Path) -> Path:
    return with_mirrors(synthetic_store(tmp_path / "plain.h5", sep=1.2), tmp_path / "flip.h5")


def test_mirrored_copies_stay_in_their_originals_part(flip_store: Path):
    split = load_split(flip_store)
    assert split.flips.train and split.flips.tta  # on by default when the store has them
    X, y = split.train_data()
    n = split.n("train")
    assert len(X) == 2 * n and split.info["n_train"] == n  # images are counted once
    np.testing.assert_array_equal(X[:n], split.feats.features[split.rows["train"]])
    np.testing.assert_array_equal(X[n:], split.feats.flipped[split.rows["train"]])
    np.testing.assert_array_equal(y, np.concatenate([split.y("train")] * 2))
    others = {r.tobytes() for part in ("val", "test") for r in split.feats.flipped[split.rows[part]]}
    assert not others & {r.tobytes() for r in X[n:]}  # no val / test image's mirror is trained on
    _, _, groups, X_flip = split.pool("train", "val")  # cross-validation: one image, one group
    np.testing.assert_array_equal(X_flip, split.feats.flipped[np.concatenate(
        [split.rows["train"], split.rows["val"]])])
    assert len(groups) == split.n("train") + split.n("val")


def test_tta_scores_the_mean_of_both_copies(flip_store: Path):
    result = fit_store(flip_store, "logreg", C=1.0, scale="none")
    split = load_split(flip_store)
    X, Xf, y = split.X("test"), split.X_flip("test"), split.y("test")
    mean = (result.head.predict_proba(X) + result.head.predict_proba(Xf)) / 2
    assert result.test["accuracy"] == pytest.approx(float(np.mean(mean.argmax(axis=1) == y)))
    assert result.split["flips"] == {"train": True, "tta": True}
    plain = fit_store(flip_store, "logreg", C=1.0, scale="none", train_flips=False, tta=False)
    assert plain.test["accuracy"] == pytest.approx(
        float(np.mean(plain.head.predict(X) == y)))
    assert not np.allclose(plain.head.predict_proba(X), result.head.predict_proba(X))  # 2x rows


def test_no_flips_is_the_store_without_them(flip_store: Path, tmp_path: Path):
    plain = tmp_path / "plain.h5"  # flip_store's source: the same vectors, no mirrored ones
    grid = {"C": [0.1, 1.0], "scale": ["none"]}
    off = run_sweep(flip_store, ["logreg"], grid, train_flips=False, tta=False, n_jobs=1)
    ref = run_sweep(plain, ["logreg"], grid, n_jobs=1)
    assert [r["val_accuracy"] for r in off.rows] == [r["val_accuracy"] for r in ref.rows]
    on = run_sweep(flip_store, ["logreg"], grid, n_jobs=1, cv=3)
    assert on.split["flips"] == {"train": True, "tta": True} and on.best["refit_on"] == "train+val"


def test_asking_for_flips_a_store_lacks_is_one_line(tmp_path: Path, capsys):
    plain = synthetic_store(tmp_path / "plain.h5")
    for args in (["fit", str(plain), "--tta", "flip"], ["fit", str(plain), "--train-flips"],
                 ["sweep", str(plain), "--tta", "flip"]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and "--augment flip" in err, err
    code, _, err = cli(capsys, "fit", str(plain), "--tta", "both")
    assert code == 2 and err.count("\n") == 1 and "--tta" in err and "'both'" in err, err


def test_predict_and_report_average_over_flips(tmp_path: Path, capsys):
    from featx.embed import ExtractorSettings
    from featx.extract import extract
    from featx.predict import predict
    from featx.report import make_report

    data = make_images(tmp_path / "data", {"cat": 8, "dog": 8})
    store = extract(data, tmp_path / "flip.h5", ExtractorSettings(**{**TINY, "augment": "flip"}),
                    batch_size=8).out
    bundle = tmp_path / "b"
    code, out, err = cli(capsys, "fit", str(store), "--C", "1", "--scale", "none", "-o", str(bundle))
    assert code == 0 and "predictions averaged over flips" in out, err
    feats, b = load_features(store), load_bundle(bundle)
    assert b.tta
    new = tmp_path / "new"
    new.mkdir()
    for rel in feats.paths[:3]:
        shutil.copy(data / rel, new / Path(rel).name)
    by_tta = {tta: {Path(p.path).name: p for p in predict(bundle, [new], tta=tta).predictions}
              for tta in (None, False)}
    for i, rel in enumerate(feats.paths[:3]):
        plain = b.head.predict_proba(feats.features[i:i + 1])[0]
        mean = (plain + b.head.predict_proba(feats.flipped[i:i + 1])[0]) / 2
        got = by_tta[None][Path(rel).name].probabilities  # the bundle's way: averaged
        np.testing.assert_allclose([got[c] for c in feats.class_names], mean, atol=1e-4)
        got = by_tta[False][Path(rel).name].probabilities
        np.testing.assert_allclose([got[c] for c in feats.class_names], plain, atol=1e-4)
    report = make_report(store, tmp_path / "report", bundles=[bundle])
    assert report.chosen["test_accuracy"] == pytest.approx(b.info["metrics"]["test"]["accuracy"])
    assert not [n for n in report.notes if "differs" in n]
    doc = json.loads(cli(capsys, "predict", str(bundle), str(new), "--tta", "none", "--json")[1])
    assert doc["n_predicted"] == 3


def test_reuse_commands_see_one_row_per_image(flip_store: Path, tmp_path: Path):
    from featx.export import export

    feats = load_features(flip_store)
    npz = np.load(export(flip_store, tmp_path / "x.npz"))
    assert npz["features"].shape == npz["features_flip"].shape == feats.features.shape
    np.testing.assert_array_equal(npz["features_flip"], feats.flipped)
    from featx.neighbors import find_neighbors

    (res,) = find_neighbors(flip_store, [feats.paths[5]], k=2 * feats.n)
    assert sorted(n.path for n in res.neighbors) == sorted(feats.paths)  # each image once
