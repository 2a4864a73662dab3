"""metrics: classification metrics from labels and predictions, computed in one place.

Like scikit-learn's ``confusion_matrix(y_true, y_pred)``: every consumer (``fit``, ``sweep``, the
baseline, ``report``, ``audit``) passes true and predicted labels, never a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predicted ones."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, Any] | None:
    """accuracy, per-class precision / recall / support and the confusion matrix; None if empty."""
    if len(y_true) == 0:
        return None
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n_classes), where=actual > 0)
    return {"accuracy": float(tp.sum() / cm.sum()), "precision": precision.round(6).tolist(),
            "recall": recall.round(6).tolist(), "support": actual.tolist(),
            "confusion": cm.tolist()}
