"""heads: light classifiers on cached feature vectors, behind one small interface.

=============  ====================================================================================
``logreg``     scikit-learn LogisticRegression (lbfgs, multinomial)
``svm``        SVC (RBF kernel)
``linear-svm`` LinearSVC
``softmax``    a Keras softmax head (Dense softmax, categorical cross-entropy), the tutorial's
               model, trained full-batch by L-BFGS (default) or by the tutorial's Adam
``cnn``        the from-scratch CNN of :mod:`featx.baseline` (pixels in, not vectors); trained
               there, loaded and used here like the others
``finetune``   VGG16's block5 + a softmax head on cached block4_pool maps (:mod:`featx.finetune`);
               trained there, loaded and used here like the others
=============  ====================================================================================

``scale`` (every head on vectors): ``"none"``, ``"l2"`` (each row divided by its L2 norm),
``"standard"`` (per-feature mean and variance of the training part) or ``"l2+standard"`` (both, in
that order). In the sklearn heads it is the Pipeline's first step(s) (Normalizer, StandardScaler);
in the softmax head, Keras layers before the Dense one (UnitNormalization, Normalization), so a saved
head applies it to new vectors exactly as it did in training. ``featx fit`` picks ``scale`` and
``C`` by cross-validation when they are not given (:mod:`featx.sweep`).

``C`` means the same for every head: the inverse L2 strength of LogisticRegression's objective,
``mean loss + ||W||^2 / (2 C n)`` (``n``: the sum of the sample weights). The softmax head minimises
exactly that (weighted mean cross-entropy + the Dense kernel's L2 penalty ``1 / (2 C n)``, doubled for
two classes, where LogisticRegression fits one weight vector and softmax two opposite halves of it),
so with the same ``C`` and ``scale`` both fit the same decision function. Its default solver,
``"lbfgs"``, minimises that objective over the whole training part with SciPy's L-BFGS-B and
LogisticRegression's stopping rule (``tol`` 1e-4); each iteration is one full-batch step, counted
as an epoch, ``epochs`` caps them (1000) and ``history`` holds loss, accuracy, val_loss and
val_accuracy per epoch. ``solver="adam"`` is the tutorial's training: mini-batches, Adam, early
stopping on validation loss with the best weights restored. ``converged`` says whether a run
stopped by itself or used up its budget.

Probabilities of both SVMs: Platt scaling by scikit-learn's CalibratedClassifierCV
(``method="sigmoid"``, ``ensemble=False``): a sigmoid (one-vs-rest per class, renormalised) is fitted
on 3-fold out-of-fold decision values and the SVM itself is refitted on the whole training part; the
same as libsvm's ``probability=True``, which scikit-learn 1.9 deprecates. Predicted labels are the
argmax of these probabilities.

Every head follows scikit-learn's conventions (``fit`` returns self, ``predict_proba`` gives one
column per class in label order) and adds ``save``/``load`` to a directory. The core uses keras,
numpy and scipy only (no direct TensorFlow imports), so any Keras backend works.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featx.errors import FeatxError, NotFittedError

CLASSIFIERS = ("logreg", "svm", "linear-svm", "softmax")  # heads on vectors: fit, sweep, audit
SCALES = ("none", "l2", "standard", "l2+standard")
SOLVERS = ("lbfgs", "adam")
SOLVER_EPOCHS = {"lbfgs": 1000, "adam": 100}  # the softmax head's default budget per solver
# LogisticRegression's lbfgs settings (tol 1e-4), so that both stop at the same point
LBFGS_OPTIONS = {"gtol": 1e-4, "maxls": 50, "ftol": 64 * np.finfo(float).eps}

# The parameters each head accepts, with defaults (a sweep only varies the ones a head accepts).
DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 1000, "seed": 0},
    "svm": {"C": 1.0, "class_weight": None, "scale": "none", "gamma": "scale", "seed": 0},
    "linear-svm": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 2000, "seed": 0},
    "softmax": {"C": 1.0, "class_weight": None, "scale": "none", "solver": "lbfgs",
                "epochs": None, "lr": 1e-2, "batch_size": 256, "patience": 10, "seed": 0},
}


def check_clf(name: str) -> str:
    """Validate a classifier name; a FeatxError listing the known ones otherwise."""
    if name not in CLASSIFIERS:
        raise FeatxError(f"unknown classifier {name!r} (`clf`); choose one of {', '.join(CLASSIFIERS)}")
    return name


def _check_choice(params: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if key in params and params[key] not in choices:
        raise FeatxError(f"`{key}` is one of {', '.join(choices)}, got {params[key]!r}")


def head_params(clf: str, **params: Any) -> dict[str, Any]:
    """The full parameter dict for ``clf``: defaults updated with the given (non-None) values that
    the head accepts; unknown keys are ignored so one option set can serve several heads."""
    out = dict(DEFAULTS[check_clf(clf)])
    out.update({k: v for k, v in params.items() if k in out and v is not None})
    if out.get("class_weight") in ("none", "None"):
        out["class_weight"] = None
    if out.get("class_weight") not in (None, "balanced"):
        raise FeatxError(f"`class_weight` is 'none' or 'balanced', got {out['class_weight']!r}")
    _check_choice(out, "scale", SCALES)
    _check_choice(out, "solver", SOLVERS)
    if out.get("C") is not None and not float(out["C"]) > 0:
        raise FeatxError(f"`C` must be positive, got {out['C']}")
    if clf == "softmax" and out["epochs"] is None:
        out["epochs"] = SOLVER_EPOCHS[out["solver"]]
    for key in ("epochs", "batch_size", "max_iter"):
        if key in out and int(out[key]) < 1:
            raise FeatxError(f"`{key}` must be at least 1, got {out[key]}")
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
    n_iter: int | None = None  # iterations or epochs the last fit ran (None: not iterative)
    converged: bool | None = None  # False: the fit used up its iteration / epoch budget
    model_file: ClassVar[str]

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, n_classes: int | None = None) -> "Head":
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def predict_embedded(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, the embedding the unfamiliarity score reads: the input vectors
        themselves, or what the model makes of them, :class:`FinetuneHead`)."""
        return self.predict_proba(X), np.asarray(X)

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


def _sklearn_steps(scale: str, clf: str) -> list[tuple[str, Any]]:
    """The Pipeline steps before the classifier: ``l2`` and ``standard`` per ``scale`` (see the
    module docstring); for logreg, a ``center`` step when the rows are not standardised. Its
    intercept is not penalised, so centring changes neither the objective's optimum nor the
    predictions, and lbfgs needs several times fewer iterations on non-negative features."""
    from sklearn.preprocessing import Normalizer, StandardScaler

    steps: list[tuple[str, Any]] = []
    if scale.startswith("l2"):
        steps.append(("l2", Normalizer(norm="l2")))
    if scale.endswith("standard"):
        steps.append(("standard", StandardScaler()))
    elif clf == "logreg":
        steps.append(("center", StandardScaler(with_std=False)))
    return steps or [("scale", "passthrough")]


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
        from sklearn.pipeline import Pipeline
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
        return Pipeline([*_sklearn_steps(p["scale"], self.name), ("clf", clf)])

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
        final = self.pipeline[-1]
        if hasattr(final, "n_iter_"):  # LogisticRegression
            self.n_iter = int(np.max(final.n_iter_))
            self.converged = self.n_iter < int(self.params["max_iter"])
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


def _sample_weights(y: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray:
    """Per-row weights (class weights looked up by label), as LogisticRegression applies them."""
    cw = _class_weights(y, n_classes, mode)
    return np.ones(len(y)) if cw is None else np.array([cw[int(c)] for c in y])


def l2_strength(C: float | None, weight_sum: float, n_classes: int) -> float:
    """The Dense kernel's L2 factor that makes the softmax head's objective LogisticRegression's
    for ``C``: ``1 / (2 C n)``, doubled for two classes (see the module docstring); 0 for None."""
    if not C:
        return 0.0
    return (2.0 if n_classes == 2 else 1.0) / (2.0 * float(C) * weight_sum)


def softmax_objective(X: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float,
                      n_classes: int, mean: np.ndarray | None = None):
    """``(f, to_model, size)`` for a Dense softmax layer: ``f(theta) -> (loss, gradient, logits)``
    is the weighted mean categorical cross-entropy of labels ``y`` (``weights`` sum to 1) plus
    ``l2 * ||W||^2``; ``to_model(theta) -> (W, b)`` gives the layer's weights.

    ``theta = [W.ravel(), c]`` with the bias ``b = c - mean @ W``: the rows are centred on ``mean``
    (inside the products, without a copy), which leaves the model and the optimum as they are (the
    bias is not penalised) and conditions the problem far better for L-BFGS on non-negative
    features. Matrix products in float32 (the vectors' type), the rest in float64.
    """
    d, k, rows = X.shape[1], n_classes, np.arange(len(y))
    mu = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64)

    def to_model(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = theta[:d * k].reshape(d, k)
        return W, theta[d * k:] - mu @ W

    def f(theta: np.ndarray):
        W, b = to_model(theta)
        logits = (X @ W.astype(np.float32)).astype(np.float64) + b
        logits -= logits.max(axis=1, keepdims=True)
        P = np.exp(logits)
        total = P.sum(axis=1)
        P /= total[:, None]
        loss = -weights @ (logits[rows, y] - np.log(total)) + l2 * float(np.sum(np.square(W)))
        P[rows, y] -= 1.0  # the gradient of the cross-entropy in the logits: P - Y
        P *= weights[:, None]
        grad_c = P.sum(axis=0)
        grad_W = ((X.T @ P.astype(np.float32)).astype(np.float64) - np.outer(mu, grad_c)
                  + 2.0 * l2 * W)
        return loss, np.concatenate([grad_W.ravel(), grad_c]), logits

    return f, to_model, d * k + k


def two_class_objective(X: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float,
                        mean: np.ndarray | None = None):
    """:func:`softmax_objective` for two classes over one weight vector and bias ``[w, c]``,
    with ``W = [-w, w] / 2`` and ``b = [-c', c'] / 2`` (``c' = c - mean @ w``).

    The cross-entropy depends on the difference of ``W``'s columns only, and the L2 penalty is
    least for opposite columns, so the full objective's optimum is of this form: this reaches it
    with half the variables, matrix-vector products only, and without the full one's flat
    direction. It is LogisticRegression's two-class objective, ``l2 ||W||^2 = l2 ||w||^2 / 2``.
    """
    from scipy.special import expit

    d, s, sign = X.shape[1], np.array([-0.5, 0.5]), 2.0 * y - 1.0
    mu = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64)

    def to_model(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.outer(theta[:d], s), (theta[d] - mu @ theta[:d]) * s

    def f(theta: np.ndarray):
        w = theta[:d]
        z = (X @ w.astype(np.float32)).astype(np.float64) + (theta[d] - mu @ w)
        loss = weights @ np.logaddexp(0.0, -sign * z) + 0.5 * l2 * float(w @ w)
        r = weights * (expit(z) - y)
        grad_w = (X.T @ r.astype(np.float32)).astype(np.float64) - mu * r.sum() + l2 * w
        return loss, np.append(grad_w, r.sum()), np.outer(z, s)

    return f, to_model, d + 1


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


class _Epochs:
    """The objective for SciPy, and the Keras-style history of an L-BFGS run: loss, accuracy,
    val_loss and val_accuracy after each iteration (train accuracy from the last evaluation)."""

    def __init__(self, f, to_model, y: np.ndarray, val: tuple | None, l2: float) -> None:
        self.f, self.to_model, self.y, self.val, self.l2 = f, to_model, y, val, l2
        self.last: tuple[np.ndarray, np.ndarray] | None = None  # (theta, logits)
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        self.history: dict[str, list[float]] = {k: [] for k in keys[:4 if val else 2]}

    def fun(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad, logits = self.f(theta)
        self.last = (theta.copy(), logits)
        return loss, grad

    def record(self, intermediate_result) -> None:
        """SciPy's callback (any result with ``x`` and ``fun``): one epoch of history."""
        theta, h = intermediate_result.x, self.history
        same = self.last is not None and np.array_equal(theta, self.last[0])
        logits = self.last[1] if same else self.f(theta)[2]
        h["loss"].append(float(intermediate_result.fun))
        h["accuracy"].append(float(np.mean(logits.argmax(1) == self.y)))
        if self.val:
            (Xv, yv), (W, b) = self.val, self.to_model(theta)
            logp = _log_softmax(Xv @ W.astype(np.float32) + b)
            penalty = self.l2 * float(np.sum(np.square(W)))
            h["val_loss"].append(float(-np.mean(logp[np.arange(len(yv)), yv]) + penalty))
            h["val_accuracy"].append(float(np.mean(logp.argmax(1) == yv)))


def _apply(model, X: np.ndarray, rows: int = 8192) -> np.ndarray:
    """A Keras model's output on ``X`` as float32 numpy, in blocks of ``rows``."""
    from keras import ops

    return np.concatenate([ops.convert_to_numpy(model(X[i:i + rows]))
                           for i in range(0, max(len(X), 1), rows)]).astype(np.float32)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(np.asarray(logits, dtype=np.float64), axis=1)


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


HEADS: dict[str, type[Head]] = {"logreg": SklearnHead, "svm": SklearnHead,
                                "linear-svm": SklearnHead, "softmax": SoftmaxHead, "cnn": CnnHead,
                                "finetune": FinetuneHead}
