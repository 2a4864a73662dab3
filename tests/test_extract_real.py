"""extract with the real ImageNet VGG16 weights and photos in ../shared, and on the JAX backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featx import load_features
from featx.embed import ExtractorSettings
from featx.extract import extract
from tests.conftest import SHARED_WEIGHTS, PETS, TINY_ARGS, TINY_DIM, needs_shared, subset

VGG = ExtractorSettings(layer="block5_pool", pooling="avg", weights=str(SHARED_WEIGHTS))


@pytest.fixture(scope="module")
def pets4(tmp_path_factory) -> Path:
    return subset(PETS, tmp_path_factory.mktemp("pets4") / "data", 2)


@pytest.fixture(scope="module")
def pets4_store(pets4: Path, tmp_path_factory) -> Path:
    return extract(pets4, tmp_path_factory.mktemp("s") / "tf.h5", VGG, batch_size=4).out


def _vgg16_and_pixels(feats, size: int):
    """Keras' VGG16 (block5_pool + avg, the shared weights) at ``size``, and the store's photos
    resized by hand to it (PIL, bilinear), float32 RGB, before preprocess_input."""
    import keras
    from PIL import Image

    model = keras.applications.VGG16(include_top=False, weights=str(SHARED_WEIGHTS),
                                     input_shape=(size, size, 3), pooling="avg")
    root = Path(feats.meta["data_dir"])
    x = np.stack([np.asarray(Image.open(root / p).convert("RGB").resize((size, size), Image.BILINEAR),
                             dtype="float32") for p in feats.paths])
    return model, x


@needs_shared
def test_vgg16_vector_equals_keras_by_hand(pets4_store: Path):
    """featx's stored vector == keras VGG16 + preprocess_input once, on the same resize."""
    import keras

    feats = load_features(pets4_store)
    model, x = _vgg16_and_pixels(feats, 224)
    by_hand = model.predict(keras.applications.vgg16.preprocess_input(x), verbose=0)
    np.testing.assert_allclose(feats.features, by_hand, rtol=1e-4, atol=1e-4)
    # The tutorial's extra /255 after preprocess_input gives other vectors: featx does not do it.
    tutorial = model.predict(keras.applications.vgg16.preprocess_input(x.copy()) / 255.0, verbose=0)
    assert not np.allclose(feats.features, tutorial, rtol=0.1)


@needs_shared
def test_vgg16_vector_at_another_input_size_equals_keras_by_hand(pets4: Path, tmp_path: Path):
    import keras

    settings = ExtractorSettings(layer="block5_pool", pooling="avg", weights=str(SHARED_WEIGHTS),
                                 input_size=288)
    feats = load_features(extract(pets4, tmp_path / "288.h5", settings, batch_size=4).out)
    assert feats.meta["input_size"] == 288
    model, x = _vgg16_and_pixels(feats, 288)
    by_hand = model.predict(keras.applications.vgg16.preprocess_input(x), verbose=0)
    np.testing.assert_allclose(feats.features, by_hand, rtol=1e-4, atol=1e-4)


def _extract_on_jax(data: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", "extract", str(data),
           "-o", str(out), "--batch-size", "4", *args]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_runs_on_the_jax_backend_with_tensorflows_vectors(request, image_tree: Path, tmp_path: Path):
    """The extractor runs unchanged on Keras' JAX backend (one child process): with ../shared on
    real photos and weights, giving TensorFlow's vectors; without it on generated images."""
    pytest.importorskip("jax")
    out = tmp_path / "jax.h5"
    real = SHARED_WEIGHTS.is_file() and PETS.is_dir()
    if real:
        data = request.getfixturevalue("pets4")
        proc = _extract_on_jax(data, out, "--layer", "block5_pool", "--weights", str(SHARED_WEIGHTS))
    else:
        proc = _extract_on_jax(image_tree, out, *TINY_ARGS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    feats = load_features(out)
    assert feats.meta["keras_backend"] == "jax"
    assert np.isfinite(feats.features).all() and feats.features.std() > 0
    if not real:
        assert feats.features.shape == (12, TINY_DIM)
        return
    tf_feats = load_features(request.getfixturevalue("pets4_store"))
    assert feats.paths == tf_feats.paths and feats.meta["keras_backend"] != tf_feats.meta["keras_backend"]
    np.testing.assert_allclose(feats.features, tf_feats.features, rtol=1e-3, atol=1e-3)
