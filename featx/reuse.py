"""reuse: one call per command that reuses a store's vectors beyond classifiers, pictures included.

``featx neighbors``, ``featx map`` and ``featx duplicates`` each call one function here: it checks
the outputs before any work, computes (:mod:`featx.neighbors`, :mod:`featx.maps`,
:mod:`featx.near_duplicates`), times it, draws (:mod:`featx.figures`) and returns a result with
``as_dict()``, the command's ``--json`` document.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from featx.files import check_output

Progress = Callable[[str, int, int], None]


def _check(**outputs: str | os.PathLike | None) -> None:
    for what, path in outputs.items():
        if path is not None:
            check_output(path, f"the {what} file")


@dataclass
class NeighborsResult:
    store: Path
    k: int
    results: list  # featx.neighbors results, one per query
    grid: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "k": self.k,
                "grid": str(self.grid) if self.grid else None,
                "queries": [r.as_dict() for r in self.results]}


def neighbors(store: str | os.PathLike, queries: list[str], k: int = 8,
              weights: str | None = None, grid: str | os.PathLike | None = None,
              exact: bool | None = None) -> NeighborsResult:
    """The ``k`` most similar stored images of each query (stored paths or new image files);
    with ``grid``, a PNG: one row per query, the query then its neighbours. ``exact``: see
    :func:`featx.neighbors.find_neighbors`."""
    from featx.neighbors import find_neighbors

    _check(grid=grid)
    results = find_neighbors(store, queries, k=k, weights=weights, exact=exact)
    if grid:
        from featx.figures import draw_neighbors
        from featx.store import read_meta

        draw_neighbors(results, read_meta(store).get("data_dir"), grid, Path(store).name)
    return NeighborsResult(Path(store), k, results, Path(grid) if grid else None)


@dataclass
class MapResult:
    store: Path
    map: Any  # featx.maps.Map2D
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)  # map, mosaic, coords

    def as_dict(self) -> dict[str, Any]:
        m = self.map
        return {"store": str(self.store), "n_points": len(m.rows), "n_total": m.n_total,
                "method": m.method, "seconds": round(self.seconds, 2),
                **{key: str(self.files[key]) if key in self.files else None
                   for key in ("map", "mosaic", "coords")}}


def map_store(store: str | os.PathLike, output: str | os.PathLike = "map.png", *,
              mosaic: str | os.PathLike | None = None, coords: str | os.PathLike | None = None,
              method: str = "tsne", max_points: int | None = None, perplexity: float = 30.0,
              seed: int = 0, progress: Progress | None = None) -> MapResult:
    """A 2-D map of the store (:func:`featx.maps.make_map`, timed) drawn as a scatter plot at
    ``output``; with ``mosaic`` also the thumbnails at their positions; with ``coords`` the
    coordinates saved (.csv or .json)."""
    from featx.figures import draw_mosaic, draw_scatter
    from featx.maps import DEFAULT_MAX_POINTS, check_coords, make_map, save_coords

    _check(map=output, mosaic=mosaic)
    if coords:
        check_coords(coords)
    t0 = time.perf_counter()
    m = make_map(store, method=method, max_points=max_points or DEFAULT_MAX_POINTS,
                 perplexity=perplexity, seed=seed, progress=progress)
    result = MapResult(Path(store), m, time.perf_counter() - t0)
    result.files["map"] = Path(draw_scatter(m, output, Path(store).name))
    if mosaic:
        result.files["mosaic"] = Path(draw_mosaic(m, mosaic, Path(store).name, progress=progress))
    if coords:
        save_coords(m, coords)
        result.files["coords"] = Path(coords)
    return result


@dataclass
class DuplicatesResult:
    store: Path
    report: Any  # featx.near_duplicates.DuplicateReport
    sheet: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), **self.report.as_dict(),
                "sheet": str(self.sheet) if self.sheet else None}


def duplicates(store: str | os.PathLike, threshold: float | None = None,
               sheet: str | os.PathLike | None = None, sheet_max: int = 20,
               progress: Progress | None = None, exact: bool | None = None) -> DuplicatesResult:
    """Exact and near-duplicate pairs (:func:`featx.near_duplicates.find_duplicates`); with
    ``sheet``, a PNG of the first ``sheet_max`` pairs, cross-label ones first (none written when
    there is no pair: ``sheet`` is then None in the result)."""
    from featx.figures import draw_pairs
    from featx.near_duplicates import DEFAULT_THRESHOLD, find_duplicates

    _check(sheet=sheet)
    report = find_duplicates(store, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                             progress=progress, exact=exact)
    drawn = None
    if sheet and report.pairs:
        draw_pairs(report, sheet, limit=sheet_max)
        drawn = Path(sheet)
    return DuplicatesResult(Path(store), report, drawn)
