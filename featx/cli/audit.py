"""featx audit: likely label errors, leaks across the split and outliers of a labelled store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from featx import audit as A
from featx.cli import JSON_OPTION, app, emit, out, progress_bar
from featx.cli.fit import GROUP_OPTION, NO_CORRECTIONS_OPTION, SPLIT_OPTION, SPLIT_SEED_OPTION
from featx.cli.reuse import EXACT_OPTION


@app.command()
def audit(
    store: Path = typer.Argument(..., help="A featx feature store (.h5)."),
    clf: str = typer.Option("logreg", "--clf", help="Head for the out-of-fold probabilities."),
    folds: int = typer.Option(A.DEFAULT_FOLDS, "--folds", help="Folds of the out-of-fold predictions."),
    top: int = typer.Option(A.DEFAULT_TOP, "--top",
                            help="Entries drawn on the sheets and listed on the page, per finding."),
    outlier_z: float = typer.Option(
        A.OUTLIER_Z, "--outlier-z", help="Outliers: modified z-score of the class distance above this."),
    threshold: float = typer.Option(
        A.DEFAULT_THRESHOLD, "--threshold",
        help="Cosine similarity of a near-duplicate (leaks across the split)."),
    neighbors: int = typer.Option(
        A.DEFAULT_NEIGHBORS, "--neighbors", "-k", help="Same-class neighbours of the outlier distance."),
    C: Optional[float] = typer.Option(
        None, "--C", help="The head's inverse L2 strength [logreg: 0.01; others: as for fit]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and the head."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    group: str = GROUP_OPTION,
    exact: Optional[bool] = EXACT_OPTION,
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Folder for the sheets, audit.html, audit.json, suspects.csv "
        "(default: reports/<store>_audit/)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find likely label errors (cleanlab), near-duplicates across the split and outliers."""
    from featx.audit import audit_store, default_output
    from featx.split import parse_fractions

    with progress_bar() as progress:
        report = audit_store(store, clf, folds, top, seed=seed, fractions=parse_fractions(split),
                             split_seed=split_seed, threshold=threshold, neighbors=neighbors,
                             out=output or default_output(store), progress=progress,
                             corrections=not no_corrections, outlier_z=outlier_z, group=group,
                             exact=exact, C=C)
    emit(report.as_dict(), as_json, lambda: _print_audit(report))


def _print_audit(r, shown: int = 10) -> None:
    s, st = r.summary, r.settings
    out.print(f"{len(r.paths)} images, {len(r.class_names)} classes: out-of-fold {st['clf']} "
              f"({st['folds']} folds) accuracy {s['oof_accuracy']:.4f}; cleanlab estimates "
              f"{s['estimated_wrong_labels']} wrong labels ({s['estimated_wrong_share']:.1%})",
              markup=False)
    for note in r.notes:
        out.print(f"  note: {note}", markup=False)
    out.print(f"  {'class':<16} {'images':>7} {'label issues':>13} {'outliers':>9} {'oof recall':>11}")
    for c in s["per_class"]:
        out.print(f"  {c['class']:<16} {c['images']:>7} {c['label_issues']:>13} {c['outliers']:>9} "
                  f"{c['oof_recall']:>11.4f}", markup=False)
    for c in s["confused"][:5]:
        out.print(f"  given {c['given']}, likely {c['likely']}: about {c['estimated']} "
                  f"image{'s' * (c['estimated'] != 1)} ({c['flagged']} flagged)", markup=False)
    out.print(f"label issues: {s['n_label_issues']} (worst first: given -> suggested, quality)")
    for x in r.label_issues[:shown]:
        out.print(f"  {x.quality:.4f}  {x.label} -> {x.suggested}  {x.path}", markup=False)
    out.print(f"leaks: {s['n_leaks']} near-duplicate pairs across the split; "
              f"{s['test_with_twin_in_train']} test images have a near-twin in train")
    for x in r.leaks[:shown]:
        out.print(f"  {x.similarity:.4f}  {x.held_part} {r.paths[x.held]}  ~  {x.twin_part} "
                  f"{r.paths[x.twin]}", markup=False)
    out.print(f"outliers: {len(r.outliers)} images far from their class (modified z-score above "
              f"{st['outlier_z']})")
    for x in r.outliers[:shown]:
        out.print(f"  {x.distance:.4f}  {x.label}  {x.path}", markup=False)
    for key, path in r.files.items():
        out.print(f"  {key}: {path}", markup=False)
