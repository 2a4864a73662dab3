"""featx baseline: the same split as the store, streamed batches, the cnn bundle and predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featx.baseline import (MIN_SIZE, BaselineSettings, baseline_split, build_model,
                            image_batches, images_from_folder, images_from_store)
from featx.bundle import load_bundle
from featx.cli import main
from featx.errors import FeatxError
from featx.split import split_indices
from featx.store import load_features
from tests.conftest import TINY, cli, make_images


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes x 12 generated 64x64 images, plus a broken file and an exact duplicate."""
    root = make_images(tmp_path_factory.mktemp("bl") / "data", {"red": 12, "green": 12, "blue": 12},
                       size=(64, 64))
    (root / "red" / "broken.jpg").write_bytes(b"this is not a jpeg")
    shutil.copy(root / "green" / "green_000.jpg", root / "green" / "copy_of_000.jpg")
    return root


@pytest.fixture(scope="module")
def store(data: Path, tmp_path_factory) -> Path:
    from featx.embed import ExtractorSettings
    from featx.extract import extract

    return extract(data, tmp_path_factory.mktemp("st") / "s.h5", ExtractorSettings(**TINY),
                   batch_size=16).out


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory):
    """``featx baseline`` run once through the CLI (64x64, 2 epochs)."""
    bundle = tmp_path_factory.mktemp("models") / "cnn"
    with pytest.raises(SystemExit) as e:
        main(["baseline", str(data), "--size", "64", "--epochs", "2", "--batch-size", "8",
              "-o", str(bundle), "--json"])
    return e.value.code, bundle


def test_split_equals_the_stores(data: Path, store: Path):
    feats = load_features(store)
    want = split_indices(feats.hashes, feats.labels)
    want_paths = {p: sorted(feats.paths[i] for i in rows) for p, rows in want.items()}
    for rows in (images_from_folder(data), images_from_store(data, store)):
        got = baseline_split(rows)
        assert {p: sorted(rows.paths[i] for i in r) for p, r in got.items()} == want_paths
        assert rows.class_names == feats.class_names
    computed = images_from_folder(data)
    assert "red/broken.jpg" not in computed.paths
    assert "red/broken.jpg" in dict(computed.skipped)
    assert "green/copy_of_000.jpg" in computed.paths  # duplicates are rows, as in the store
    # the duplicate and its original fall in the same part
    part_of = {feats.paths[i]: p for p, rows in want.items() for i in rows}
    assert part_of["green/copy_of_000.jpg"] == part_of["green/green_000.jpg"]


def test_store_of_another_folder_is_refused(data: Path, store: Path, tmp_path: Path):
    other = make_images(tmp_path / "other", {"a": 2, "b": 2})
    with pytest.raises(FeatxError, match="not under"):
        images_from_store(other, store)


def test_batches_decode_one_batch_at_a_time(data: Path, monkeypatch):
    import featx.baseline as bl

    rows = images_from_folder(data)
    calls = []
    real = bl.decode_file
    monkeypatch.setattr(bl, "decode_file", lambda p, s: calls.append(p) or real(p, s))
    settings = BaselineSettings(size=48, batch_size=5, workers=1)
    files = rows.files(np.arange(len(rows.paths)))
    ds = image_batches(files, rows.labels, 3, settings, shuffle=True, seed=1)
    assert len(ds) == -(-len(files) // 5)
    x, y = ds[1]
    assert x.shape == (5, 48, 48, 3) and y.shape == (5, 3)
    assert len(calls) == 5  # only this batch's files were read
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 1  # raw pixels: the model rescales
    np.testing.assert_array_equal(y.sum(1), 1)
    order = ds.order.copy()
    ds.on_epoch_end()
    assert sorted(ds.order) == list(range(len(files))) and not np.array_equal(order, ds.order)


def test_model_is_the_tutorials():
    model = build_model(64, 3)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [(c.filters, c.kernel_size) for c in convs] == [(32, (3, 3))] * 4
    assert [layer.rate for layer in model.layers if hasattr(layer, "rate")] == [0.25, 0.25, 0.5]
    assert model.layers[0].__class__.__name__ == "Rescaling"
    assert model.output_shape == (None, 3)
    assert build_model(MIN_SIZE, 2).get_layer("flatten").output.shape[1] == 32  # 1x1x32
    with pytest.raises(FeatxError, match="at least 46"):
        BaselineSettings(size=MIN_SIZE - 1)


def test_baseline_cli_bundle_and_history(trained, data: Path, capsys):
    code, bundle = trained
    assert code == 0
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["kind"] == "cnn" and info["class_names"] == ["blue", "green", "red"]
    assert info["input"]["input_size"] == 64
    h = info["history"]
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in h.values())
    assert json.loads((bundle / "history.json").read_text()) == h
    assert info["split"]["n_train"] + info["split"]["n_val"] + info["split"]["n_test"] == 37
    preds = json.loads((bundle / "test_predictions.json").read_text())
    assert len(preds["paths"]) == info["split"]["n_test"]
    proba = np.array(preds["proba"])
    assert proba.shape == (info["split"]["n_test"], 3)
    # the stored test accuracy is the accuracy of the stored test predictions
    acc = float(np.mean(proba.argmax(1) == np.array(preds["labels"])))
    assert info["metrics"]["test"]["accuracy"] == pytest.approx(acc)


def test_predict_uses_the_cnn_bundle(trained, data: Path, capsys):
    _, bundle = trained
    b = load_bundle(bundle)
    assert b.kind == "cnn"
    preds = json.loads((bundle / "test_predictions.json").read_text())
    files = [str(data / p) for p in preds["paths"][:3]]
    code, out, err = cli(capsys, "predict", str(bundle), *files, "--json")
    assert code == 0, err
    got = json.loads(out)["predictions"]
    assert [p["path"] for p in got] == files
    for p, want in zip(got, preds["proba"]):  # same decode, same model: same probabilities
        assert [p["probabilities"][c] for c in b.class_names] == pytest.approx(want, abs=1e-4)


def test_bad_options_are_one_line_errors(data: Path, capsys):
    for args, needle in [(["--size", "16"], "--size"), (["--resize", "zoom"], "resize"),
                         (["--split", "1/2"], "--split")]:
        code, out, err = cli(capsys, "baseline", str(data), *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
