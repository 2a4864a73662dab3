"""featx export-model: one model from uint8 pixels to probabilities, checked against predict in
the runtimes that load it, each in a subprocess where featx cannot be imported.

Mechanics on generated images and VGG16 with seeded random weights at 32x32 (each format exported
once per module); real photos (../shared) for equality with ``featx predict`` at the pets store's 160.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featx.bundle import load_bundle, save_bundle
from featx.cli import main
from featx.decode import DecodeSettings, decode_files
from featx.embed import Extractor, ExtractorSettings
from featx.errors import FeatxError
from featx.export_model import EXPORTABLE, INT8_FORMATS, INT8_KINDS, build_pixel_model, export_model
from featx.extract import extract
from featx.fit import fit_store
from featx.heads import CnnHead, FinetuneHead
from featx.predict import predict
from tests.conftest import PETS, ROOT, SHARED_WEIGHTS, TINY, make_images, needs_shared

FORMATS = ("keras", "saved_model", "onnx", "litert")

# Run first in every runtime's subprocess: drop featx's editable-install finder, so that only
# what a user without featx has is importable, and prove it.
ISOLATE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if not p or not __import__("os").path.isdir(p + "/featx")]
try:
    import featx
    raise SystemExit("featx is importable: " + featx.__file__)
except ImportError:
    pass
"""

RUNTIME = ISOLATE + """
import json
import numpy as np
pixels, outputs = np.load(sys.argv[1]), {}
for fmt, path in zip(sys.argv[2::2], sys.argv[3::2]):  # formats of one runtime's family
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"pixels": pixels})))
    elif fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter
        out = Interpreter(model_path=path).get_signature_runner("serving_default")(pixels=pixels)
    elif fmt == "saved_model":
        import tensorflow as tf
        loaded = tf.saved_model.load(path)  # keep it: its variables go with it
        out = loaded.serve(pixels)
    else:
        import keras
        out = keras.saving.load_model(path).predict(pixels, verbose=0)
    outputs[fmt] = {k: np.asarray(v).tolist() for k, v in out.items()}
print(json.dumps(outputs))
"""
# formats whose runtimes load in one subprocess: the two TensorFlow ones share its start-up
RUNTIME_GROUPS = (("keras", "saved_model"), ("onnx",), ("litert",))


def isolated(code: str, *args: str, cwd: Path) -> subprocess.Popen:
    """``python -I -c code args`` in ``cwd`` (outside the repository), PYTHONPATH unset."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.Popen([sys.executable, "-I", "-c", code, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out


READERS: dict[str, object] = {}  # bundle extractor -> predict's reader, built once


def predicted(bundle: Path, files: list[Path], tta: bool, **kwargs) -> np.ndarray:
    """``featx predict``'s probabilities (its reader shared by bundles of one store)."""
    b = load_bundle(bundle)
    key = json.dumps([b.kind, b.extractor, b.info.get("input"), kwargs.get("weights")])
    if key not in READERS:
        READERS[key] = b.reader(kwargs.get("weights"))
    report = predict(b, files, tta=tta, extractor=READERS[key], **kwargs)
    assert not report.errors
    return np.array([[p.probabilities[c] for c in report.class_names] for p in report.predictions])


def decoded(bundle: Path, files: list[Path]) -> np.ndarray:
    """The files as the bundle's model takes them (its input size and resize policy)."""
    b = load_bundle(bundle)
    src = b.info["input"] if b.kind == "cnn" else b.extractor
    pixels, ok, _ = decode_files(files, DecodeSettings(size=src["input_size"], resize=src["resize"]))
    assert len(ok) == len(files)
    return pixels


def cnn_bundle(dest: Path, size: int, class_names: list[str]) -> Path:
    """A scratch-CNN bundle (untrained: export is about equality, not accuracy)."""
    from featx.baseline import build_model

    head = CnnHead({"batch_size": 8}, build_model(size, len(class_names)))
    return save_bundle(dest, head, class_names, {"input_size": size, "resize": "squash",
                                                 "resample": "bilinear", "n": 0})


def finetune_bundle(dest: Path, settings: dict, class_names: list[str]) -> Path:
    """A fine-tuned-block5 bundle as featx finetune saves one (not trained: block5 as the store's
    network has it, a random head), on a float16 map store's extractor."""
    from featx.finetune import FinetuneSettings, block5_weights, build_model

    ex = Extractor(ExtractorSettings(**settings, layer="block4_pool", pooling="none",
                                     store_dtype="float16"))
    meta = {**ex.meta, "dim": ex.expected_dim}
    map_shape = tuple(meta["map_shape"])
    model, _ = build_model(map_shape, len(class_names), block5_weights(meta), FinetuneSettings())
    head = FinetuneHead({"map_shape": list(map_shape), "store_dtype": "float16"}, model)
    return save_bundle(dest, head, class_names, meta)


def set_tta(bundle: Path, tta: bool = True) -> Path:
    """Mark a bundle as scored over flips (as fit does on a store with mirrored vectors)."""
    info = json.loads((bundle / "bundle.json").read_text())
    info["split"] = {**(info.get("split") or {}), "flips": {"train": tta, "tta": tta}}
    (bundle / "bundle.json").write_text(json.dumps(info))
    return bundle


def every_kind(store: Path, base: Path, settings: dict, size: int) -> dict[str, Path]:
    """One bundle of every exportable head kind (scaling steps of every sort among them)."""
    names = load_bundle_names(store)
    bundles = {
        "logreg": fit_store(store, "logreg", C=1.0, scale="none", out=base / "logreg").bundle,
        "linear-svm": fit_store(store, "linear-svm", C=1.0, scale="l2+standard",
                                out=base / "linear-svm").bundle,
        "softmax": fit_store(store, "softmax", C=1.0, scale="l2+standard",
                             out=base / "softmax").bundle,
        "finetune": finetune_bundle(base / "finetune", settings, names),
        "cnn": cnn_bundle(base / "cnn", size, names),
    }
    assert sorted(bundles) == sorted(EXPORTABLE)
    return bundles


def load_bundle_names(store: Path) -> list[str]:
    from featx.store import load_features

    return list(load_features(store).class_names)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Generated photos of three classes, their TINY store and every kind of bundle; the linear
    SVM (multi-class Platt scaling, l2 + standardisation) averages over flips."""
    base = tmp_path_factory.mktemp("export")
    data = make_images(base / "data", {"circle": 8, "square": 8, "star": 8})
    store = extract(data, base / "tiny.h5", ExtractorSettings(**TINY), batch_size=24).out
    bundles = every_kind(store, base / "models", {k: v for k, v in TINY.items()
                                                   if k not in ("layer", "pooling")}, 64)
    set_tta(bundles["linear-svm"])
    files = sorted(data.rglob("*.jpg"))[::4]
    pixels, _, _ = decode_files(files, DecodeSettings(size=32))
    np.save(base / "pixels.npy", pixels)
    return {"base": base, "data": data, "store": store, "bundles": bundles, "files": files,
            "pixels": pixels}


@pytest.fixture(scope="module")
def exported(tiny):
    """The linear SVM exported once in each format via the CLI, and each runtime started on the
    pixels in an isolated subprocess (the TensorFlow pair in one, the three at once)."""
    base, paths = tiny["base"], {}
    for fmt in FORMATS:
        paths[fmt] = base / "out" / ("svm_saved_model" if fmt == "saved_model" else
                                    f"svm.{ {'litert': 'tflite'}.get(fmt, fmt)}")
        with pytest.raises(SystemExit) as e:
            main(["export-model", str(tiny["bundles"]["linear-svm"]), "--format", fmt,
                  "-o", str(paths[fmt])])
        assert e.value.code == 0
    assert sorted(sum(RUNTIME_GROUPS, ())) == sorted(FORMATS)
    runs = {group: isolated(RUNTIME, str(base / "pixels.npy"),
                            *[str(a) for fmt in group for a in (fmt, paths[fmt])], cwd=base)
            for group in RUNTIME_GROUPS}
    return {"paths": paths, "runs": runs, "outputs": {}}


def runtime_output(exported, fmt: str) -> dict[str, np.ndarray]:
    if fmt not in exported["outputs"]:
        group = next(g for g in RUNTIME_GROUPS if fmt in g)
        doc = json.loads(finished(exported["runs"][group]))
        assert sorted(doc) == sorted(group)
        for name, out in doc.items():
            exported["outputs"][name] = {k: np.array(v) for k, v in out.items()}
    return exported["outputs"][fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_runtime_gives_predicts_probabilities(tiny, exported, fmt):
    want = predicted(tiny["bundles"]["linear-svm"], tiny["files"], tta=True)
    got = runtime_output(exported, fmt)
    assert sorted(got) == ["probabilities", "unfamiliarity"]  # fit keeps a familiar record
    assert got["probabilities"].shape == want.shape == (len(tiny["files"]), 3)
    np.testing.assert_allclose(got["probabilities"], want, rtol=0, atol=1e-5)
    report = predict(tiny["bundles"]["linear-svm"], tiny["files"], tta=True)
    scores = [p.score for p in report.predictions]  # of each photo itself, as predict scores it
    np.testing.assert_allclose(got["unfamiliarity"], scores, rtol=0, atol=1e-5)
    unflipped = predicted(tiny["bundles"]["linear-svm"], tiny["files"], tta=False)
    assert np.abs(unflipped - want).max() > 1e-3  # the flips are in the model, and they matter


def vector_norm(vectors):
    """A second output computed from the vectors (the hook an unfamiliarity score uses)."""
    from keras import ops

    return {"norm": ops.sqrt(ops.sum(ops.square(vectors), axis=-1))}


@pytest.mark.parametrize("kind", EXPORTABLE)
def test_every_head_kind_with_flips_is_predict_in_keras(tiny, kind):
    bundle = tiny["bundles"][kind]
    hook = None if kind == "cnn" else vector_norm
    out = build_pixel_model(bundle, flips=True, extra_outputs=hook).predict(
        decoded(bundle, tiny["files"]), verbose=0)
    np.testing.assert_allclose(out["probabilities"], predicted(bundle, tiny["files"], tta=True),
                               rtol=0, atol=2e-6)
    if hook:  # the second output: of the photo's own embedding (a fine-tuned head's: pooled)
        b = load_bundle(bundle)
        vectors, _, _ = b.reader().embed_files(tiny["files"])
        if kind == "finetune":
            import keras

            inner = b.head.model
            vectors = keras.Model(inner.input, inner.get_layer("avg_pool").output).predict(
                vectors, verbose=0)
        np.testing.assert_allclose(out["norm"], np.linalg.norm(vectors, axis=1), rtol=1e-5)


def test_metadata_beside_and_inside(tiny, exported):
    import onnx

    svm = load_bundle(tiny["bundles"]["linear-svm"])
    for fmt, path in exported["paths"].items():
        side = path / "featx.json" if fmt == "saved_model" else Path(f"{path}.json")
        meta = json.loads(side.read_text())
        assert meta["class_names"] == svm.class_names == ["circle", "square", "star"]
        assert meta["input"] | {} == {**meta["input"], "dtype": "uint8", "shape": ["N", 32, 32, 3],
                                      "resize": "squash", "resample": "bilinear"}
        assert meta["flips"] is True and meta["clf"] == "linear-svm"
        assert set(meta["versions"]) >= {"featx", "keras"} and meta["format"] == fmt
    inside = {p.key: p.value for p in onnx.load(str(exported["paths"]["onnx"])).metadata_props}
    assert json.loads(inside["featx"])["class_names"] == svm.class_names
    leftovers = [p.name for p in (tiny["base"] / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_rbf_svm_is_refused_in_one_line(tiny, capsys):
    bundle = fit_store(tiny["store"], "svm", C=1.0, scale="none", out=tiny["base"] / "rbf").bundle
    with pytest.raises(FeatxError, match="exportable heads: logreg, linear-svm"):
        build_pixel_model(bundle)
    code, err = cli(capsys, "export-model", str(bundle), "--format", "onnx")
    assert code == 2 and err.count("\n") == 1 and "svm head cannot be exported" in err
    assert not (tiny["base"] / "rbf.onnx").exists()


def cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, capsys.readouterr().err


def test_bad_input_is_one_line_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    import featx.export_model as em

    monkeypatch.setattr(em, "build_pixel_model", lambda *a, **k: pytest.fail("built a model"))
    bundle = str(tiny["bundles"]["logreg"])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["export-model", str(tmp_path / "nope"), "--format", "onnx"], "bundle not found"),
        (["export-model", str(tmp_path / "foreign"), "--format", "onnx"], "not a featx bundle"),
        (["export-model", bundle, "--format", "tflite"], "unknown --format 'tflite'"),
        (["export-model", bundle, "--format", "onnx", "-o", str(tmp_path / "afile" / "m.onnx")],
         "a file is in the way"),
        (["export-model", bundle, "--format", "keras", "-o", str(tmp_path / "m.h5")],
         "ends in .keras"),
        (["export-model", bundle, "--format", "keras", "--int8"], "--int8 quantisation is for"),
    ]
    for args, message in cases:
        code, err = cli(capsys, *args)
        assert code == 2 and err.startswith("featx: error: ") and err.count("\n") == 1, err
        assert message in err, err
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    code, err = cli(capsys, "export-model", bundle, "--format", "onnx")
    assert code == 2 and "pip install 'featx[export]'" in err and err.count("\n") == 1


def test_a_moved_weights_file_is_named_and_found_with_weights(tiny, tmp_path, capsys):
    from featx.backbones import build_extractor, get_backbone

    weights = tmp_path / "vgg.weights.h5"
    build_extractor(get_backbone("vgg16"), "block5_pool", "avg", "none", "float32", 32) \
        .save_weights(weights)
    store = extract(tiny["data"], tmp_path / "w.h5",
                    ExtractorSettings(**{**TINY, "weights": str(weights)}), batch_size=24).out
    bundle = fit_store(store, "logreg", C=1.0, scale="none", out=tmp_path / "w").bundle
    moved = weights.rename(tmp_path / "moved.weights.h5")
    code, err = cli(capsys, "export-model", str(bundle), "--format", "keras")
    assert code == 2 and "pass its new location with --weights PATH" in err
    with pytest.raises(SystemExit) as e:
        main(["export-model", str(bundle), "--format", "keras", "--weights", str(moved),
              "-o", str(tmp_path / "w.keras"), "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)  # one JSON document on stdout, nothing else
    assert doc["path"] == str(tmp_path / "w.keras")
    assert sorted(doc["outputs"]) == ["probabilities", "unfamiliarity"]
    import keras

    model = keras.saving.load_model(doc["path"])
    got = model.predict(tiny["pixels"], verbose=0)["probabilities"]
    want = predicted(bundle, tiny["files"], tta=False, weights=str(moved))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_a_failed_write_leaves_nothing_and_keeps_the_old_model(tiny, tmp_path, monkeypatch):
    import featx.export_model as em

    target = tmp_path / "m.keras"
    target.write_bytes(b"the old model")

    def half(model, fmt, path, *args):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(em, "_write", half)
    with pytest.raises(FeatxError, match="no space left"):
        export_model(tiny["bundles"]["logreg"], "keras", out=target)
    assert target.read_bytes() == b"the old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


# --- real photos ----------------------------------------------------------------------------


README_EXAMPLE = re.compile(r"<!-- export-example -->\n```python\n(.*?)```", re.S)


def pet_photos() -> list[Path]:
    """Two photos the pets store does not hold (it holds the first 150 of each class)."""
    return [PETS / c / sorted(os.listdir(PETS / c))[-1] for c in ("cat", "dog")]


@pytest.fixture(scope="module")
def pets(pets_store, tmp_path_factory):
    """Every kind of bundle on the real pets store."""
    base = tmp_path_factory.mktemp("pets-export")
    bundles = every_kind(pets_store, base, {"model": "vgg16", "weights": str(SHARED_WEIGHTS)}, 128)
    return {"base": base, "bundles": bundles, "files": pet_photos()}


@needs_shared
def test_real_photos_every_kind_with_flips_equals_predict(pets):
    for kind, bundle in pets["bundles"].items():
        pixels = decoded(bundle, pets["files"])
        got = build_pixel_model(bundle, flips=True).predict(pixels, verbose=0)["probabilities"]
        # batches of the photos themselves: predict's default pads each batch to 32 images
        want = predicted(bundle, pets["files"], tta=True, batch_size=len(pets["files"]))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=kind)


def test_int8_models_are_smaller_and_run_in_their_runtimes(tiny, exported, capsys):
    """--int8: ONNX static (calibrated on the training photos), LiteRT dynamic-range (weights
    only: no calibration); both run without featx and keep the float32 model's classes."""
    svm, out = tiny["bundles"]["linear-svm"], tiny["base"] / "int8"
    paths = {fmt: out / f"svm.int8.{ {'litert': 'tflite'}.get(fmt, fmt)}" for fmt in INT8_FORMATS}
    for fmt, path in paths.items():
        code, err = cli(capsys, "export-model", str(svm), "--format", fmt, "--int8", "-o", str(path))
        assert code == 0, err
        meta = json.loads(Path(f"{path}.json").read_text())
        assert meta["int8"] is True and meta["precision"] == INT8_KINDS[fmt]
        assert path.stat().st_size < 0.4 * exported["paths"][fmt].stat().st_size  # 4-byte weights to 1
    doc = json.loads(finished(isolated(RUNTIME, str(tiny["base"] / "pixels.npy"),
                                       *[str(a) for fmt in paths for a in (fmt, paths[fmt])],
                                       cwd=tiny["base"])))
    want = runtime_output(exported, "onnx")["probabilities"]  # float32, equal to predict's
    for fmt in paths:
        got = np.array(doc[fmt]["probabilities"])
        assert got.shape == want.shape and np.allclose(got.sum(axis=1), 1.0, atol=1e-4)
        assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.8, (fmt, got, want)
        assert np.abs(got - want).max() > 0  # quantised: not the float32 model again
    code, err = cli(capsys, "export-model", str(svm), "--format", "litert", "--int8",
                    "--calibrate", str(tiny["data"]))
    assert code == 2 and err.count("\n") == 1 and "--calibrate applies to --format onnx" in err


def test_readme_example_runs_without_featx_and_names_predicts_class(tiny, exported):
    """The README's Pillow + numpy + onnxruntime example on the exported ONNX file: real photos
    (non-square JPEGs, squashed as featx does) where ../shared is, else the generated ones."""
    code = README_EXAMPLE.search((ROOT / "README.md").read_text()).group(1)
    example = tiny["base"] / "example.py"
    example.write_text(code)
    files = pet_photos() if PETS.is_dir() else tiny["files"][:2]
    svm = tiny["bundles"]["linear-svm"]
    # the export averages over flips as the bundle does (batches of the photos, not padded to 32)
    want = predicted(svm, files, tta=True, batch_size=len(files))
    names = load_bundle(svm).class_names
    runs = [isolated(ISOLATE + f"sys.argv = {[str(example), str(exported['paths']['onnx']), str(f)]!r}"
                     f"\nexec(open({str(example)!r}).read())", cwd=tiny["base"]) for f in files]
    for proc, row in zip(runs, want):
        label, probability = finished(proc).split()[:2]
        assert label == names[int(np.argmax(row))]
        assert float(probability) == pytest.approx(row.max(), abs=1e-5)


def test_unfamiliarity_travels_as_a_second_output(tiny):
    """A bundle's unfamiliarity score (#23) is the exported model's second output, equal to
    predict's score of the photo itself (not its mirror); the scratch CNN has none."""
    from featx.export_model import UNFAMILIAR_NAME, unfamiliar_output

    b = load_bundle(tiny["bundles"]["softmax"])
    assert b.familiar is not None
    out = build_pixel_model(b, flips=True, extra_outputs=unfamiliar_output(b)).predict(
        tiny["pixels"], verbose=0)
    report = predict(b, tiny["files"], tta=True)
    np.testing.assert_allclose(out[UNFAMILIAR_NAME], [p.score for p in report.predictions],
                               rtol=0, atol=1e-5)
    assert unfamiliar_output(load_bundle(tiny["bundles"]["cnn"])) is None
