"""heads.softmax_math: the softmax head's objective (logistic regression's, for the same ``C``) and
its gradient in numpy, for SciPy's L-BFGS-B, and the Keras-style history of a run."""

from __future__ import annotations

import numpy as np

# LogisticRegression's lbfgs settings (tol 1e-4), so that both stop at the same point
LBFGS_OPTIONS = {"gtol": 1e-4, "maxls": 50, "ftol": 64 * np.finfo(float).eps}


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
