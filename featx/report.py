"""report: the comparison a person looks at, as PNG figures and one page (HTML and Markdown).

For one data set (its feature store) and the model bundles trained on it (``featx fit``,
``featx sweep --bundle``, ``featx baseline``, ``featx finetune``: found by data folder, so bundles
of the same folder's other stores, block4 maps and block5 vectors, are compared side by side),
:func:`make_report` writes into a folder:

=====================  ============================================================================
``curves.png``         validation loss and accuracy per epoch: scratch CNN vs the softmax head(s) and
                       the fine-tuned model of ``featx finetune`` (training curves dotted), from the
                       bundles' stored histories; only when a model has one
``confusion.png``      the confusion matrix of one classifier on the test part
``samples.png``        a grid of sample images, one row a class
``mistakes.png``       the test part's most confident wrong predictions, predicted and true label
``sweep.png``          validation accuracy of every sweep point, as dots (when sweep results exist)
``report.html``        one self-contained page (figures inlined) with the accuracy table
``report.md``          the same page in Markdown, linking the PNGs next to it
``report.json``        the table, the plotted curves and the chosen classifier's test metrics
=====================  ============================================================================

Numbers on the page come from the bundles (``bundle.json``: metrics, history); the chosen
classifier's test predictions are recomputed (features bundles: from the store's test rows; the
baseline: its saved ``test_predictions.json``) and checked against the stored test accuracy.
The figures are drawn by :mod:`featx.figures`.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.errors import FeatxError
from featx.files import check_output, write_text
from featx.figures import (LABELS, Cell, draw_sheet, inline_png, plot_confusion, plot_curves,
                            plot_scores, plot_sweep, with_history)
from featx.metrics import SMALL_TEST, confusion_matrix
from featx.thumbs import resolve, short



@dataclass
class Entry:
    """One model bundle of the data set, as read from its ``bundle.json``."""

    name: str
    path: Path
    info: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def clf(self) -> str:
        return self.info["clf"]

    @property
    def label(self) -> str:
        base = LABELS.get(self.clf, self.clf)
        model = self.info["extractor"].get("model", "") if self.kind != "cnn" else ""
        if self.kind == "cnn":
            return base
        return f"{base} ({model})" if self.clf == "finetune" else f"{base} on {model} features"

    @property
    def history(self) -> dict[str, list[float]] | None:
        return self.info.get("history")

    def accuracy(self, part: str) -> float | None:
        m = (self.info.get("metrics") or {}).get(part)
        return m["accuracy"] if m else None

    def row(self) -> dict[str, Any]:
        s = self.info.get("split") or {}
        m = self.info.get("metrics") or {}
        h = self.history or {}
        return {"name": self.name, "bundle": str(self.path), "kind": self.kind, "clf": self.clf,
                "model": self.label, "val_accuracy": self.accuracy("val"),
                "test_accuracy": self.accuracy("test"), "n_train": s.get("n_train"),
                "n_val": s.get("n_val"), "n_test": s.get("n_test"),
                "test_interval": self.interval("test"),
                "refit_on": s.get("refit_on", "train"), "cv": s.get("cv"),
                "cv_score": (self.info.get("selection") or {}).get("score"),
                "fit_seconds": m.get("fit_seconds"), "epochs": len(h.get("loss", [])) or None}

    def interval(self, part: str) -> list[float] | None:
        """The part's accuracy's 95% Wilson interval (recomputed for bundles saved before it was
        recorded)."""
        from featx.metrics import wilson_interval

        m = (self.info.get("metrics") or {}).get(part)
        if not m:
            return None
        n = m.get("n") or (self.info.get("split") or {}).get(f"n_{part}")
        return m.get("accuracy_interval") or (list(wilson_interval(round(m["accuracy"] * n), n))
                                              if n else None)


@dataclass
class Report:
    out_dir: Path
    store: Path
    data_dir: str | None
    table: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    photos: list[str] = field(default_factory=list)  # featx curve's summary, when it was run

    def as_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "data_dir": self.data_dir, "out_dir": str(self.out_dir),
                "table": self.table, "chosen": self.chosen, "curves": self.curves,
                "files": self.files, "notes": self.notes, "photos": self.photos}


# --- finding the bundles ------------------------------------------------------------------------


def _same_dir(a: str | None, b: str | None) -> bool:
    return bool(a and b) and os.path.realpath(a) == os.path.realpath(b)


def find_bundles(models: str | os.PathLike, data_dir: str | None) -> list[Entry]:
    """Every bundle under ``models`` (one level) trained on ``data_dir``, by folder name."""
    from featx.bundle import read_bundle_info

    entries = []
    for meta_file in sorted(Path(models).glob("*/bundle.json")):
        try:
            info = read_bundle_info(meta_file.parent)
        except FeatxError:
            continue
        if _same_dir((info.get("store") or {}).get("data_dir"), data_dir):
            entries.append(Entry(meta_file.parent.name, meta_file.parent, info))
    return entries


def read_entries(paths: list[str | os.PathLike]) -> list[Entry]:
    from featx.bundle import read_bundle_info

    return [Entry(Path(p).name, Path(p), read_bundle_info(p)) for p in paths]


def choose(entries: list[Entry], clf: str | None) -> Entry:
    """The classifier of the confusion matrix: by clf, bundle name or path; else the fine-tuned
    model, the softmax head, or the best on test."""
    if clf:
        for e in entries:
            if clf in (e.clf, e.name) or _same_dir(str(e.path), clf):
                return e
        raise FeatxError(f"no bundle of this data set matches `clf`={clf!r} (have: "
                         f"{', '.join(e.name for e in entries)})")
    for preferred in ("finetune", "softmax"):
        found = [e for e in entries if e.clf == preferred]
        if found:
            return found[0]
    return max(entries, key=lambda e: e.accuracy("test") or -1.0)


# --- test predictions ---------------------------------------------------------------------------


def predictions_on_test(entry: Entry, store: str | os.PathLike) -> dict[str, Any]:
    """{"paths", "labels", "proba", "class_names"} of an entry on its test part."""
    if entry.kind == "cnn":
        from featx.baseline import PREDICTIONS_FILE

        f = entry.path / PREDICTIONS_FILE
        if not f.is_file():
            raise FeatxError(f"{entry.path} lacks {PREDICTIONS_FILE}; rerun featx baseline")
        p = json.loads(f.read_text())
        return {"paths": p["paths"], "labels": np.asarray(p["labels"], dtype=np.int64),
                "proba": np.asarray(p["proba"], dtype=np.float64).reshape(len(p["paths"]), -1),
                "class_names": entry.info["class_names"]}
    from featx.bundle import load_bundle
    from featx.split import replay
    from featx.store import FLIPPED, fingerprint, open_store, read_attrs, read_rows, strings

    own = (entry.info.get("store") or {}).get("path")
    source = Path(own) if own and Path(own).is_file() else Path(store)
    bundle = load_bundle(entry.path)
    with open_store(source) as f:  # the test rows' vectors only, a block at a time (maps are big)
        want = {k: entry.info["extractor"].get(k) for k in ("model", "layer", "pooling", "weights_id")}
        have = {k: v for k, v in fingerprint(read_attrs(f)).items() if k in want}
        if want != have:
            raise FeatxError(f"{entry.name} was fitted on other vectors than {source} "
                             f"({want} vs {have}); pass its own store")
        rows, class_names = read_rows(f), strings(f["class_names"])
        parts, labels = replay(rows.hashes, rows.labels, entry.info.get("split") or {})
        test = parts["test"]  # the rows it was scored on: exclusions and corrections included
        names = ["features"]
        if bundle.tta:  # scored as it was fitted: the mean over each image and its mirror
            if FLIPPED not in f:
                raise FeatxError(f"{entry.name} averages over flips, and {source} has no mirrored "
                                 "vectors; pass its own store")
            names.append(FLIPPED)
        scored = [_test_scored(bundle, f[name], test) for name in names]
    return {"paths": [rows.paths[i] for i in test], "labels": labels[test],
            "proba": np.mean([p for p, _ in scored], axis=0), "class_names": class_names,
            "scores": scored[0][1], "familiar": bundle.familiar}


def _test_scored(bundle, ds, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A bundle's class probabilities and unfamiliarity scores (None: no record) of some rows of
    a vectors dataset, a block at a time."""
    from featx.store import block_rows, read_rows_of

    step = block_rows(ds.shape[1] * 4)
    out = [bundle.predict_scored(read_rows_of(ds, rows[i:i + step]).astype(np.float32))
           for i in range(0, len(rows), step)]
    if not out:
        return np.empty((0, len(bundle.class_names))), None
    scores = None if out[0][1] is None else np.concatenate([s for _, s in out])
    return np.concatenate([p for p, _ in out]), scores


def sample_rows(paths: list[str], labels: np.ndarray, n_classes: int, per_class: int) -> list[list[int]]:
    """Per class, ``per_class`` row indices spread evenly over the class's rows."""
    out = []
    for k in range(n_classes):
        rows = np.flatnonzero(labels == k)
        take = rows[np.linspace(0, len(rows) - 1, min(per_class, len(rows))).round().astype(int)] \
            if len(rows) else rows
        out.append(sorted(set(take.tolist())))
    return out


def worst_mistakes(labels: np.ndarray, proba: np.ndarray, n: int) -> list[int]:
    """Indices of wrong predictions, most confident first."""
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    conf = proba[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")][:n].tolist()


# --- the whole report ---------------------------------------------------------------------------


def default_output(store: str | os.PathLike) -> Path:
    """reports/<store>/"""
    return Path("reports") / Path(store).stem


def make_report(store: str | os.PathLike, out_dir: str | os.PathLike, *,
                models: str | os.PathLike = "models", bundles: list | None = None,
                clf: str | None = None, sweep: str | os.PathLike | None = None,
                per_class: int = 6, n_mistakes: int = 12) -> Report:
    """Write the figures and the page for ``store``'s data set into ``out_dir``.

    ``sweep``: a sweep's ``results.json``; by default the one ``featx sweep`` writes for this store
    (:func:`featx.sweep.default_output`), when it exists.
    """
    from featx.selection import point_label
    from featx.sweep import default_output as sweep_output

    from featx.store import open_store, read_meta, read_rows, strings

    store, out_dir = Path(store), check_output(out_dir, "the report", folder=True)
    meta = read_meta(store)
    data_dir = meta.get("data_dir")
    entries = read_entries(bundles) if bundles else find_bundles(models, data_dir)
    if not entries:
        raise FeatxError(f"no model bundle of {data_dir} in {models}/; run featx fit and "
                         "featx baseline first (or pass --bundle)")
    dataset = Path(data_dir).name if data_dir else store.stem
    entries.sort(key=lambda e: (e.kind != "cnn", -(e.accuracy("test") or -1.0), e.name))
    report = Report(out_dir=out_dir, store=store, data_dir=data_dir,
                    table=[e.row() for e in entries], chosen=None)
    splits = {json.dumps({k: (e.info.get("split") or {}).get(k)
                          for k in ("fractions", "seed", "n_train", "n_val", "n_test")})
              for e in entries}
    if len(splits) > 1:
        report.notes.append("the bundles were not all trained on the same split; compare with care")
    if not any(e.kind == "cnn" for e in entries):
        report.notes.append("no scratch-CNN bundle (featx baseline) for this data set")
    n_test = min((r["n_test"] for r in report.table if r.get("n_test")), default=None)
    if n_test is not None and n_test < SMALL_TEST:
        report.notes.append(f"the test part has {n_test} images: one image is "
                            f"{100 / n_test:.1f} points, and the accuracies' 95% intervals are "
                            "wide (see the table); compare the models with care")

    drawn = with_history(entries)
    if drawn:
        path, report.curves = plot_curves(entries, out_dir / "curves.png",
                                          f"{dataset}: {_curves_title(drawn)}, per epoch")
        report.files["curves"] = str(path)
    else:
        report.notes.append("no model has a per-epoch history (softmax head, baseline CNN): "
                            "no learning curves")

    chosen = choose(entries, clf)
    pred = predictions_on_test(chosen, store)
    names, y, proba = pred["class_names"], pred["labels"], pred["proba"]
    n_classes = len(names)
    cm = confusion_matrix(y, proba.argmax(axis=1), n_classes)
    acc = float(np.trace(cm) / max(len(y), 1))
    stored = chosen.accuracy("test")
    if stored is not None and abs(stored - acc) > 1e-9:
        report.notes.append(f"{chosen.name}: recomputed test accuracy {acc:.4f} differs from the "
                            f"stored {stored:.4f}")
    report.chosen = {"name": chosen.name, "clf": chosen.clf, "test_accuracy": acc,
                     "n_test": int(len(y)), "confusion": cm.tolist(), "class_names": names}
    _unfamiliar(report, chosen, pred, out_dir)
    report.files["confusion"] = str(plot_confusion(
        cm, names, out_dir / "confusion.png",
        f"{chosen.label}: test part, {len(y)} images\naccuracy {acc:.3f} "
        f"(rows: true class; cells: count and share of the row)"))

    with open_store(store) as f:  # paths and labels only: a map store is large
        rows_, class_names = read_rows(f), strings(f["class_names"])
    paths = rows_.paths
    picks = sample_rows(paths, np.asarray(rows_.labels), len(class_names), per_class)
    sheet = [[Cell(resolve(paths[i], data_dir), f"{class_names[k]}\n"
                   f"{short(Path(paths[i]).name, 22)}") for i in rows]
             for k, rows in enumerate(picks)]
    report.files["samples"] = str(draw_sheet(
        sheet, out_dir / "samples.png",
        f"{dataset}: {per_class} sample images per class (one row a class)"))

    worst = worst_mistakes(y, proba, n_mistakes)
    cols = 6
    cells = [Cell(resolve(pred["paths"][i], data_dir),
                  f"predicted {names[int(proba[i].argmax())]} ({proba[i].max():.2f})\n"
                  f"true {names[int(y[i])]}: {short(Path(pred['paths'][i]).name, 16)}", alert=True)
             for i in worst]
    n_wrong = int((proba.argmax(axis=1) != y).sum())
    report.files["mistakes"] = str(draw_sheet(
        [cells[i:i + cols] for i in range(0, len(cells), cols)], out_dir / "mistakes.png",
        f"{chosen.label}: the {len(worst)} most confident of {n_wrong} mistakes on the test part "
        f"({len(y)} images)" if worst else f"{chosen.label}: no mistakes on the test part "
        f"({len(y)} images)"))

    default_sweep = sweep_output(store) / "results.json"
    if sweep is None and default_sweep.is_file():
        sweep = default_sweep
    if sweep and Path(sweep).is_file():
        result = json.loads(Path(sweep).read_text())
        best = result.get("best") or {}
        test = f"\nthe best, refitted on train: test accuracy {best['test_accuracy']:.3f}" \
            if best.get("test_accuracy") is not None else ""
        report.files["sweep"] = str(plot_sweep(
            result.get("rows", []), out_dir / "sweep.png",
            f"{dataset} sweep: {result.get('n_done', len(result.get('rows', [])))} points, "
            f"selected on the validation part (best in orange){test}", point_label))
    elif sweep:
        report.notes.append(f"no sweep results at {sweep}")
    _photos_curve(report, store, dataset)

    _write_pages(report, dataset, chosen)
    return report


def _unfamiliar(report: Report, chosen: Entry, pred: dict[str, Any], out_dir: Path) -> None:
    """The share of the test part flagged as unlike the training photos, and its histogram."""
    record, scores = pred.get("familiar"), pred.get("scores")
    if chosen.kind == "cnn":  # the scratch CNN keeps no record of its training photos
        return
    if record is None or scores is None:
        report.notes.append(f"{chosen.name} cannot tell photos unlike its training photos (made "
                            "before featx recorded them); fit it again to add that")
        return
    flagged = record.flags(scores)
    report.chosen["unfamiliar"] = {
        "method": record.method, "threshold": record.threshold,
        "test_flagged": float(flagged.mean()) if len(scores) else None,
        "n_test_flagged": int(flagged.sum()), "val_flagged": record.calibration.get("val_flagged"),
        "target_pass": record.calibration.get("target_pass")}
    u = report.chosen["unfamiliar"]
    report.files["unfamiliar"] = str(plot_scores(
        scores, record.threshold, record.calibration.get("val_histogram"),
        out_dir / "unfamiliar.png",
        f"{chosen.label}: unfamiliarity ({record.method}) of the test part\n"
        f"{u['n_test_flagged']} of {len(scores)} flagged ({_pct(u['test_flagged'])}) above "
        f"{record.threshold:.4f}; validation {_pct(u['val_flagged'])}"))


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _photos_curve(report: Report, store: Path, dataset: str) -> None:
    """The learning curve of ``featx curve`` (reports/<store>_curve/curve.json), when it exists."""
    from featx.curve import CURVE_FILE, default_output as curve_output
    from featx.figures import plot_photos_curve

    found = curve_output(store) / CURVE_FILE
    if found.is_file():
        curve = json.loads(found.read_text())
        report.files["photos"] = str(plot_photos_curve(
            curve, report.out_dir / "photos.png", f"{dataset}: {curve['clf']}, test accuracy "
            f"against training photos a class\n" + "\n".join(curve["summary"][:2])))
        report.photos = curve["summary"]


def _curves_title(drawn: list[Entry]) -> str:
    """What the curves compare: the scratch CNN against transfer learning, or what there is."""
    cnn = any(e.kind == "cnn" for e in drawn)
    heads = sorted({LABELS.get(e.clf, e.clf) for e in drawn if e.kind != "cnn"})
    if cnn and heads:
        return "scratch CNN vs transfer learning"
    return "scratch CNN" if cnn else f"transfer learning ({', '.join(heads)})"


# --- the page -----------------------------------------------------------------------------------

CAPTIONS = {
    "curves": "Validation loss and accuracy per epoch (training dotted), from the stored histories.",
    "confusion": "Confusion matrix on the test part.",
    "samples": "Sample images per class.",
    "mistakes": "The most confident mistakes on the test part: predicted (probability) and true label.",
    "sweep": "Validation accuracy of every sweep point.",
    "unfamiliar": "Unfamiliarity scores of the test part (bars) and of the validation part the "
                  "threshold was calibrated on (line); photos above the threshold are flagged.",
    "photos": "How many more photos (featx curve): test accuracy against training photos a class.",
}


def _fmt(v, digits=4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    head = ["model", "bundle", "val accuracy", "test accuracy", "test 95% interval",
            "train / val / test", "epochs", "fit s"]
    body = [[r["model"], r["name"], _val_cell(r), _fmt(r["test_accuracy"]),
             "{:.3f}-{:.3f}".format(*r["test_interval"]) if r.get("test_interval") else "n/a",
             _parts_cell(r), _fmt(r["epochs"]), _fmt(r["fit_seconds"], 1)] for r in report.table]
    return head, body


def _val_cell(r: dict[str, Any]) -> str:
    """A bundle refitted on train+val after K-fold CV has no held-out validation score: its
    cross-validated one is shown, and said to be one."""
    if r.get("refit_on") == "train+val":
        score = r.get("cv_score")
        return f"{_fmt(score)} ({r.get('cv')}-fold CV)" if score is not None else "in training"
    return _fmt(r["val_accuracy"])


def _parts_cell(r: dict[str, Any]) -> str:
    if r.get("refit_on") == "train+val":
        return f"{r['n_train'] + r['n_val']} (train+val) / - / {r['n_test']}"
    return f"{r['n_train']} / {r['n_val']} / {r['n_test']}"


def _inline_html(markdown: str) -> str:
    """The page's one line of Markdown as HTML: escaped, `code` and **bold** rendered."""
    text = html.escape(markdown, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def _write_pages(report: Report, dataset: str, chosen: Entry) -> None:
    out = report.out_dir
    head, body = _table(report)
    same = not any("split" in n for n in report.notes)
    intro = (f"Data set `{report.data_dir}` (store `{report.store}`). "
             + ("All models use the same derived train / validation / test split; " if same else "")
             + f"test accuracy is measured once per model. Confusion matrix and mistakes: "
             f"**{chosen.name}**.")
    figures = [(k, Path(p)) for k, p in report.files.items() if k in CAPTIONS]

    md = [f"# featx report: {dataset}", "", intro, "", "| " + " | ".join(head) + " |",
          "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    for note in report.notes:
        md += ["", f"> note: {note}"]
    for key, p in figures:
        md += ["", f"## {key}", "", CAPTIONS[key], "", f"![{key}]({p.name})"]
        md += [f"- {line}" for line in (report.photos if key == "photos" else [])]
    write_text(out / "report.md", "\n".join(md) + "\n", "the report page")
    report.files["markdown"] = str(out / "report.md")

    e = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
    figs = "\n".join(f'<h2>{e(key)}</h2><p>{e(CAPTIONS[key])}</p>{inline_png(p, key)}'
                     + "".join(f"<p>{e(line)}</p>" for line in
                               (report.photos if key == "photos" else []))
                     for key, p in figures)
    notes = "".join(f"<p class=note>note: {_inline_html(n)}</p>" for n in report.notes)
    intro_html = _inline_html(intro)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>featx report: {e(dataset)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child,td:nth-child(2),th{{text-align:left}}img{{max-width:100%}}.note{{color:#a40}}</style>
</head><body><h1>featx report: {e(dataset)}</h1><p>{intro_html}</p>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{rows}</table>{notes}
{figs}
</body></html>
"""
    write_text(out / "report.html", page, "the report page")
    report.files["html"] = str(out / "report.html")
    write_text(out / "report.json", json.dumps(report.as_dict(), indent=2) + "\n", "the report")
    report.files["json"] = str(out / "report.json")
