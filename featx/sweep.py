"""sweep: model selection over a grid of heads and parameters, fitted in parallel with joblib.

Two ways to score a grid point:

* **holdout** (default): fitted on the train part, scored on the validation part;
* **cross-validation** (``cv=K``): K folds of train+val (scikit-learn's StratifiedGroupKFold:
  stratified by class, rows with one content hash in one fold, seeded), fitted on K-1 folds and
  scored on the held-out one; a row holds the K scores, their mean (which selects) and spread.

The best point (highest score; ties go to the smaller C, the simpler model, then to grid order) is
refitted, on train (holdout) or on train+val (cv), and evaluated once on the test part. Rows are
appended to ``results.csv`` as points finish, so Ctrl-C (or a kill) keeps the finished ones;
``results.json`` holds the sorted rows, the best point and its test metrics.

:func:`choose_params` is the same cross-validation on the training part alone: ``featx fit`` uses it
to pick ``C`` and ``scale`` when they are not given (grid :data:`AUTO_GRID`).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from featx.errors import FeatxError
from featx.files import check_output, write_text
from featx.fit import Flips, predict_labels, with_flips
from featx.heads import DEFAULTS, check_clf, head_params, make_head
from featx.parallel import check_backend, joblib_backend
from featx.split import DEFAULT_FRACTIONS

GRID_KEYS = ("C", "class_weight", "scale", "solver", "lr", "epochs", "batch_size")
CSV_FIELDS = ("clf", *GRID_KEYS, "val_accuracy", "cv_mean", "cv_std", "cv_scores",
              "train_accuracy", "fit_seconds", "epochs_run", "converged", "error")
# What `featx fit` tries when C or scale is not given (measured: README, "Classifiers").
AUTO_GRID: dict[str, list[Any]] = {"scale": ["none", "l2"], "C": [0.01, 0.1, 1.0, 10.0, 100.0]}
AUTO_FOLDS = 3
TIE_BREAK = "ties go to the smaller C (the simpler model), then to grid order"
SMALL_VAL = 1000  # below this many validation images, the sweep says how coarse its scores are


def default_output(store: str | os.PathLike) -> Path:
    """reports/<store>_sweep/"""
    return Path("reports") / f"{Path(store).stem}_sweep"


def parse_values(text: str | None, cast, param: str) -> list:
    """A comma-separated option value: ``"0.01,0.1,1"`` -> [0.01, 0.1, 1.0]."""
    if text is None:
        return []
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FeatxError(f"cannot read `{param}`={text!r} as a comma-separated list") from None


def parse_grid(**values: str | None) -> dict[str, list[Any]]:
    """The grid from comma-separated strings per key (``C="0.1,1", lr=None, ...``)."""
    casts = {"C": float, "lr": float, "epochs": int, "batch_size": int}
    return {k: parse_values(v, casts.get(k, str), k) for k, v in values.items()}


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


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: score descending, then the smaller C (the simpler model), then grid order."""
    def key(r: dict[str, Any]):
        score = score_of(r)
        C = r.get("C")  # scores equal to 9 places tie: a mean of folds differs in its last bits
        return (-round(score if score is not None else -1.0, 9),
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
        row["score"] = float(np.mean(predict_labels(head, X_held, X_held_flip) == y_held))
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
    (X, y, X_flip) of :meth:`featx.fit.Split.pool`, the mirrored copies used as ``flips`` says."""
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
               train_accuracy=float(np.mean([r["train_accuracy"] for r in folds])))
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
                  backend: str = "threading") -> dict[str, Any]:
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
           "grid": grid, "tie_break": TIE_BREAK}
    if k < 2:
        return {**how, "picked": None,
                "note": "a class has one training image: too few to cross-validate"}
    start = time.perf_counter()
    points = build_grid([clf], grid)
    rows = sort_rows(list(cv_rows(points, (X, y, X_flip), split.flips, cv_folds(y, groups, k, seed),
                                  len(split.feats.class_names), {**fixed, "seed": seed}, n_jobs,
                                  backend)))
    ok = [r for r in rows if r.get("cv_mean") is not None]
    if not ok:
        raise FeatxError(f"every {clf} fit of the automatic choice failed: {rows[0]['error']}")
    table = [{**{key: r[key] for key in keys}, "cv_mean": r["cv_mean"], "cv_std": r["cv_std"]}
             for r in ok]
    return {**how, "picked": {key: ok[0][key] for key in keys}, "cv_mean": ok[0]["cv_mean"],
            "cv_std": ok[0]["cv_std"], "rows": table,
            "seconds": round(time.perf_counter() - start, 3)}


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # sorted: best first (see sort_rows)
    n_points: int
    interrupted: bool
    seconds: float
    out_dir: Path | None
    split: dict[str, Any]
    cv: int | None = None
    best: dict[str, Any] | None = None  # best row + test metrics (absent when interrupted)
    fit: Any = None  # the FitResult of the refitted best
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def selection(self) -> str:
        return (f"{self.cv}-fold cross-validation on train+val" if self.cv
                else "validation part of the derived split")

    def as_dict(self) -> dict[str, Any]:
        return {"selection": self.selection, "cv": self.cv, "tie_break": TIE_BREAK,
                "n_points": self.n_points, "n_done": len(self.rows),
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "split": self.split, "notes": self.notes, "rows": self.rows, "best": self.best,
                "files": self.files}


def small_val_note(n_val: int, accuracy: float | None) -> str | None:
    """What one error weighs on a small validation part, and its standard error (None if large)."""
    if n_val >= SMALL_VAL or n_val == 0:
        return None
    p = accuracy if accuracy is not None else 0.5
    se = 100 * (p * (1 - p) / n_val) ** 0.5
    return (f"the validation part has {n_val} images: one error is {100 / n_val:.2f} points and "
            f"the standard error of an accuracy of {p:.3f} is {se:.2f} points, so closer scores "
            f"do not tell points apart; --cv 5 selects by 5-fold cross-validation on train+val")


def _collect(stream: Iterator[dict[str, Any]], total: int, out: Path | None,
             on_row: Callable[[dict[str, Any], int, int], None] | None
             ) -> tuple[list[dict[str, Any]], bool]:
    """Consume rows: append each to results.csv (flushed) and report it; Ctrl-C keeps them."""
    rows: list[dict[str, Any]] = []
    fh = open(out / "results.csv", "w", newline="") if out else None
    try:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore") if fh else None
        if writer:
            writer.writeheader()
            fh.flush()
        for row in stream:
            rows.append(row)
            if writer:
                writer.writerow({**row, "cv_scores": ";".join(f"{s:.6f}" for s in row["cv_scores"])}
                                if "cv_scores" in row else row)
                fh.flush()
            if on_row:
                on_row(row, len(rows), total)
    except KeyboardInterrupt:
        return rows, True
    finally:
        if fh:
            fh.close()
    return rows, False


def run_sweep(store: str | os.PathLike, clfs: list[str], grid: dict[str, list[Any]], *,
              fractions=DEFAULT_FRACTIONS, split_seed: int = 0, seed: int = 0, n_jobs: int = 2,
              backend: str = "threading", cv: int | None = None,
              out_dir: str | os.PathLike | None = None, bundle: str | os.PathLike | None = None,
              exclude=None, exclude_from_test: bool = False, train_flips: bool | None = None,
              tta: bool | None = None,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> SweepResult:
    """Score every grid point (in parallel), select the best, refit it and test it once.

    ``cv=K`` selects by K-fold cross-validation on train+val instead of the validation part.
    ``on_row(row, done, total)`` is called as rows finish. A KeyboardInterrupt while fitting stops
    the sweep and returns the finished rows with ``interrupted=True`` (no test evaluation).
    ``exclude``, ``train_flips``, ``tta``: see :func:`featx.fit.load_split`.
    """
    from featx.bundle import check_bundle_output, save_bundle
    from featx.familiar import from_split
    from featx.fit import evaluate, fit_split, load_split

    check_backend(backend)
    if cv is not None and cv < 2:
        raise FeatxError(f"`cv` takes at least 2 folds, got {cv}")
    points = build_grid(clfs, grid)
    if out_dir is not None:
        check_output(out_dir, "the sweep's results", folder=True)
    if bundle is not None:
        check_bundle_output(bundle)
    split = load_split(store, fractions, split_seed, need_val=not cv, exclude=exclude,
                       exclude_from_test=exclude_from_test, train_flips=train_flips, tta=tta)
    n_classes = len(split.feats.class_names)
    fixed = {"seed": seed}
    if cv:
        X, y, groups, X_flip = split.pool("train", "val")
        stream = cv_rows(points, (X, y, X_flip), split.flips, cv_folds(y, groups, cv, seed),
                         n_classes, fixed, n_jobs, backend)
    else:
        stream = holdout_rows(points, split, fixed, n_jobs, backend)
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, interrupted = _collect(stream, len(points), out, on_row)
    result = SweepResult(rows=sort_rows(rows), n_points=len(points), interrupted=interrupted,
                         seconds=time.perf_counter() - start, out_dir=out, split=split.info,
                         cv=cv, files={"csv": str(out / "results.csv")} if out else {})
    ok = [r for r in result.rows if score_of(r) is not None]
    note = None if cv else small_val_note(split.n("val"), score_of(ok[0]) if ok else None)
    result.notes += [note] if note else []
    if ok and not interrupted:
        top = ok[0]
        params = {k: v for k, v in top.items() if k in GRID_KEYS}
        if cv:
            head = make_head(top["clf"], **fixed, **params).fit(
                *with_flips(X, y, X_flip if split.flips.train else None), n_classes=n_classes)
            val, seconds = None, head.fit_seconds
        else:
            head, seconds = fit_split(split, top["clf"], **fixed, **params)
            val = evaluate(head, split, "val")
        test = evaluate(head, split, "test")
        result.best = {**top, "params": head.get_params(), "refit_seconds": round(seconds, 4),
                       "refit_on": "train+val" if cv else "train",
                       "refit_val_accuracy": val["accuracy"] if val else None,
                       "test_accuracy": test["accuracy"] if test else None, "test": test}
        if bundle:
            result.files["bundle"] = str(save_bundle(
                bundle, head, split.feats.class_names, split.feats.meta, store=store,
                split=split.info, metrics={"val": val, "test": test, "fit_seconds": seconds},
                extra={"selection": {"by": result.selection, "score": score_of(top)}},
                familiar=from_split(split)))
    if out:
        result.files["json"] = str(write_text(
            out / "results.json", json.dumps(result.as_dict(), indent=2, default=str) + "\n",
            "the sweep's results"))
    return result
