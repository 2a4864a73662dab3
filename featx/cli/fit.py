"""featx fit / featx sweep / featx predict: classifiers on cached vectors, and using them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from featx.cli import (JSON_OPTION, app, check_outputs, emit, err, flagged, out, progress_bar,
                       quiet_progress, warn)
from featx.errors import FeatxError
from featx.heads import DEFAULTS
from featx.split import parse_tta  # noqa: F401  (lived here; featx.split parses it now)

SOFTMAX = DEFAULTS["softmax"]

SPLIT_OPTION = typer.Option("70/15/15", "--split",
                            help="train/val/test shares adding up to 100, e.g. 70/15/15.")
SPLIT_SEED_OPTION = typer.Option(0, "--split-seed", help="Seed of the derived split.")
GROUP_OPTION = typer.Option(
    "hash", "--group", help="What the split keeps in one part: hash (exact duplicates) or near "
    "(near-twins too: cosine >= 0.95, groups of at most 50; by the store's index).")
EXCLUDE_OPTION = typer.Option(
    None, "--exclude", help="Drop these paths from training: a CSV with a path column (featx "
    "audit's suspects.csv: its label issues and leaks) or one path a line.")
EXCLUDE_OUTLIERS_OPTION = typer.Option(
    False, "--exclude-outliers", help="Also drop the outliers listed in the --exclude CSV.")
EXCLUDE_TEST_OPTION = typer.Option(
    False, "--exclude-from-test", help="Also drop the --exclude paths from the val and test parts.")
NO_CORRECTIONS_OPTION = typer.Option(
    False, "--no-corrections", help="Ignore the store's label corrections (FILE.h5.labels.csv).")
TRAIN_FLIPS_OPTION = typer.Option(
    None, "--train-flips/--no-train-flips", help="Also train on the mirrored images' vectors "
    "(featx extract --augment flip) [when the store has them].", show_default=False)
# predict and serve: "none of these"
REJECT_OPTION = typer.Option(
    False, "--reject", help="Answer none for photos unlike the training photos.")
UNFAMILIAR_AT_OPTION = typer.Option(
    None, "--unfamiliar-at", help="Flag photos scoring above this [the bundle's threshold, "
    "calibrated so that 95% of validation photos pass].")
TTA_OPTION = typer.Option(
    None, "--tta", help="flip: predict from the mean over each image and its mirror; none "
    "[flip when the store has mirrored vectors].")


def exclusion_findings(outliers: bool) -> tuple[str, ...]:
    """What --exclude takes from a suspects.csv: label issues and leaks, outliers when asked."""
    from featx.split import EXCLUDE_FINDINGS

    return (*EXCLUDE_FINDINGS, "outlier") if outliers else EXCLUDE_FINDINGS


def split_args(split: str, split_seed: int, exclude: Optional[Path], exclude_from_test: bool,
               exclude_outliers: bool, train_flips: Optional[bool], tta: Optional[str],
               no_corrections: bool) -> dict[str, Any]:
    """The split options (--split ... --no-corrections) as the keyword arguments that
    :func:`featx.split.load_split` takes, and so ``fit_store``, ``run_sweep`` and ``learning_curve``."""
    from featx.split import parse_fractions

    return {"fractions": parse_fractions(split), "split_seed": split_seed, "exclude": exclude,
            "exclude_from_test": exclude_from_test, "train_flips": train_flips,
            "tta": parse_tta(tta), "corrections": not no_corrections,
            "exclude_findings": exclusion_findings(exclude_outliers)}


@app.command()
def fit(
    store: Path = typer.Argument(..., help="A featx feature store (.h5)."),
    clf: str = typer.Option("logreg", "--clf", help="logreg, svm, linear-svm or softmax."),
    C: Optional[float] = typer.Option(
        None, "--C", help="Inverse L2 strength [picked by cross-validation on the train part]."),
    class_weight: str = typer.Option("none", "--class-weight", help="none or balanced."),
    scale: Optional[str] = typer.Option(
        None, "--scale", help="none, l2, standard or l2+standard [picked like --C]."),
    solver: Optional[str] = typer.Option(
        None, help="softmax: lbfgs (full batch, logreg's objective) or adam (the tutorial's) "
        f"[{SOFTMAX['solver']}]."),
    epochs: Optional[int] = typer.Option(
        None, help="softmax: most epochs (lbfgs: full-batch iterations) [lbfgs 1000, adam 100]."),
    lr: Optional[float] = typer.Option(
        None, "--lr", help=f"softmax adam: learning rate [{SOFTMAX['lr']}]."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help=f"softmax adam: vectors per step [{SOFTMAX['batch_size']}]."),
    patience: Optional[int] = typer.Option(
        None, help=f"softmax adam: epochs without val-loss gain before stopping "
        f"[{SOFTMAX['patience']}]."),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", help="logreg / linear-svm iterations."),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier and of the CV folds."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Parallel fits when picking C / scale."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    exclude: Optional[Path] = EXCLUDE_OPTION,
    exclude_from_test: bool = EXCLUDE_TEST_OPTION,
    exclude_outliers: bool = EXCLUDE_OUTLIERS_OPTION,
    train_flips: Optional[bool] = TRAIN_FLIPS_OPTION,
    tta: Optional[str] = TTA_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    allow_degenerate: bool = typer.Option(
        False, "--allow-degenerate", help="Save a head even when it gives every image the same "
        "probabilities."),
    group: str = GROUP_OPTION,
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Bundle directory [default: models/<store>_<clf>/]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train one classifier on a store's cached vectors, evaluate it, save a model bundle."""
    from featx.fit import default_output, fit_store
    from featx.index import split_groups

    groups, group_name = split_groups(store, group)
    result = fit_store(store, clf, groups=groups, group_name=group_name,
                       out=output or default_output(store, clf), n_jobs=jobs,
                       **split_args(split, split_seed, exclude, exclude_from_test,
                                    exclude_outliers, train_flips, tta, no_corrections),
                       allow_degenerate=allow_degenerate, C=C,
                       class_weight=class_weight, scale=scale, solver=solver, epochs=epochs, lr=lr,
                       batch_size=batch_size, patience=patience, max_iter=max_iter, seed=seed)
    summary = result.summary()
    for line in result.warnings:
        warn(line)
    emit(summary, as_json, lambda: _print_fit(summary))


def _print_selection(sel: dict[str, Any]) -> None:
    if not sel.get("picked"):
        out.print(f"  C and scale: defaults ({sel.get('note')})")
        return

    def point(row: dict[str, Any]) -> str:
        return ", ".join(f"{k}={row[k]:g}" if k == "C" else f"{k}={row[k]}" for k in sel["picked"])

    runner = sel["rows"][1] if len(sel["rows"]) > 1 else None
    nxt = f", next {point(runner)} {runner['cv_mean']:.4f}" if runner else ""
    out.print(f"  picked {point(sel['picked'])} by {sel['by']} ({len(sel['rows'])} points, "
              f"{sel['seconds']:.1f} s): accuracy {sel['cv_mean']:.4f} ± {sel['cv_std']:.4f}{nxt}; "
              f"{sel['tie_break']}; --C / --scale fix them")


def _print_fit(s: dict[str, Any]) -> None:
    from featx.metrics import accuracy_text

    def acc(part):
        return accuracy_text(s.get(part))
    out.print(f"{s['clf']} on {s['store']}: train {s['n_train']}, val {s['n_val']}, "
              f"test {s['n_test']} vectors; fit {s['fit_seconds']:.2f} s")
    if s.get("selection"):
        _print_selection(s["selection"])
    if s.get("epochs_run"):
        how = ("full-batch L-BFGS" if s.get("solver") == "lbfgs"
               else f"Adam, best (restored) epoch {s['best_epoch']}")
        out.print(f"  softmax head: {s['epochs_run']} epochs, {how}")
    if s.get("converged") is False:
        out.print(f"  did not converge: {_budget_note(s)}")
    _print_excluded(s["split"])
    _print_flips(s["split"])
    _print_familiar(s.get("familiar"))
    ref = s["reference"]
    out.print(f"  val accuracy {acc('val')}, test accuracy {acc('test')} (chance {ref['chance']:.3f}; "
              f"always '{ref['majority_class']}': val {_share(ref['majority_val'])}, "
              f"test {_share(ref['majority_test'])})")
    if s.get("test"):
        print_metrics(s["class_names"], s["test"], "class (test)")
    out.print(f"  bundle: {s['bundle']}")


def print_metrics(names: list[str], m: dict[str, Any], heading: str = "class") -> None:
    """Per-class precision, recall and support beside the confusion matrix's rows."""
    table = Table(heading, "precision", "recall", "n", *names, box=None, pad_edge=False)
    for i, name in enumerate(names):
        table.add_row(name, f"{m['precision'][i]:.3f}", f"{m['recall'][i]:.3f}",
                      str(m["support"][i]), *map(str, m["confusion"][i]))
    out.print("  confusion matrix: rows are true classes, columns predicted")
    out.print(table)


def _print_familiar(f: dict[str, Any] | None) -> None:
    """The unfamiliar-photo calibration: threshold and the share of validation flagged."""
    if not f:
        out.print("  unfamiliar photos: not recorded (the validation part is empty)")
        return
    c = f["calibration"]
    out.print(f"  unfamiliar photos: {f['method']} score above {f['threshold']:.4f} flags "
              f"{c['val_flagged']:.1%} of validation ({round(c['val_flagged'] * c['n_val'])} of "
              f"{c['n_val']}; target {1 - c['target_pass']:.0%}); keeps {f['stores']}",
              markup=False)


def _print_excluded(split: dict[str, Any]) -> None:
    c = split.get("corrections")
    if c and (c["relabelled"] or c["excluded"]):
        out.print(f"  corrections: {c['relabelled']} relabelled, {c['excluded']} excluded "
                  f"({c['file']}; --no-corrections ignores them)", markup=False)
    x = split.get("excluded")
    if not x:
        return
    kept = ", ".join(f"{n} in {part} kept" for part, n in x["kept"].items() if n)
    out.print(f"  excluded {x['train']} train" + ("" if not x["from_test"] else
              f", {x['val']} val, {x['test']} test") + f" images of {x['listed']} listed paths"
              + (f" ({kept})" if kept else "") + f"; {x['not_in_store']} listed paths not in the store"
              + (f", e.g. {x['not_in_store_examples'][0]}" if x["not_in_store"] else ""),
              markup=False)
    passed = ", ".join(f"{n} {kind}{'s' * (n != 1)}"
                       for kind, n in (x.get("passed_over") or {}).items())
    if passed:
        out.print(f"  passed over {passed} of the list"
                  + (" (--exclude-outliers takes them)" if "outlier" in passed else ""),
                  markup=False)


def _print_flips(split: dict[str, Any]) -> None:
    f = split.get("flips")
    if f:
        out.print("  mirrored images: " + ", ".join(
            [f"trained on {2 * split['n_train']} vectors" if f["train"] else "not trained on",
             "predictions averaged over flips" if f["tta"] else "not used to predict"]))


def _budget_note(s: dict[str, Any]) -> str:
    """'it used all 50 epochs while still improving; try --epochs 100' (and the like)."""
    softmax = s["clf"] == "softmax"
    budget = int(s["params"]["epochs" if softmax else "max_iter"])
    unit, flag = ("epochs", "--epochs") if softmax else ("iterations", "--max-iter")
    still = (f" (best val loss at epoch {s['best_epoch']})"
             if s.get("solver") == "adam" and s.get("best_epoch") not in (None, budget)
             else " while still improving")
    return f"it used all {budget} {unit}{still}; try {flag} {2 * budget}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def sweep(
    store: Path = typer.Argument(..., help="A featx feature store (.h5)."),
    clf: str = typer.Option("logreg,linear-svm,softmax", "--clf", help="Comma-separated heads."),
    C: Optional[str] = typer.Option("0.01,0.1,1,10", "--C", help="Comma-separated C values."),
    class_weight: Optional[str] = typer.Option(None, "--class-weight", help="e.g. none,balanced."),
    scale: Optional[str] = typer.Option(None, "--scale", help="e.g. none,l2,standard,l2+standard."),
    solver: Optional[str] = typer.Option(None, "--solver", help="softmax: e.g. lbfgs,adam."),
    lr: Optional[str] = typer.Option(None, "--lr", help="softmax adam: comma-separated learning rates."),
    epochs: Optional[str] = typer.Option(None, "--epochs", help="softmax: comma-separated."),
    cv: Optional[int] = typer.Option(
        None, "--cv", help="Select by K-fold cross-validation on train+val [the validation part]."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Parallel fits (joblib)."),
    backend: str = typer.Option(
        "threading", help="joblib backend: threading (the fits release the GIL; no worker start-up), "
        "loky (processes), ray or dask (see README)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifiers and of the CV folds."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    exclude: Optional[Path] = EXCLUDE_OPTION,
    exclude_from_test: bool = EXCLUDE_TEST_OPTION,
    exclude_outliers: bool = EXCLUDE_OUTLIERS_OPTION,
    train_flips: Optional[bool] = TRAIN_FLIPS_OPTION,
    tta: Optional[str] = TTA_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    group: str = GROUP_OPTION,
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Folder for results.csv / .json [default: reports/<store>_sweep/]."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Also save the best as a bundle."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fit a grid of classifiers in parallel, select on validation (or --cv K), test the best once."""
    from featx.index import split_groups
    from featx.sweep import default_output, parse_grid, parse_values, point_label, run_sweep

    groups, group_name = split_groups(store, group)
    grid = parse_grid(C=C, class_weight=class_weight, scale=scale, solver=solver, lr=lr,
                      epochs=epochs)
    out_dir = output or default_output(store)

    def progress(row, done, total):  # progress on stderr, also with --json; not with --quiet
        if not quiet_progress():
            err.print(f"  [{done}/{total}] {point_label(row)}: "
                      + (_score(row) + f", {row['fit_seconds']:.2f} s" if "error" not in row
                         else row["error"]), markup=False, highlight=False)

    result = run_sweep(store, parse_values(clf, str, "clf"), grid, seed=seed, n_jobs=jobs,
                       backend=backend, cv=cv, out_dir=out_dir, bundle=bundle,
                       **split_args(split, split_seed, exclude, exclude_from_test,
                                    exclude_outliers, train_flips, tta, no_corrections),
                       on_row=progress, groups=groups, group_name=group_name)
    emit(result.as_dict(), as_json, lambda: _print_sweep(result))
    if result.interrupted:
        err.print(f"interrupted: {len(result.rows)} finished rows kept in {out_dir}")
        sys.exit(130)


def _score(row: dict[str, Any]) -> str:
    if "cv_mean" in row:
        return f"cv {row['cv_mean']:.4f} ± {row['cv_std']:.4f}"
    return f"val {row['val_accuracy']:.4f}"


def _print_sweep(r) -> None:
    from featx.sweep import point_label

    score = f"cv acc ({r.cv} folds)" if r.cv else "val acc"
    table = Table("rank", "classifier", score, "train acc", "fit s", box=None, pad_edge=False)
    for i, row in enumerate(r.rows, 1):
        if "error" in row:
            val = row["error"]
        elif r.cv:
            val = f"{row['cv_mean']:.4f} ± {row['cv_std']:.4f}"
        else:
            val = f"{row['val_accuracy']:.4f}"
        train = f"{row['train_accuracy']:.4f}" if "train_accuracy" in row else ""
        table.add_row(str(i), point_label(row), val, train, f"{row.get('fit_seconds', 0):.2f}")
    s = r.split
    out.print(f"{len(r.rows)}/{r.n_points} points in {r.seconds:.1f} s, selected by {r.selection} "
              f"(train {s['n_train']}, val {s['n_val']}, test {s['n_test']}); "
              f"{r.as_dict()['tie_break']}")
    _print_excluded(s)
    _print_flips(s)
    out.print(table)
    for note in r.notes:
        out.print(f"note: {flagged(note)}", markup=False)
    if r.best:
        b = r.best
        test = f"{b['test_accuracy']:.4f}" if b["test_accuracy"] is not None else "n/a"
        out.print(f"best: {point_label(b)}, {_score(b)}; refitted on {b['refit_on']} "
                  f"({b['refit_seconds']:.2f} s), test accuracy {test}")
    for key, path in r.files.items():
        out.print(f"  {key}: {path}")


PARTIAL_EXIT = 3  # predict: some inputs could not be predicted (the others were)


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="A model bundle from featx fit (a directory)."),
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Classes listed per image."),
    weights: Optional[str] = typer.Option(
        None, help="Where the extractor's weights file is now (its identity must match)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    tta: Optional[str] = typer.Option(
        None, "--tta", help="flip: average over each image and its mirror (twice the model time); "
        "none [as the bundle was evaluated]."),
    reject: bool = REJECT_OPTION,
    unfamiliar_at: Optional[float] = UNFAMILIAR_AT_OPTION,
    csv_file: Optional[Path] = typer.Option(
        None, "--csv", help="Also write the predictions to this CSV file (path, label, "
        "probability, one column per class, error)."),
    sort_into: Optional[Path] = typer.Option(
        None, "--sort-into", help="Link each photo into DIR/<predicted class>/ (never moves or "
        "overwrites a file)."),
    copy: bool = typer.Option(False, "--copy", help="With --sort-into: copies instead of links."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Class probabilities for new images, embedded exactly as the bundle's store was; each
    photo is also flagged when it looks unlike the training photos.

    Exit code 3 when any input could not be predicted (each has its own line on stderr; the
    others are still predicted), 2 on bad input such as a missing bundle.
    """
    from featx.files import write_text
    from featx.predict import check_sort_into, csv_text
    from featx.predict import predict as run_predict
    from featx.predict import sort_into as run_sort

    if copy and sort_into is None:
        raise FeatxError("`copy` applies to `sort_into` only")
    check_outputs(predictions_csv=csv_file)
    if sort_into is not None:
        check_sort_into(sort_into, images)
    with progress_bar() as bar:
        report = run_predict(bundle, images, k=top_k, weights=weights, batch_size=batch_size,
                             tta=parse_tta(tta), reject=reject, unfamiliar_at=unfamiliar_at,
                             progress=bar)
    result = report.as_dict()
    if csv_file is not None:
        write_text(csv_file, csv_text(report), "the predictions CSV file")
        result["csv"] = str(csv_file)
    sorted_ = run_sort(report, sort_into, copy) if sort_into is not None else None
    if sorted_ is not None:
        result["sorted"] = sorted_.as_dict()
    emit(result, as_json, lambda: _print_predict(report, csv_file, sorted_))
    for note in report.notes:  # said once, also with --json
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for path, reason in report.errors:  # per-file errors on stderr, also with --json
        err.print(f"featx: error: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if report.errors:
        sys.exit(PARTIAL_EXIT)


def _print_predict(r, csv_file=None, sorted_=None) -> None:
    for p in r.predictions:
        tops = ", ".join(f"{c} {v:.3f}" for c, v in p.top_k)
        flag = "" if p.unfamiliar is None else \
            f"  unfamiliar: {str(p.unfamiliar).lower()} (score {p.score:.4f})"
        out.print(f"{p.path}: {p.label}  ({tops}){flag}", markup=False)
    line = r.summary_line()
    if line:
        f = r.familiar
        by = ("--unfamiliar-at" if f["set_by"] != "bundle" else
              f"the bundle's, passing {f['target_pass']:.0%} of validation photos")
        out.print(f"{line} (score above {f['threshold']:.4f}: {by})", markup=False)
    if csv_file is not None:
        out.print(f"predictions: {csv_file}", markup=False)
    if sorted_ is not None:
        kind = "copies" if sorted_.mode == "copy" else "links"
        again = f"; {sorted_.already} already there" if sorted_.already else ""
        out.print(f"sorted into {sorted_.dest}: {len(sorted_.placed)} {kind}{again}", markup=False)
