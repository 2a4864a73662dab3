"""featx extract: store layout, resume, renames, duplicates, bad input, crash safety."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx import load_features
from featx.embed import ExtractorSettings
from featx.errors import FeatxError
from featx.extract import extract
from tests.conftest import TINY, TINY_ARGS, TINY_DIM, make_images, spawn_cli, wait_for

SETTINGS = ExtractorSettings(**TINY)


def test_store_layout_is_plain_hdf5(tiny_store: Path):
    with h5py.File(tiny_store, "r") as f:
        assert f["features"].shape == (30, TINY_DIM) and f["features"].dtype == np.float32
        assert f["features"].chunks is None  # contiguous: written whole, read fastest
        assert f["labels"][:].tolist() == [0] * 10 + [1] * 10 + [2] * 10
        assert f["paths"][0].decode() == "circle/circle_000.jpg"
        assert len(f["hashes"][0]) == 64
        assert [c.decode() for c in f["class_names"][:]] == ["circle", "square", "star"]
        for key in ("model", "layer", "pooling", "input_size", "resize", "precision",
                    "weights_id", "keras_version", "keras_backend", "featx_version", "created"):
            assert key in f.attrs, key
        assert f.attrs["featx_schema"] == 1


def test_load_features_api(tiny_store: Path):
    feats = load_features(tiny_store)
    assert feats.n == 30 and feats.dim == TINY_DIM
    assert feats.meta["model"] == "vgg16" and feats.meta["weights_id"] == "random"
    assert feats.meta["input_size"] == 32
    assert np.isfinite(feats.features).all() and feats.features.std() > 0


def test_vector_equals_keras_model_called_by_hand(tiny_store: Path):
    import keras
    from PIL import Image

    feats = load_features(tiny_store)
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(include_top=False, weights=None, pooling="avg",
                                     input_shape=(32, 32, 3))
    data = Path(feats.meta["data_dir"])
    pixels = np.stack([
        np.asarray(Image.open(data / p).convert("RGB").resize((32, 32), Image.BILINEAR))
        for p in feats.paths[:4]
    ]).astype("float32")
    by_hand = model.predict_on_batch(keras.applications.vgg16.preprocess_input(pixels))
    assert np.abs(by_hand).mean() > 1e-2  # vectors of a size that makes the comparison mean something
    np.testing.assert_allclose(feats.features[:4], by_hand, rtol=1e-4, atol=1e-5)


def test_rerun_does_no_work(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    first = extract(image_tree, out, SETTINGS)
    mtime = out.stat().st_mtime_ns
    second = extract(image_tree, out, SETTINGS)
    assert first.n_embedded == 12 and second.n_embedded == 0
    assert second.wrote is False and out.stat().st_mtime_ns == mtime


def test_new_renamed_and_duplicate_files(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    extract(image_tree, out, SETTINGS)
    before = load_features(out)
    (image_tree / "cat" / "cat_000.jpg").rename(image_tree / "cat" / "renamed.jpg")
    shutil.copy(image_tree / "dog" / "dog_001.jpg", image_tree / "cat" / "copy_of_dog.jpg")
    make_images(image_tree / "new", {"cat": 2}, seed=7)  # two genuinely new images
    for p in (image_tree / "new" / "cat").iterdir():
        p.rename(image_tree / "cat" / p.name.replace("cat_", "new_"))
    shutil.rmtree(image_tree / "new")

    report = extract(image_tree, out, SETTINGS)
    after = load_features(out)
    assert report.n_embedded == 2  # the rename and the copy cost no model time
    assert after.n == 15 and len(set(after.paths)) == 15
    assert "cat/cat_000.jpg" not in after.paths
    old = dict(zip(before.paths, before.features))
    new = dict(zip(after.paths, after.features))
    np.testing.assert_array_equal(new["cat/renamed.jpg"], old["cat/cat_000.jpg"])
    np.testing.assert_array_equal(new["cat/copy_of_dog.jpg"], old["dog/dog_001.jpg"])
    assert after.labels[after.paths.index("cat/copy_of_dog.jpg")] == 0  # labelled by its folder


def test_other_settings_refuse_to_mix(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    extract(image_tree, out, SETTINGS)
    with pytest.raises(FeatxError, match="resize: squash .stored. vs crop"):
        extract(image_tree, out, ExtractorSettings(**{**TINY, "resize": "crop"}))
    with pytest.raises(FeatxError, match="pooling: avg .stored. vs max"):
        extract(image_tree, out, ExtractorSettings(**{**TINY, "pooling": "max"}))


def test_bad_files_are_skipped_with_reasons(image_tree: Path, tmp_path: Path):
    cat = image_tree / "cat"
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "truncated.jpg").write_bytes((cat / "cat_001.jpg").read_bytes()[:300])
    (cat / "text.png").write_text("not really a png")
    (cat / "Thumbs.db").write_bytes(b"\0" * 10)
    (cat / ".DS_Store").write_bytes(b"\0" * 10)
    (cat / "UPPER.JPG").write_bytes((cat / "cat_002.jpg").read_bytes()[:-1] + b"\xd9")
    report = extract(image_tree, tmp_path / "s.h5", SETTINGS)
    reasons = dict(report.skipped)
    assert reasons["cat/empty.jpg"] == "empty file"
    assert "truncated" in reasons["cat/truncated.jpg"]
    assert "not an image" in reasons["cat/text.png"]
    assert reasons["cat/Thumbs.db"] == reasons["cat/.DS_Store"] == "system file"
    feats = load_features(tmp_path / "s.h5")
    assert "cat/UPPER.JPG" in feats.paths and feats.n == 13
    assert dict(feats.skipped) == reasons  # the skip list is stored too


def test_decompression_bomb_is_skipped(image_tree: Path, tmp_path: Path):
    from PIL import Image

    Image.new("L", (9000, 8000)).save(image_tree / "dog" / "bomb.png")  # 72 Mpx > 64 Mpx guard
    report = extract(image_tree, tmp_path / "s.h5", SETTINGS)
    assert "decompression bomb" in dict(report.skipped)["dog/bomb.png"]


@pytest.fixture(scope="module")
def forty(tmp_path_factory) -> tuple[Path, object]:
    """40 generated images (read only) and their store made in one uninterrupted run."""
    base = tmp_path_factory.mktemp("forty")
    data = make_images(base / "data", {"a": 20, "b": 20})
    return data, load_features(extract(data, base / "clean.h5", SETTINGS).out)


@pytest.mark.parametrize("sig, when", [
    (signal.SIGKILL, "after-merge"), (signal.SIGINT, "after-merge"), (signal.SIGKILL, "parts-only"),
], ids=["kill-9-after-merge", "ctrl-c-after-merge", "kill-9-before-any-merge"])
def test_killed_run_leaves_readable_store_and_resumes(forty, tmp_path: Path, sig, when):
    data, clean = forty
    out = tmp_path / "s.h5"
    args = ["extract", str(data), "-o", str(out), "--model", TINY["model"], "--layer", TINY["layer"],
            "--weights", "none", "--input-size", "32", "--batch-size", "4", "--commit-every", "4"]
    proc = spawn_cli(*args)
    parts = tmp_path / "s.h5.parts"
    if when == "after-merge":  # the store has been merged once (16 rows) and more parts are committed
        wait_for(lambda: out.exists() and len(list(parts.glob("part-*.h5"))) >= 1, proc)
    else:  # a first run with committed parts and no store yet
        wait_for(lambda: len(list(parts.glob("part-*.h5"))) >= 1, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        kept = set(load_features(out).hashes) if out.exists() else set()
        for p in parts.glob("part-*.h5"):
            with h5py.File(p) as f:
                kept |= {h.decode() for h in f["hashes"][:]}
        assert f"interrupted: {len(kept)} vectors are kept in {out}" in stderr  # says how many
    if out.exists():
        partial = load_features(out)  # readable, and every row complete
        assert 0 < partial.n < 40 and len(set(partial.paths)) == partial.n
    else:  # featx info says what the interrupted run holds and how to resume
        info = spawn_cli("info", str(out))
        stdout, _ = info.communicate(timeout=120)
        n_parts = sum(len(h5py.File(p)["hashes"]) for p in parts.glob("part-*.h5"))
        assert info.returncode == 0 and f"interrupted run holds {n_parts} vectors" in stdout

    report = extract(data, out, SETTINGS)
    full = load_features(out)
    assert full.n == 40 and len(set(full.paths)) == 40
    assert report.n_embedded < 40  # committed work was not redone
    assert not parts.exists() and not out.with_name("s.h5.lock").exists()
    np.testing.assert_allclose(full.features, clean.features, rtol=1e-5, atol=1e-6)
    assert full.paths == clean.paths


def test_interrupt_before_the_first_commit_says_nothing_was_kept(tmp_path: Path, capsys, monkeypatch):
    from featx import extract as ex
    from featx.cli import main

    data = make_images(tmp_path / "data", {"a": 3, "b": 3})

    def interrupted(*a, **kw):
        raise KeyboardInterrupt  # Ctrl-C while the model runs, before any part is written

    monkeypatch.setattr(ex, "local_batches", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["extract", str(data), "-o", str(tmp_path / "s.h5"), *TINY_ARGS])
    err = capsys.readouterr().err
    assert e.value.code == 130 and "before any vector was embedded: nothing to keep" in err
    assert list(tmp_path.glob("s.h5*")) == []


def test_cli_extract_json_and_info(image_tree: Path, tmp_path: Path):
    import json

    out = tmp_path / "s.h5"
    proc = spawn_cli("extract", str(image_tree), "-o", str(out), *TINY_ARGS, "--json")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["n_images"] == 12 and result["n_embedded"] == 12 and result["dim"] == TINY_DIM
    assert set(result["timings"]) >= {"hash", "decode", "model", "write", "total"}
    proc = spawn_cli("info", str(out), "--json")
    stdout, _ = proc.communicate(timeout=120)
    info = json.loads(stdout)
    assert info["classes"] == {"cat": 6, "dog": 6} and info["meta"]["layer"] == "block5_pool"


@pytest.mark.parametrize("make_args, message", [
    (lambda d, t: [str(t / "missing")], "data folder not found"),
    (lambda d, t: [str(d), "-o", str(d / "cat" / "cat_000.jpg" / "x.h5")], "a file is in the way"),
    (lambda d, t: [str(d), "--layer", "fc9"], "no layer 'fc9'"),
    (lambda d, t: [str(d), "--precision", "int8"], "unknown precision"),
    (lambda d, t: ["info", str(d / "cat" / "cat_000.jpg")], "not an HDF5 file"),
])
def test_cli_misuse_is_one_clear_line(image_tree: Path, tmp_path: Path, make_args, message):
    args = make_args(image_tree, tmp_path)
    if args[0] != "info":
        args = ["extract", *args]
    proc = spawn_cli(*args, "--weights", "none") if args[0] == "extract" else spawn_cli(*args)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in stderr.splitlines() if ln.startswith("featx: error:")]
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr


def test_offline_imagenet_download_names_weights_option(image_tree: Path, tmp_path: Path):
    # An unreachable proxy makes the download fail the same way on any machine, online or not.
    env = {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    proc = spawn_cli("extract", str(image_tree), "-o", str(tmp_path / "s.h5"), env=env)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "could not download the ImageNet weights" in stderr and "--weights PATH" in stderr


def test_flip_rows_are_the_mirrored_images_vectors(image_tree: Path, tmp_path: Path):
    import keras
    from PIL import Image

    settings = ExtractorSettings(**{**TINY, "augment": "flip"})
    report = extract(image_tree, tmp_path / "f.h5", settings, batch_size=4, commit_every=4)
    feats = load_features(report.out)
    assert feats.flipped.shape == feats.features.shape == (12, TINY_DIM)  # beside each row
    assert feats.meta["augment"] == "flip" and feats.n == 12  # no extra rows
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(include_top=False, weights=None, pooling="avg",
                                     input_shape=(32, 32, 3))
    pixels = np.stack([np.asarray(Image.open(image_tree / p).convert("RGB")
                                  .resize((32, 32), Image.BILINEAR)) for p in feats.paths[:3]])
    mirrored = keras.applications.vgg16.preprocess_input(pixels[:, :, ::-1].astype("float32"))
    np.testing.assert_allclose(feats.flipped[:3], model.predict_on_batch(mirrored), rtol=1e-4,
                               atol=1e-5)
    assert np.abs(feats.flipped - feats.features).max() > 1e-3  # a mirror image is another input
    plain = load_features(extract(image_tree, tmp_path / "p.h5", SETTINGS).out)
    np.testing.assert_allclose(feats.features, plain.features, rtol=1e-5, atol=1e-6)


def test_store_dtype_float16_halves_the_vectors(image_tree: Path, tmp_path: Path):
    half = extract(image_tree, tmp_path / "h.h5", ExtractorSettings(**{**TINY, "store_dtype": "float16"}))
    full = extract(image_tree, tmp_path / "f.h5", SETTINGS)
    with h5py.File(half.out) as f:
        assert f["features"].dtype == np.float16 and f.attrs["store_dtype"] == "float16"
    np.testing.assert_allclose(load_features(half.out).features, load_features(full.out).features,
                               rtol=2e-3, atol=1e-4)


def test_input_size_is_recorded_and_named_and_dense_layers_refuse_it(image_tree: Path, tmp_path: Path,
                                                                     capsys):
    from featx.cli import main
    from featx.extract import default_output

    s = ExtractorSettings(layer="block5_pool", input_size=352, augment="flip")
    assert default_output(image_tree, s).name == "data_vgg16_block5_pool_avg_352_flip.h5"
    assert default_output(image_tree, ExtractorSettings()).name == "data_vgg16_fc2.h5"
    with pytest.raises(SystemExit) as e:
        main(["extract", str(image_tree), "--layer", "fc2", "--input-size", "288",
              "-o", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0
    assert "--layer fc2 needs 224x224 input" in err


def test_a_store_gains_flips_with_one_pass_more_and_never_loses_them(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    extract(image_tree, out, SETTINGS, commit_every=4)
    flips = ExtractorSettings(**{**TINY, "augment": "flip"})
    report = extract(image_tree, out, flips, batch_size=4, commit_every=4)
    assert report.n_embedded == 0 and report.n_mirrored == 12  # only the mirror images ran
    gained = load_features(out)
    fresh = load_features(extract(image_tree, tmp_path / "fresh.h5", flips).out)
    np.testing.assert_allclose(gained.flipped, fresh.flipped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gained.features, fresh.features, rtol=1e-5, atol=1e-6)
    assert gained.meta["augment"] == "flip"
    assert extract(image_tree, out, flips).wrote is False  # complete: nothing to do
    with pytest.raises(FeatxError, match="keeps the mirrored images' vectors"):
        extract(image_tree, out, SETTINGS)
