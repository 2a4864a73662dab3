"""sweep: a grid over heads and their parameters, fitted in parallel with joblib.

Selection uses the fixed validation part of the derived split (no k-fold): every grid point is
fitted on train and scored on val; the best (highest val accuracy, then fastest) is refitted on
train in this process and evaluated once on test. Rows are appended to ``results.csv`` as they
finish, so Ctrl-C (or a kill) keeps the finished ones; ``results.json`` holds the sorted rows, the
best point and its test metrics.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx.errors import FeatxError
from featx.heads import DEFAULTS, check_clf, head_params, make_head
from featx.parallel import check_backend, joblib_backend
from featx.split import DEFAULT_FRACTIONS

GRID_KEYS = ("C", "class_weight", "scale", "lr", "epochs", "batch_size")
CSV_FIELDS = ("clf", *GRID_KEYS, "val_accuracy", "train_accuracy", "fit_seconds", "epochs_run",
              "error")


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


def fit_point(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, n_classes: int,
              clf: str, params: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Fit one grid point on train, score it on val: one result row (errors become a row too)."""
    row: dict[str, Any] = {"clf": clf, **params}
    start = time.perf_counter()
    try:
        head = make_head(clf, **{**fixed, **params})
        head.fit(X, y, X_val, y_val, n_classes=n_classes)
        row["val_accuracy"] = float(np.mean(head.predict(X_val) == y_val))
        row["train_accuracy"] = float(np.mean(head.predict(X) == y))
        row["fit_seconds"] = round(head.fit_seconds, 4)
        if head.history:
            row["epochs_run"] = len(head.history["loss"])
    except Exception as e:  # one failing point must not sink the sweep
        row["error"] = f"{type(e).__name__}: {e}"
        row["fit_seconds"] = round(time.perf_counter() - start, 4)
    return row


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # sorted: val accuracy descending, then fit time
    n_points: int
    interrupted: bool
    seconds: float
    out_dir: Path | None
    split: dict[str, Any]
    best: dict[str, Any] | None = None  # best row + test metrics (absent when interrupted)
    fit: Any = None  # the FitResult of the refitted best
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"selection": "validation part of the derived split", "n_points": self.n_points,
                "n_done": len(self.rows), "interrupted": self.interrupted,
                "seconds": round(self.seconds, 3), "split": self.split, "rows": self.rows,
                "best": self.best, "files": self.files}


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-(r.get("val_accuracy") if r.get("val_accuracy")
                                         is not None else -1.0), r.get("fit_seconds", 0.0)))


def run_sweep(store: str | os.PathLike, clfs: list[str], grid: dict[str, list[Any]], *,
              fractions=DEFAULT_FRACTIONS, split_seed: int = 0, seed: int = 0, n_jobs: int = 2,
              backend: str = "loky", out_dir: str | os.PathLike | None = None,
              bundle: str | os.PathLike | None = None, exclude=None, exclude_from_test: bool = False,
              on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> SweepResult:
    """Fit every grid point (in parallel), select on val, refit the best and test it once.

    ``on_row(row, done, total)`` is called as rows finish. A KeyboardInterrupt while fitting stops
    the sweep and returns the finished rows with ``interrupted=True`` (no test evaluation).
    ``exclude``: paths dropped from training (see :func:`featx.fit.load_split`).
    """
    from joblib import Parallel, delayed

    from featx.bundle import save_bundle
    from featx.fit import evaluate, fit_split, load_split

    check_backend(backend)
    points = build_grid(clfs, grid)
    split = load_split(store, fractions, split_seed, need_val=True, exclude=exclude,
                       exclude_from_test=exclude_from_test)
    n_classes = len(split.feats.class_names)
    Xtr, ytr, Xva, yva = split.X("train"), split.y("train"), split.X("val"), split.y("val")
    out = Path(out_dir) if out_dir else None
    files: dict[str, str] = {}
    writer = fh = None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        files["csv"] = str(out / "results.csv")
        fh = open(files["csv"], "w", newline="")
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        fh.flush()
    rows: list[dict[str, Any]] = []
    interrupted = False
    start = time.perf_counter()
    fixed = {"seed": seed}
    try:
        with joblib_backend(backend, n_jobs) as return_as:
            jobs = Parallel(return_as=return_as)(
                delayed(fit_point)(Xtr, ytr, Xva, yva, n_classes, clf, params, fixed)
                for clf, params in points)
            for row in jobs:
                rows.append(row)
                if writer:
                    writer.writerow(row)
                    fh.flush()
                if on_row:
                    on_row(row, len(rows), len(points))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if fh:
            fh.close()
    result = SweepResult(rows=sort_rows(rows), n_points=len(points), interrupted=interrupted,
                         seconds=time.perf_counter() - start, out_dir=out, split=split.info,
                         files=files)
    ok = [r for r in result.rows if r.get("val_accuracy") is not None]
    if ok and not interrupted:
        top = ok[0]
        params = {k: v for k, v in top.items() if k in GRID_KEYS}
        head, seconds = fit_split(split, top["clf"], **fixed, **params)
        val = evaluate(head, Xva, yva, n_classes)
        test = evaluate(head, split.X("test"), split.y("test"), n_classes)
        result.best = {**top, "params": head.get_params(), "refit_seconds": round(seconds, 4),
                       "refit_val_accuracy": val["accuracy"] if val else None,
                       "test_accuracy": test["accuracy"] if test else None, "test": test}
        if bundle:
            files["bundle"] = str(save_bundle(
                bundle, head, split.feats.class_names, split.feats.meta, store=store,
                split=split.info, metrics={"val": val, "test": test, "fit_seconds": seconds}))
    if out:
        files["json"] = str(out / "results.json")
        Path(files["json"]).write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    return result
