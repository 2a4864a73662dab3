"""featx evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from featx.cli import JSON_OPTION, app, emit, out, progress_bar
from featx.cli.fit import print_metrics


@app.command()
def evaluate(
    bundle: Path = typer.Argument(..., help="A model bundle (featx fit, finetune or baseline)."),
    data_dir: Path = typer.Argument(..., help="A labelled folder: one subfolder per class."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output",
        help="Folder for mistakes.png [default: reports/<bundle>_on_<data folder>/]."),
    mistakes: int = typer.Option(12, "--mistakes", help="Most confident mistakes drawn."),
    weights: Optional[str] = typer.Option(
        None, help="Where the extractor's weights file is now (its identity must match)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    workers: int = typer.Option(2, help="Hashing threads."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Score a bundle on a new labelled folder: accuracy with its 95% interval, per-class
    precision and recall, the confusion matrix and a sheet of the worst mistakes. Images whose
    content the bundle's store holds reuse their stored vectors."""
    from featx.evaluate import default_output
    from featx.evaluate import evaluate as run_evaluate

    folder = output or default_output(bundle, data_dir)
    with progress_bar() as bar:
        report = run_evaluate(bundle, data_dir, folder, weights=weights, batch_size=batch_size,
                              workers=workers, n_mistakes=mistakes, progress=bar)
    emit(report.as_dict(), as_json, lambda: _print_evaluate(report.as_dict()))


def _print_evaluate(d: dict) -> None:
    lo, hi = d["accuracy_interval"]
    out.print(f"{d['bundle']} on {d['data_dir']}: accuracy {d['accuracy']:.4f} (95% interval "
              f"{lo:.3f} to {hi:.3f}, Wilson) on {d['n']} images ({d['n_reused']} reused from the "
              f"bundle's store, {d['n_embedded']} embedded now)", markup=False)
    if d["n"] < 100:
        out.print(f"  note: {d['n']} images are few: one image is {100 / d['n']:.1f} points",
                  markup=False)
    print_metrics(d["class_names"], d)
    for m in d["mistakes"][:5]:
        out.print(f"  mistake: {m['path']} ({m['label']}) predicted {m['predicted']} "
                  f"{m['probability']:.3f}", markup=False)
    if d["files"].get("mistakes"):
        out.print(f"  mistakes sheet: {d['files']['mistakes']}", markup=False)
    if d["skipped"]:
        out.print(f"  skipped {len(d['skipped'])} files (listed with --json)", markup=False)
