"""embed: the mapper, uint8 pixels -> feature vectors, with the backbone's own preprocessing.

An :class:`Extractor` is everything needed to embed an image the way a store was built (model,
layer, pooling, weights, precision, decode settings). ``extract`` runs it over folders; ``predict``
and ``neighbors`` rebuild it from a store's metadata with :meth:`Extractor.from_meta`.
:class:`EmbeddedBatch` is what every extraction engine yields (the engine contract).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from featx import __version__
from featx.backbones import (
    build_extractor,
    check_input_size,
    check_layer,
    check_precision,
    get_backbone,
    preprocess_fn,
    weights_identity,
)
from featx.decode import DecodeSettings, decode_files
from featx.errors import FeatxError

AUGMENTS = ("none", "flip")
STORE_DTYPES = ("float32", "float16")


@dataclass
class EmbeddedBatch:
    """What an engine yields: the contents embedded (``hashes``, ``vectors``; with
    ``augment="flip"`` their mirror images' ``flipped``; for a store gaining flips, ``vectors``
    are the mirror images'), the contents that failed to decode (``failures``: (hash, reason)),
    the seconds spent by stage, and which worker embedded how many (Ray)."""

    hashes: list[str]
    vectors: np.ndarray | None
    failures: list[tuple[str, str]]
    flipped: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # decode, model, wait, load, ...
    workers: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hashes) + len(self.failures)


@dataclass(frozen=True)
class ExtractorSettings:
    """What a user chooses on ``featx extract``; the defaults are the tutorial's VGG16 fc2."""

    model: str = "vgg16"
    layer: str = "fc2"
    pooling: str = "avg"  # for convolutional layers: avg, max or none (flatten)
    weights: str = "imagenet"  # "imagenet", a local weights file, or "none" (random, for tests)
    precision: str = "float32"  # float32, bfloat16 or float16 (compute)
    resize: str = "squash"  # squash (the tutorial's stretch) or crop (shorter side, centre crop)
    input_size: int | None = None  # square input; None: the backbone's (224); conv layers only
    augment: str = "none"  # "flip": also store the mirrored image's vector beside each row
    store_dtype: str = "float32"  # how vectors are stored: float32, or float16 (half the file)

    def normalized(self) -> "ExtractorSettings":
        """Validate, and fill in or drop choices that do not apply (pooling of dense layers)."""
        backbone = get_backbone(self.model)
        check_layer(backbone, self.layer, self.pooling)
        check_precision(self.precision)
        if self.resize not in ("squash", "crop"):
            raise FeatxError(f"unknown `resize` policy {self.resize!r}; choose squash or crop")
        if self.augment not in AUGMENTS:
            raise FeatxError(f"unknown `augment` {self.augment!r}; choose {' or '.join(AUGMENTS)}")
        if self.store_dtype not in STORE_DTYPES:
            raise FeatxError(f"unknown `store_dtype` {self.store_dtype!r}; choose "
                             f"{' or '.join(STORE_DTYPES)}")
        size = int(self.input_size or backbone.input_size)
        check_input_size(backbone, self.layer, size)
        pooling = "none" if self.layer in backbone.top_layers else self.pooling
        return replace(self, pooling=pooling, input_size=size, weights=_resolved(self.weights))


def _resolved(weights: str) -> str:
    """A weights file as an absolute path (as a store records ``data_dir``): a store or bundle
    then finds it from any folder; "imagenet", "none" and a missing file are kept as given."""
    if weights in ("imagenet", "none") or not Path(weights).is_file():
        return weights
    return str(Path(weights).resolve())


class Extractor:
    """Embeds images: decode (featx.decode) -> preprocess_input once -> backbone -> float32."""

    def __init__(self, settings: ExtractorSettings = ExtractorSettings(), weights_id: str | None = None):
        self.settings = settings.normalized()
        self.backbone = get_backbone(self.settings.model)
        self.decode_settings = DecodeSettings(size=self.settings.input_size, resize=self.settings.resize)
        self.weights_id = weights_id or weights_identity(self.settings.weights)
        self._model = None
        self._preprocess = None

    @classmethod
    def from_meta(cls, meta: dict, weights: str | None = None) -> "Extractor":
        """Rebuild the extractor a store (or bundle) was made with; ``weights`` overrides the path."""
        settings = ExtractorSettings(
            model=meta["model"], layer=meta["layer"], pooling=meta["pooling"],
            weights=weights or meta["weights"], precision=meta["precision"], resize=meta["resize"],
            input_size=meta.get("input_size"), augment=meta.get("augment", "none"),
            store_dtype=meta.get("store_dtype", "float32"),
        )
        if settings.weights not in ("imagenet", "none") and not Path(settings.weights).is_file():
            raise FeatxError(
                f"the weights file these vectors were made with is not at {settings.weights}; "
                f"pass its new location with `weights`=PATH"
            )
        extractor = cls(settings)
        if extractor.weights_id != meta["weights_id"]:
            raise FeatxError(
                f"weights {settings.weights} ({extractor.weights_id[:19]}...) are not the ones the "
                f"vectors were made with ({meta['weights_id'][:19]}...); pass those with `weights`=PATH")
        return extractor

    @property
    def meta(self) -> dict:
        """Everything needed to embed a new image identically (stored as HDF5 attributes)."""
        import keras

        s, d = self.settings, self.decode_settings
        meta = {
            "model": s.model, "layer": s.layer, "pooling": s.pooling, "weights": s.weights,
            "weights_id": self.weights_id, "precision": s.precision, "input_size": d.size,
            "resize": d.resize, "resample": d.resample, "augment": s.augment,
            "store_dtype": s.store_dtype,
            "preprocess": f"{self.backbone.module}.preprocess_input",
            "featx_version": __version__, "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
        }
        if s.pooling == "none" and s.layer in self.backbone.maps:  # vectors are flattened maps
            meta["map_shape"] = list(self.backbone.map_shape(s.layer, d.size))
        return meta

    @property
    def model(self):
        if self._model is None:
            # Keras reports downloads on stdout; keep stdout clean for --json.
            with contextlib.redirect_stdout(sys.stderr):
                self._model = build_extractor(
                    self.backbone, self.settings.layer, self.settings.pooling,
                    self.settings.weights, self.settings.precision, self.settings.input_size,
                )
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def expected_dim(self) -> int:
        """The vector length, from the registry: known without building the model."""
        s = self.settings
        return self.backbone.feature_dim(s.layer, s.pooling, self.decode_settings.size)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, S, S, 3) -> the backbone's input (caffe mode for VGG: BGR, mean removed)."""
        if self._preprocess is None:
            self._preprocess = preprocess_fn(self.backbone)
        return self._preprocess(pixels.astype(np.float32))

    def embed_preprocessed(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Run the backbone on preprocessed input, padding to ``batch_size`` so shapes never vary."""
        n = len(x)
        if batch_size and n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), dtype=x.dtype)])
        y = self.model.predict_on_batch(x)
        return np.asarray(y, dtype=np.float32)[:n]

    def embed_batch(self, x: np.ndarray, batch_size: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors of a preprocessed batch, and with ``augment="flip"`` of its mirror images."""
        vectors = self.embed_preprocessed(x, batch_size)
        if self.settings.augment != "flip":
            return vectors, None
        return vectors, self.embed_preprocessed(x[:, :, ::-1], batch_size)

    def warm_up(self, batch_size: int) -> None:
        """Build the model and trace its batch shape once, so timings measure steady state."""
        size = self.decode_settings.size
        self.embed_preprocessed(np.zeros((batch_size, size, size, 3), np.float32), batch_size)

    def embed_pixels(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        out = [self.embed_preprocessed(self.preprocess(pixels[i:i + batch_size]), batch_size)
               for i in range(0, len(pixels), batch_size)]
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)

    def embed_files(
        self, paths: list[str | Path], batch_size: int = 32, flip: bool = False
    ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        """Embed a few files (``flip``: their mirror images): (vectors, indices of the files
        embedded, (path, reason) failures)."""
        stack, ok, failures = decode_files(paths, self.decode_settings)
        if flip:
            stack = stack[:, :, ::-1]
        vectors = self.embed_pixels(stack, batch_size) if ok else np.empty((0, 0), np.float32)
        return vectors, ok, failures
