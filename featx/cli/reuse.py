"""featx neighbors / map / duplicates / export: reuse a store's embeddings beyond classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from featx.cli import JSON_OPTION, app, emit, err, out, progress_bar

STORE_ARG = typer.Argument(..., help="A featx feature store (.h5).")
EXACT_OPTION = typer.Option(
    None, "--exact/--approx",
    help="Exact scan, or the approximate index kept beside the store (FILE.h5.index/) "
         "[default: exact below 50,000 images].")


@app.command()
def neighbors(
    store: Path = STORE_ARG,
    queries: List[str] = typer.Argument(
        ..., help="Paths stored in the store (as `featx export` lists them) or new image files."),
    k: int = typer.Option(8, "-k", help="Neighbours per query (a stored query is its own first)."),
    grid: Optional[Path] = typer.Option(
        None, "--grid", help="Write a PNG: one row per query, the query then its neighbours."),
    weights: Optional[str] = typer.Option(
        None, help="Where the store's weights file is now, if it moved (for new image files)."),
    exact: Optional[bool] = EXACT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Most similar stored images (cosine similarity) for stored paths or new image files."""
    from featx.reuse import neighbors as run_neighbors

    found = run_neighbors(store, queries, k=k, weights=weights, grid=grid, exact=exact)

    def human() -> None:
        for r in found.results:
            label = f", stored as {r.label}" if r.label else ""
            out.print(f"{r.query} ({r.source}{label})")
            for n in r.neighbors:
                out.print(f"  {n.rank:>3}  {n.similarity:.4f}  {n.label:<14} {n.path}")
        if grid:
            out.print(f"grid: {grid}")

    emit(found.as_dict(), as_json, human)


@app.command("map")
def map_(
    store: Path = STORE_ARG,
    output: Path = typer.Option(Path("map.png"), "-o", "--output", help="Scatter plot (PNG)."),
    mosaic: Optional[Path] = typer.Option(
        None, "--mosaic", help="Also draw image thumbnails at their 2-D positions (PNG)."),
    coords: Optional[Path] = typer.Option(
        None, "--coords", help="Save the 2-D coordinates (.csv or .json)."),
    method: str = typer.Option("tsne", help="tsne (PCA to 50 dims, then t-SNE) or pca (2 PCs)."),
    max_points: int = typer.Option(
        5000, "--max-points", help="Random sample of this many images for larger stores."),
    perplexity: float = typer.Option(30.0, help="t-SNE perplexity."),
    seed: int = typer.Option(0, help="Seed of the sample and of t-SNE."),
    as_json: bool = JSON_OPTION,
) -> None:
    """A 2-D map of the collection: PCA + t-SNE, coloured by class; optionally a thumbnail mosaic."""
    from featx.reuse import map_store

    with progress_bar() as bar:
        made = map_store(store, output, mosaic=mosaic, coords=coords, method=method,
                         max_points=max_points, perplexity=perplexity, seed=seed, progress=bar)
    m, result = made.map, made.as_dict()

    def human() -> None:
        sample = f" (random sample of {m.n_total})" if len(m.rows) < m.n_total else ""
        out.print(f"{len(m.rows)} images{sample} mapped by {m.method} in {made.seconds:.1f} s")
        for key in ("map", "mosaic", "coords"):
            if result[key]:
                out.print(f"  {key}: {result[key]}")

    emit(result, as_json, human)


@app.command()
def duplicates(
    store: Path = STORE_ARG,
    threshold: float = typer.Option(
        0.95, help="Cosine similarity at or above which two images are near-duplicates."),
    sheet: Optional[Path] = typer.Option(
        None, "--sheet", help="PNG of the pairs, cross-label ones first."),
    sheet_max: int = typer.Option(20, "--sheet-max", help="Pairs drawn on the sheet."),
    limit: int = typer.Option(30, help="Groups printed (all are in --json)."),
    exact: Optional[bool] = EXACT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Exact (same content) and near-duplicate images; pairs across labels are listed first."""
    from featx.reuse import duplicates as run_duplicates

    with progress_bar() as bar:
        found = run_duplicates(store, threshold, sheet, sheet_max, progress=bar, exact=exact)
    report, result = found.report, found.as_dict()
    if sheet and not found.sheet:
        err.print("no duplicate pairs: no sheet written")

    def human() -> None:
        out.print(f"{report.n} images: {result['n_exact_pairs']} exact and "
                  f"{result['n_near_pairs']} near-duplicate pairs (cosine >= {threshold}), "
                  f"{result['n_cross_label_pairs']} across labels; {len(report.groups)} groups "
                  f"in which every two images are a pair")
        for g in result["groups"][:limit]:
            flag = "CROSS-LABEL " if g["cross_label"] else ""
            out.print(f"  {flag}group of {len(g['members'])} ({', '.join(g['labels'])}), "
                      f"cosine >= {g['min_similarity']:.3f} within")
            for mem in g["members"]:
                out.print(f"    {mem['label']:<14} {mem['path']}")
        if len(result["groups"]) > limit:
            out.print(f"  ... and {len(result['groups']) - limit} more groups (all with --json)")
        group_of = {i: k for k, g in enumerate(report.groups) for i in g}
        loose = [q for p, q in zip(report.pairs, result["pairs"])
                 if p.a not in group_of or group_of.get(p.a) != group_of.get(p.b)]
        if loose:
            out.print(f"  {len(loose)} pairs outside any one group (their images are not all "
                      f"pairs with each other):")
        for q in loose[:limit]:
            flag = "CROSS-LABEL " if q["cross_label"] else ""
            out.print(f"  {flag}{q['kind']} pair, cosine {q['similarity']:.3f}: "
                      f"{q['a']['label']} {q['a']['path']}  ~  {q['b']['label']} {q['b']['path']}",
                      markup=False)
        if len(loose) > limit:
            out.print(f"  ... and {len(loose) - limit} more pairs (all with --json)")
        if result["sheet"]:
            out.print(f"sheet: {result['sheet']}")

    emit(result, as_json, human)


@app.command()
def export(
    store: Path = STORE_ARG,
    fmt: str = typer.Option("npz", "--format", help="npz (numpy arrays) or csv (one row per image)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Output file [default: the store's name with .npz/.csv]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export vectors, labels, paths and class names for other tools."""
    from featx.export import export as run_export
    from featx.store import read_meta

    meta = read_meta(store)
    path = run_export(store, output, fmt)
    result = {"store": str(store), "out": str(path), "format": fmt, "n": meta["n"],
              "dim": meta["dim"], "class_names": meta["class_names"]}
    emit(result, as_json, lambda: out.print(f"{path}: {meta['n']} vectors x {meta['dim']} dims, "
                                            f"{len(meta['class_names'])} classes ({fmt})"))
