"""familiar: what a bundle's training photos look like in the embedding space, and how unlike
them a new photo is ("none of these").

A :class:`Record` is fitted on the train part's vectors (the bundle's embedding: the store's
vectors, or a fine-tuned model's pooled vectors) and calibrated on the validation part: its
``threshold`` is the validation scores' ``target`` quantile (0.95), so about 95% of photos like the
training ones pass and a photo scoring above it is *unfamiliar*. Higher scores are less familiar.

Detectors (``method``), each a pure function of one vector, numpy here and ``keras.ops`` in
:func:`keras_score` (so an exported model can carry the score as a second output):

=================  ==============================================================================
``knn``            1 - the cosine similarity of the k-th nearest of a bank of L2-normalised
                   training vectors (Sun et al. 2022, "Out-of-distribution detection with deep
                   nearest neighbors"); the bank is a seeded subsample of the train part, at most
                   ``bank_bytes`` of float16 (``bank``: (m, d))
``mahalanobis``    the least squared Mahalanobis distance to a class mean under one shared,
                   Ledoit-Wolf shrunk covariance of the within-class residuals (Lee et al. 2018),
                   on L2-normalised vectors with ``normalize``, in the top ``dims`` principal axes
                   (``whiten``: (d, r), ``means``: (C, r) already whitened)
``msp``, ``energy``  from the head's output, not the vector: 1 - the highest class probability
                   (Hendrycks & Gimpel 2017), -logsumexp of the logits (Liu et al. 2020); for the
                   comparison (:func:`msp_score`, :func:`energy_score`); a record does not hold them
=================  ==============================================================================

The record lives in the bundle: its description in ``bundle.json`` (``familiar``) and its arrays
in ``familiar.npz``; :func:`from_bundle` reads it back (None for bundles made before it existed).
An exported model can carry the score as a second output: :func:`keras_outputs` (for
``featx.export_model``'s ``extra_outputs``) or :func:`keras_score`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx.errors import FeatxError

METHODS = ("knn", "mahalanobis")  # what a record holds (a pure function of the vector)
DEFAULT_METHOD = "knn"  # measured: BENCHMARKS.md, "Photos unlike the training photos"
TARGET = 0.95  # the share of validation photos that pass
ARRAYS_FILE = "familiar.npz"
DEFAULTS: dict[str, dict[str, Any]] = {
    "knn": {"k": 10, "bank_bytes": 4 << 20, "seed": 0},
    "mahalanobis": {"normalize": True, "dims": None},
}
HIST_BINS = 30
EPS = 1e-12


def unit(X: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32)."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), EPS)


# --- detectors: fit (vectors -> arrays) and score (arrays, vectors -> scores) --------------------


def fit_knn(X: np.ndarray, y: np.ndarray, k: int = 10, bank_bytes: int = 4 << 20,
            seed: int = 0, bank: int | None = None) -> dict[str, np.ndarray]:
    """The bank: L2-normalised training vectors in float16, a seeded subsample of at most
    ``bank`` rows (default: as many as ``bank_bytes`` hold)."""
    X = np.asarray(X)
    rows = bank or max(k, int(bank_bytes) // (2 * X.shape[1]))
    if len(X) > rows:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), rows, replace=False))]
    return {"bank": unit(X).astype(np.float16)}


def score_knn(arrays: dict[str, np.ndarray], X: np.ndarray, k: int = 10, **_: Any) -> np.ndarray:
    bank = np.asarray(arrays["bank"], dtype=np.float32)
    k = min(int(k), len(bank))
    out = []
    for i in range(0, len(X), 4096):  # bounded memory: (rows, bank) similarities a block
        sim = unit(X[i:i + 4096]) @ bank.T
        out.append(1.0 - np.partition(sim, -k, axis=1)[:, -k])
    return np.concatenate(out) if out else np.empty(0, np.float32)


def fit_mahalanobis(X: np.ndarray, y: np.ndarray, normalize: bool = True,
                    dims: int | None = None) -> dict[str, np.ndarray]:
    """Class means and a whitening matrix of the shared (Ledoit-Wolf shrunk) covariance."""
    from sklearn.covariance import LedoitWolf

    Z = unit(X).astype(np.float64) if normalize else np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    means = np.stack([Z[y == c].mean(axis=0) for c in classes])
    resid = Z - means[np.searchsorted(classes, y)]
    cov = LedoitWolf(assume_centered=True).fit(resid).covariance_
    vals, vecs = np.linalg.eigh(cov)  # ascending
    keep = slice(None) if not dims else slice(-int(dims), None)
    whiten = vecs[:, keep] / np.sqrt(np.maximum(vals[keep], EPS))
    return {"whiten": whiten.astype(np.float32), "means": (means @ whiten).astype(np.float32)}


def score_mahalanobis(arrays: dict[str, np.ndarray], X: np.ndarray, normalize: bool = True,
                      **_: Any) -> np.ndarray:
    Z = (unit(X) if normalize else np.asarray(X, dtype=np.float32)) @ arrays["whiten"]
    m = arrays["means"]
    d2 = (Z * Z).sum(1, keepdims=True) - 2 * Z @ m.T + (m * m).sum(1)
    return d2.min(axis=1)


FIT: dict[str, Callable[..., dict[str, np.ndarray]]] = {"knn": fit_knn,
                                                        "mahalanobis": fit_mahalanobis}
SCORE: dict[str, Callable[..., np.ndarray]] = {"knn": score_knn,
                                               "mahalanobis": score_mahalanobis}


def msp_score(proba: np.ndarray) -> np.ndarray:
    """1 - the highest class probability (the baseline: a confident head looks familiar)."""
    return 1.0 - np.asarray(proba).max(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the logits: the free energy (higher: less familiar)."""
    from scipy.special import logsumexp

    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def head_logits(head, X: np.ndarray) -> np.ndarray:
    """The logits of a logreg or softmax head (two-class logreg: ``[-z/2, z/2]``, the softmax
    form :mod:`featx.heads` uses); FeatxError for other heads."""
    if getattr(head, "name", None) == "logreg":
        z = head.pipeline.decision_function(X)
        return np.stack([-z / 2, z / 2], axis=1) if z.ndim == 1 else z
    if getattr(head, "name", None) == "softmax":
        import keras

        dense = head.model.get_layer("softmax")
        pre = keras.Model(head.model.inputs, dense.input)
        W, b = dense.get_weights()
        return np.asarray(pre(np.asarray(X, np.float32))) @ W + b
    raise FeatxError(f"the energy score needs a logreg or softmax head, not {head.name}")


# --- the record ---------------------------------------------------------------------------------


@dataclass
class Record:
    """A fitted detector, its calibration and its arrays (see the module docstring)."""

    method: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    threshold: float = float("inf")
    calibration: dict[str, Any] = field(default_factory=dict)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Unfamiliarity of vectors (N, D): higher is less like the training photos."""
        return np.asarray(SCORE[self.method](self.arrays, np.asarray(X), **self.params),
                          dtype=np.float64)

    def flags(self, scores: np.ndarray, threshold: float | None = None) -> np.ndarray:
        return np.asarray(scores) > (self.threshold if threshold is None else threshold)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def describe(self) -> str:
        """What it stores: ``2,000 x 512 float16 training vectors (2.0 MB)``."""
        from featx.files import human_bytes

        if self.method == "knn":
            m, d = self.arrays["bank"].shape
            what = f"{m:,} L2-normalised training vectors of {d} dims in float16"
        else:
            d, r = self.arrays["whiten"].shape
            what = (f"{len(self.arrays['means'])} class means and a {d} x {r} whitening matrix "
                    "in float32")
        return f"{what} ({human_bytes(self.nbytes)})"

    def as_dict(self) -> dict[str, Any]:
        """``bundle.json``'s ``familiar``: all but the arrays (they go to familiar.npz)."""
        return {"method": self.method, "params": self.params, "threshold": self.threshold,
                "calibration": self.calibration, "stores": self.describe(),
                "bytes": self.nbytes, "arrays_file": ARRAYS_FILE,
                "shapes": {k: list(v.shape) for k, v in self.arrays.items()}}

    def save(self, directory: str | Path) -> str:
        """Write the arrays into ``directory``; returns the file name."""
        np.savez(Path(directory) / ARRAYS_FILE, **self.arrays)
        return ARRAYS_FILE


def check_method(method: str) -> str:
    if method not in METHODS:
        raise FeatxError(f"`unfamiliar_method` is one of {', '.join(METHODS)}, got {method!r}")
    return method


def fit_record(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
               method: str = DEFAULT_METHOD, target: float = TARGET, **params: Any) -> Record:
    """Fit a detector on the train part's vectors and calibrate its threshold on the validation
    part's (``target``: the share that passes)."""
    params = {**DEFAULTS[check_method(method)], **params}
    record = Record(method, {k: v for k, v in params.items() if k not in ("bank_bytes", "seed")},
                    FIT[method](X_train, y_train, **params))
    return calibrate(record, record.score(X_val), target)


def calibrate(record: Record, val_scores: np.ndarray, target: float = TARGET) -> Record:
    """Set the threshold at the validation scores' ``target`` quantile; record the share flagged
    and the scores' histogram (for ``featx report``)."""
    s = np.asarray(val_scores, dtype=np.float64)
    if not len(s):
        raise FeatxError("the validation part is empty: the unfamiliar-photo threshold is "
                         "calibrated on it; give it a share with `fractions`")
    record.threshold = float(np.quantile(s, target))
    counts, edges = np.histogram(s, bins=HIST_BINS)
    record.calibration = {"target_pass": target, "n_val": int(len(s)),
                          "val_flagged": float(np.mean(record.flags(s))),
                          "val_histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}
    return record


def from_split(split, method: str = DEFAULT_METHOD, **params: Any) -> Record | None:
    """The record of a :class:`featx.fit.Split` (train part fitted, val calibrated); None when
    its validation part is empty (nothing to calibrate on)."""
    if not split.n("val"):
        return None
    return fit_record(split.X("train"), split.y("train"), split.X("val"), method, **params)


def from_bundle(info: dict[str, Any], directory: str | Path) -> Record | None:
    """The record of a bundle (``bundle.json`` and its folder); None when it has none."""
    desc = info.get("familiar")
    path = Path(directory) / ARRAYS_FILE
    if not desc or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return Record(desc["method"], desc.get("params", {}), arrays, float(desc["threshold"]),
                  desc.get("calibration", {}))


# --- the same score in Keras (export) -----------------------------------------------------------


def keras_score(record: Record) -> Callable:
    """``f(tensor (N, D)) -> tensor (N,)``: the record's score in ``keras.ops`` (any backend),
    equal to :meth:`Record.score` in float32. The record's matrices are held by frozen Dense
    layers, not constants: a constant array in ``keras.ops`` becomes an input of an exported ONNX
    graph, where a layer's weights are frozen into it (``featx.export_model``)."""
    return lambda x: _score_layers(record, x)


def _frozen_dense(kernel: np.ndarray, bias: np.ndarray | None, name: str):
    from keras import layers

    dense = layers.Dense(kernel.shape[1], use_bias=bias is not None, trainable=False, name=name)
    dense.build((None, kernel.shape[0]))
    dense.set_weights([kernel.astype(np.float32)] + ([bias.astype(np.float32)] if bias is not None
                                                     else []))
    return dense


def _score_layers(record: Record, x):
    """The knn detector's 1 - k-th largest cosine similarity to the bank, or the least squared
    Mahalanobis distance to a class mean, of vectors ``x`` (N, D) -> (N,)."""
    from keras import ops

    x = ops.cast(x, "float32")
    unit = ops.divide(x, ops.maximum(ops.sqrt(ops.sum(x * x, axis=1, keepdims=True)), EPS))
    a = record.arrays
    if record.method == "knn":
        bank = np.asarray(a["bank"], np.float32)
        k = min(int(record.params.get("k", 10)), len(bank))
        sim = _frozen_dense(bank.T, None, "unfamiliar_bank")(unit)
        return 1.0 - ops.top_k(sim, k, sorted=True)[0][:, k - 1]
    z = _frozen_dense(np.asarray(a["whiten"], np.float32), None, "unfamiliar_whiten")(
        unit if record.params.get("normalize", True) else x)
    m = np.asarray(a["means"], np.float32)
    cross = _frozen_dense(-2.0 * m.T, np.sum(m * m, axis=1), "unfamiliar_means")(z)
    return ops.min(ops.sum(z * z, axis=1, keepdims=True) + cross, axis=1)


def keras_outputs(bundle, name: str = "unfamiliarity") -> Callable | None:
    """``f(vectors tensor) -> {name: scores (N,)}``: a bundle's score as an exported model's
    second output, from what its head takes (a fine-tuned bundle's maps go through its block5
    to the pooled vectors first); None for a bundle without a record."""
    record = bundle.familiar
    if record is None:
        return None
    score = keras_score(record)
    if bundle.clf == "finetune":
        import keras

        model = bundle.head.model
        pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
        return lambda v: {name: score(pooled(v))}
    return lambda v: {name: score(v)}
