"""backbones: a small registry, name -> how to build a feature extractor from keras.applications.

Each entry knows its input size, its ``preprocess_input`` and the layers featx can read out.
Layers named ``pool`` / ``block5_pool`` come from the convolutional base (``include_top=False``) and
are pooled (``avg``, ``max``) or flattened (``none``); the fully connected layers (VGG16's ``fc1``,
``fc2``) need the whole network, and so weights that include the top.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from featx.errors import FeatxError

POOLINGS = ("avg", "max", "none")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclass(frozen=True)
class Backbone:
    name: str
    module: str  # keras.applications submodule holding preprocess_input
    constructor: str  # keras.applications attribute that builds the model
    input_size: int  # the default input size; convolutional layers take others too
    maps: dict[str, tuple[int, int]]  # convolutional layer -> (channels, input pixels per cell)
    top_layers: tuple[str, ...] = ()  # layers that need include_top=True (and 224x224 input)
    top_dim: int = 0  # width of the top layers
    # featx finetune: the last block trained on cached maps of the layer before it
    tune_block: str | None = None  # the block's layer-name prefix (its convolutions: _conv1...)
    tune_from: str | None = None  # the frozen part's output, cached by extract
    tune_pool: str | None = None  # the block's own pooling layer
    tune_depth: int = 0  # the block's convolutions

    def tune_convs(self, layers: Iterable) -> list:
        """The layers (any objects with ``name``) that are the tuned block's convolutions."""
        return [x for x in layers if self.tune_block and x.name.startswith(f"{self.tune_block}_conv")]

    @property
    def base_layer(self) -> str:
        """The last layer of the convolutional base."""
        return list(self.maps)[-1]

    @property
    def layers(self) -> tuple[str, ...]:
        return (*self.top_layers, *self.maps)

    def map_shape(self, layer: str, size: int | None = None) -> tuple[int, int, int]:
        """(rows, columns, channels) of a convolutional layer's maps at an input size."""
        channels, stride = self.maps[layer]
        cells = (size or self.input_size) // stride
        return cells, cells, channels

    def feature_dim(self, layer: str, pooling: str, size: int | None = None) -> int:
        """The length of the vector featx stores for (layer, pooling) at an input size."""
        if layer in self.top_layers:
            return self.top_dim
        rows, cols, channels = self.map_shape(layer, size)
        return channels if pooling != "none" else rows * cols * channels


VGG_MAPS = {"block4_pool": (512, 16), "block5_pool": (512, 32)}
BACKBONES = {
    b.name: b
    for b in (
        Backbone("vgg16", "vgg16", "VGG16", 224, VGG_MAPS, ("fc1", "fc2"), 4096,
                 "block5", "block4_pool", "block5_pool", 3),
        Backbone("vgg19", "vgg19", "VGG19", 224, VGG_MAPS, ("fc1", "fc2"), 4096,
                 "block5", "block4_pool", "block5_pool", 4),
        Backbone("resnet50", "resnet50", "ResNet50", 224, {"conv5_block3_out": (2048, 32)}),
        Backbone("mobilenet_v2", "mobilenet_v2", "MobileNetV2", 224, {"out_relu": (1280, 32)}),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise FeatxError(
            f"unknown model {name!r}; choose one of: {', '.join(BACKBONES)}"
        ) from None


def check_input_size(backbone: Backbone, layer: str, size: int) -> None:
    """Fully connected layers take the size they were trained at; convolutional ones any size
    that leaves at least one cell of the layer's maps."""
    if layer in backbone.top_layers and size != backbone.input_size:
        raise FeatxError(
            f"`layer`={layer} needs {backbone.input_size}x{backbone.input_size} input (its dense "
            f"layers were trained on maps of that size); other input sizes work with the "
            f"convolutional layers: {', '.join(backbone.maps)}")
    if layer in backbone.maps and size < max(32, backbone.maps[layer][1]):
        raise FeatxError(f"`input_size` must be at least 32 for {backbone.name}, got {size}")


def check_layer(backbone: Backbone, layer: str, pooling: str) -> None:
    if layer not in backbone.layers:
        raise FeatxError(
            f"{backbone.name} has no layer {layer!r} for features; choose one of: "
            f"{', '.join(backbone.layers)}"
        )
    if pooling not in POOLINGS:
        raise FeatxError(f"unknown `pooling` {pooling!r}; choose one of: {', '.join(POOLINGS)}")


def check_precision(precision: str) -> str:
    """Return the Keras dtype policy for a precision name."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise FeatxError(
            f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}"
        ) from None


def precision_hint(precision: str) -> str | None:
    """A line for a float32 run on a CPU with AMX-BF16 tiles, where bfloat16 is several times
    faster; None elsewhere."""
    if precision != "float32" or not cpu_has_amx_bf16():
        return None
    return ("this CPU has AMX-BF16: --precision bfloat16 embeds several times faster (about 6x "
            "for VGG16; vectors are stored as float32 either way)")


def cpu_has_amx_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether the CPU has AMX-BF16 tiles (``amx_bf16`` in /proc/cpuinfo's flags, Linux), where
    bfloat16 runs several times faster than float32. ``flags``: the flag list to judge instead."""
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no hint
            return False
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        flags = line.partition(":")[2].split()
    return "amx_bf16" in flags


def cpu_description() -> str:
    """'AMD EPYC, 2 cores, AVX2 (no AMX-BF16)': the CPU a benchmark row ran on (Linux; else the
    platform's processor name)."""
    import os
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    name = next((ln.partition(":")[2].strip() for ln in text.splitlines()
                 if ln.startswith("model name")), platform.machine())
    isa = ("AMX-BF16" if cpu_has_amx_bf16() else "AVX-512 (no AMX-BF16)" if "avx512f" in text
           else "AVX2 (no AMX-BF16)" if "avx2" in text else "no AVX2")
    return f"{name}, {os.cpu_count()} cores, {isa}"


def weights_identity(weights: str | None) -> str:
    """A stable name for the weights: 'imagenet', 'random', or 'sha256:<hex>' of a local file."""
    if weights is None or weights == "none":
        return "random"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FeatxError(f"weights file not found: {weights}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def preprocess_fn(backbone: Backbone) -> Callable:
    """The backbone's own ``preprocess_input`` (applied exactly once, to RGB 0..255 input)."""
    import keras

    return getattr(keras.applications, backbone.module).preprocess_input


def build_extractor(
    backbone: Backbone, layer: str, pooling: str, weights: str | None, precision: str = "float32",
    input_size: int | None = None,
):
    """Build a Keras model mapping preprocessed images (N, S, S, 3) to features (N, D).

    Convolutional layers are pooled (``avg``, ``max``) or flattened (``none``: the maps, row-major,
    restored with ``reshape(N, *map_shape)``).

    ``weights`` is "imagenet", a local weights file, or None/"none" (random init, for tests; the
    global Keras seed makes it reproducible).
    """
    import keras

    check_layer(backbone, layer, pooling)
    size = input_size or backbone.input_size
    check_input_size(backbone, layer, size)
    policy = check_precision(precision)
    weights = None if weights in (None, "none") else weights
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = _build(keras, backbone, layer, pooling, weights, size)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


POOL_LAYERS = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D", "none": "Flatten"}


def _build(keras, backbone: Backbone, layer: str, pooling: str, weights: str | None, size: int):
    # Keras warns about each layer a weights file lacks before it raises: when featx's own error
    # follows, those warnings are noise; when the model builds, they are shown as usual.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _construct(keras, backbone, layer, pooling, weights, size)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def _construct(keras, backbone: Backbone, layer: str, pooling: str, weights: str | None,
               size: int):
    ctor = getattr(keras.applications, backbone.constructor)
    shape = (size, size, 3)
    if weights is None:
        keras.utils.set_random_seed(0)  # random weights are for tests: make them reproducible
    try:
        if layer in backbone.top_layers:
            full = ctor(include_top=True, weights=weights, input_shape=shape)
            return keras.Model(full.input, full.get_layer(layer).output, name=f"{backbone.name}_{layer}")
        base = ctor(include_top=False, weights=weights, input_shape=shape)
    except Exception as e:  # keras raises plain Exception/ValueError for both cases below
        raise _weights_error(backbone, layer, weights, e) from e
    pooled = getattr(keras.layers, POOL_LAYERS[pooling])(name=f"{pooling}_pool")
    return keras.Model(base.input, pooled(base.get_layer(layer).output),
                       name=f"{backbone.name}_{layer}_{pooling}")


def _weights_error(backbone: Backbone, layer: str, weights: str | None, e: Exception) -> FeatxError:
    text = str(e)
    if weights == "imagenet" and ("URL fetch failure" in text or "fetch" in text.lower()
                                  or isinstance(e, OSError)):
        return FeatxError(
            f"could not download the ImageNet weights for {backbone.name} (no internet?). "
            f"Pass a local weights file with `weights`=PATH, e.g. "
            f"`weights`=vgg16_notop_imagenet.weights.h5 `layer`={backbone.base_layer}"
        )
    if weights not in (None, "imagenet") and layer in backbone.top_layers:
        return FeatxError(
            f"could not load {weights} into {backbone.name} with its top layers (needed for "
            f"`layer`={layer}); a file without fc1/fc2 (a 'notop' file) only serves "
            f"`layer`={backbone.base_layer}. Keras said: {text.splitlines()[0] if text else e!r}"
        )
    return FeatxError(f"could not build {backbone.name} with weights {weights!r}: {text or e!r}")
