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

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx import reader
from featx.bundle import check_bundle_output, default_bundle_dir, save_bundle
from featx.decode import RESIZE_POLICIES, DecodeError, DecodeSettings, decode_file
from featx.errors import FeatxError
from featx.heads import CnnHead
from featx.metrics import ScoredResult, classification_metrics
from featx.split import DEFAULT_FRACTIONS, Rows as SplitRows, split_rows
from featx.store import Rows, open_store, read_rows, strings

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
            raise FeatxError(f"`size` must be at least {MIN_SIZE} (four 3x3 convolutions and 2x2 "
                             f"poolings leave nothing of a smaller image), got {self.size}")
        for name in ("epochs", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise FeatxError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise FeatxError(f"`lr` must be positive, got {self.lr}")
        if self.resize not in RESIZE_POLICIES:
            raise FeatxError(f"`resize` is one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")

    @property
    def decode(self) -> DecodeSettings:
        return DecodeSettings(size=self.size, resize=self.resize)


# --- the rows and the split -------------------------------------------------------------------


@dataclass
class Images:
    """The images the baseline sees: a store's rows (or the rows it would hold) under a folder."""

    root: Path
    rows: Rows  # paths relative to root, labels, content hashes
    class_names: list[str]
    source: str  # "store FILE" or "computed from DATA_DIR"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return self.rows.paths

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.rows.labels, dtype=np.int64)

    @property
    def hashes(self) -> list[str]:
        return self.rows.hashes

    def files(self, idx: np.ndarray) -> list[Path]:
        return [self.root / self.rows.paths[i] for i in idx]


def images_from_store(data_dir: str | os.PathLike, store: str | os.PathLike) -> Images:
    """The store's paths, hashes and labels, with the images looked up under ``data_dir``."""
    root = Path(data_dir)
    with open_store(store) as f:
        rows, class_names = read_rows(f), strings(f["class_names"])
    missing = [p for p in rows.paths if not (root / p).is_file()]
    if missing:
        raise FeatxError(f"{len(missing)} of the {len(rows.paths)} images of {store} are not under "
                         f"{root} (e.g. {missing[0]}); give the data folder the store was built from")
    return Images(root, rows, class_names, f"store {store}")


def images_from_folder(data_dir: str | os.PathLike, workers: int = 2,
                       progress: Callable[[str, int, int], None] | None = None) -> Images:
    """The rows ``featx extract`` would store: every discovered file that reads and decodes.

    The folder is scanned by :func:`featx.reader.scan` (sha256 of the bytes) and each distinct
    content is decoded once to check it, exactly as extract does, so the derived split equals the
    store's.
    """
    scan = reader.scan(data_dir, workers, progress)
    failed = reader.decode_failures(scan, workers, progress)
    decodes = {h for h in scan.hashes if h is not None and h not in failed}
    skipped = [(p, r) for p, r, _ in scan.skipped(failed)]
    return Images(scan.root, scan.rows(decodes), list(scan.class_names),
                  f"computed from {data_dir}", skipped)


def baseline_split(images: Images, fractions=DEFAULT_FRACTIONS, seed: int = 0,
                   store: str | os.PathLike | None = None,
                   corrections: bool = True) -> SplitRows:
    """The rows' parts, labels and record: :func:`featx.split.split_rows` (the corrections of
    ``store``, when the rows are a store's), with a validation part (the CNN is validated every
    epoch)."""
    meta = {"data_dir": str(images.root.resolve())}
    return split_rows(images.hashes, images.labels, images.paths, images.class_names,
                      store=store, meta=meta, fractions=fractions, seed=seed,
                      corrections=corrections, need_val=True, purpose="a classifier")


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


# --- training ---------------------------------------------------------------------------------


@dataclass
class BaselineResult(ScoredResult):
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
    bundle: Path | None = None  # where it was saved, if it was

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx baseline --json`` (the keys of ``featx fit --json``)."""
        return {"bundle": str(self.bundle) if self.bundle else None,
            "clf": "cnn", "params": self.head.get_params(), "data_dir": str(self.data_dir),
            "store": self.store, "rows": self.rows_source,
            **self.scores(),
            "epochs_run": len(self.history.get("loss", [])), "class_names": self.class_names,
            "split": self.split, "history": self.history, "val": self.val, "test": self.test,
        }


def train_baseline(data_dir: str | os.PathLike, settings: BaselineSettings = BaselineSettings(), *,
                   store: str | os.PathLike | None = None, fractions=DEFAULT_FRACTIONS,
                   split_seed: int = 0, out: str | os.PathLike | None = None,
                   corrections: bool = True,
                   progress: Callable[[str, int, int], None] | None = None) -> BaselineResult:
    """Train the CNN on ``data_dir``'s train part (validated every epoch), evaluate val and test;
    with ``out``, save it there as a bundle (checked before any work).

    ``store``: take the rows (paths, hashes, labels) from this feature store of ``data_dir``;
    otherwise they are computed from the folder (the same rows, hence the same split).
    ``progress(stage, done, total)`` is called as the folder is read and checked (``"hash"``,
    ``"check"``), when training starts and after every epoch (``"epoch"``).
    """
    if out is not None:  # before importing Keras: a refusal takes no TensorFlow start-up
        check_bundle_output(out)
    import keras

    data_dir = Path(data_dir)
    images = images_from_store(data_dir, store) if store else images_from_folder(
        data_dir, settings.workers, progress)
    split = baseline_split(images, fractions, split_seed, store, corrections)
    parts, labels = split.rows, split.labels
    n_classes = len(images.class_names)
    keras.utils.set_random_seed(settings.seed)
    model = build_model(settings.size, n_classes, settings.lr)

    def batches(part, shuffle=False, labelled=True):
        return image_batches(images.files(parts[part]),
                             labels[parts[part]] if labelled else None,
                             n_classes, settings, shuffle=shuffle, seed=settings.seed)

    callbacks = []
    if progress:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: progress("epoch", 0, settings.epochs),
            on_epoch_end=lambda epoch, logs: progress("epoch", epoch + 1, settings.epochs)))
    start = time.perf_counter()
    hist = model.fit(batches("train", shuffle=True), validation_data=batches("val"),
                     epochs=settings.epochs, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    head = CnnHead(asdict(settings), model, history)
    head.fit_seconds = seconds

    metrics, test_proba = {}, np.empty((0, n_classes))
    for part in ("val", "test"):
        y = labels[parts[part]]
        proba = (np.asarray(model.predict(batches(part, labelled=False), verbose=0), np.float64)
                 if len(y) else np.empty((0, n_classes)))
        metrics[part] = classification_metrics(y, proba.argmax(axis=1), n_classes)
        if part == "test":
            test_proba = proba
    test_rows = parts["test"]
    predictions = {"paths": [images.paths[i] for i in test_rows],
                   "labels": labels[test_rows].tolist(),
                   "proba": np.round(test_proba, 6).tolist()}
    result = BaselineResult(head=head, settings=settings, class_names=images.class_names,
                            data_dir=data_dir, rows_source=images.source,
                            split=split.info, history=history,
                            val=metrics["val"], test=metrics["test"], test_predictions=predictions,
                            fit_seconds=seconds, store=str(store) if store else None)
    if out is not None:
        result.bundle = save_baseline(out, result)
    return result


# --- the bundle -------------------------------------------------------------------------------


def default_output(data_dir: str | os.PathLike) -> Path:
    """models/<data folder>_cnn/"""
    return default_bundle_dir(Path(data_dir).resolve().name, "cnn")


def save_baseline(directory: str | os.PathLike, result: BaselineResult) -> Path:
    """Write the trained CNN as a ``kind="cnn"`` bundle (replaced whole); returns its path."""
    s = result.settings
    n = sum(result.split[f"n_{p}"] for p in ("train", "val", "test"))
    meta = {"input_size": s.size, "resize": s.resize, "resample": s.decode.resample,
            "data_dir": str(result.data_dir.resolve()), "n": n}
    return save_bundle(directory, result.head, result.class_names, meta, store=result.store,
                       split=result.split, metrics=result.metrics,
                       extra={"rows": result.rows_source},
                       files={PREDICTIONS_FILE: result.test_predictions})
