"""featx curve / featx suggest: how many more photos, and which to label next."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from featx.cli import JSON_OPTION, app, emit, err, out, progress_bar
from featx.cli.fit import (EXCLUDE_OPTION, EXCLUDE_OUTLIERS_OPTION, EXCLUDE_TEST_OPTION,
                           NO_CORRECTIONS_OPTION, SPLIT_OPTION, SPLIT_SEED_OPTION,
                           TRAIN_FLIPS_OPTION, TTA_OPTION, _print_excluded, _print_flips,
                           exclusion_findings, split_args)

CLF_OPTION = typer.Option("logreg", "--clf", help="logreg, svm, linear-svm or softmax.")
C_OPTION = typer.Option(None, "--C", help="Inverse L2 strength [picked as featx fit does].")
SCALE_OPTION = typer.Option(None, "--scale", help="none, l2, standard or l2+standard [picked like --C].")


@app.command()
def curve(
    store: Path = typer.Argument(..., help="A featx feature store (.h5)."),
    clf: str = CLF_OPTION,
    C: Optional[float] = C_OPTION,
    scale: Optional[str] = SCALE_OPTION,
    sizes: Optional[str] = typer.Option(
        None, "--sizes", help="Photos a class to train on, e.g. 5,10,20,50 [5, 10, 20, 50, ... "
        "and the whole train part]."),
    seeds: int = typer.Option(5, "--seeds", help="Seeded draws at each size."),
    choose: str = typer.Option(
        "once", "--choose", help="When C / scale are picked: once (on the whole train part), "
        "size (on each size's first draw) or point (every draw)."),
    model: Optional[str] = typer.Option(
        None, "--model", help="The curve: power (a - b n^-c), exp or loglinear [power]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier and of the CV folds."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Parallel fits."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    exclude: Optional[Path] = EXCLUDE_OPTION,
    exclude_from_test: bool = EXCLUDE_TEST_OPTION,
    exclude_outliers: bool = EXCLUDE_OUTLIERS_OPTION,
    train_flips: Optional[bool] = TRAIN_FLIPS_OPTION,
    tta: Optional[str] = TTA_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Folder for curve.json, points.csv and curve.png "
        "[default: reports/<store>_curve/]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Test accuracy against training photos a class, the fitted curve, and what more would give."""
    from featx.curve import default_output, learning_curve, parse_sizes

    result = learning_curve(store, clf, parse_sizes(sizes), seeds=seeds, choose=choose,
                            **split_args(split, split_seed, exclude, exclude_from_test,
                                         exclude_outliers, train_flips, tta, no_corrections),
                            n_jobs=jobs, model=model,
                            out_dir=output or default_output(store), C=C, scale=scale, seed=seed)
    emit(result.as_dict(), as_json, lambda: _print_curve(result))


def _print_curve(r) -> None:
    out.print(f"{r.clf} on {r.store}: {len(r.points)} fits ({r.seeds} seeded draws at each of "
              f"{len(r.sizes)} sizes), scored on one test part of {r.n_test}; {r.seconds:.1f} s",
              markup=False)
    _print_excluded(r.split)
    _print_flips(r.split)
    sizes = sorted({p["photos_per_class"] for p in r.points})
    for n in sizes:
        mean, std = r.measured(n)
        out.print(f"  {round(n, 1):>7g} a class: {100 * mean:5.1f}% ± {100 * std:.1f}", markup=False)
    for line in r.summary():
        out.print(line, markup=False)
    for key, path in r.files.items():
        out.print(f"  {key}: {path}", markup=False)


@app.command()
def suggest(
    store: Path = typer.Argument(..., help="The labelled feature store (.h5)."),
    unlabelled_dir: Path = typer.Argument(..., help="A folder of unlabelled photos."),
    n: int = typer.Option(50, "-n", help="Photos to suggest."),
    strategy: str = typer.Option(
        "margin-diverse", "--strategy", help="margin-diverse (uncertain and spread out), margin, "
        "entropy or random."),
    clf: str = CLF_OPTION,
    C: Optional[float] = C_OPTION,
    scale: Optional[str] = SCALE_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier, the CV folds and k-means."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    exclude: Optional[Path] = EXCLUDE_OPTION,
    exclude_outliers: bool = EXCLUDE_OUTLIERS_OPTION,
    train_flips: Optional[bool] = TRAIN_FLIPS_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    unlabelled_store: Optional[Path] = typer.Option(
        None, "--unlabelled-store", help="Store of the unlabelled photos' vectors [features/"
        "<folder>_<the store's settings>.h5]."),
    weights: Optional[str] = typer.Option(
        None, help="Where the store's weights file is now, if it moved."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    workers: int = typer.Option(2, "--workers", help="Decoding threads."),
    jobs: int = typer.Option(2, "--jobs", "-j", help="Parallel fits when picking C / scale."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Folder for suggestions.csv / .png / suggest.json "
        "[default: reports/<folder>_suggest/]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Which unlabelled photos to label next: the head's most uncertain, spread over the space."""
    from featx.split import parse_fractions
    from featx.suggest import default_output, suggest as run_suggest

    with progress_bar() as bar:
        result = run_suggest(store, unlabelled_dir, n, clf, strategy,
                             out_dir=output or default_output(unlabelled_dir),
                             unlabelled_store=unlabelled_store, fractions=parse_fractions(split),
                             split_seed=split_seed, exclude=exclude,
                             exclude_findings=exclusion_findings(exclude_outliers),
                             corrections=not no_corrections, train_flips=train_flips,
                             batch_size=batch_size, workers=workers, weights=weights,
                             n_jobs=jobs, on_progress=bar, C=C, scale=scale, seed=seed)
    emit(result.as_dict(), as_json, lambda: _print_suggest(result))


def _print_suggest(r) -> None:
    not_new = (f"; {r.n_known} already in the labelled store" if r.n_known else "") + \
        (f"; {r.n_duplicates} exact repeats" if r.n_duplicates else "")
    out.print(f"{len(r.rows)} of {r.n_photos} photos in {r.folder} to label next "
              f"({r.strategy}; the head: {r.clf}, test accuracy "
              f"{r.test_accuracy if r.test_accuracy is None else f'{r.test_accuracy:.3f}'}"
              f"{not_new})", markup=False)
    for row in r.rows[:10]:
        out.print(f"  {row['rank']:>3}  {row['guess']} {row['probability']:.2f} / "
                  f"{row['runner_up']}  {row['path']}", markup=False)
    if len(r.rows) > 10:
        out.print(f"  ... {len(r.rows) - 10} more in the list", markup=False)
    for path, reason in r.skipped:
        err.print(f"featx: skipped {path}: {reason}", markup=False, highlight=False)
    out.print("label them by moving each file into its class folder of the labelled data "
              "folder, then rerun featx extract and featx fit", markup=False)
    for key, path in r.files.items():
        out.print(f"  {key}: {path}", markup=False)
