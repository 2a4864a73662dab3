"""baseline: the tutorial's small CNN, trained from scratch on the images, for comparison.

The network (the tutorial's)::

    Rescaling(1/255)                           the model takes RGB pixels in 0..255
    4 x [Conv2D(32, 3x3, ReLU), MaxPooling(2x2)], Dropout(0.25) after the 2nd and the 4th
    Flatten, Dense(256, ReLU), Dropout(0.5), Dense(n_classes, softmax)
    Adam, categorical cross-entropy, 10 epochs

It trains on the **same train / validation / test split** as the feature store of the same folder:
the split is derived from content hashes (:func:`featx.split.split_indices`), so given the store's
rows, or the rows the store would hold (every discovered file that decodes, in discovery order),
the parts are identical. Images are **streamed** from disk by a ``keras.utils.PyDataset`` that
decodes one batch at a time with :func:`featx.decode.decode_file` (threads), so memory is bounded by
the batch size, not the data set.

The result is saved as a model bundle of ``kind="cnn"`` (see :mod:`featx.bundle`): ``bundle.json``,
``model.keras``, ``history.json`` and ``test_predictions.json`` (the test part's probabilities, for
``featx report``). ``featx predict`` takes it like any other bundle: new images are decoded with
the same settings and fed to the model as pixels.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx import __version__
from featx.bundle import staged
from featx.decode import RESIZE_POLICIES, DecodeError, DecodeSettings, decode_file, decode_files
from featx.discover import discover, hash_file
from featx.errors import FeatxError
from featx.split import DEFAULT_FRACTIONS, split_indices

BUNDLE_VERSION = 1  # the same format version as featx.bundle
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "test_predictions.json"
MIN_SIZE = 46  # the smallest input the four conv + pool blocks map to at least 1x1


@dataclass(frozen=True)
class BaselineSettings:
    """How the from-scratch CNN is fed and trained."""

    size: int = 224
    resize: str = "squash"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise FeatxError(f"--size must be at least {MIN_SIZE} (four 3x3 convolutions and 2x2 "
                             f"poolings leave nothing of a smaller image), got {self.size}")
        if self.epochs < 1 or self.batch_size < 1 or self.workers < 1:
            raise FeatxError("--epochs, --batch-size and --workers must be at least 1")
        if not self.lr > 0:
            raise FeatxError(f"--lr must be positive, got {self.lr}")
        if self.resize not in RESIZE_POLICIES:
            raise FeatxError(f"--resize is one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")

    @property
    def decode(self) -> DecodeSettings:
        return DecodeSettings(size=self.size, resize=self.resize)


# --- the rows and the split -------------------------------------------------------------------


@dataclass
class Rows:
    """The images the baseline sees: the store's rows, or the rows the store would hold."""

    root: Path
    paths: list[str]  # relative to root, POSIX separators
    labels: np.ndarray
    hashes: list[str]
    class_names: list[str]
    source: str  # "store FILE" or "computed from DATA_DIR"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def files(self, rows: np.ndarray) -> list[Path]:
        return [self.root / self.paths[i] for i in rows]


def rows_from_store(data_dir: str | os.PathLike, store: str | os.PathLike) -> Rows:
    """The store's paths, hashes and labels, with the images looked up under ``data_dir``."""
    from featx.store import open_store, strings

    root = Path(data_dir)
    with open_store(store) as f:
        paths = strings(f["paths"])
        labels = f["labels"][:].astype(np.int64)
        hashes = strings(f["hashes"])
        class_names = strings(f["class_names"])
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise FeatxError(f"{len(missing)} of the {len(paths)} images of {store} are not under "
                         f"{root} (e.g. {missing[0]}); give the data folder the store was built from")
    return Rows(root, paths, labels, hashes, class_names, f"store {store}")


def rows_from_folder(data_dir: str | os.PathLike, workers: int = 2,
                     progress: Callable[[str, int, int], None] | None = None) -> Rows:
    """The rows ``featx extract`` would store: every discovered file that reads and decodes.

    Files are hashed (sha256 of the bytes) and each distinct content is decoded once to check it,
    exactly as extract does, so the derived split equals the store's.
    """
    ds = discover(data_dir)
    files = [ds.root / p for p in ds.paths]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        hashed = list(pool.map(hash_file, files, chunksize=64))
        first: dict[str, int] = {}
        for i, (h, _) in enumerate(hashed):
            if h is not None:
                first.setdefault(h, i)
        check = DecodeSettings(size=32)  # decodability does not depend on the size
        failed: dict[str, str] = {}
        for n, (h, reason) in enumerate(pool.map(
                lambda i: (hashed[i][0], _decode_error(files[i], check)), list(first.values()))):
            if reason:
                failed[h] = reason
            if progress and (n % 64 == 0 or n == len(first) - 1):
                progress("check", n + 1, len(first))
    keep, skipped = [], list(ds.skipped)
    for i, (h, reason) in enumerate(hashed):
        if h is None:
            skipped.append((ds.paths[i], reason))
        elif h in failed:
            skipped.append((ds.paths[i], failed[h]))
        else:
            keep.append(i)
    return Rows(ds.root, [ds.paths[i] for i in keep], np.array([ds.labels[i] for i in keep],
                dtype=np.int64), [hashed[i][0] for i in keep], list(ds.class_names),
                f"computed from {data_dir}", skipped)



def _decode_error(path: Path, settings: DecodeSettings) -> str | None:
    try:
        decode_file(path, settings)
    except DecodeError as e:
        return str(e)
    return None


def baseline_split(rows: Rows, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: :func:`featx.split.split_indices` on the rows."""
    parts = split_indices(rows.hashes, rows.labels, fractions, seed)
    if len(np.unique(rows.labels[parts["train"]])) < 2:
        raise FeatxError(f"the training part has fewer than two classes ({len(parts['train'])} "
                         "images); add images or change --split")
    if len(parts["val"]) == 0:
        raise FeatxError("the validation part is empty; give it a share with --split")
    return parts


# --- streaming input --------------------------------------------------------------------------


def image_batches(files: list[Path], labels: np.ndarray | None, n_classes: int,
                  settings: BaselineSettings, shuffle: bool = False, seed: int = 0):
    """A ``keras.utils.PyDataset`` decoding ``batch_size`` files per item in worker threads.

    Yields (uint8-valued float32 pixels, one-hot labels), or pixels alone when ``labels`` is None.
    Memory holds a few batches (``workers`` + the queue), never the data set.
    """
    import keras

    class ImageBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=settings.workers, use_multiprocessing=False,
                             max_queue_size=max(2, settings.workers))
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(files)) if shuffle else np.arange(len(files))

        def __len__(self):
            return -(-len(files) // settings.batch_size)

        def __getitem__(self, i):
            idx = self.order[i * settings.batch_size:(i + 1) * settings.batch_size]
            x = np.stack([_pixels(files[j], settings.decode) for j in idx]).astype(np.float32)
            if labels is None:
                return (x,)
            return x, keras.utils.to_categorical(labels[idx], n_classes)

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(len(files))

    return ImageBatches()


def _pixels(path: Path, settings: DecodeSettings) -> np.ndarray:
    try:
        return decode_file(path, settings)
    except DecodeError as e:
        raise FeatxError(f"{path}: {e} (it decoded when the rows were listed; was it changed?)") from None


# --- the model --------------------------------------------------------------------------------


def build_model(size: int, n_classes: int, lr: float = 1e-3):
    """The tutorial's CNN, compiled; input: (size, size, 3) RGB in 0..255."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(size, size, 3), name="pixels"),
        layers.Rescaling(1.0 / 255, name="scale"),
        layers.Conv2D(32, 3, activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(32, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Dropout(0.25, name="drop2"),
        layers.Conv2D(32, 3, activation="relu", name="conv3"),
        layers.MaxPooling2D(2, name="pool3"),
        layers.Conv2D(32, 3, activation="relu", name="conv4"),
        layers.MaxPooling2D(2, name="pool4"),
        layers.Dropout(0.25, name="drop4"),
        layers.Flatten(name="flatten"),
        layers.Dense(256, activation="relu", name="dense"),
        layers.Dropout(0.5, name="drop_dense"),
        layers.Dense(n_classes, activation="softmax", name="softmax"),
    ], name="featx_scratch_cnn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


class CnnHead:
    """A trained baseline behind the heads' interface: ``predict_proba`` on decoded pixels."""

    name = "cnn"
    model_file = MODEL_FILE

    def __init__(self, model, params: dict[str, Any], history: dict | None = None) -> None:
        self.model, self.params, self.history = model, params, history
        self.n_features = None
        self.fit_seconds = 0.0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = self.model.predict(np.asarray(X, dtype=np.float32),
                                   batch_size=int(self.params.get("batch_size", 32)), verbose=0)
        return np.asarray(proba, dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, directory: Path) -> str:
        self.model.save(Path(directory) / MODEL_FILE)
        return MODEL_FILE

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    @classmethod
    def load(cls, directory: str | os.PathLike, params: dict[str, Any],
             history: dict | None = None) -> "CnnHead":
        import keras

        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise FeatxError(f"bundle {directory} lacks its model file {MODEL_FILE}")
        return cls(keras.models.load_model(path, compile=False), params, history)


class PixelReader:
    """The "extractor" of a cnn bundle: files -> decoded pixels, with ``Extractor``'s interface."""

    def __init__(self, decode_settings: DecodeSettings) -> None:
        self.decode_settings = decode_settings

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "PixelReader":
        i = info.get("input", {})
        return cls(DecodeSettings(size=int(i["input_size"]), resize=i.get("resize", "squash")))

    def embed_files(self, paths, batch_size: int = 32):
        """(pixels (N, size, size, 3) uint8, indices decoded, (path, reason) failures)."""
        return decode_files(paths, self.decode_settings)


# --- training ---------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    """A trained baseline and its evaluation (see :func:`train_baseline`)."""

    head: CnnHead
    settings: BaselineSettings
    class_names: list[str]
    data_dir: Path
    rows_source: str
    split: dict[str, Any]
    history: dict[str, list[float]]
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    test_predictions: dict[str, Any]
    fit_seconds: float
    store: str | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "fit_seconds": round(self.fit_seconds, 4)}

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx baseline --json`` (the keys of ``featx fit --json``)."""
        return {
            "clf": "cnn", "params": self.head.get_params(), "data_dir": str(self.data_dir),
            "store": self.store, "rows": self.rows_source,
            "val_accuracy": self.val["accuracy"] if self.val else None,
            "test_accuracy": self.test["accuracy"] if self.test else None,
            "n_train": self.split["n_train"], "n_val": self.split["n_val"],
            "n_test": self.split["n_test"], "fit_seconds": round(self.fit_seconds, 4),
            "epochs_run": len(self.history.get("loss", [])), "class_names": self.class_names,
            "split": self.split, "history": self.history, "val": self.val, "test": self.test,
        }


def train_baseline(data_dir: str | os.PathLike, settings: BaselineSettings = BaselineSettings(), *,
                   store: str | os.PathLike | None = None, fractions=DEFAULT_FRACTIONS,
                   split_seed: int = 0,
                   progress: Callable[[str, int, int], None] | None = None) -> BaselineResult:
    """Train the CNN on ``data_dir``'s train part (validated every epoch), evaluate val and test.

    ``store``: take the rows (paths, hashes, labels) from this feature store of ``data_dir``;
    otherwise they are computed from the folder (the same rows, hence the same split).
    ``progress(stage, done, total)`` is called once per epoch (stage ``"epoch"``).
    """
    import keras

    from featx.fit import evaluate

    data_dir = Path(data_dir)
    rows = rows_from_store(data_dir, store) if store else rows_from_folder(
        data_dir, settings.workers, progress)
    parts = baseline_split(rows, fractions, split_seed)
    n_classes = len(rows.class_names)
    keras.utils.set_random_seed(settings.seed)
    model = build_model(settings.size, n_classes, settings.lr)

    def batches(part, shuffle=False, labelled=True):
        return image_batches(rows.files(parts[part]), rows.labels[parts[part]] if labelled else None,
                             n_classes, settings, shuffle=shuffle, seed=settings.seed)

    callbacks = []
    if progress:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: progress("epoch", epoch + 1, settings.epochs)))
    start = time.perf_counter()
    hist = model.fit(batches("train", shuffle=True), validation_data=batches("val"),
                     epochs=settings.epochs, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    head = CnnHead(model, asdict(settings), history)
    head.fit_seconds = seconds

    metrics, test_proba = {}, np.empty((0, n_classes))
    for part in ("val", "test"):
        y = rows.labels[parts[part]]
        if len(y) == 0:
            metrics[part] = None
            continue
        proba = np.asarray(model.predict(batches(part, labelled=False), verbose=0), np.float64)
        metrics[part] = evaluate(_Fixed(np.argmax(proba, axis=1)), None, y, n_classes)
        if part == "test":
            test_proba = proba
    test_rows = parts["test"]
    predictions = {"paths": [rows.paths[i] for i in test_rows],
                   "labels": rows.labels[test_rows].tolist(),
                   "proba": np.round(test_proba, 6).tolist()}
    split_info = {"method": "derived from content hashes (featx.split)",
                  "fractions": list(fractions), "seed": split_seed,
                  **{f"n_{p}": int(len(parts[p])) for p in ("train", "val", "test")}}
    return BaselineResult(head=head, settings=settings, class_names=rows.class_names,
                          data_dir=data_dir, rows_source=rows.source, split=split_info,
                          history=history, val=metrics["val"], test=metrics["test"],
                          test_predictions=predictions, fit_seconds=seconds,
                          store=str(store) if store else None)


class _Fixed:
    """Feeds precomputed labels to :func:`featx.fit.evaluate` (its ``head.predict(X)``)."""

    def __init__(self, pred: np.ndarray) -> None:
        self.pred = pred

    def predict(self, _X) -> np.ndarray:
        return self.pred


# --- the bundle -------------------------------------------------------------------------------


def save_baseline(directory: str | os.PathLike, result: BaselineResult) -> Path:
    """Write a ``kind="cnn"`` bundle into ``directory`` (replaced whole); returns its path."""
    import keras

    directory = Path(directory)
    s = result.settings
    with staged(directory) as tmp:
        result.head.save(tmp)
        info = {
            "featx_bundle": BUNDLE_VERSION, "kind": "cnn", "clf": "cnn",
            "params": result.head.get_params(), "class_names": list(result.class_names),
            "input": {"type": "pixels", "input_size": s.size, "resize": s.resize,
                      "resample": s.decode.resample,
                      "scale": "RGB 0..255 (the model rescales by 1/255 itself)"},
            "extractor": {"input_size": s.size, "resize": s.resize, "resample": s.decode.resample},
            "model_file": MODEL_FILE,
            "store": {"path": result.store, "n": sum(result.split[f"n_{p}"]
                                                     for p in ("train", "val", "test")),
                      "data_dir": str(result.data_dir.resolve())},
            "rows": result.rows_source, "split": result.split, "metrics": result.metrics,
            "history": result.history,
            "versions": {"featx": __version__, "keras": keras.__version__,
                         "keras_backend": keras.backend.backend()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "history.json").write_text(json.dumps(result.history) + "\n")
        (tmp / PREDICTIONS_FILE).write_text(json.dumps(result.test_predictions) + "\n")
    return directory


def load_cnn_head(directory: str | os.PathLike, info: dict[str, Any]) -> CnnHead:
    """The model of a ``kind="cnn"`` bundle (used by :func:`featx.bundle.load_bundle`)."""
    return CnnHead.load(directory, info.get("params", {}), info.get("history"))
