"""heads.keras_heads: the heads that are Keras models: the softmax head on vectors (full-batch L-BFGS
or the tutorial's Adam), and the loaded forms of the scratch CNN and the fine-tuned block5."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featx.heads.base import Head
from featx.heads.softmax_math import (LBFGS_OPTIONS, _Epochs, l2_strength,
                                      softmax_objective, two_class_objective)

class KerasHead(Head):
    """A head that is a Keras model, saved as ``model.keras`` (softmax head, scratch CNN)."""

    model_file = "model.keras"
    predict_batch_size: ClassVar[int] = 1024

    def __init__(self, params: dict[str, Any], model=None, history: dict | None = None) -> None:
        self.params, self.model, self.history = params, model, history

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def __sklearn_clone__(self) -> "KerasHead":
        return type(self)(dict(self.params))

    @property
    def classes_(self) -> np.ndarray:
        """The class indices the model's output columns stand for."""
        self._check_fitted()
        return np.arange(int(self.model.output_shape[-1]))

    def predict_proba(self, X):
        self._check_fitted()
        proba = self.model.predict(np.asarray(X, dtype=np.float32),
                                   batch_size=self.predict_batch_size, verbose=0)
        return np.asarray(proba, dtype=np.float64)

    def _save(self, directory):
        self.model.save(directory / self.model_file)
        return self.model_file

    @classmethod
    def load(cls, directory: Path, clf: str, params: dict[str, Any]) -> "KerasHead":
        import keras

        head = cls(params, keras.models.load_model(directory / cls.model_file, compile=False))
        if cls.input == "vectors":
            head.n_features = int(head.model.input_shape[-1])
        return head


def _class_weights(y: np.ndarray, n_classes: int, mode: str | None) -> dict[int, float] | None:
    if mode != "balanced":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    w = np.ones(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return {i: float(v) for i, v in enumerate(w)}


def _sample_weights(y: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray:
    """Per-row weights (class weights looked up by label), as LogisticRegression applies them."""
    cw = _class_weights(y, n_classes, mode)
    return np.ones(len(y)) if cw is None else np.array([cw[int(c)] for c in y])


class SoftmaxHead(KerasHead):
    """The tutorial's head: Dense(n_classes, softmax) with categorical cross-entropy.

    The model is ``features -> [UnitNormalization] -> [Normalization] -> Dense softmax`` (the
    scaling layers per ``scale``), a plain Keras model saved as ``model.keras``. Trained by
    full-batch L-BFGS on LogisticRegression's objective (``solver="lbfgs"``) or by Adam in
    mini-batches with early stopping on validation loss (``solver="adam"``). ``history`` holds loss,
    accuracy, val_loss and val_accuracy per epoch (JSON-ready lists of floats).
    """

    name = "softmax"

    def __init__(self, params: dict[str, Any], model=None, history: dict | None = None) -> None:
        super().__init__(params, model, history)
        self.best_epoch: int | None = None
        self.stop_reason: str | None = None

    def predict_proba(self, X):
        """Class probabilities: the model called on blocks of rows (no compiled predict loop to
        build, which costs more than the products themselves on one store)."""
        self._check_fitted()
        return _apply(self.model, np.asarray(X, dtype=np.float32)).astype(np.float64)

    def _build(self, X: np.ndarray, n_classes: int, l2: float):
        """(model, scaler): the head, and the part of it before the Dense layer (None: no scaling)."""
        import keras

        scale = self.params["scale"]
        inputs = keras.Input(shape=(X.shape[1],), name="features")
        x = inputs
        if scale.startswith("l2"):
            x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
        if scale.endswith("standard"):
            Z = _apply(keras.Model(inputs, x), X) if x is not inputs else X
            var = np.maximum(Z.var(axis=0, dtype=np.float64), 1e-12)
            x = keras.layers.Normalization(mean=Z.mean(axis=0, dtype=np.float64).astype(np.float32),
                                           variance=var.astype(np.float32), name="standardize")(x)
        scaler = keras.Model(inputs, x) if x is not inputs else None
        reg = keras.regularizers.L2(l2) if l2 else None
        outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=reg,
                                     name="softmax")(x)
        return keras.Model(inputs, outputs, name="featx_softmax_head"), scaler

    def fit(self, X, y, X_val=None, y_val=None, n_classes=None):
        import keras

        p = self.params
        y = np.asarray(y)
        n_classes = int(n_classes or (y.max() + 1))
        self.n_features = int(X.shape[1])
        keras.utils.set_random_seed(int(p["seed"]))
        weights = _sample_weights(y, n_classes, p["class_weight"])
        start = time.perf_counter()
        self.model, scaler = self._build(X, n_classes, l2_strength(p["C"], weights.sum(), n_classes))
        has_val = X_val is not None and len(X_val) > 0
        val = (X_val, np.asarray(y_val)) if has_val else None
        if p["solver"] == "lbfgs":
            self._fit_lbfgs(X, y, weights, n_classes, scaler, val)
        else:
            self._fit_adam(X, y, n_classes, val)
        self.fit_seconds = time.perf_counter() - start
        self.n_iter = len(self.history["loss"])
        return self

    def _fit_lbfgs(self, X, y, weights, n_classes, scaler, val) -> None:
        """Full-batch L-BFGS-B on the head's objective, from zeros, LogisticRegression's rule."""
        from scipy.optimize import minimize

        dense = self.model.get_layer("softmax")
        l2 = float(dense.kernel_regularizer.l2) if dense.kernel_regularizer else 0.0
        Xs = np.ascontiguousarray(_apply(scaler, X) if scaler else X, dtype=np.float32)
        weights, mean = weights / weights.sum(), Xs.mean(axis=0, dtype=np.float64)
        if n_classes == 2:
            f, to_model, size = two_class_objective(Xs, y, weights, l2, mean)
        else:
            f, to_model, size = softmax_objective(Xs, y, weights, l2, n_classes, mean)
        if val and scaler:
            val = (_apply(scaler, val[0]), val[1])
        track = _Epochs(f, to_model, y, val, l2)
        result = minimize(track.fun, np.zeros(size), jac=True, method="L-BFGS-B",
                          callback=track.record, options={**LBFGS_OPTIONS,
                                                          "maxiter": int(self.params["epochs"])})
        dense.set_weights([a.astype(np.float32) for a in to_model(result.x)])
        if not track.history["loss"]:  # optimal at the start: no iteration ran
            track.record(result)
        self.history = track.history
        self.converged = bool(result.status != 1)  # 1: the iteration limit; 2: at float precision
        self.stop_reason = str(result.message)
        self.best_epoch = len(self.history["loss"])

    def _fit_adam(self, X, y, n_classes, val) -> None:
        """The tutorial's training: Adam, mini-batches, early stopping on val loss (best restored)."""
        import keras

        p = self.params
        steps = -(-len(X) // int(p["batch_size"]))
        self.model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(p["lr"])),
                           loss="categorical_crossentropy", metrics=["accuracy"],
                           steps_per_execution=steps)  # one compiled call per epoch
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(p["patience"]),
                                                   restore_best_weights=True)] if val else []
        hist = self.model.fit(
            X, keras.utils.to_categorical(y, n_classes), epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]), shuffle=True, verbose=0, callbacks=callbacks,
            validation_data=(val[0], keras.utils.to_categorical(val[1], n_classes)) if val else None,
            class_weight=_class_weights(y, n_classes, p["class_weight"]),
        )
        self.history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
        runs = len(self.history["loss"])
        if val:
            self.best_epoch = int(np.argmin(self.history["val_loss"])) + 1
        self.converged = runs < int(p["epochs"]) if val else None
        self.stop_reason = ("early stopping on val loss" if self.converged else
                            f"used every epoch (best val loss at epoch {self.best_epoch})" if val
                            else "fixed epochs, no validation part")


def _apply(model, X: np.ndarray, rows: int = 8192) -> np.ndarray:
    """A Keras model's output on ``X`` as float32 numpy, in blocks of ``rows``."""
    from keras import ops

    return np.concatenate([ops.convert_to_numpy(model(X[i:i + rows]))
                           for i in range(0, max(len(X), 1), rows)]).astype(np.float32)


class CnnHead(KerasHead):
    """The from-scratch CNN of :mod:`featx.baseline`: decoded RGB pixels (0..255) in."""

    name = "cnn"
    input = "pixels"

    @property
    def predict_batch_size(self) -> int:  # type: ignore[override]
        return int(self.params.get("batch_size", 32))


class FinetuneHead(KerasHead):
    """VGG16's block5 fine-tuned with a new softmax head (:mod:`featx.finetune`): flattened
    block4_pool maps in, as the store holds them. Maps are rounded to the store's dtype first
    (``params["store_dtype"]``), so new photos reach the model exactly as the training maps did."""

    name = "finetune"
    predict_batch_size = 32  # a map is 100,352 values: 1,024 of them would take 400 MB at once

    def _maps(self, X) -> np.ndarray:
        dtype = np.dtype(self.params.get("store_dtype", "float32"))
        return np.asarray(X).astype(dtype).astype(np.float32)

    def predict_proba(self, X):
        return super().predict_proba(self._maps(X))

    def predict_embedded(self, X):
        """(class probabilities, pooled vectors after block5): one pass of the model."""
        self._check_fitted()
        proba, pooled = self.with_pooled().predict(self._maps(X), batch_size=self.predict_batch_size,
                                                   verbose=0)
        return np.asarray(proba, dtype=np.float64), np.asarray(pooled, dtype=np.float32)

    def with_pooled(self):
        """The model with a second output: the pooled vector before the head (its embedding)."""
        if getattr(self, "_with_pooled", None) is None:
            self._with_pooled = with_pooled(self.model)
        return self._with_pooled


def with_pooled(model, layer: str = "avg_pool"):
    """``model`` with two outputs: its own and ``layer``'s (shared weights)."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(layer).output])
