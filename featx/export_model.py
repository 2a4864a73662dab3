"""export_model: a bundle as one model from RGB uint8 pixels to class probabilities.

:func:`build_pixel_model` assembles a plain Keras model (built-in layers and ``keras.ops`` only,
so plain Keras loads it without featx)::

    pixels uint8 (N, S, S, 3) -> float32 -> preprocess_input -> backbone to the bundle's layer
    -> pooling -> [float16 rounding: a fine-tuned head on a float16 store] -> the head's scaling
    steps -> the head -> probabilities (N, C)

with, where the bundle averages over flips (``flips=None``), the same path on the mirrored
pixels and the mean of both probabilities. Heads: ``logreg`` (a Dense softmax layer: two classes
as a softmax over halved opposite columns, which is the logistic sigmoid), ``linear-svm`` (the
decision function and Platt's sigmoid folded into one Dense layer; several classes: the
one-vs-rest sigmoids renormalised, as a softmax of their logs), ``softmax`` and ``finetune`` (the
bundle's own Keras head) and ``cnn`` (the scratch CNN, pixels in). The RBF ``svm`` is refused.

:func:`export_model` writes it with Keras 3's own exporters (``model.save`` for ``.keras``,
``model.export`` for ``tf_saved_model``, ``onnx`` via tf2onnx, ``litert``), optionally int8 post-
training quantised (ONNX: onnxruntime's static quantisation, calibrated on training photos;
LiteRT: the TFLite converter's dynamic-range quantisation, int8 weights with activations
quantised at run time, which kept the probabilities within 0.03 of float32 where the calibrated
full-integer model moved them by 0.85: BENCHMARKS.md), each to a temporary sibling renamed into
place, with the metadata (:func:`metadata`) beside it as ``PATH.json`` (inside the folder for a
SavedModel, and in an ONNX model's ``metadata_props`` too).

Decoding stays outside the model: the caller gives RGB uint8 pixels at the input size, decoded as
featx decodes (:mod:`featx.decode`: EXIF orientation, RGB, the resize policy, bilinear).
``extra_outputs`` attaches more outputs computed from the vectors (what the store holds for a
photo), e.g. an unfamiliarity score.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from featx import __version__
from featx.bundle import Bundle, load_bundle
from featx.errors import FeatxError
from featx.familiar import keras_score
from featx.files import check_output, fsync_dir, fsync_replace, write_error

FORMATS = {"keras": ".keras", "saved_model": "_saved_model", "onnx": ".onnx", "litert": ".tflite"}
KERAS_FORMATS = {"saved_model": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
INT8_KINDS = {"onnx": "int8, static (calibrated on training photos; uint8 pixels in, float32 "
                      "outputs)",
              "litert": "int8 weights, dynamic-range (activations quantised at run time; uint8 "
                        "pixels in, float32 outputs)"}
INT8_FORMATS = tuple(INT8_KINDS)
EXPORTABLE = ("logreg", "linear-svm", "softmax", "finetune", "cnn")
EXTRA = "featx[export]"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
UNFAMILIAR_NAME = "unfamiliarity"
ABSENT_LOGIT = -1e4  # a class the head never saw in training: probability exp(-1e4) = 0
CAFFE_MEANS = (103.939, 116.779, 123.68)  # keras.applications' caffe-mode BGR means
# keras.applications module -> preprocess_input mode (imagenet_utils)
PREPROCESS_MODES = {"vgg16": "caffe", "vgg19": "caffe", "resnet50": "caffe", "mobilenet_v2": "tf"}
OUTPUT_DOCS = {OUTPUT_NAME: "class probabilities (N, C), in class_names order",
               UNFAMILIAR_NAME: "unfamiliarity (N,) of the unmirrored photo: above "
                                "unfamiliar_threshold, unlike the training photos"}
Outputs = Callable[[Any], dict[str, Any]]  # vectors tensor (N, D) -> {name: tensor}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    path: Path
    format: str
    metadata_path: Path
    clf: str
    flips: bool
    int8: bool
    size_bytes: int
    seconds: float
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format,
                "metadata_path": str(self.metadata_path), "clf": self.clf, "flips": self.flips,
                "int8": self.int8, "size_bytes": self.size_bytes,
                "seconds": round(self.seconds, 2), "outputs": self.outputs,
                "metadata": self.metadata}


# --- checks -------------------------------------------------------------------------------------


def check_format(fmt: str, int8: bool = False) -> str:
    if fmt not in FORMATS:
        raise FeatxError(f"unknown `fmt` {fmt!r}; choose one of {', '.join(FORMATS)}")
    if int8 and fmt not in INT8_FORMATS:
        raise FeatxError(f"`int8` quantisation is for {' and '.join(INT8_FORMATS)}, not {fmt}")
    return fmt


def check_exportable(clf: str) -> str:
    if clf not in EXPORTABLE:
        why = " (its RBF kernel sums over every support vector)" if clf == "svm" else ""
        raise FeatxError(f"a {clf} head cannot be exported{why}; exportable heads: "
                         f"{', '.join(EXPORTABLE)} (refit with e.g. featx fit --clf linear-svm)")
    return clf


def check_runtime(fmt: str, int8: bool = False) -> None:
    """The packages the format needs (the ``featx[export]`` extra), or one line naming it."""
    from importlib.util import find_spec

    needed = {"onnx": ["tf2onnx", "onnx"] + (["onnxruntime"] if int8 else [])}.get(fmt, [])
    missing = [m for m in needed if find_spec(m) is None]
    if missing:
        raise FeatxError(f"exporting to {fmt} needs {', '.join(missing)}: "
                         f"pip install '{EXTRA}'")


def default_output(bundle: str | os.PathLike, fmt: str, int8: bool = False) -> Path:
    """``models/pets_logreg`` -> ``models/pets_logreg.onnx`` (``.int8.onnx``, ``.keras``,
    ``.tflite``, ``_saved_model/``)."""
    path = Path(bundle)
    tag = ".int8" if int8 else ""
    if fmt == "saved_model":
        return path.with_name(f"{path.name}{tag.replace('.', '_')}{FORMATS[fmt]}")
    return path.with_name(f"{path.name}{tag}{FORMATS[fmt]}")


def metadata_path(path: Path, fmt: str) -> Path:
    return path / "featx.json" if fmt == "saved_model" else path.with_name(path.name + ".json")


def check_export_output(path: str | os.PathLike, fmt: str) -> Path:
    """Before any work: the model (and its metadata file) can be written at ``path``."""
    path = Path(path)
    if fmt == "keras" and path.suffix != ".keras":
        raise FeatxError(f"a .keras model's file name ends in .keras; got `out`={path}")
    check_output(path, f"the {fmt} model", folder=fmt == "saved_model")
    if fmt == "saved_model" and path.is_dir() and any(path.iterdir()) \
            and not (path / "saved_model.pb").is_file():
        raise FeatxError(f"{path} exists and is not a SavedModel; choose another `out` folder")
    if fmt != "saved_model":
        check_output(metadata_path(path, fmt), "the model's metadata")
    return path


# --- the model ----------------------------------------------------------------------------------


def input_size(b: Bundle) -> int:
    src = b.info.get("input", {}) if b.kind == "cnn" else b.extractor
    return int(src.get("input_size") or 224)


def flips_default(b: Bundle) -> bool:
    return b.tta


def preprocess(x, module: str):
    """keras.applications' ``preprocess_input`` on float RGB 0..255, as graph operations."""
    from keras import ops

    mode = PREPROCESS_MODES.get(module)
    if mode == "caffe":  # RGB -> BGR, ImageNet means removed
        return ops.subtract(ops.flip(x, axis=-1), np.array(CAFFE_MEANS, np.float32))
    if mode == "tf":
        return ops.subtract(ops.divide(x, 127.5), 1.0)
    raise FeatxError(f"no exportable preprocess_input for {module!r}")


def build_pixel_model(bundle: Bundle | str | os.PathLike, weights: str | None = None,
                      flips: bool | None = None, extra_outputs: Outputs | None = None):
    """The Keras model from uint8 pixels (N, S, S, 3) to ``{"probabilities": (N, C), ...}``.

    ``weights``: where the extractor's weights file is now (checked by hash, as ``predict``);
    ``flips``: average over each image and its mirror image (None: as the bundle does);
    ``extra_outputs(vectors)``: more named outputs from the vectors of the (unmirrored) images.
    """
    import keras
    from keras import ops

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    check_exportable(b.clf)
    flips = flips_default(b) if flips is None else flips
    size = input_size(b)
    pixels = keras.Input((size, size, 3), dtype="uint8", name=INPUT_NAME)
    x = ops.cast(pixels, "float32")
    if b.kind == "cnn":
        if extra_outputs is not None:
            raise FeatxError("the scratch CNN has no vectors for `extra_outputs`")
        vectorize, head = None, b.head.model  # the CNN rescales 0..255 itself
    else:
        vectorize, head = _backbone(b, weights), head_model(b)

    embedding = _embedding(b, head) if extra_outputs is not None else None

    def branch(images):
        if vectorize is None:
            return None, head(images)
        vectors = vectorize(images)
        return (embedding(vectors) if embedding else vectors), head(vectors)

    vectors, proba = branch(x)
    if flips:
        proba = keras.layers.Average(name="mean_over_flips")(
            [proba, branch(ops.flip(x, axis=2))[1]])
    outputs = {OUTPUT_NAME: proba}
    if extra_outputs is not None:
        outputs.update(extra_outputs(vectors))
    return keras.Model(pixels, outputs, name=f"featx_{b.clf.replace('-', '_')}_pixels")


_BACKBONES: dict[str, Any] = {}  # the last backbones built (shared by models of one store)


def _backbone(b: Bundle, weights: str | None):
    """float RGB 0..255 -> the store's vectors: preprocess_input, the backbone, the pooling, in
    float32 (the weights checked against the bundle's record)."""
    import keras

    from featx.backbones import build_extractor
    from featx.embed import Extractor

    ex = Extractor.from_meta(b.extractor, weights=weights)  # the weights file and its identity
    s = ex.settings
    key = json.dumps([s.model, s.layer, s.pooling, s.input_size, ex.weights_id])
    if key not in _BACKBONES:
        with contextlib.redirect_stdout(sys.stderr):
            net = build_extractor(ex.backbone, s.layer, s.pooling, s.weights, "float32",
                                  s.input_size)
        inputs = keras.Input(net.input_shape[1:], name="rgb")
        vectors = net(preprocess(inputs, ex.backbone.module))
        while len(_BACKBONES) >= 2:
            _BACKBONES.pop(next(iter(_BACKBONES)))
        _BACKBONES[key] = keras.Model(inputs, vectors, name="vectors")
    return _BACKBONES[key]


def _embedding(b: Bundle, head):
    """What ``extra_outputs`` gets from the store's vectors: the vectors themselves, or for a
    fine-tuned bundle its pooled block5 vector (the embedding its head classifies)."""
    import keras

    if b.clf != "finetune":
        return None
    inner = b.head.model
    pooled = keras.Model(inner.input, inner.get_layer("avg_pool").output, name="pooled")
    return lambda vectors: pooled(vectors)


def unfamiliar_output(b: Bundle) -> Outputs | None:
    """The bundle's unfamiliarity score (:mod:`featx.familiar`) as a second output
    ``unfamiliarity``, where the bundle keeps a record of its training photos; else None.

    The score is :func:`featx.familiar.keras_score`'s (its matrices held by frozen Dense layers,
    so they are frozen into an ONNX graph rather than becoming its inputs)."""
    record = None if b.kind == "cnn" else b.familiar
    if record is None:
        return None
    score = keras_score(record)
    return lambda vectors: {UNFAMILIAR_NAME: score(vectors)}


def head_model(b: Bundle):
    """The bundle's head as a Keras model on vectors (N, D) -> probabilities (N, C)."""
    import keras
    from keras import ops

    if b.clf in ("softmax", "finetune"):
        model = plain_head(b.head.model)
        dtype = b.head.params.get("store_dtype", "float32") if b.clf == "finetune" else "float32"
        if dtype == "float32":
            return model
        inputs = keras.Input(model.input_shape[1:], name="vectors")  # the store's rounding
        return keras.Model(inputs, model(ops.cast(ops.cast(inputs, dtype), "float32")),
                           name=f"{model.name}_{dtype}")
    return sklearn_model(b.head.pipeline, int(b.head.n_classes or len(b.class_names)))


def sklearn_model(pipeline, n_classes: int):
    """A scikit-learn Pipeline (scaling steps, then LogisticRegression or a Platt-scaled
    LinearSVC) as Keras layers giving the same probabilities."""
    import keras
    from keras import layers

    steps = pipeline.steps
    dim = int(getattr(steps[0][1], "n_features_in_", 0) or pipeline[-1].n_features_in_)
    inputs = keras.Input((dim,), name="vectors")
    x = inputs
    for name, step in steps[:-1]:
        x = _scaling_step(x, name, step) if step != "passthrough" else x
    kernel, bias, classes, platt = linear_decision(steps[-1][1])
    full_k = np.zeros((dim, n_classes), np.float32)
    full_b = np.full(n_classes, ABSENT_LOGIT, np.float32)
    full_k[:, classes], full_b[classes] = kernel, bias
    if platt:  # several one-vs-rest sigmoids renormalised: softmax(log sigmoid(z))
        z = layers.Dense(n_classes, name="platt_logits")(x)
        out = layers.Activation("softmax", name="renormalise")(
            layers.Activation("log_sigmoid", name="log_sigmoid")(z))
    else:
        out = layers.Dense(n_classes, activation="softmax", name="softmax")(x)
    model = keras.Model(inputs, out, name="featx_linear_head")
    model.get_layer("platt_logits" if platt else "softmax").set_weights([full_k, full_b])
    return model


def _scaling_step(x, name: str, step):
    """One scikit-learn scaling step on a tensor: Normalizer as UnitNormalization, StandardScaler
    as ``(x - mean_) / scale_`` with constants (a Normalization layer's tensors would become
    inputs of the ONNX graph)."""
    from keras import layers

    if name == "l2":
        return layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
    mean = np.zeros(x.shape[-1]) if step.mean_ is None else step.mean_
    scale = np.ones(x.shape[-1]) if step.scale_ is None else step.scale_
    return standardize(x, mean, scale)


def standardize(x, mean: np.ndarray, scale: np.ndarray):
    from keras import ops

    return ops.divide(ops.subtract(x, np.asarray(mean, np.float32)), np.asarray(scale, np.float32))


def plain_head(model):
    """A Keras head (a chain of layers) with its Normalization layers as constant operations
    (:func:`standardize`, as the layer computes it); other layers shared as they are."""
    import keras

    if not any(isinstance(layer, keras.layers.Normalization) for layer in model.layers):
        return model
    inputs = keras.Input(model.input_shape[1:], name="vectors")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Normalization):
            mean = keras.ops.convert_to_numpy(layer.mean).reshape(-1)
            var = keras.ops.convert_to_numpy(layer.variance).reshape(-1)
            x = standardize(x, mean, np.maximum(np.sqrt(var), keras.backend.epsilon()))
        else:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def linear_decision(clf) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(kernel (D, k), bias (k,), the k class indices, platt) of the last step: logits whose
    softmax is its ``predict_proba`` (``platt``: the logits of one-vs-rest sigmoids, whose
    renormalised values are). Two classes: halved opposite columns, softmax = the sigmoid."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    classes = np.asarray(clf.classes_)
    if isinstance(clf, LogisticRegression):
        W, c = clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64)
    elif isinstance(clf, CalibratedClassifierCV) and len(clf.calibrated_classifiers_) == 1:
        cal = clf.calibrated_classifiers_[0]
        svm = cal.estimator
        if not hasattr(svm, "coef_"):
            raise FeatxError("only a linear SVM's Platt scaling can be exported")
        a = np.array([s.a_ for s in cal.calibrators], np.float64)
        b = np.array([s.b_ for s in cal.calibrators], np.float64)
        # Platt: p = expit(-(a d + b)) with d = x @ w + c: one affine map of x
        W = -(svm.coef_.T.astype(np.float64) * a)
        c = -(svm.intercept_.astype(np.float64) * a + b)
    else:
        raise FeatxError(f"cannot export a {type(clf).__name__} head")
    if len(classes) == 2:  # one decision function z: softmax([-z/2, z/2]) = expit(z)
        W, c = np.hstack([-W / 2, W / 2]), np.concatenate([-c / 2, c / 2])
        return W.astype(np.float32), c.astype(np.float32), classes, False
    return W.astype(np.float32), c.astype(np.float32), classes, \
        isinstance(clf, CalibratedClassifierCV)


# --- metadata -----------------------------------------------------------------------------------


def metadata(b: Bundle, fmt: str, flips: bool, int8: bool, outputs: list[str]) -> dict[str, Any]:
    """What a runtime needs beside the model: classes, input, the decode contract, versions."""
    import keras

    src = b.info.get("input", {}) if b.kind == "cnn" else b.extractor
    return {
        "featx_export": 1, "format": fmt, "int8": int8, "clf": b.clf,
        "class_names": list(b.class_names),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", input_size(b),
                                                                  input_size(b), 3],
                  "channels": "RGB", "resize": src.get("resize", "squash"),
                  "resample": src.get("resample", "bilinear"),
                  "decode": "EXIF orientation applied; any mode to RGB (transparency on white); "
                            "resized outside the model by the resize policy with PIL's resample"},
        "outputs": {name: OUTPUT_DOCS.get(name, "see the bundle") for name in outputs},
        "unfamiliar_threshold": (b.info.get("familiar") or {}).get("threshold")
        if UNFAMILIAR_NAME in outputs else None,
        "flips": flips,
        "precision": INT8_KINDS[fmt] if int8 else "float32",
        "bundle": {"path": str(b.path), "created": b.info.get("created"),
                   "extractor": {k: v for k, v in b.extractor.items() if k != "keras_backend"}},
        "versions": {"featx": __version__, "keras": keras.__version__,
                     "keras_backend": keras.backend.backend()},
    }


# --- writing ------------------------------------------------------------------------------------


def export_model(bundle: str | os.PathLike, fmt: str = "onnx", out: str | os.PathLike | None = None,
                 weights: str | None = None, flips: bool | None = None, int8: bool = False,
                 calibration: Iterable[np.ndarray] | None = None,
                 extra_outputs: Outputs | None = None, unfamiliar: bool = True,
                 progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """Write ``bundle`` as one model from pixels to probabilities in format ``fmt``.

    ``out``: the file (folder for ``saved_model``; default :func:`default_output`); ``int8``:
    post-training quantisation: ONNX static, calibrated on ``calibration`` (batches of uint8
    pixels; default: :func:`calibration_batches` of the bundle's training photos), LiteRT
    dynamic-range (no calibration); ``unfamiliar``: carry the
    bundle's unfamiliarity score as a second output where it has one (:func:`unfamiliar_output`;
    ``extra_outputs`` replaces it). Every input and the output are checked before the model is
    built; nothing half-written is left behind.
    """
    start = time.perf_counter()
    check_format(fmt, int8)
    b = load_bundle(bundle)
    check_exportable(b.clf)
    check_runtime(fmt, int8)
    out = check_export_output(default_output(b.path, fmt, int8) if out is None else out, fmt)
    if calibration is not None and not (int8 and fmt == "onnx"):
        raise FeatxError("`calibration` applies to onnx int8 only: LiteRT's int8 is dynamic-range "
                         "(int8 weights, activations quantised at run time) and needs none")
    if int8 and fmt == "onnx" and calibration is None:
        calibration = calibration_batches(b)
    flips = flips_default(b) if flips is None else bool(flips)
    step = progress or (lambda stage, done, total: None)
    if extra_outputs is None and unfamiliar:
        extra_outputs = unfamiliar_output(b)
    step("build", 0, 1)
    model = build_pixel_model(b, weights, flips, extra_outputs)
    size = input_size(b)
    model(np.zeros((1, size, size, 3), np.uint8))  # Keras' exporters need a called model
    step("build", 1, 1)
    names = list(model.output.keys()) if isinstance(model.output, dict) else [OUTPUT_NAME]
    meta = metadata(b, fmt, flips, int8, names)
    step("write", 0, 1)
    with _staged(out, fmt) as tmp:
        _write(model, fmt, tmp, int8, calibration, meta)
        metadata_path(tmp, fmt).write_text(json.dumps(meta, indent=2) + "\n")
    final_meta = metadata_path(out, fmt)
    step("write", 1, 1)
    return ExportResult(path=out, format=fmt, metadata_path=final_meta, clf=b.clf, flips=flips,
                        int8=int8, size_bytes=_size(out), seconds=time.perf_counter() - start,
                        outputs=names, metadata=meta)


def _write(model, fmt: str, path: Path, int8: bool, calibration, meta: dict) -> None:
    with _quiet():
        if fmt == "keras":
            model.save(path)
        elif fmt == "litert" and int8:
            _export_litert_int8(model, path)
        else:
            model.export(str(path), format=KERAS_FORMATS[fmt], verbose=False)
    if fmt == "onnx":
        if int8:
            _quantize_onnx(path, calibration)
        _onnx_metadata(path, meta)


def _export_litert_int8(model, path: Path) -> None:
    """The TFLite converter's dynamic-range quantisation: int8 weights, activations quantised per
    batch at run time (XNNPACK's int8 kernels), the rest float32; uint8 input, float32 outputs.
    Full-integer quantisation from a representative dataset ran 1.12x faster but moved the
    probabilities by up to 0.85 on pets-dev (the L2 norm and the head in int8 too)."""
    import tensorflow as tf

    model.export(str(path), format="litert", verbose=False,
                 optimizations=[tf.lite.Optimize.DEFAULT])


def _quantize_onnx(path: Path, calibration) -> None:
    """onnxruntime's static quantisation (QDQ, int8 weights per channel, uint8 activations),
    calibrated on ``calibration``; the file at ``path`` replaced by the quantised model."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(list(batches))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.asarray(batch, np.uint8)}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.stem + ".pre" + path.suffix)
    quantized = path.with_name(path.stem + ".q" + path.suffix)
    try:
        quant_pre_process(str(path), str(prepared))  # shapes inferred, graph optimised
        quantize_static(str(prepared), str(quantized), Reader(calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        os.replace(quantized, path)
    finally:
        prepared.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)


def _onnx_metadata(path: Path, meta: dict) -> None:
    """The metadata in the ONNX model's own ``metadata_props`` (key ``featx``, JSON)."""
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "featx", json.dumps(meta)
    model.doc_string = f"featx {meta['clf']} head: uint8 RGB pixels -> class probabilities"
    onnx.save(model, str(path))


@contextlib.contextmanager
def _staged(out: Path, fmt: str):
    """A temporary sibling (with the format's suffix) to write, renamed over ``out`` at the end;
    removed on any failure."""
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    meta_tmp = metadata_path(tmp, fmt)
    try:
        yield tmp
        if fmt == "saved_model":
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            fsync_dir(out.parent)
        else:
            fsync_replace(tmp, out)
            fsync_replace(meta_tmp, metadata_path(out, fmt))
    except OSError as e:
        raise write_error(e, out, f"the {fmt} model") from None
    finally:
        for p in (tmp, old):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if fmt != "saved_model":
            meta_tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet():
    """Exporters print progress on stdout (keep it clean for --json) and warn at length."""
    import warnings

    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --- calibration --------------------------------------------------------------------------------


def calibration_batches(b: Bundle, n: int = 64, batch_size: int = 8) -> list[np.ndarray]:
    """Up to ``n`` of the bundle's training photos (the store's train part, spread evenly),
    decoded as featx decodes them, in batches: the int8 quantisers' calibration data."""
    from featx.split import DEFAULT_FRACTIONS, split_indices
    from featx.store import load_features

    store = (b.info.get("store") or {}).get("path")
    if not store or not Path(store).is_file():
        raise FeatxError(f"`int8` calibrates on the bundle's training photos and its store "
                         f"{store} is not there; pass calibration images with `calibrate`")
    feats = load_features(store)
    split = b.info.get("split") or {}
    rows = split_indices(feats.hashes, feats.labels, split.get("fractions", DEFAULT_FRACTIONS),
                         int(split.get("seed", 0)))["train"]
    rows = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]
    data_dir = Path(feats.meta.get("data_dir") or "")
    return calibration_from_files([data_dir / feats.paths[i] for i in rows], b, batch_size)


def calibration_from_files(files: list[Path], b: Bundle, batch_size: int = 8) -> list[np.ndarray]:
    from featx.decode import DecodeSettings, decode_files

    src = b.info.get("input", {}) if b.kind == "cnn" else b.extractor
    settings = DecodeSettings(size=input_size(b), resize=src.get("resize", "squash"))
    pixels, ok, _ = decode_files(files, settings)
    if not ok:
        raise FeatxError("none of the calibration images could be read (`calibrate`)")
    return [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
