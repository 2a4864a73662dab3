"""featx.familiar: the record of the training photos, its calibration, and predict's flag."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from featx import familiar as fm
from featx.bundle import load_bundle
from featx.cli import main
from featx.errors import FeatxError
from featx.fit import fit_store
from featx.predict import NO_RECORD, predict
from tests.conftest import PETS, make_images, needs_shared, synthetic_store


def odd_images(folder: Path, n: int = 2, size=(64, 48)) -> Path:
    """Generated non-photos: uniform noise, a flat colour, black text on white."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"noise{i}.png")
        Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3))).save(
            folder / f"flat{i}.png")
        page = Image.new("RGB", size, "white")
        ImageDraw.Draw(page).text((2, size[1] // 3), f"page {i} notes", fill="black")
        page.save(folder / f"text{i}.png")
    return folder


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A generated store of 30,000 vectors (3 blobs): 4,500 val and test rows each, so one
    point of share is about three standard errors."""
    from featx.fit import load_split

    base = tmp_path_factory.mktemp("familiar_big")
    store = synthetic_store(base / "big.h5", counts=(10000, 10000, 10000), dim=16, sep=4.0)
    split = load_split(store)
    return fit_store(store, split=split, C=1.0, scale="none", out=base / "m"), base, split


@pytest.fixture(scope="module")
def tiny(tiny_store, tmp_path_factory):
    """A bundle on the session's tiny store (VGG16 32x32, random weights)."""
    base = tmp_path_factory.mktemp("familiar_tiny")
    fit_store(tiny_store, C=1.0, scale="l2", out=base / "m")
    new = make_images(base / "new", {"circle": 1, "square": 1}, seed=3)
    return {"bundle": base / "m", "images": [new, odd_images(base / "odd", 1)], "base": base}


def test_validation_and_test_flagged_shares_are_within_a_point_of_the_target(big):
    result, _, split = big
    rec = result.familiar
    assert rec.method == fm.DEFAULT_METHOD
    cal = rec.calibration
    assert cal["n_val"] == 4500 and abs(cal["val_flagged"] - (1 - fm.TARGET)) <= 0.01
    test_share = float(np.mean(rec.flags(rec.score(split.X("test")))))
    assert abs(test_share - (1 - fm.TARGET)) <= 0.01, test_share
    far = split.X("test") + 40.0 * np.eye(16, dtype=np.float32)[0]  # off every blob
    assert rec.flags(rec.score(far)).mean() > 0.99


def test_the_bank_stays_within_its_bytes_and_is_described(big):
    result, base, _ = big
    rec = result.familiar
    small = fm.fit_record(np.ones((5000, 512), np.float32) + np.random.default_rng(0).random(
        (5000, 512), np.float32), np.zeros(5000, int), np.ones((50, 512), np.float32),
        bank_bytes=1 << 20)
    assert small.arrays["bank"].shape == (1024, 512) and small.nbytes == 1 << 20
    assert "1,024 L2-normalised training vectors of 512 dims in float16" in small.describe()
    info = json.loads((base / "m" / "bundle.json").read_text())["familiar"]
    assert info["threshold"] == pytest.approx(rec.threshold) and info["bytes"] == rec.nbytes
    assert (base / "m" / fm.ARRAYS_FILE).stat().st_size < rec.nbytes + 4096


@pytest.mark.parametrize("method,params", [("knn", {"k": 3}), ("mahalanobis", {}),
                                           ("mahalanobis", {"normalize": False, "dims": 4})])
def test_keras_score_equals_numpy(method, params):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(300, 8)).astype(np.float32) + 2, rng.integers(0, 3, 300)
    rec = fm.fit_record(X[:200], y[:200], X[200:250], method, **params)
    Z = np.r_[X[250:], rng.normal(size=(10, 8)).astype(np.float32) * 5]
    from keras import ops

    want = rec.score(Z)
    np.testing.assert_allclose(ops.convert_to_numpy(fm.keras_score(rec)(Z)), want, rtol=1e-4,
                               atol=1e-5)
    import keras

    inputs = keras.Input((8,))
    graph = keras.Model(inputs, fm.keras_score(rec)(inputs))  # as an exported model's output
    np.testing.assert_allclose(graph.predict(Z, verbose=0), want, rtol=1e-4, atol=1e-5)


def test_mahalanobis_finds_what_knn_finds_off_the_classes():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 10)).astype(np.float32)
    X[:, 0] += 6.0  # every class sits out along the first axis
    y = rng.integers(0, 2, 600)
    X[y == 1, 1] += 3.0
    inside, outside = X[500:], rng.normal(size=(100, 10)).astype(np.float32)
    for method in fm.METHODS:
        rec = fm.fit_record(X[:400], y[:400], X[400:500], method)
        assert rec.score(outside).min() > np.median(rec.score(inside)), method
        assert rec.flags(rec.score(outside)).mean() > 0.9, method


def test_predict_flags_and_reject_answers_none(tiny, capsys):
    b = load_bundle(tiny["bundle"])
    assert b.familiar is not None and b.info["familiar"]["calibration"]["n_val"] > 0
    report = predict(b, tiny["images"], reject=True, unfamiliar_at=-1.0)  # all flagged
    assert report.n_unfamiliar == len(report.predictions) == 5
    assert {p.label for p in report.predictions} == {"none"}
    assert all(p.top_k[0][0] in b.class_names for p in report.predictions)
    kept = predict(b, tiny["images"], unfamiliar_at=1e9)
    assert kept.n_unfamiliar == 0 and [p.score for p in kept.predictions] == \
        [p.score for p in report.predictions]
    assert report.summary_line() == "5 of 5 photos look unlike the training photos"


def test_cli_predict_text_json_and_flags(tiny, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tiny["bundle"]), *map(str, tiny["images"]), "--reject",
              "--unfamiliar-at", "-1", "--json"])
    assert e.value.code == 0  # rejecting does not change the exit code
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_unfamiliar"] == 5 and doc["familiar"]["set_by"] == "unfamiliar_at"
    p = doc["predictions"][0]
    assert p["unfamiliar"] is True and p["label"] == "none" and isinstance(p["unfamiliar_score"], float)
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tiny["bundle"]), *map(str, tiny["images"])])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "unfamiliar: " in text and "(score " in text
    assert re.search(r"\d of 5 photos looks? unlike the training photos \(score above", text)
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tiny["bundle"]), str(tiny["images"][0]), "--unfamiliar-at", "x"])
    assert e.value.code == 2


def test_a_bundle_without_the_record_predicts_and_says_so_once(tiny, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(tiny["bundle"], old)
    info = json.loads((old / "bundle.json").read_text())
    del info["familiar"]
    (old / "bundle.json").write_text(json.dumps(info))
    (old / fm.ARRAYS_FILE).unlink()
    with pytest.raises(SystemExit) as e:
        main(["predict", str(old), *map(str, tiny["images"]), "--reject", "--json"])
    captured = capsys.readouterr()
    assert e.value.code == 0
    doc = json.loads(captured.out)
    assert doc["n_predicted"] == 5 and doc["n_unfamiliar"] is None and doc["familiar"] is None
    assert all(p["unfamiliar"] is None and p["label"] != "none" for p in doc["predictions"])
    assert captured.err.count(NO_RECORD) == 1
    with pytest.raises(FeatxError, match="unfamiliar_at"):
        predict(old, tiny["images"], unfamiliar_at=0.5)
    refit = fit_store(load_bundle(old).info["store"]["path"], C=1.0, scale="l2", out=old)
    assert refit.familiar is not None and load_bundle(old).familiar is not None  # fit adds it


def test_fit_prints_the_calibration_and_report_the_test_share(tiny, tiny_store, capsys):
    from featx.report import make_report

    out = tiny["base"] / "m2"
    with pytest.raises(SystemExit):
        main(["fit", str(tiny_store), "--C", "1", "--scale", "l2", "-o", str(out)])
    text = capsys.readouterr().out
    assert "unfamiliar photos: knn score above" in text and "of validation" in text
    report = make_report(tiny_store, tiny["base"] / "report", bundles=[out], per_class=1,
                         n_mistakes=1)
    u = report.chosen["unfamiliar"]
    rec = load_bundle(out).familiar
    assert u["threshold"] == rec.threshold and 0 <= u["test_flagged"] <= 1
    assert Path(report.files["unfamiliar"]).is_file()


def test_sweep_bundles_record_it(tmp_path):
    from featx.sweep import run_sweep

    store = synthetic_store(tmp_path / "s.h5")
    run_sweep(store, ["logreg"], {"C": [1.0]}, n_jobs=1, bundle=tmp_path / "b")
    assert load_bundle(tmp_path / "b").familiar is not None


@needs_shared
def test_real_generated_non_photos_score_above_real_photos(pets_store, tmp_path):
    """A pets model (real VGG16): noise, flat colour and text score above unseen pets photos."""
    bundle = fit_store(pets_store, C=10.0, scale="l2", out=tmp_path / "m").bundle
    unseen = [sorted((PETS / c).iterdir())[-1 - i] for c in ("cat", "dog") for i in range(2)]
    odd = odd_images(tmp_path / "odd", 1, size=(224, 224))
    report = predict(bundle, [*unseen, odd], batch_size=8)
    scores = {Path(p.path).parent.name: [] for p in report.predictions}
    for p in report.predictions:
        scores[Path(p.path).parent.name].append(p.score)
    assert min(scores["odd"]) > max(scores["cat"] + scores["dog"])
    assert all(p.unfamiliar for p in report.predictions if "odd" in p.path)
