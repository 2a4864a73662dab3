"""fit: train one head on a store's cached vectors with the derived split, and evaluate it.

The split comes from :func:`featx.split.split_indices` (derived from the content hashes, so fit,
sweep and the from-scratch baseline all see the same parts). Metrics: accuracy, per-class
precision / recall and the confusion matrix on the validation and test parts; wall-clock fit time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.errors import FeatxError
from featx.heads import Head, make_head
from featx.split import DEFAULT_FRACTIONS, split_indices
from featx.store import Features, load_features


@dataclass
class Split:
    """A store's vectors cut into train / validation / test (rows from ``split_indices``)."""

    feats: Features
    rows: dict[str, np.ndarray]
    fractions: tuple[float, float, float]
    seed: int

    def X(self, part: str) -> np.ndarray:
        return self.feats.features[self.rows[part]]

    def y(self, part: str) -> np.ndarray:
        return self.feats.labels[self.rows[part]]

    def n(self, part: str) -> int:
        return len(self.rows[part])

    @property
    def info(self) -> dict[str, Any]:
        return {"method": "derived from content hashes (featx.split)",
                "fractions": list(self.fractions), "seed": self.seed,
                **{f"n_{p}": self.n(p) for p in ("train", "val", "test")}}


def load_split(store: str | os.PathLike, fractions=DEFAULT_FRACTIONS, seed: int = 0,
               need_val: bool = False) -> Split:
    """Load a store and split it; FeatxError when it cannot train a classifier."""
    feats = load_features(store)
    classes = np.unique(feats.labels)
    if len(feats.class_names) < 2 or len(classes) < 2:
        name = feats.class_names[0] if feats.class_names else "none"
        raise FeatxError(f"{store} holds one class ({name}); a classifier needs at least two")
    rows = split_indices(feats.hashes, feats.labels, fractions, seed)
    split = Split(feats, rows, tuple(fractions), seed)
    if len(np.unique(split.y("train"))) < 2:
        raise FeatxError(f"the training part of {store} has fewer than two classes "
                         f"({split.n('train')} rows); add images or change --split")
    if need_val and split.n("val") == 0:
        raise FeatxError(f"the validation part of {store} is empty; give it a share with --split")
    return split


def evaluate(head: Head, X: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any] | None:
    """accuracy, per-class precision / recall / support and the confusion matrix (rows: true)."""
    if len(y) == 0:
        return None
    pred = head.predict(X)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
    return {"accuracy": float(tp.sum() / len(y)), "precision": precision.round(6).tolist(),
            "recall": recall.round(6).tolist(), "support": cm.sum(1).tolist(),
            "confusion": cm.tolist()}


@dataclass
class FitResult:
    """A fitted head and its evaluation (see :func:`fit_store`)."""

    head: Head
    clf: str
    params: dict[str, Any]
    class_names: list[str]
    store: Path
    store_meta: dict
    split: dict[str, Any]
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    fit_seconds: float
    history: dict[str, list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "fit_seconds": round(self.fit_seconds, 4)}

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx fit --json``."""
        return {
            "clf": self.clf, "params": self.params, "store": str(self.store),
            "val_accuracy": self.val["accuracy"] if self.val else None,
            "test_accuracy": self.test["accuracy"] if self.test else None,
            "n_train": self.split["n_train"], "n_val": self.split["n_val"],
            "n_test": self.split["n_test"], "fit_seconds": round(self.fit_seconds, 4),
            "class_names": self.class_names, "split": self.split,
            "val": self.val, "test": self.test, **self.extra,
        }


def fit_split(split: Split, clf: str = "logreg", **params: Any) -> tuple[Head, float]:
    """Fit a new head on the train part (validation part for early stopping); (head, seconds)."""
    head = make_head(clf, **params)
    n_classes = len(split.feats.class_names)
    head.fit(split.X("train"), split.y("train"), split.X("val"), split.y("val"),
             n_classes=n_classes)
    return head, head.fit_seconds


def fit_store(store: str | os.PathLike, clf: str = "logreg", fractions=DEFAULT_FRACTIONS,
              split_seed: int = 0, split: Split | None = None, **params: Any) -> FitResult:
    """Fit ``clf`` on a store's train part and evaluate it on the validation and test parts."""
    make_head(clf, **params)  # validate the name and parameters before loading any data
    split = split or load_split(store, fractions, split_seed)
    head, seconds = fit_split(split, clf, **params)
    n_classes = len(split.feats.class_names)
    extra = {"best_epoch": head.best_epoch,
             "epochs_run": len(head.history["loss"])} if head.history else {}
    return FitResult(
        head=head, clf=clf, params=head.get_params(), class_names=list(split.feats.class_names),
        store=Path(store), store_meta=split.feats.meta, split=split.info,
        val=evaluate(head, split.X("val"), split.y("val"), n_classes),
        test=evaluate(head, split.X("test"), split.y("test"), n_classes),
        fit_seconds=seconds, history=head.history, extra=extra,
    )
