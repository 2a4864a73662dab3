"""heads: light classifiers on cached feature vectors, behind one small interface.

=============  ====================================================================================
``logreg``     scikit-learn LogisticRegression (lbfgs, multinomial)
``svm``        SVC (RBF kernel)
``linear-svm`` LinearSVC
``softmax``    a Keras softmax head (Dense softmax; Adam, categorical cross-entropy),
               the tutorial's head, with early stopping on validation loss; ``history`` is kept
``cnn``        the from-scratch CNN of :mod:`featx.baseline` (pixels in, not vectors); trained
               there, loaded and used here like the others
``finetune``   VGG16's block5 + a softmax head on cached block4_pool maps (:mod:`featx.finetune`);
               trained there, loaded and used here like the others
=============  ====================================================================================

``scale``: ``"none"`` (default) or ``"standard"`` (StandardScaler, or a Keras Normalization layer,
fitted on the training part). On VGG16 block5_pool/avg vectors standardising *lowered* validation
accuracy for every sklearn head (pets-dev 300: 0.91-0.94 vs 0.98; flowers5 200: 0.63-0.73 vs
0.67-0.77), so it is off by default for them; the softmax head keeps it on (Adam at lr 1e-3
converges faster on standardised inputs: pets-dev val 0.91 vs 0.89 after 50 epochs).
``featx sweep --scale none,standard`` tries both.

Probabilities of both SVMs: Platt scaling by scikit-learn's CalibratedClassifierCV
(``method="sigmoid"``, ``ensemble=False``): a sigmoid (one-vs-rest per class, renormalised) is fitted
on 3-fold out-of-fold decision values and the SVM itself is refitted on the whole training part; the
same as libsvm's ``probability=True``, which scikit-learn 1.9 deprecates. Predicted labels are the
argmax of these probabilities.

Every head follows scikit-learn's conventions (``fit`` returns self, ``predict_proba`` gives one
column per class in label order) and adds ``save``/``load`` to a directory. ``C`` means the same for
all: the inverse L2 strength per training set (the softmax head uses ``l2 = 1 / (2 C n_train)``,
the penalty of LogisticRegression's objective; ``C=None`` there means no penalty, as in the tutorial).
The core uses keras / numpy only (no direct TensorFlow imports), so any Keras backend works.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featx.errors import FeatxError, NotFittedError

CLASSIFIERS = ("logreg", "svm", "linear-svm", "softmax")  # heads on vectors: fit, sweep, audit

# The parameters each head accepts, with defaults (a sweep only varies the ones a head accepts).
DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 1000, "seed": 0},
    "svm": {"C": 1.0, "class_weight": None, "scale": "none", "gamma": "scale", "seed": 0},
    "linear-svm": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 2000, "seed": 0},
    "softmax": {"C": None, "class_weight": None, "scale": "standard", "epochs": 50, "lr": 1e-3,
                "batch_size": 256, "patience": 5, "seed": 0},
}


def check_clf(name: str) -> str:
    """Validate a classifier name; a FeatxError listing the known ones otherwise."""
    if name not in CLASSIFIERS:
        raise FeatxError(f"unknown classifier {name!r} (`clf`); choose one of {', '.join(CLASSIFIERS)}")
    return name


def head_params(clf: str, **params: Any) -> dict[str, Any]:
    """The full parameter dict for ``clf``: defaults updated with the given (non-None) values that
    the head accepts; unknown keys are ignored so one option set can serve several heads."""
    out = dict(DEFAULTS[check_clf(clf)])
    out.update({k: v for k, v in params.items() if k in out and v is not None})
    if out.get("class_weight") in ("none", "None"):
        out["class_weight"] = None
    if out.get("class_weight") not in (None, "balanced"):
        raise FeatxError(f"`class_weight` is 'none' or 'balanced', got {out['class_weight']!r}")
    if out.get("scale") not in ("none", "standard"):
        raise FeatxError(f"`scale` is 'none' or 'standard', got {out['scale']!r}")
    if out.get("C") is not None and not float(out["C"]) > 0:
        raise FeatxError(f"`C` must be positive, got {out['C']}")
    return out


def make_head(clf: str, **params: Any) -> "Head":
    """A new, unfitted head: ``make_head("logreg", C=0.1)``."""
    p = head_params(clf, **params)
    return SoftmaxHead(p) if clf == "softmax" else SklearnHead(clf, p)


def load_head(clf: str, directory: str | Path, params: dict[str, Any]) -> "Head":
    """A fitted head saved by :meth:`Head.save` in ``directory`` (any head, ``cnn`` included)."""
    cls = HEADS.get(clf)
    if cls is None:
        raise FeatxError(f"unknown classifier {clf!r} in {directory}")
    path = Path(directory) / cls.model_file
    if not path.is_file():
        raise FeatxError(f"bundle {directory} lacks its model file {cls.model_file}")
    return cls.load(Path(directory), clf, params)


class Head:
    """The common interface: fit, class probabilities, save/load, params, history.

    ``input`` says what the head takes: ``"vectors"`` (a store's embeddings) or ``"pixels"``
    (decoded RGB images, the scratch CNN).
    """

    name: str
    params: dict[str, Any]
    input: ClassVar[str] = "vectors"
    history: dict[str, list[float]] | None = None
    n_features: int | None = None
    fit_seconds: float = 0.0
    model_file: ClassVar[str]

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, n_classes: int | None = None) -> "Head":
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, directory: Path) -> str:
        """Write the fitted model into ``directory``; returns the file name."""
        self._check_fitted()
        return self._save(Path(directory))

    def _save(self, directory: Path) -> str:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def fitted(self) -> bool:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"this {self.name} head is not fitted yet; call fit() first")


def _class_weights(y: np.ndarray, n_classes: int, mode: str | None) -> dict[int, float] | None:
    if mode != "balanced":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    w = np.ones(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return {i: float(v) for i, v in enumerate(w)}


class SklearnHead(Head):
    """logreg, svm, linear-svm: a scikit-learn Pipeline (scaler or passthrough, then the
    classifier), saved with joblib."""

    model_file = "model.joblib"

    def __init__(self, clf: str, params: dict[str, Any], pipeline=None) -> None:
        self.name, self.params, self.pipeline = clf, params, pipeline
        self.classes_: np.ndarray | None = None
        self.n_classes: int | None = None

    def _build(self, min_count: int = 3):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC, LinearSVC

        p = self.params
        if self.name == "logreg":
            clf = LogisticRegression(C=p["C"], class_weight=p["class_weight"],
                                     max_iter=p["max_iter"], random_state=p["seed"])
        else:
            if self.name == "svm":
                svm = SVC(C=p["C"], kernel="rbf", gamma=p["gamma"],
                          class_weight=p["class_weight"], random_state=p["seed"])
            else:
                svm = LinearSVC(C=p["C"], class_weight=p["class_weight"], max_iter=p["max_iter"],
                                random_state=p["seed"])
            # Platt scaling on out-of-fold decision values; fewer folds when a class is tiny
            folds = int(max(2, min(3, min_count)))
            clf = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
        return make_pipeline(StandardScaler() if p["scale"] == "standard" else "passthrough", clf)

    def fit(self, X, y, X_val=None, y_val=None, n_classes=None):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        y = np.asarray(y)
        self.n_classes = int(n_classes or (y.max() + 1))
        self.n_features = int(X.shape[1])
        counts = np.bincount(y)
        min_count = int(counts[counts > 0].min())
        if self.name != "logreg" and min_count < 2:
            raise FeatxError(f"{self.name} needs at least two training vectors of every class "
                             f"(for its probability calibration)")
        self.pipeline = self._build(min_count)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.pipeline.fit(X, y)
        self.fit_seconds = time.perf_counter() - start
        self.classes_ = self.pipeline.classes_
        return self

    @property
    def fitted(self) -> bool:
        return self.pipeline is not None and self.classes_ is not None

    def predict_proba(self, X):
        self._check_fitted()
        proba = self.pipeline.predict_proba(X)
        if self.n_classes is None or proba.shape[1] == self.n_classes:
            return proba
        full = np.zeros((len(X), self.n_classes), dtype=proba.dtype)  # a class absent from train
        full[:, self.classes_] = proba
        return full

    def _save(self, directory):
        import joblib

        joblib.dump({"pipeline": self.pipeline, "n_classes": self.n_classes,
                     "n_features": self.n_features}, Path(directory) / self.model_file)
        return self.model_file

    @classmethod
    def load(cls, directory: Path, clf: str, params: dict[str, Any]) -> "SklearnHead":
        import joblib

        saved = joblib.load(directory / cls.model_file)
        head = cls(clf, params, saved["pipeline"])
        head.n_classes, head.n_features = saved["n_classes"], saved["n_features"]
        head.classes_ = head.pipeline.classes_
        return head


class KerasHead(Head):
    """A head that is a Keras model, saved as ``model.keras`` (softmax head, scratch CNN)."""

    model_file = "model.keras"
    predict_batch_size: ClassVar[int] = 1024

    def __init__(self, params: dict[str, Any], model=None, history: dict | None = None) -> None:
        self.params, self.model, self.history = params, model, history

    @property
    def fitted(self) -> bool:
        return self.model is not None

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


class SoftmaxHead(KerasHead):
    """The tutorial's head: Dense(n_classes, softmax), Adam, categorical cross-entropy.

    A Normalization layer (train mean and variance) goes first with ``scale="standard"``; early
    stopping watches the validation loss and restores the best weights. ``history`` holds loss,
    accuracy, val_loss and val_accuracy per epoch (JSON-ready lists of floats).
    """

    name = "softmax"

    def __init__(self, params: dict[str, Any], model=None, history: dict | None = None) -> None:
        super().__init__(params, model, history)
        self.best_epoch: int | None = None

    def _build(self, X: np.ndarray, n_classes: int):
        import keras

        p = self.params
        inputs = keras.Input(shape=(X.shape[1],), name="features")
        x = inputs
        if p["scale"] == "standard":
            mean = X.mean(axis=0, dtype=np.float64)
            var = X.var(axis=0, dtype=np.float64)
            x = keras.layers.Normalization(mean=mean.astype(np.float32),
                                           variance=np.maximum(var, 1e-12).astype(np.float32),
                                           name="standardize")(x)
        reg = keras.regularizers.L2(1.0 / (2.0 * float(p["C"]) * len(X))) if p["C"] else None
        outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=reg,
                                     name="softmax")(x)
        model = keras.Model(inputs, outputs, name="featx_softmax_head")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(p["lr"])),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, X, y, X_val=None, y_val=None, n_classes=None):
        import keras

        p = self.params
        y = np.asarray(y)
        n_classes = int(n_classes or (y.max() + 1))
        self.n_features = int(X.shape[1])
        keras.utils.set_random_seed(int(p["seed"]))
        self.model = self._build(X, n_classes)
        has_val = X_val is not None and len(X_val) > 0
        callbacks = []
        if has_val:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(p["patience"]), restore_best_weights=True))
        start = time.perf_counter()
        hist = self.model.fit(
            X, keras.utils.to_categorical(y, n_classes), epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]), shuffle=True, verbose=0, callbacks=callbacks,
            validation_data=(X_val, keras.utils.to_categorical(y_val, n_classes)) if has_val else None,
            class_weight=_class_weights(y, n_classes, p["class_weight"]),
        )
        self.fit_seconds = time.perf_counter() - start
        self.history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
        if has_val and self.history.get("val_loss"):
            self.best_epoch = int(np.argmin(self.history["val_loss"])) + 1
        return self


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

    def predict_proba(self, X):
        dtype = np.dtype(self.params.get("store_dtype", "float32"))
        return super().predict_proba(np.asarray(X).astype(dtype).astype(np.float32))


HEADS: dict[str, type[Head]] = {"logreg": SklearnHead, "svm": SklearnHead,
                                "linear-svm": SklearnHead, "softmax": SoftmaxHead, "cnn": CnnHead,
                                "finetune": FinetuneHead}
