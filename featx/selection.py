"""selection: model selection on a split's vectors, for ``featx fit`` and ``featx sweep`` alike.

* **the grid**: (head, parameters) points (:func:`build_grid`), labelled by :func:`point_label`;
* **CV folds**: K stratified folds that keep each group (content hash, or the split's groups) in
  one fold (:func:`cv_folds`, scikit-learn's StratifiedGroupKFold);
* **scoring**: points fitted in parallel with joblib, on the train part scored on val
  (:func:`holdout_rows`) or cross-validated (:func:`cv_rows`), one row per point;
* **the choice**: rows best first (:func:`sort_rows`: score, then the smaller C, then grid order);
  :func:`choose_params` is the automatic choice of ``C`` and ``scale`` of ``featx fit`` (K-fold
  cross-validation on the train part alone, grid :data:`AUTO_GRID`).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Any, Iterable, Iterator

import numpy as np

from featx.errors import FeatxError
from featx.heads import DEFAULTS, Head, check_clf, head_params, make_head
from featx.metrics import log_loss
from featx.parallel import joblib_backend
from featx.split import Flips, with_flips

GRID_KEYS = ("C", "class_weight", "scale", "solver", "lr", "epochs", "batch_size")
# What `featx fit` tries when C or scale is not given (measured: README, "Classifiers").
AUTO_GRID: dict[str, list[Any]] = {"scale": ["none", "l2"], "C": [0.01, 0.1, 1.0, 10.0, 100.0]}
AUTO_FOLDS = 3
TIE_BREAK = ("ties go to the lower log loss (the better probabilities), then to the smaller C "
             "(the simpler model), then to grid order")


def predict_proba(head: Head, X: np.ndarray, X_flip: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities; with ``X_flip``, the mean of both copies'."""
    proba = head.predict_proba(X)
    return proba if X_flip is None else (proba + head.predict_proba(X_flip)) / 2


def predict_labels(head: Head, X: np.ndarray, X_flip: np.ndarray | None = None) -> np.ndarray:
    """Class indices; with ``X_flip``, from the mean of both copies' probabilities."""
    if X_flip is None:
        return head.predict(X)
    return np.argmax(predict_proba(head, X, X_flip), axis=1)


DEGENERATE_SPREAD = 0.01  # probabilities that vary less than this over all rows read as one answer


def degenerate(proba: np.ndarray) -> bool:
    """Whether every row has the same probabilities to within :data:`DEGENERATE_SPREAD` (a head
    that answers one thing to everything; an RBF SVM with C=0.01 on unscaled pets vectors gave
    0.500 +- 0.0003 to every photo, its argmax flipping on noise)."""
    return len(proba) > 1 and float(np.ptp(proba, axis=0).max()) < DEGENERATE_SPREAD


def point_label(row: dict[str, Any]) -> str:
    """``clf(C=0.1, scale=none)``: a grid point, as printed and plotted."""
    params = ", ".join(f"{k}={row[k]}" for k in GRID_KEYS if row.get(k) is not None)
    return f"{row['clf']}({params})"


def build_grid(clfs: list[str], grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(clf, varied params) points: per head, the product of the grid keys that head accepts."""
    points: list[tuple[str, dict[str, Any]]] = []
    for clf in clfs:
        check_clf(clf)
        keys = [k for k, vs in grid.items() if vs and k in DEFAULTS[clf]]
        for values in itertools.product(*(grid[k] for k in keys)):
            params = dict(zip(keys, values))
            head_params(clf, **params)  # validate early
            if (clf, params) not in points:
                points.append((clf, params))
    return points


def score_of(row: dict[str, Any]) -> float | None:
    """The number a row is selected by: its cross-validated mean, else its val accuracy."""
    return row.get("cv_mean", row.get("val_accuracy"))


def sort_rows(rows: list[dict[str, Any]], tie_break: str = "log_loss") -> list[dict[str, Any]]:
    """Best first: heads that answer everything alike (``degenerate``) last; score descending;
    then (``tie_break="log_loss"``) the lower log loss; then the smaller C (the simpler model),
    then grid order. ``tie_break="C"`` skips the log loss (featx before 0.x; kept to measure)."""
    def key(r: dict[str, Any]):
        score = score_of(r)
        C = r.get("C")  # scores equal to 9 places tie: a mean of folds differs in its last bits
        loss = r.get("log_loss") if tie_break == "log_loss" else None
        return (bool(r.get("degenerate")), -round(score if score is not None else -1.0, 9),
                round(loss, 9) if loss is not None else float("inf"),
                float(C) if C is not None else float("inf"), r.get("point", 0))
    return sorted(rows, key=key)


def _fit_and_score(clf: str, params: dict[str, Any], fixed: dict[str, Any], X: np.ndarray,
                   y: np.ndarray, X_held: np.ndarray, y_held: np.ndarray, n_classes: int,
                   held_is_val: bool, X_held_flip: np.ndarray | None = None) -> dict[str, Any]:
    """Fit one head, score it on held-out rows (``held_is_val``: also its validation data;
    ``X_held_flip``: their mirrored vectors, predictions averaged over both)."""
    row: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        head = make_head(clf, **{**fixed, **params})
        head.fit(X, y, *((X_held, y_held) if held_is_val else (None, None)), n_classes=n_classes)
        proba = predict_proba(head, X_held, X_held_flip)
        row["score"] = float(np.mean(proba.argmax(axis=1) == y_held))
        row["log_loss"] = round(log_loss(y_held, proba), 6)
        if degenerate(proba):
            row["degenerate"] = True
        row["train_accuracy"] = float(np.mean(head.predict(X) == y))
        row["fit_seconds"] = round(head.fit_seconds, 4)
        if head.history:
            row["epochs_run"] = len(head.history["loss"])
        if head.converged is not None:
            row["converged"] = head.converged
    except Exception as e:  # one failing point must not sink the sweep
        row["error"] = f"{type(e).__name__}: {e}"
        row["fit_seconds"] = round(time.perf_counter() - start, 4)
    return row


def fit_point(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray, Any],
              n_classes: int, clf: str, params: dict[str, Any], fixed: dict[str, Any]
              ) -> dict[str, Any]:
    """Fit one grid point on ``train`` (X, y), score it on ``val`` (X, y, X_flip or None): one
    result row (errors become a row too)."""
    X_val, y_val, X_val_flip = val
    row = _fit_and_score(clf, params, fixed, *train, X_val, y_val, n_classes, held_is_val=True,
                         X_held_flip=X_val_flip)
    if "score" in row:
        row["val_accuracy"] = row.pop("score")
    return {"clf": clf, **params, **row}


def fit_fold(data: tuple, flips: Flips, train: np.ndarray, held: np.ndarray, n_classes: int,
             clf: str, params: dict[str, Any], fixed: dict[str, Any], point: int,
             fold: int) -> dict[str, Any]:
    """Fit one grid point on one fold's training rows, score it on its held-out rows; ``data``:
    (X, y, X_flip) of :meth:`featx.split.Split.pool`, the mirrored copies used as ``flips`` says."""
    X, y, X_flip = data
    X_train, y_train = with_flips(X[train], y[train], X_flip[train] if flips.train else None)
    row = _fit_and_score(clf, params, fixed, X_train, y_train, X[held], y[held], n_classes,
                         held_is_val=False, X_held_flip=X_flip[held] if flips.tta else None)
    return {"point": point, "fold": fold, **row}


def _combine(clf: str, params: dict[str, Any], point: int,
             folds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a point's fold results: the scores in fold order, mean and spread."""
    folds = sorted(folds, key=lambda r: r["fold"])
    row: dict[str, Any] = {"clf": clf, **params, "point": point}
    errors = [r["error"] for r in folds if "error" in r]
    row["fit_seconds"] = round(float(np.mean([r["fit_seconds"] for r in folds])), 4)
    if errors:
        row["error"] = errors[0]
        return row
    scores = [r["score"] for r in folds]
    row.update(cv_mean=float(np.mean(scores)), cv_std=float(np.std(scores)), cv_scores=scores,
               train_accuracy=float(np.mean([r["train_accuracy"] for r in folds])),
               log_loss=round(float(np.mean([r["log_loss"] for r in folds])), 6))
    if any(r.get("degenerate") for r in folds):
        row["degenerate"] = True
    if "epochs_run" in folds[0]:
        row["epochs_run"] = int(max(r["epochs_run"] for r in folds))
    if "converged" in folds[0]:
        row["converged"] = all(r["converged"] for r in folds)
    return row


def cv_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int,
             param: str = "cv") -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds that keep each group (content hash) whole: (train rows, held-out rows)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise FeatxError(f"`{param}` takes at least 2 folds, got {k}")
    smallest = min(len(set(groups[y == c])) for c in np.unique(y))
    if smallest < k:
        raise FeatxError(f"`{param}`={k} needs {k} distinct images of every class to cut {k} "
                         f"folds; the smallest class has {smallest}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _parallel(tasks: Iterable, n_jobs: int, backend: str) -> Iterator[dict[str, Any]]:
    """joblib results as they finish. In threads, BLAS gets one thread each (no oversubscription)."""
    import scipy.optimize  # noqa: F401  load SciPy's and scikit-learn's BLAS first: a limit
    import sklearn.linear_model  # noqa: F401  reaches only the libraries already loaded
    from joblib import Parallel
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(1, user_api="blas") if backend == "threading" else nullcontext()
    with limit, joblib_backend(backend, n_jobs) as return_as:
        yield from Parallel(return_as=return_as)(tasks)


def holdout_rows(points, split, fixed: dict[str, Any], n_jobs: int,
                 backend: str) -> Iterator[dict[str, Any]]:
    """Rows of points fitted on the split's train part and scored on its val part, as they finish."""
    from joblib import delayed

    index = {point_label({"clf": c, **p}): i for i, (c, p) in enumerate(points)}
    train, val = split.train_data(), (split.X("val"), split.y("val"), split.X_flip("val"))
    n_classes = len(split.feats.class_names)
    tasks = (delayed(fit_point)(train, val, n_classes, clf, params, fixed)
             for clf, params in points)
    for row in _parallel(tasks, n_jobs, backend):
        yield {**row, "point": index[point_label(row)]}


def cv_rows(points, data: tuple, flips: Flips, folds, n_classes: int, fixed: dict[str, Any],
            n_jobs: int, backend: str) -> Iterator[dict[str, Any]]:
    """Rows of cross-validated points, each as soon as all its folds have finished; ``data``,
    ``flips``: see :func:`fit_fold`."""
    from joblib import delayed

    tasks = (delayed(fit_fold)(data, flips, train, held, n_classes, clf, params, fixed, i, j)
             for i, (clf, params) in enumerate(points) for j, (train, held) in enumerate(folds))
    done: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in _parallel(tasks, n_jobs, backend):
        i = result["point"]
        done[i].append(result)
        if len(done[i]) == len(folds):
            yield _combine(*points[i], i, done.pop(i))


def choose_params(split, clf: str, fixed: dict[str, Any], keys: Iterable[str] = ("C", "scale"),
                  folds: int = AUTO_FOLDS, seed: int = 0, n_jobs: int = 2,
                  backend: str = "threading", tie_break: str = "log_loss") -> dict[str, Any]:
    """Pick ``keys`` (of :data:`AUTO_GRID`) for ``clf`` by K-fold cross-validation on the training
    part alone; the validation and test parts are never read. ``fixed``: the other parameters.

    Returns ``picked`` (None when a class has too few training images to make 2 folds), the
    score of each point, and how the choice was made.
    """
    keys = [k for k in AUTO_GRID if k in keys]
    grid = {k: AUTO_GRID[k] for k in keys}
    X, y, groups, X_flip = split.pool("train")
    smallest = min(len(set(groups[y == c])) for c in np.unique(y))
    k = min(folds, smallest)
    how = {"by": f"{k}-fold cross-validation on the training part", "folds": k, "seed": seed,
           "grid": grid, "tie_break": TIE_BREAK if tie_break == "log_loss" else
           "ties go to the smaller C, then to grid order"}
    if k < 2:
        return {**how, "picked": None,
                "note": "a class has one training image: too few to cross-validate"}
    start = time.perf_counter()
    points = build_grid([clf], grid)
    rows = sort_rows(list(cv_rows(points, (X, y, X_flip), split.flips, cv_folds(y, groups, k, seed),
                                  len(split.feats.class_names), {**fixed, "seed": seed}, n_jobs,
                                  backend)), tie_break)
    ok = [r for r in rows if r.get("cv_mean") is not None]
    if not ok:
        raise FeatxError(f"every {clf} fit of the automatic choice failed: {rows[0]['error']}")
    table = [{**{key: r[key] for key in keys}, "cv_mean": r["cv_mean"], "cv_std": r["cv_std"],
              "log_loss": r["log_loss"], **({"degenerate": True} if r.get("degenerate") else {})}
             for r in ok]
    return {**how, "picked": {key: ok[0][key] for key in keys}, "cv_mean": ok[0]["cv_mean"],
            "cv_std": ok[0]["cv_std"], "rows": table,
            "seconds": round(time.perf_counter() - start, 3)}
