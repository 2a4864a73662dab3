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

The grid, the folds, the scoring and the choice are :mod:`featx.selection`'s, shared with
``featx fit``'s automatic choice of ``C`` and ``scale``; this module runs them over a whole grid
and writes the results.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from featx.bundle import check_bundle_output, save_bundle
from featx.errors import FeatxError
from featx.familiar import from_split
from featx.files import check_output, write_text
from featx.fit import evaluate, fit_split
from featx.heads import CLASSIFIERS, DEFAULTS, make_head
from featx.metrics import wilson_interval
from featx.parallel import check_backend
from featx.selection import (  # noqa: F401  re-exported: they lived here before featx.selection
    AUTO_FOLDS, AUTO_GRID, GRID_KEYS, TIE_BREAK, build_grid, choose_params, cv_folds, cv_rows,
    holdout_rows, point_label, score_of, sort_rows)
from featx.split import DEFAULT_FRACTIONS, EXCLUDE_FINDINGS, load_split, with_flips

CSV_FIELDS = ("clf", *GRID_KEYS, "val_accuracy", "cv_mean", "cv_std", "cv_scores", "log_loss",
              "train_accuracy", "fit_seconds", "epochs_run", "converged", "degenerate", "error")
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


def unused_keys(clfs: list[str], grid: dict[str, list[Any]]) -> list[str]:
    """A line per grid key given values that none of the swept heads takes."""
    lines = []
    for key, values in grid.items():
        takers = [c for c in CLASSIFIERS if key in DEFAULTS[c]]
        if values and takers and not any(key in DEFAULTS[c] for c in clfs):
            lines.append(f"`{key}` applies to the {' and '.join(takers)} head only; "
                         f"{', '.join(clfs)} ignore{'s' * (len(clfs) == 1)} it")
    return lines


def refit_info(info: dict[str, Any], cv: int | None) -> dict[str, Any]:
    """The split a refitted best was trained on: with ``cv``, train+val (``n_fit`` rows), so its
    bundle does not read as if a validation part had been held out."""
    if not cv:
        return info
    return {**info, "refit_on": "train+val", "cv": cv,
            "n_fit": int(info.get("n_train", 0)) + int(info.get("n_val", 0))}


def small_val_note(n_val: int, accuracy: float | None) -> str | None:
    """What one error weighs on a small validation part, and the 95% Wilson interval of the best
    accuracy (None if large)."""
    if n_val >= SMALL_VAL or n_val == 0:
        return None
    p = accuracy if accuracy is not None else 0.5
    lo, hi = wilson_interval(round(p * n_val), n_val)
    return (f"the validation part has {n_val} images: one error is {100 / n_val:.2f} points and "
            f"an accuracy of {p:.3f} is anywhere from {lo:.3f} to {hi:.3f} (95% Wilson interval), "
            f"so closer scores do not tell points apart; --cv 5 selects by 5-fold "
            f"cross-validation on train+val")


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
              tta: bool | None = None, corrections: bool = True,
              exclude_findings=EXCLUDE_FINDINGS, groups=None, group_name: str = "content hash",
              on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> SweepResult:
    """Score every grid point (in parallel), select the best, refit it and test it once.

    ``cv=K`` selects by K-fold cross-validation on train+val instead of the validation part.
    ``on_row(row, done, total)`` is called as rows finish. A KeyboardInterrupt while fitting stops
    the sweep and returns the finished rows with ``interrupted=True`` (no test evaluation).
    ``exclude``, ``train_flips``, ``tta``: see :func:`featx.split.load_split`.
    """
    check_backend(backend)
    if cv is not None and cv < 2:
        raise FeatxError(f"`cv` takes at least 2 folds, got {cv}")
    points = build_grid(clfs, grid)
    if out_dir is not None:
        check_output(out_dir, "the sweep's results", folder=True)
    if bundle is not None:
        check_bundle_output(bundle)
    split = load_split(store, fractions, split_seed, need_val=not cv, exclude=exclude,
                       exclude_from_test=exclude_from_test, train_flips=train_flips, tta=tta,
                       corrections=corrections, exclude_findings=exclude_findings,
                       groups=groups, group_name=group_name)
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
    result.notes += unused_keys(clfs, grid) + list(split.warnings) + ([note] if note else [])
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
                split=refit_info(split.info, cv), metrics={"val": val, "test": test, "fit_seconds": seconds},
                extra={"selection": {"by": result.selection, "score": score_of(top)}},
                familiar=from_split(split)))
    if out:
        result.files["json"] = str(write_text(
            out / "results.json", json.dumps(result.as_dict(), indent=2, default=str) + "\n",
            "the sweep's results"))
    return result
