"""evaluate: score a bundle on a new labelled folder (``featx evaluate BUNDLE LABELLED_DIR``).

The folder is read like ``featx extract`` reads one (one subfolder per class, content hashes,
the same skip reasons); its class folders must be classes of the bundle (a folder may hold only
some of them). Images whose content the bundle's own store holds reuse the stored vectors (by
sha256, when the store is still there and was made with the bundle's extractor); the others are
embedded with the bundle's extractor, as ``featx predict`` does. The result: accuracy with its
Wilson 95% interval, per-class precision and recall, the confusion matrix, and the most confident
mistakes, drawn as a sheet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx import reader
from featx.bundle import Bundle, load_bundle
from featx.discover import discover
from featx.errors import FeatxError
from featx.files import check_output
from featx.metrics import classification_metrics, wilson_interval

Progress = Callable[[str, int, int], None]
REUSE_KEYS = ("model", "layer", "pooling", "input_size", "resize", "precision", "weights_id")


@dataclass
class EvaluateReport:
    bundle: Path
    data_dir: Path
    class_names: list[str]
    paths: list[str]  # relative to data_dir, one per scored image
    labels: np.ndarray  # true class index into class_names
    proba: np.ndarray  # (n, classes)
    metrics: dict[str, Any]
    interval: tuple[float, float]  # Wilson 95% interval of the accuracy
    n_reused: int  # images whose vector came from the bundle's store
    n_embedded: int  # distinct contents run through the extractor now
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    mistakes: list[int] = field(default_factory=list)  # rows, most confident wrong first
    files: dict[str, str] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    def as_dict(self) -> dict[str, Any]:
        pred = self.proba.argmax(axis=1)
        return {
            "bundle": str(self.bundle), "data_dir": str(self.data_dir),
            "class_names": self.class_names, "n": len(self.paths),
            "accuracy": self.accuracy, "accuracy_interval": list(self.interval),
            "interval_method": "Wilson score, 95%", **{k: v for k, v in self.metrics.items()
                                                      if k != "accuracy"},
            "n_reused": self.n_reused, "n_embedded": self.n_embedded,
            "mistakes": [{"path": self.paths[i], "label": self.class_names[self.labels[i]],
                          "predicted": self.class_names[pred[i]],
                          "probability": round(float(self.proba[i, pred[i]]), 6)}
                         for i in self.mistakes],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "files": self.files,
        }


def default_output(bundle: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """reports/<bundle>_on_<data folder>/"""
    return Path("reports") / f"{Path(bundle).resolve().name}_on_{Path(data_dir).resolve().name}"


def evaluate(bundle: str | os.PathLike | Bundle, data_dir: str | os.PathLike,
             out: str | os.PathLike | None = None, weights: str | None = None,
             batch_size: int = 32, workers: int = 2, n_mistakes: int = 12,
             tta: bool | None = None, progress: Progress | None = None) -> EvaluateReport:
    """Score ``bundle`` on the labelled folder ``data_dir``; with ``out`` (a folder), draw the
    most confident ``n_mistakes`` mistakes there (``mistakes.png``). ``tta``: as in predict."""
    if batch_size < 1:
        raise FeatxError(f"`batch_size` must be at least 1, got {batch_size}")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if out is not None:
        check_output(Path(out) / "mistakes.png", "the mistakes sheet")
    dataset = discover(data_dir, min_classes=1)
    unknown = [c for c in dataset.class_names if c not in b.class_names]
    if unknown:
        raise FeatxError(f"class folders {unknown} of {dataset.root} are not classes of the "
                         f"bundle {b.path} ({', '.join(b.class_names)})")
    scan = reader.scan(dataset, workers, progress)
    tta = b.tta if tta is None else tta
    stored = _stored_vectors(b, scan, tta)
    todo = [(h, f) for h, f in scan.content() if h not in stored]
    embedded, failed = _embed(b, todo, weights, batch_size, tta, progress)
    vectors = {**stored, **embedded}
    keep = [i for i, h in enumerate(scan.hashes) if h in vectors]
    if not keep:
        raise FeatxError(f"no image under {dataset.root} could be read; see the skipped files")
    hashes = [scan.hashes[i] for i in keep]
    proba = _proba(b, [vectors[h] for h in hashes])
    index = {c: k for k, c in enumerate(b.class_names)}
    y = np.array([index[dataset.class_names[dataset.labels[i]]] for i in keep], dtype=np.int64)
    metrics = classification_metrics(y, proba.argmax(axis=1), len(b.class_names))
    n_correct = int(np.trace(np.asarray(metrics["confusion"])))
    from featx.report import worst_mistakes

    report = EvaluateReport(
        bundle=b.path, data_dir=dataset.root, class_names=list(b.class_names),
        paths=[dataset.paths[i] for i in keep], labels=y, proba=proba, metrics=metrics,
        interval=wilson_interval(n_correct, len(y)),
        n_reused=sum(h in stored for h in hashes), n_embedded=len(embedded),
        skipped=[(p, r) for p, r, _ in scan.skipped(failed)],
        mistakes=worst_mistakes(y, proba, n_mistakes))
    if out is not None:
        report.files["mistakes"] = str(_draw_mistakes(report, Path(out) / "mistakes.png"))
    return report


def _stored_vectors(b: Bundle, scan: reader.Scan, tta: bool) -> dict[str, Any]:
    """hash -> the model's input (vector, or (vector, mirrored vector) with ``tta``) for the
    folder's contents that the bundle's store holds, when it was made with the same extractor."""
    store = (b.info.get("store") or {}).get("path")
    if b.kind != "features" or not store or not Path(store).is_file():
        return {}
    from featx.store import read_meta
    from featx.writer import VectorCache

    meta = read_meta(store)
    if any(meta.get(k) != b.extractor.get(k) for k in REUSE_KEYS):
        return {}
    cache = VectorCache()
    try:
        cache.add(Path(store))
        known = [h for h, _ in scan.content() if h in cache and (not tta or cache.has_flipped(h))]
        if not known:
            return {}
        X = cache.gather(known).astype(np.float32)
        if tta:
            X_flip = cache.gather(known, "features_flip").astype(np.float32)
            return {h: (x, xf) for h, x, xf in zip(known, X, X_flip)}
        return dict(zip(known, X))
    finally:
        cache.close()


def _embed(b: Bundle, todo: list[reader.Item], weights: str | None, batch_size: int, tta: bool,
           progress: Progress | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Embed ``todo`` with the bundle's reader: (hash -> input, hash -> reason it failed)."""
    if not todo:
        return {}, {}
    extractor = b.reader(weights)
    out: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        files = [f for _, f in chunk]
        x, ok, failures = extractor.embed_files(files, batch_size=batch_size)
        by_file = {str(f): h for h, f in chunk}
        failed.update({by_file[str(p)]: r for p, r in failures})
        flipped = extractor.embed_files(files, batch_size, flip=True)[0] if tta and ok else None
        for row, i in enumerate(ok):
            out[chunk[i][0]] = (x[row], flipped[row]) if flipped is not None else x[row]
        if progress:
            progress("embed", min(start + batch_size, len(todo)), len(todo))
    return out, failed


def _proba(b: Bundle, inputs: list[Any]) -> np.ndarray:
    if isinstance(inputs[0], tuple):
        X = np.stack([x for x, _ in inputs])
        X_flip = np.stack([xf for _, xf in inputs])
        return (b.predict_proba(X) + b.predict_proba(X_flip)) / 2
    return b.predict_proba(np.stack(inputs))


def _draw_mistakes(r: EvaluateReport, out: Path) -> Path:
    from featx.figures import Cell, draw_cells
    from featx.thumbs import short

    pred = r.proba.argmax(axis=1)
    cells = [Cell(r.data_dir / r.paths[i],
                  f"predicted {r.class_names[pred[i]]} ({r.proba[i, pred[i]]:.2f})\n"
                  f"true {r.class_names[r.labels[i]]}: {short(Path(r.paths[i]).name, 16)}",
                  alert=True) for i in r.mistakes]
    n_wrong = int((pred != r.labels).sum())
    title = (f"{r.bundle.name} on {r.data_dir.name}: the {len(cells)} most confident of "
             f"{n_wrong} mistakes ({len(r.paths)} images)" if cells else
             f"{r.bundle.name} on {r.data_dir.name}: no mistakes ({len(r.paths)} images)")
    return draw_cells(cells, out, title)
