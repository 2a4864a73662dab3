"""finetune: VGG16's last block fine-tuned on cached block4_pool maps, at cached-feature speed.

The frozen part of the network (blocks 1 to 4) runs once, in ``featx extract --layer block4_pool
--pooling none`` (14x14x512 maps a photo at 224, stored flattened, float16 with ``--store-dtype``).
What changes is trained on those maps, read from the store a batch at a time::

    maps (N, 100352) -> Reshape(14, 14, 512) -> block5_conv1..3 (3x3, 512, ReLU; initialised with
    the store's own weights) -> block5_pool (2x2 max) -> global average pooling -> Dropout
    -> Dense(n_classes, softmax)

Before training, the pooled output is the store network's ``block5_pool``/``avg`` vector, the input
of the frozen-feature heads. The recipe is Keras' transfer-learning guide's: the head is fitted
first with the convolutions frozen (``head_init="logreg"``: logistic regression on the train part's
pooled vectors, as ``featx fit`` does, copied into the Dense layer), then everything trainable is
trained with Adam at a low learning rate; early stopping watches the validation loss and keeps the
best weights, the head-only start (epoch 0) included.

``augment="flip"`` mirrors half the training maps at random, each epoch (the maps' columns
reversed: close to, not equal to, the maps of the mirrored photo); ``"flip-stored"`` takes the
mirrored photos' own maps from a store made with ``featx extract --augment flip``; ``"auto"`` (the
default) is flip-stored when the store has them, else flip (measured: README, fine-tuning).

The model takes the store's flattened vectors, so it is saved as an ordinary ``features`` bundle
(:class:`featx.heads.FinetuneHead`) whose extractor is the store's: ``featx predict`` embeds a new
photo through the frozen part (weights checked by hash) and feeds the maps to this model.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from featx.backbones import build_extractor, check_precision, get_backbone
from featx.bundle import check_bundle_output, default_bundle_dir, save_bundle
from featx.errors import FeatxError
from featx.heads import FinetuneHead, make_head, with_pooled
from featx.metrics import classification_metrics
from featx.split import DEFAULT_FRACTIONS, Rows as SplitRows, split_rows
from featx.store import FLIPPED, open_store, read_attrs, read_rows_of, strings

VGG16 = get_backbone("vgg16")
MAP_LAYER = VGG16.tune_from  # the frozen part's output (the backbone registry's)
TUNED_BLOCK = VGG16.tune_block  # the trainable part: its convolutions, then its pooling
TUNED_CONVS = VGG16.tune_depth  # VGG16's block5 has three 3x3 convolutions
AUGMENTS = ("auto", "none", "flip", "flip-stored")
HEAD_INITS = ("logreg", "random")
SCALES = ("l2", "none")  # what featx fit's automatic choice picks between (l2, C=10 on both data sets)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class FinetuneSettings:
    """How block5 and the head are trained (``featx finetune``'s options)."""

    epochs: int = 10
    lr: float = 3e-5  # measured: flowers-200 val loss 0.737 at 3e-5, 0.757 at 1e-4 (README)
    batch_size: int = 32
    patience: int = 3  # epochs without a lower validation loss before stopping
    dropout: float = 0.5  # before the softmax layer
    augment: str = "auto"  # flip-stored when the store has mirrored maps, else flip; or none
    tune: int = 3  # how many of block5's convolutions are trained (the last ones)
    head_init: str = "logreg"  # logreg (fit the head on frozen features first) or random
    scale: str = "l2"  # the head's input: l2 (pooled vectors divided by their length) or none
    C: float = 10.0  # the logistic regression's inverse L2 strength (head_init="logreg")
    precision: str = "float32"  # compute: float32 or bfloat16 (mixed)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "tune"):
            if getattr(self, name) < 1:
                raise FeatxError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.tune > TUNED_CONVS:  # checked here, before any model is built
            raise FeatxError(f"`tune` is at most {TUNED_CONVS} ({TUNED_BLOCK}'s convolutions), "
                             f"got {self.tune}")
        if self.patience < 0:
            raise FeatxError(f"`patience` must be 0 or more, got {self.patience}")
        if not self.lr > 0:
            raise FeatxError(f"`lr` must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise FeatxError(f"`dropout` must be in [0, 1), got {self.dropout}")
        if not self.C > 0:
            raise FeatxError(f"`C` must be positive, got {self.C}")
        if self.augment not in AUGMENTS:
            raise FeatxError(f"`augment` is one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.scale not in SCALES:
            raise FeatxError(f"`scale` is l2 or none, got {self.scale!r}")
        if self.head_init not in HEAD_INITS:
            raise FeatxError(f"`head_init` is logreg or random, got {self.head_init!r}")
        if self.precision not in ("float32", "bfloat16"):
            raise FeatxError(f"`precision` is float32 or bfloat16, got {self.precision!r}")
        check_precision(self.precision)


# --- the store ----------------------------------------------------------------------------------


def needed_extraction(meta: dict) -> str:
    """The ``featx extract`` command that makes the maps ``finetune`` trains on, for the data
    folder (and, for a VGG store, the weights and decode settings) of ``meta``."""
    vgg = meta.get("model") in ("vgg16", "vgg19")
    parts = ["featx extract", str(meta.get("data_dir") or "DATA_DIR")]
    if meta.get("model") == "vgg19":
        parts.append("--model vgg19")
    elif not vgg:
        parts.append("--model vgg16")
    parts += [f"--layer {MAP_LAYER}", "--pooling none", "--store-dtype float16"]
    weights = meta.get("weights")
    if vgg and weights not in (None, "imagenet"):
        parts.append(f"--weights {weights}")
    if vgg and meta.get("input_size") not in (None, 224):
        parts.append(f"--input-size {meta['input_size']}")
    if meta.get("resize") == "crop":
        parts.append("--resize crop")
    return " ".join(parts)


def check_map_store(path: str | os.PathLike, meta: dict, augment: str = "none") -> tuple[int, int, int]:
    """The store's map shape (rows, columns, channels); a FeatxError naming the extraction it
    needs when it holds pooled vectors, another layer or another model's output."""
    layer, pooling, model = meta.get("layer"), meta.get("pooling"), meta.get("model")
    if model not in ("vgg16", "vgg19") or layer != MAP_LAYER or pooling != "none" \
            or not meta.get("map_shape"):
        what = f"{model} {layer}" + (f"/{pooling}" if pooling != "none" else " maps")
        raise FeatxError(f"finetune trains VGG16's block5 on cached {MAP_LAYER} maps, and {path} "
                         f"holds {what} vectors; make the maps with: {needed_extraction(meta)}")
    if augment == "flip-stored" and meta.get("augment") != "flip":
        raise FeatxError(f"`augment`=flip-stored needs the mirrored photos' maps, and {path} has "
                         f"none; make a store with them by adding --augment flip to: "
                         f"{needed_extraction(meta)}")
    return tuple(int(v) for v in meta["map_shape"])  # type: ignore[return-value]


@dataclass
class MapStore:
    """What finetune needs of a map store: rows, labels, split; the maps stay on disk."""

    path: Path
    meta: dict
    map_shape: tuple[int, int, int]
    labels: np.ndarray
    hashes: list[str]
    paths: list[str]
    class_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def open_map_store(path: str | os.PathLike, augment: str = "none") -> MapStore:
    """Read a map store's rows and metadata (not its maps), checked for finetune."""
    with open_store(path) as f:
        meta = read_attrs(f)
        meta["n"] = int(f["labels"].shape[0])
        shape = check_map_store(path, meta, augment)
        store = MapStore(Path(path), meta, shape, f["labels"][:].astype(np.int64),
                         strings(f["hashes"]), strings(f["paths"]), strings(f["class_names"]))
    return store


def map_split(store: MapStore, fractions=DEFAULT_FRACTIONS, seed: int = 0,
              corrections: bool = True) -> SplitRows:
    """The rows of ``featx fit`` and ``featx baseline`` (:func:`featx.split.split_rows`: content
    hashes, stratified, the store's corrections applied), with a validation part (early
    stopping needs it)."""
    return split_rows(store.hashes, store.labels, store.paths, store.class_names,
                      store=store.path, meta=store.meta, fractions=fractions, seed=seed,
                      corrections=corrections, need_val=True)


def flip_maps(x: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """Flattened maps (N, H*W*C) mirrored left-right: each map's columns in reverse order."""
    return x.reshape(len(x), *map_shape)[:, :, ::-1, :].reshape(len(x), -1)


def map_batches(store: MapStore, rows: np.ndarray, batch_size: int, *, shuffle: bool = False,
                augment: str = "none", seed: int = 0, labelled: bool = True):
    """A ``keras.utils.PyDataset`` reading ``batch_size`` maps a step from the store.

    Rows are read a row at a time, in increasing order within a batch, and the file is never
    loaded whole: memory holds one batch. With ``shuffle`` the order is new each epoch; with
    ``augment`` half the maps of each batch (seeded by seed, epoch and batch) are mirrored.
    """
    import keras

    n_classes = store.n_classes

    class MapBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = self._order()
            self.file: h5py.File | None = None

        def _order(self) -> np.ndarray:
            if not shuffle:
                return np.asarray(rows)
            return np.random.default_rng([seed, self.epoch]).permutation(np.asarray(rows))

        def __len__(self) -> int:
            return -(-len(rows) // batch_size)

        def __getitem__(self, i: int):
            if self.file is None:
                self.file = h5py.File(store.path, "r")
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            x = read_rows_of(self.file["features"], idx).astype(np.float32)
            if augment != "none":
                mask = np.random.default_rng([seed, self.epoch, i]).random(len(idx)) < 0.5
                if augment == "flip":
                    x[mask] = flip_maps(x[mask], store.map_shape)
                elif mask.any():
                    x[mask] = read_rows_of(self.file[FLIPPED], idx[mask])
            if not labelled:
                return (x,)
            return x, keras.utils.to_categorical(store.labels[idx], n_classes)

        def on_epoch_end(self):
            self.epoch += 1
            self.order = self._order()

        def close(self) -> None:
            if self.file is not None:
                self.file.close()
                self.file = None

    return MapBatches()


def read_maps(store: MapStore, rows: np.ndarray) -> np.ndarray:
    """The maps of some rows (sorted), as float32: for small parts and tests."""
    with h5py.File(store.path, "r") as f:
        return read_rows_of(f["features"], np.sort(rows)).astype(np.float32)


# --- the model ----------------------------------------------------------------------------------


def block5_weights(meta: dict) -> list[list[np.ndarray]]:
    """The weights of block5's convolutions of the network the store was made with (its weights
    file, ``imagenet``, or the seeded random weights of ``weights="none"``)."""
    import contextlib
    import sys

    from featx.embed import Extractor

    extractor = Extractor.from_meta(meta)  # checks the weights file against the store's hash
    s = extractor.settings
    with contextlib.redirect_stdout(sys.stderr):
        backbone = get_backbone(s.model)
        base = build_extractor(backbone, backbone.tune_pool, "avg", s.weights, "float32",
                               s.input_size)
    return [layer.get_weights() for layer in backbone.tune_convs(base.layers)]


def build_model(map_shape: tuple[int, int, int], n_classes: int, conv_weights: list,
                settings: FinetuneSettings):
    """(model, pooled): the trainable part on flattened maps, and the same graph up to the pooled
    vector (shared layers). Compiled: Adam at ``settings.lr``, categorical cross-entropy."""
    import keras
    from keras import layers

    if settings.tune > len(conv_weights):
        raise FeatxError(f"`tune` is at most {len(conv_weights)} (block5's convolutions), got "
                         f"{settings.tune}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(check_precision(settings.precision))
    try:
        keras.utils.set_random_seed(settings.seed)
        inputs = keras.Input(shape=(int(np.prod(map_shape)),), name="maps")
        x = layers.Reshape(map_shape, name="unflatten")(inputs)
        frozen = len(conv_weights) - settings.tune
        for k, weights in enumerate(conv_weights, 1):
            conv = layers.Conv2D(weights[0].shape[-1], 3, padding="same", activation="relu",
                                 name=f"{TUNED_BLOCK}_conv{k}", trainable=k > frozen)
            x = conv(x)
            conv.set_weights(weights)
        x = layers.MaxPooling2D(2, name=f"{TUNED_BLOCK}_pool")(x)
        pooled = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.UnitNormalization(name="l2")(pooled) if settings.scale == "l2" else pooled
        x = layers.Dropout(settings.dropout, name="dropout")(x) if settings.dropout else x
        outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="softmax")(x)
    finally:
        keras.config.set_dtype_policy(previous)
    model = keras.Model(inputs, outputs, name="featx_finetune_block5")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model, keras.Model(inputs, pooled, name="featx_block5_pooled")


def logreg_head(pooled: np.ndarray, y: np.ndarray, n_classes: int, C: float, seed: int):
    """(kernel (D, K), bias (K,)) of a softmax layer equal to ``featx fit --clf logreg --scale
    none``'s head fitted on the pooled vectors (:meth:`featx.heads.SklearnHead.softmax_weights`)."""
    head = make_head("logreg", C=C, scale="none", seed=seed).fit(pooled, y, n_classes=n_classes)
    return head.softmax_weights()


# --- training -----------------------------------------------------------------------------------


def _keep_best(patience: int, initial_loss: float | None):
    """Early stopping on the validation loss that keeps the best weights, counting the weights
    training starts from (epoch 0) as a candidate."""
    import keras

    class KeepBest(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best = np.inf if initial_loss is None else initial_loss
            self.best_weights = None if initial_loss is None else self.model.get_weights()
            self.best_epoch, self.wait = 0, 0

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss")
            if loss is not None and loss < self.best:
                self.best, self.best_epoch, self.wait = loss, epoch + 1, 0
                self.best_weights = self.model.get_weights()
                return
            self.wait += 1
            if self.wait > patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBest()


def _batch_progress(progress: Progress, stage: str, total: int):
    """``progress(stage, batch, total)`` after every batch of a ``predict``."""
    import keras

    class Batches(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            progress(stage, batch + 1, total)

    return Batches()


def _epoch_timer(on_epoch: Callable[[int, dict], None] | None, progress: Progress, n_epochs: int,
                 n_steps: int):
    """Per-epoch seconds into the logs (``history["epoch_seconds"]``), progress by batch."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.epoch = epoch
            progress(f"epoch {epoch + 1}/{n_epochs}", 0, n_steps)

        def on_train_batch_end(self, batch, logs=None):
            progress(f"epoch {self.epoch + 1}/{n_epochs}", batch + 1, n_steps)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.t0
                if on_epoch:
                    on_epoch(epoch + 1, dict(logs))

    return Timer()


def predict_rows(model, store: MapStore, rows: np.ndarray, batch_size: int):
    """Class probabilities of some rows (in the order given), read a batch at a time; a model
    with two outputs (:func:`featx.heads.with_pooled`) gives (probabilities, pooled vectors)."""
    two = len(model.outputs) == 2
    if len(rows) == 0:
        empty = np.empty((0, store.n_classes))
        return (empty, np.empty((0, model.outputs[1].shape[-1]), np.float32)) if two else empty
    data = map_batches(store, rows, batch_size, labelled=False)
    try:
        out = model.predict(data, verbose=0)
    finally:
        data.close()
    if two:
        return np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float32)
    return np.asarray(out, dtype=np.float64)


def familiar_record(model, store: MapStore, parts: dict[str, np.ndarray], batch_size: int,
                    pooled_val: np.ndarray, seed: int = 0):
    """The fine-tuned model's record of its training photos (:mod:`featx.familiar`): its pooled
    vectors after block5 of (a seeded subsample, as many as the record keeps, of) the train
    part, calibrated on the validation part's."""
    from featx import familiar

    dim = int(model.outputs[1].shape[-1])
    n = familiar.DEFAULTS["knn"]["bank_bytes"] // (2 * dim)  # the train rows the record can use
    train = parts["train"]
    if len(train) > n:
        train = np.sort(np.random.default_rng(seed).choice(train, n, replace=False))
    _, pooled = predict_rows(model, store, train, batch_size)
    return familiar.fit_record(pooled, store.labels[train], pooled_val)


@dataclass
class FinetuneResult:
    """A fine-tuned model and its evaluation (see :func:`finetune`)."""

    head: FinetuneHead
    settings: FinetuneSettings
    store: Path
    class_names: list[str]
    split: dict[str, Any]
    history: dict[str, list[float]]
    initial: dict[str, float]  # the head-only start on the validation part (epoch 0)
    best_epoch: int
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    fit_seconds: float
    head_seconds: float  # the pooled vectors of the train part and the logistic regression
    test_proba: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    bundle: Path | None = None
    familiar: Any = None  # the record of the training photos (featx.familiar.Record)

    @property
    def metrics(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "fit_seconds": round(self.fit_seconds, 4)}

    @property
    def extra(self) -> dict[str, Any]:
        """What ``bundle.json`` and ``--json`` add to the keys of ``featx fit``."""
        seconds = self.history.get("epoch_seconds", [])
        return {"best_epoch": self.best_epoch, "epochs_run": len(self.history.get("loss", [])),
                "initial": self.initial, "head_seconds": round(self.head_seconds, 3),
                "seconds_per_epoch": round(float(np.mean(seconds)), 3) if seconds else None}

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON: :meth:`summary`."""
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx finetune --json`` (the keys of ``featx fit --json``)."""
        return {"clf": "finetune", "params": self.head.get_params(), "store": str(self.store),
                "val_accuracy": self.val["accuracy"] if self.val else None,
                "test_accuracy": self.test["accuracy"] if self.test else None,
                **{k: self.split[k] for k in ("n_train", "n_val", "n_test")},
                "fit_seconds": round(self.fit_seconds, 3), "class_names": self.class_names,
                "split": self.split, "history": self.history, "val": self.val, "test": self.test,
                **self.extra, "bundle": str(self.bundle) if self.bundle else None,
                "familiar": self.familiar.as_dict() if self.familiar is not None else None}


def default_output(store: str | os.PathLike) -> Path:
    """models/<store>_finetune/"""
    return default_bundle_dir(Path(store).stem, "finetune")


def finetune(store_path: str | os.PathLike, settings: FinetuneSettings = FinetuneSettings(), *,
             fractions=DEFAULT_FRACTIONS, split_seed: int = 0, out: str | os.PathLike | None = None,
             progress: Progress | None = None, corrections: bool = True,
             on_epoch: Callable[[int, dict], None] | None = None) -> FinetuneResult:
    """Fine-tune block5 and a new head on a map store's train part (validated every epoch), then
    evaluate the best weights on the validation and test parts; with ``out``, save a bundle there
    (checked before any work, written whole at the end: Ctrl-C leaves nothing half-written).

    ``progress(stage, done, total)`` is called per batch; ``on_epoch(epoch, logs)`` per epoch.
    """
    progress = progress or (lambda stage, done, total: None)
    if out is not None:
        check_bundle_output(out)
    store = open_map_store(store_path, settings.augment)
    if settings.augment == "auto":
        stored = store.meta.get("augment") == "flip"
        settings = replace(settings, augment="flip-stored" if stored else "flip")
    split = map_split(store, fractions, split_seed, corrections)
    parts, store = split.rows, replace(store, labels=split.labels)  # the labels in force
    model, pooled_model = build_model(store.map_shape, store.n_classes, block5_weights(store.meta),
                                      settings)
    bs = settings.batch_size
    initial: dict[str, float] = {}
    t0 = time.perf_counter()
    if settings.head_init == "logreg":
        data = map_batches(store, parts["train"], bs, labelled=False)
        pooled = np.asarray(pooled_model.predict(
            data, verbose=0, callbacks=[_batch_progress(progress, "head start", len(data))]))
        data.close()
        if settings.scale == "l2":  # as the model's UnitNormalization layer does
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        model.get_layer("softmax").set_weights(list(logreg_head(
            pooled, store.labels[parts["train"]], store.n_classes, settings.C, settings.seed)))
        data = map_batches(store, parts["val"], bs)
        initial = dict(zip(("val_loss", "val_accuracy"), map(float, model.evaluate(data, verbose=0))))
        data.close()
    head_seconds = time.perf_counter() - t0

    train = map_batches(store, parts["train"], bs, shuffle=True, augment=settings.augment,
                        seed=settings.seed)
    val = map_batches(store, parts["val"], bs)
    start = time.perf_counter()
    keep = _keep_best(settings.patience, initial.get("val_loss"))
    try:
        hist = model.fit(train, validation_data=val, epochs=settings.epochs, verbose=0,
                         callbacks=[_epoch_timer(on_epoch, progress, settings.epochs, len(train)),
                                    keep])
    finally:
        train.close()
        val.close()
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}

    metrics, proba, pooled = {}, {}, {}
    two = with_pooled(model)
    for part in ("val", "test"):
        proba[part], pooled[part] = predict_rows(two, store, parts[part], bs)
        metrics[part] = classification_metrics(store.labels[parts[part]],
                                               proba[part].argmax(axis=1), store.n_classes)
    record = familiar_record(two, store, parts, bs, pooled["val"], settings.seed) \
        if len(parts["val"]) else None
    params = {**asdict(settings), "map_shape": list(store.map_shape),
              "store_dtype": store.meta.get("store_dtype", "float32")}
    head = FinetuneHead(params, model, history)
    head.n_features, head.fit_seconds = int(np.prod(store.map_shape)), seconds
    result = FinetuneResult(
        head=head, settings=settings, store=Path(store_path), class_names=store.class_names,
        split=split.info, history=history, initial=initial,
        best_epoch=keep.best_epoch, val=metrics["val"], test=metrics["test"],
        fit_seconds=seconds, head_seconds=head_seconds, test_proba=proba["test"], familiar=record)
    if out is not None:
        result.bundle = save_bundle(out, head, store.class_names, store.meta, store=store_path,
                                    split=result.split, metrics=result.metrics,
                                    extra={"finetune": result.extra}, familiar=record)
    return result
