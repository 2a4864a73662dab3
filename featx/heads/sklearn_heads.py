"""heads.sklearn_heads: logreg, svm and linear-svm, scikit-learn Pipelines (scaling, then the
classifier; both SVMs with Platt-scaled probabilities), saved with joblib."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from featx.errors import FeatxError
from featx.heads.base import Head

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

    def __sklearn_clone__(self) -> "SklearnHead":
        return SklearnHead(self.name, dict(self.params))

    def softmax_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel (D, K), bias (K,)) of a Dense softmax layer on the raw vectors that gives this
        logreg head's probabilities (its centring folded into the bias; two classes: the sigmoid
        as a softmax of two opposite halves); a class absent from training gets bias -1000."""
        self._check_fitted()
        if self.name != "logreg" or self.params["scale"] != "none":
            raise FeatxError("softmax_weights needs a logreg head with `scale`=none")
        lr = self.pipeline[-1]
        center = self.pipeline.named_steps.get("center")
        mean = center.mean_ if center is not None else np.zeros(lr.coef_.shape[1])
        coef, intercept = lr.coef_, lr.intercept_ - lr.coef_ @ mean
        k = int(self.n_classes or len(self.classes_))
        kernel = np.zeros((coef.shape[1], k), np.float32)
        bias = np.zeros(k, np.float32)
        if len(self.classes_) == 2:  # one decision function z: softmax([-z/2, z/2]) = sigmoid(z)
            a, b = self.classes_
            kernel[:, a], kernel[:, b] = -coef[0] / 2, coef[0] / 2
            bias[a], bias[b] = -intercept[0] / 2, intercept[0] / 2
        else:
            kernel[:, self.classes_] = coef.T
            bias[self.classes_] = intercept
        bias[np.setdiff1d(np.arange(k), self.classes_)] = -1e3
        return kernel, bias

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
