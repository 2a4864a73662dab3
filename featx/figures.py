"""figures: every picture featx draws, with one matplotlib set-up and one save.

Report figures (learning curves, confusion matrix, sweep), 2-D maps (scatter, thumbnail mosaic)
and contact sheets of captioned thumbnails (samples, mistakes, neighbours, duplicate pairs). The
modules that compute (``report``, ``maps``, ``neighbors``, ``near_duplicates``) pass data in;
nothing here reads a store. matplotlib's non-interactive Agg backend is used, so no display is
needed.
"""

from __future__ import annotations

import base64
import html
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featx.files import atomic_path, write_error
from featx.thumbs import resolve, short, thumbnail

LABELS = {"cnn": "scratch CNN", "softmax": "softmax head", "logreg": "logistic regression",
          "svm": "RBF SVM", "linear-svm": "linear SVM", "finetune": "fine-tuned block5 + softmax"}
COLOURS = {"cnn": "tab:red", "softmax": "tab:blue", "finetune": "black"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | os.PathLike, dpi: int | None = 110) -> Path:
    """Write a figure as PNG, atomically (folders created), and close it."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, "the figure") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    except OSError as e:
        raise write_error(e, out, "the figure") from None
    finally:
        pyplot().close(fig)
    return out


# --- report figures -----------------------------------------------------------------------------


def plot_curves(entries: list, out: str | os.PathLike, title: str):
    """Validation loss and accuracy per epoch (training dotted) of every entry with a history.

    An entry is a model with ``name``, ``label``, ``kind``, ``clf`` and ``history`` (a
    :class:`featx.report.Entry`); at least one must have a history (:func:`with_history`).

    Returns ``(path, curves)``: ``curves[name][key]`` is the series as drawn (read back from the
    figure's lines), so a test can compare the figure with the stored histories.
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    order = sorted(with_history(entries), key=lambda e: (e.kind != "cnn", e.clf != "softmax", e.name))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    curves: dict[str, dict[str, list[float]]] = {}
    palette = iter(["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan"])
    for e in order:
        colour = COLOURS.get(e.clf) or next(palette, "grey")
        label = e.label if sum(x.clf == e.clf for x in order) == 1 else f"{e.label} ({e.name})"
        curves[e.name] = {}
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            for prefix, style in (("val_", "-"), ("", ":")):
                ys = e.history.get(prefix + key)
                if not ys:
                    continue
                epochs = np.arange(1, len(ys) + 1)
                line, = ax.plot(epochs, ys, style, color=colour, marker="o" if prefix else None,
                                markersize=3.5, linewidth=2 if prefix else 1.3,
                                alpha=1.0 if prefix else 0.7,
                                label=f"{label}, {'validation' if prefix else 'training'}")
                curves[e.name][prefix + key] = [float(v) for v in line.get_ydata()]
    n_epochs = max((len(ys) for c in curves.values() for ys in c.values()), default=1)
    for ax, what in ((ax_loss, "loss (categorical cross-entropy)"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_xlim(0.5, n_epochs + 0.5)  # whole epochs only, one run of 1 epoch included
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    ax_loss.set_title("Validation loss (lower is better)")
    ax_acc.set_title("Validation accuracy (higher is better)")
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(2, len(labels)),
               fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12)
    path = save(fig, out)
    return path, curves


def with_history(entries: list) -> list:
    """The entries that have a per-epoch validation history to draw."""
    return [e for e in entries if e.history and e.history.get("val_loss")]


def plot_confusion(cm: np.ndarray, class_names: list[str], out: str | os.PathLike, title: str):
    plt = pyplot()
    n = len(class_names)
    side = max(4.2, 0.9 * n + 2.6)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    fontsize=9 if n <= 6 else 7, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), class_names, rotation=30 if n > 3 else 0,
                  ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    return save(fig, out)


def plot_sweep(rows: list[dict[str, Any]], out: str | os.PathLike, title: str,
               point_label=None):
    """Validation accuracy of every sweep point as a dot, best first (the selected point in
    orange). Dots, not bars: the axis spans the values, and a bar's length would mislead.
    ``point_label(row)``: a point's name (:func:`featx.selection.point_label`; by default its
    ``label`` or ``clf``)."""
    point_label = point_label or (lambda r: str(r.get("label") or r["clf"]))
    plt = pyplot()
    ok = [r for r in rows if r.get("val_accuracy") is not None]
    ok.sort(key=lambda r: -r["val_accuracy"])

    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.32 * max(len(ok), 1)), layout="constrained")
    if ok:
        vals = np.array([r["val_accuracy"] for r in ok])
        y = np.arange(len(ok))
        ax.plot(vals[1:], y[1:], "o", color="tab:blue")
        ax.plot(vals[:1], y[:1], "o", color="tab:orange", markersize=9, label="selected")
        ax.set_yticks(y, [point_label(r) for r in ok], fontsize=8)
        ax.invert_yaxis()
        lo, hi = float(vals.min()), float(vals.max())
        pad = max(0.01, 0.08 * (hi - lo))
        # an accuracy axis never runs past 1.0: the values are written left of their dots, in
        # room left of the lowest one
        ax.set_xlim(max(0.0, min(lo - 4 * pad, 1.0 - 5 * pad)), min(1.0, hi + pad))
        for yi, v in zip(y, vals):
            ax.text(v, yi, f"{v:.3f}  ", va="center", ha="right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished sweep point", ha="center", transform=ax.transAxes)
    ax.set_xlabel("validation accuracy (dots; the axis spans the values, it does not start at 0)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return save(fig, out)


def plot_scores(scores: np.ndarray, threshold: float, val_histogram: dict[str, list] | None,
                out: str | os.PathLike, title: str):
    """A histogram of unfamiliarity scores (bars) with the threshold, and the validation part's
    stored histogram (a step line, scaled to the same count) when given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    edges = np.asarray(val_histogram["edges"]) if val_histogram else None
    lo = min(float(np.min(scores)) if len(scores) else threshold, threshold,
             float(edges[0]) if edges is not None else threshold)
    hi = max(float(np.max(scores)) if len(scores) else threshold, threshold,
             float(edges[-1]) if edges is not None else threshold)
    bins = np.linspace(lo, hi + 1e-12, 31)
    ax.hist(scores, bins=bins, color="tab:blue", alpha=0.7, label=f"test ({len(scores)})")
    if edges is not None:
        counts = np.asarray(val_histogram["counts"], dtype=float)
        scale = len(scores) / max(counts.sum(), 1) * (bins[1] - bins[0]) / (edges[1] - edges[0])
        ax.stairs(counts * scale, edges, color="tab:green", label="validation (scaled)")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.4f}")
    ax.set_xlabel("unfamiliarity score (higher: less like the training photos)")
    ax.set_ylabel("photos")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save(fig, out)


def plot_photos_curve(curve: dict[str, Any], out: str | os.PathLike, title: str) -> Path:
    """Test accuracy against photos a class (log axis) of ``featx curve``'s JSON document: every
    draw as a dot, each size's mean and standard deviation, the fitted curve (dashed beyond the
    train part) and its ceiling (dotted), and the curve fitted on the smaller half of the sizes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    pts = curve["points"]
    x = np.array([p["photos_per_class"] for p in pts], float)
    y = 100 * np.array([p["accuracy"] for p in pts], float)
    ax.plot(x, y, "o", color="tab:blue", alpha=0.35, markersize=4, label="one seeded draw")
    sizes = sorted(set(x.tolist()))
    means = [y[x == v].mean() for v in sizes]
    stds = [y[x == v].std(ddof=1) if (x == v).sum() > 1 else 0.0 for v in sizes]
    ax.errorbar(sizes, means, yerr=stds, fmt="s", color="tab:blue", capsize=3, markersize=5,
                label="mean ± standard deviation")
    drawn, fit = curve.get("curve"), curve.get("fit")
    if drawn:
        cx, cy = np.array(drawn["photos_per_class"]), 100 * np.array(drawn["accuracy"])
        inside = cx <= curve["full"]
        ax.plot(cx[inside], cy[inside], "-", color="tab:orange", label=f"fitted ({fit['formula']})")
        ax.plot(cx[~inside], cy[~inside], "--", color="tab:orange", label="extrapolated")
        if fit.get("ceiling") is not None:
            ax.axhline(100 * fit["ceiling"], color="tab:orange", linestyle=":", linewidth=1,
                       label=f"ceiling {100 * fit['ceiling']:.1f}%")
    check = curve.get("check")
    if check:
        ax.plot([check["at"]], [100 * check["predicted"]], "x", color="tab:red", markersize=9,
                label=f"predicted from sizes up to {check['fitted_upto']:g} alone")
    ax.set_xscale("log")
    ticks: list[float] = []
    for v in sizes:  # a size too close to the one before replaces it (the last one stays)
        if ticks and v < 1.4 * ticks[-1]:
            ticks[-1] = v
        else:
            ticks.append(v)
    ax.set_xticks(ticks, [f"{v:.0f}" for v in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("training photos per class (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("\n".join(textwrap.fill(t, 100) for t in title.split("\n")), fontsize=9)
    return save(fig, out)


# --- maps ---------------------------------------------------------------------------------------


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _title(m, store_name: str) -> str:
    sample = f"{len(m.rows)} of {m.n_total} images" if len(m.rows) < m.n_total else f"{m.n_total} images"
    how = "PCA(50) + t-SNE" if m.method == "tsne" else "PCA, first 2 components"
    return f"{store_name}: {sample}, {how}"


def draw_scatter(m, out: str | os.PathLike, title: str) -> Path:
    """A scatter of a :class:`featx.maps.Map2D` coloured by class, legend outside the axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 7))
    size = max(3.0, min(30.0, 6000 / len(m.rows)))
    for c, (name, color) in enumerate(zip(m.class_names, _colors(len(m.class_names)))):
        pts = m.coords[m.labels == c]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=color, label=f"{name} ({len(pts)})",
                       alpha=0.8, linewidths=0)
    ax.set_title(_title(m, title), fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
              markerscale=max(1.0, 6 / size ** 0.5), frameon=False)
    fig.tight_layout()
    return save(fig, out, dpi=None)


def draw_mosaic(m, out: str | os.PathLike, title: str, canvas: int = 2400,
                thumb: int | None = None, progress=None) -> Path:
    """The "image t-SNE": each image's thumbnail at its 2-D position, framed in its class colour.

    ``progress(stage, done, total)`` is called as thumbnails are read (stage ``"mosaic"``).
    """
    from matplotlib.patches import Patch
    from PIL import Image, ImageOps

    plt = pyplot()

    colors = [tuple(int(255 * v) for v in c[:3]) for c in _colors(len(m.class_names))]
    if thumb is None:  # large enough to see, small enough that most do not overlap
        thumb = int(np.clip(0.6 * canvas / np.sqrt(len(m.rows)), 24, 96))
    border = 3 if thumb >= 48 else 2
    board = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    lo, hi = m.coords.min(0), m.coords.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    room = canvas - thumb - 2 * border
    xy = ((m.coords - lo) / span * room).astype(int)
    xy[:, 1] = room - xy[:, 1]  # image rows grow downwards
    for i, ((x, y), path, c) in enumerate(zip(xy, m.paths, m.labels)):
        im = ImageOps.fit(thumbnail(resolve(path, m.data_dir), thumb * 2), (thumb, thumb))
        board.paste(ImageOps.expand(im, border=border, fill=colors[int(c)]), (int(x), int(y)))
        if progress:
            progress("mosaic", i + 1, len(xy))
    fig = plt.figure(figsize=(12, 12.6), dpi=200)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.93))
    ax.imshow(np.asarray(board))
    ax.axis("off")
    handles = [Patch(color=np.array(col) / 255, label=name)
               for name, col in zip(m.class_names, colors)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=10,
               bbox_to_anchor=(0.5, 0.985), frameon=False, title=_title(m, title),
               title_fontsize=12)
    return save(fig, out, dpi=None)


# --- contact sheets -----------------------------------------------------------------------------


@dataclass
class Cell:
    """One image of a sheet with its caption; ``alert`` captions are drawn in red."""

    path: Path | None
    caption: str
    alert: bool = False


def draw_sheet(rows: list[list[Cell]], out: str | os.PathLike, title: str,
               thumb: int = 160) -> Path:
    """Draw rows of captioned thumbnails (rows may differ in length) to a PNG at ``out``.

    Cells sit on a fixed grid placed by hand (no layout engine: with one for 50 cells, laying out
    took most of the drawing time)."""
    plt = pyplot()
    n_cols = max((len(r) for r in rows), default=1)
    n_rows = max(len(rows), 1)
    cell_in, cap_in, pad = 1.9, 0.4, 0.06  # image box, two caption lines above it, margin
    width = max(cell_in * n_cols, 6.0)
    title = textwrap.fill(title, width=int(width * 12))  # ~12 characters per inch at 10 pt
    head = 0.3 + 0.2 * title.count("\n")
    row_in = cell_in + cap_in
    height = row_in * n_rows + head
    fig = plt.figure(figsize=(width, height))
    x0 = (width - cell_in * n_cols) / 2
    for i, row in enumerate(rows):
        bottom = height - head - (i + 1) * row_in + pad
        for j, cell in enumerate(row):
            left = x0 + j * cell_in + pad
            side = cell_in - 2 * pad
            ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
            ax.axis("off")
            img = thumbnail(cell.path, thumb) if cell.path else None
            if img is not None:
                ax.imshow(np.asarray(img))
                frame(ax, img.size)
            fig.text((left + side / 2) / width, (bottom + side + 0.04) / height, cell.caption,
                     ha="center", va="bottom", fontsize=7,
                     color="crimson" if cell.alert else "black")
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=10)
    return save(fig, out, dpi=100)


def frame(ax, size: tuple[int, int], colour: str = "0.55") -> None:
    """A thin frame around an image drawn by ``imshow`` (an all-white photo is still seen)."""
    from matplotlib.patches import Rectangle

    w, h = size
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=colour, linewidth=0.8))


def draw_cells(cells: list[Cell], out: str | os.PathLike, title: str, cols: int = 6) -> Path:
    """Draw a flat list of cells, ``cols`` to a row (see :func:`draw_sheet`)."""
    return draw_sheet([cells[i:i + cols] for i in range(0, len(cells), cols)], out, title)


def inline_png(path: str | os.PathLike, alt: str) -> str:
    """An HTML ``<img>`` holding the PNG at ``path`` (a data URI: the page needs no other file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def draw_pairs(report, out: str | os.PathLike, limit: int = 20, pairs_per_row: int = 3) -> Path:
    """A PNG sheet of the first ``limit`` pairs of a :class:`featx.near_duplicates.DuplicateReport`
    (cross-label first), a few pairs per row."""
    cells = []
    for n, p in enumerate(report.pairs[:limit], 1):
        for side, i in (("a", p.a), ("b", p.b)):
            head = f"pair {n}{side}: {p.kind} {p.similarity:.3f}"
            cells.append(Cell(resolve(report.paths[i], report.data_dir),
                              f"{head}\n{report.labels[i]}: {short(report.paths[i], 22)}",
                              p.cross_label))
    n_cross = sum(p.cross_label for p in report.pairs)
    title = (f"{len(report.pairs)} duplicate pairs (cosine >= {report.threshold}), "
             f"{n_cross} across labels (red captions); first {min(limit, len(report.pairs))} shown")
    return draw_cells(cells, out, title, 2 * pairs_per_row)


def draw_neighbors(results, data_dir: str | None, out: str | os.PathLike, store_name: str) -> Path:
    """One row per query of :func:`featx.neighbors.find_neighbors`: the query, then its neighbours
    (other classes than a stored query's in red)."""
    rows = []
    for r in results:
        query = Cell(resolve(r.query, data_dir), f"QUERY{' (' + r.label + ')' if r.label else ''}\n"
                     f"{short(r.query)}")
        rows.append([query] + [
            Cell(resolve(n.path, data_dir), f"#{n.rank} {n.label} {n.similarity:.3f}\n{short(n.path)}",
                 alert=bool(r.label) and n.label != r.label)
            for n in r.neighbors])
    return draw_sheet(rows, out, f"{store_name}: nearest neighbours by cosine similarity "
                                 f"(red: another class than the query)")
