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


SMALL_TEST = 100  # below this many images, an accuracy comes with a plain warning


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval of a proportion (95% for ``z`` = 1.96): unlike the normal
    approximation, it does not shrink to a point at 0 or 1 correct (12 of 12 -> 0.76 to 1)."""
    if n == 0:
        return (0.0, 1.0)
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (round(float(max(0.0, centre - half)), 4), round(float(min(1.0, centre + half)), 4))


def accuracy_text(m: dict[str, Any] | None) -> str:
    """'0.9167 (95% CI 0.646-0.985, 12 images)': an accuracy as it is shown everywhere."""
    if not m:
        return "n/a (empty part)"
    if "accuracy_interval" not in m:  # metrics recorded before the interval was
        return f"{m['accuracy']:.4f}"
    lo, hi = m["accuracy_interval"]
    return f"{m['accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f}, {m['n']} images)"


def small_sample_note(part: str, m: dict[str, Any] | None) -> str | None:
    """A plain warning when an accuracy rests on fewer than :data:`SMALL_TEST` images."""
    if not m or m.get("n", SMALL_TEST) >= SMALL_TEST:
        return None
    lo, hi = m["accuracy_interval"]
    return (f"the {part} part has only {m['n']} images: its accuracy {m['accuracy']:.3f} is "
            f"anywhere from {lo:.3f} to {hi:.3f} (95% Wilson interval); one image is "
            f"{100 / m['n']:.1f} points")


def log_loss(y_true, proba: np.ndarray) -> float:
    """Mean negative log probability of the true class (clipped at 1e-15)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    p = np.clip(np.asarray(proba, dtype=np.float64)[np.arange(len(y_true)), y_true], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(y_true, proba: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between the top probability and the accuracy, over
    ``bins`` equal-width confidence bins (Guo et al. 2017)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    right = pred == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(conf[inside].mean() - right[inside].mean())
    return float(gap)


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, Any] | None:
    """accuracy with its 95% Wilson interval, per-class precision / recall / support and the
    confusion matrix; None if empty."""
    if len(y_true) == 0:
        return None
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n_classes), where=actual > 0)
    n = int(cm.sum())
    return {"accuracy": float(tp.sum() / n), "n": n,
            "accuracy_interval": list(wilson_interval(int(tp.sum()), n)),
            "precision": precision.round(6).tolist(),
            "recall": recall.round(6).tolist(), "support": actual.tolist(),
            "confusion": cm.tolist()}


class ScoredResult:
    """What a trained head's result shares (``featx fit``'s and ``featx baseline``'s): the
    ``val`` / ``test`` metrics, the ``split`` summary and ``fit_seconds``; ``summary()`` is its JSON."""

    @property
    def metrics(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "fit_seconds": round(self.fit_seconds, 4)}

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON: :meth:`summary`."""
        return self.summary()

    def scores(self) -> dict[str, Any]:
        """The accuracies, part sizes and fit time: the keys both summaries start with."""
        return {"val_accuracy": self.val["accuracy"] if self.val else None,
                "test_accuracy": self.test["accuracy"] if self.test else None,
                "n_train": self.split["n_train"], "n_val": self.split["n_val"],
                "n_test": self.split["n_test"], "fit_seconds": round(self.fit_seconds, 4)}
