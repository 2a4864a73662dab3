"""heads.base: the interface every head shares, following scikit-learn's estimator conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featx.errors import FeatxError, NotFittedError


class Head:
    """The common interface: fit, class probabilities, save/load, params, history.

    scikit-learn's estimator conventions: ``fit(X, y)`` returns the head, ``get_params`` /
    ``set_params`` (checked by :func:`featx.heads.params.head_params`), ``sklearn.base.clone``
    gives an unfitted head with the same parameters, ``score`` is the accuracy, and the fitted
    attributes end in an underscore (``classes_``, ``n_features_in_``, ``n_iter_``); so a head
    goes into ``cross_validate`` or ``GridSearchCV`` as it is. ``input`` says what the head takes:
    ``"vectors"`` (a store's embeddings) or ``"pixels"`` (decoded RGB images, the scratch CNN).
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

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The head's parameters (every key of its defaults)."""
        return dict(self.params)

    def set_params(self, **params: Any) -> "Head":
        """Change parameters (checked; an unknown name is a FeatxError); returns the head."""
        from featx.heads.params import head_params

        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise FeatxError(f"{self.name} takes no parameter {', '.join(unknown)} (it takes "
                             f"{', '.join(self.params)})")
        self.params = head_params(self.name, **{**self.params, **params})
        return self

    def __sklearn_clone__(self) -> "Head":
        """An unfitted head of the same kind with the same parameters (``sklearn.base.clone``)."""
        raise NotImplementedError

    def __sklearn_tags__(self):
        from sklearn.base import BaseEstimator, ClassifierMixin

        class _Classifier(ClassifierMixin, BaseEstimator):
            pass

        return _Classifier().__sklearn_tags__()

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``(X, y)`` (scikit-learn's default score of a classifier)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    @property
    def n_features_in_(self) -> int:
        self._check_fitted()
        return int(self.n_features)  # type: ignore[arg-type]

    @property
    def n_iter_(self) -> int | None:
        self._check_fitted()
        return self.n_iter

    @property
    def fitted(self) -> bool:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"this {self.name} head is not fitted yet; call fit() first")
