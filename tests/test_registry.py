"""Tests driven by the registries: every backbone x layer x pooling, every head, every bundle kind;
and the error conventions (parameters named by the library, flags by the CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featx.backbones import BACKBONES, POOLINGS, build_extractor
from featx.bundle import KINDS, load_bundle, save_bundle
from featx.errors import FeatxError, NotFittedError
from featx.heads import CLASSIFIERS, HEADS, CnnHead, make_head
from tests.conftest import META

COMBOS = [(b.name, layer, pooling) for b in BACKBONES.values() for layer in b.layers
          for pooling in (POOLINGS if layer == b.base_layer else ("none",))]


@pytest.mark.parametrize("model, layer, pooling", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_backbone_layer_and_pooling_has_its_stated_dimension(model, layer, pooling):
    import keras

    backbone = BACKBONES[model]
    extractor = build_extractor(backbone, layer, pooling, None)
    try:
        assert extractor.output_shape == (None, backbone.feature_dim(layer, pooling))
    finally:
        keras.backend.clear_session()


def test_the_default_is_vgg16_fc2_4096():
    from featx.embed import ExtractorSettings

    s = ExtractorSettings().normalized()
    assert (s.model, s.layer, s.pooling) == ("vgg16", "fc2", "none")
    assert BACKBONES["vgg16"].feature_dim(s.layer, s.pooling) == 4096


def _blobs(n=90, dim=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = (rng.normal(size=(classes, dim))[y] * 3 + rng.normal(size=(n, dim))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("clf", CLASSIFIERS)
def test_every_head_round_trips_through_a_bundle(clf: str, tmp_path: Path):
    X, y = _blobs()
    head = make_head(clf, epochs=20, lr=0.01).fit(X[:60], y[:60], X[60:75], y[60:75], n_classes=3)
    meta = {**META, "dim": X.shape[1], "n": len(y), "data_dir": str(tmp_path)}
    path = save_bundle(tmp_path / clf, head, ["a", "b", "c"], meta)
    b = load_bundle(path)
    assert (b.kind, b.clf, b.head.input) == ("features", clf, "vectors")
    np.testing.assert_allclose(b.predict_proba(X[75:]), head.predict_proba(X[75:]), atol=1e-6)
    assert np.mean(b.head.predict(X[75:]) == y[75:]) > 0.8  # it learned the blobs


def test_the_pixel_head_round_trips_and_feeds_on_pixels(tmp_path: Path):
    from featx.baseline import build_model

    model = build_model(48, 2)
    head = CnnHead({"batch_size": 4}, model, {"loss": [1.0], "val_loss": [1.0]})
    meta = {"input_size": 48, "resize": "squash", "resample": "bilinear", "data_dir": "", "n": 0}
    b = load_bundle(save_bundle(tmp_path / "cnn", head, ["a", "b"], meta))
    assert (b.kind, b.clf) == ("cnn", "cnn") and b.history == {"loss": [1.0], "val_loss": [1.0]}
    pixels = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3)).astype(np.float32)
    np.testing.assert_allclose(b.predict_proba(pixels), head.predict_proba(pixels), atol=1e-6)
    assert b.reader().decode_settings.size == 48


def test_every_kind_has_a_loader_for_a_head():
    assert set(KINDS) == {"features", "cnn"}
    assert {h.input for h in HEADS.values()} == {k.input for k in KINDS.values()}


@pytest.mark.parametrize("clf", [*CLASSIFIERS, "cnn"])
def test_an_unfitted_head_says_so(clf: str, tmp_path: Path):
    head = HEADS[clf]({}) if clf in ("softmax", "cnn") else make_head(clf)
    with pytest.raises(NotFittedError, match="not fitted"):
        head.predict_proba(np.zeros((2, 4), np.float32))
    with pytest.raises(NotFittedError):
        head.save(tmp_path)


def test_library_errors_name_parameters_and_the_cli_names_flags(capsys):
    from featx.cli import main
    from featx.extract import extract

    with pytest.raises(FeatxError) as e:
        extract(".", batch_size=0)
    assert str(e.value) == "batch_size must be at least 1, got 0" and e.value.params == ["batch_size"]
    with pytest.raises(SystemExit):
        main(["extract", ".", "--batch-size", "0"])
    assert capsys.readouterr().err.strip() == "featx: error: --batch-size must be at least 1, got 0"
    err = FeatxError("use `weights`=PATH or `layer`=block5_pool")
    assert str(err) == "use weights=PATH or layer=block5_pool"
    flags = {"weights": "--weights"}
    assert err.render(flags.get) == "use --weights PATH or layer=block5_pool"
