"""featx baseline / featx report: the from-scratch CNN, and the comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from featx.baseline import MIN_SIZE, BaselineSettings
from featx.cli import JSON_OPTION, app, emit, err, out, progress_bar
from featx.cli.fit import SPLIT_OPTION, SPLIT_SEED_OPTION

D = BaselineSettings()  # the library's defaults



@app.command()
def baseline(
    data_dir: Path = typer.Argument(..., help="Folder with one subfolder per class."),
    store: Optional[Path] = typer.Option(
        None, "--store", help="Take the rows (hence the split) from this store of DATA_DIR; "
        "otherwise they are computed from the folder, with the same result."),
    size: int = typer.Option(D.size, "--size", help=f"Input size in pixels (square, at least {MIN_SIZE})."),
    resize: str = typer.Option(D.resize, "--resize", help="squash or crop (as for extract)."),
    epochs: int = typer.Option(D.epochs, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", help="Images per step."),
    lr: float = typer.Option(D.lr, "--lr", help="Adam learning rate."),
    workers: int = typer.Option(D.workers, "--workers", help="Decoding threads."),
    seed: int = typer.Option(D.seed, "--seed", help="Seed of the weights' initialisation and shuffling."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    no_corrections: bool = typer.Option(
        False, "--no-corrections", help="Ignore the --store's label corrections (FILE.h5.labels.csv)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Bundle directory (default: models/<data-dir>_cnn/)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the tutorial's small CNN from scratch on the images (same split as the store)."""
    from featx.baseline import default_output, train_baseline
    from featx.split import parse_fractions

    settings = BaselineSettings(size=size, resize=resize, epochs=epochs, batch_size=batch_size,
                                lr=lr, seed=seed, workers=workers)
    with progress_bar() as progress:
        result = train_baseline(data_dir, settings, store=store, fractions=parse_fractions(split),
                                split_seed=split_seed, out=output or default_output(data_dir),
                                corrections=not no_corrections, progress=progress)
    summary = result.summary()
    emit(summary, as_json, lambda: _print_baseline(summary))


def _print_baseline(s: dict[str, Any]) -> None:
    from featx.metrics import accuracy_text

    def acc(part):
        return accuracy_text(s.get(part))
    p = s["params"]
    out.print(f"scratch CNN on {s['data_dir']} ({p['size']}x{p['size']}, {s['epochs_run']} epochs): "
              f"train {s['n_train']}, val {s['n_val']}, test {s['n_test']} images; "
              f"fit {s['fit_seconds']:.1f} s", markup=False)
    out.print(f"  rows: {s['rows']}", markup=False)
    h = s["history"]
    for i, (vl, va) in enumerate(zip(h.get("val_loss", []), h.get("val_accuracy", [])), 1):
        out.print(f"  epoch {i:>3}: loss {h['loss'][i - 1]:.4f}, accuracy "
                  f"{h['accuracy'][i - 1]:.4f}, val loss {vl:.4f}, val accuracy {va:.4f}")
    out.print(f"  val accuracy {acc('val')}, test accuracy {acc('test')}")
    out.print(f"  bundle: {s['bundle']}", markup=False)


@app.command()
def report(
    store: Path = typer.Argument(..., help="The data set's feature store (.h5)."),
    models: Path = typer.Option(
        Path("models"), "--models", help="Folder searched for bundles of this data set."),
    bundles: Optional[list[Path]] = typer.Option(
        None, "--bundle", metavar="<path>",
        help="Use these bundles instead of searching (repeatable)."),
    clf: Optional[str] = typer.Option(
        None, "--clf", help="Classifier of the confusion matrix and mistakes (default: softmax, "
        "else the best on test): a clf name (cnn for the baseline) or a bundle path."),
    sweep: Optional[Path] = typer.Option(
        None, "--sweep", help="Sweep results.json (default: reports/<store>_sweep/results.json "
        "when it exists)."),
    per_class: int = typer.Option(6, "--per-class", help="Sample images per class."),
    mistakes: int = typer.Option(12, "--mistakes", help="Worst mistakes shown."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Report folder (default: reports/<store>/)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Figures (curves, confusion matrix, samples, worst mistakes, sweep) and an HTML/MD page."""
    from featx.report import default_output, make_report

    result = make_report(store, output or default_output(store), models=models,
                         bundles=bundles or None, clf=clf, sweep=sweep, per_class=per_class,
                         n_mistakes=mistakes)
    emit(result.as_dict(), as_json, lambda: _print_report(result))
    for note in result.notes:
        err.print(f"note: {note}", markup=False, highlight=False)


def _print_report(r) -> None:
    out.print(f"{'val acc':>8}  {'test acc':>8}  {'train/val/test':>14}  model (bundle)", markup=False)
    for row in r.table:
        split = f"{row['n_train']}/{row['n_val']}/{row['n_test']}"
        out.print(f"{_fmt(row['val_accuracy']):>8}  {_fmt(row['test_accuracy']):>8}  {split:>14}  "
                  f"{row['model']} ({row['bundle']})", markup=False)
    u = (r.chosen or {}).get("unfamiliar")
    if u:
        out.print(f"  unfamiliar photos ({u['method']}, score above {u['threshold']:.4f}): "
                  f"{u['n_test_flagged']} of {r.chosen['n_test']} test photos flagged "
                  f"({u['test_flagged']:.1%}; validation {u['val_flagged']:.1%})", markup=False)
    for key, path in r.files.items():
        out.print(f"  {key}: {path}", markup=False)


def _fmt(v) -> str:
    return f"{v:.4f}" if v is not None else "n/a"
