"""predict: a bundle + image files or folders -> class probabilities and top-k, per image.

Images are embedded exactly as the bundle's store was built (``Extractor.from_meta`` on the
bundle's extractor settings: same backbone, layer, pooling, weights identity, precision, decode and
``preprocess_input``). A file that cannot be read gets a per-file error; the others are predicted.
Each photo also gets an unfamiliarity score and flag from the bundle's record of its training
photos (:mod:`featx.familiar`); ``reject`` answers ``none`` for the unfamiliar ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx.bundle import Bundle, load_bundle
from featx.discover import SYSTEM_FILES, is_image_name
from featx.errors import FeatxError


REJECTED = "none"  # the answer for an unfamiliar photo with ``reject``


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]
    unfamiliar: bool | None = None  # None: the bundle cannot tell (no record)
    score: float | None = None  # unfamiliarity (higher: less like the training photos)
    rejected: bool = False  # answered "none" (``reject`` and unfamiliar)

    @property
    def label(self) -> str:
        return REJECTED if self.rejected else self.top_k[0][0]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "probabilities": self.probabilities,
                "top_k": [{"class": c, "probability": p} for c, p in self.top_k],
                "unfamiliar": self.unfamiliar, "unfamiliar_score": self.score}


@dataclass
class PredictReport:
    bundle: Path
    class_names: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    familiar: dict[str, Any] | None = None  # method, threshold and where it came from
    notes: list[str] = field(default_factory=list)

    @property
    def n_unfamiliar(self) -> int | None:
        return None if self.familiar is None else sum(bool(p.unfamiliar) for p in self.predictions)

    def summary_line(self) -> str | None:
        """``3 of 40 photos look unlike the training photos`` (None: the bundle cannot tell)."""
        if self.familiar is None:
            return None
        n, k = len(self.predictions), self.n_unfamiliar
        return (f"{k} of {n} photo{'s' if n != 1 else ''} look{'s' if k == 1 else ''} unlike the "
                "training photos")

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "class_names": self.class_names,
                "n_predicted": len(self.predictions), "n_errors": len(self.errors),
                "n_unfamiliar": self.n_unfamiliar, "familiar": self.familiar,
                "predictions": [p.as_dict() for p in self.predictions],
                "errors": [{"path": p, "reason": r} for p, r in self.errors],
                "notes": self.notes}


def expand_inputs(inputs: list[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, folders walked recursively for image files (sorted); (files, errors)."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for dirpath, dirnames, names in os.walk(item):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(Path(dirpath, n) for n in sorted(names)
                             if is_image_name(n) and not n.startswith(".")
                             and n.lower() not in SYSTEM_FILES)
        elif item.exists():  # not only regular files: the reader says why a FIFO is refused
            files.append(item)
        else:
            errors.append((str(item), "no such file or folder"))
    return files, errors


def top_k(proba: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-proba, kind="stable")[:max(1, k)]
    return [(class_names[i], round(float(proba[i]), 6)) for i in order]


def new_report(b: Bundle, errors: list[tuple[str, str]] | None = None,
               familiar: dict[str, Any] | None = None, notes: list[str] | None = None
               ) -> PredictReport:
    """An empty report of bundle ``b`` (``featx predict`` and ``featx serve`` start from it);
    ``familiar``, ``notes``: from :func:`unfamiliar_threshold`."""
    return PredictReport(bundle=b.path, class_names=b.class_names, errors=list(errors or []),
                         familiar=familiar, notes=list(notes or []))


def predictions_of(b: Bundle, x: np.ndarray, paths: list[str], k: int = 3,
                   x_flipped: np.ndarray | None = None, threshold: float | None = None,
                   reject: bool = False) -> list[Prediction]:
    """One :class:`Prediction` per row of the model's input ``x`` (vectors or pixels), averaged
    with the mirror images' ``x_flipped`` when given: the one place a prediction is built
    (``featx predict`` and ``featx serve``). Each is scored for unfamiliarity when the bundle
    keeps a record of its training photos (of ``x`` itself, not the mirror), flagged above
    ``threshold`` (None: the bundle's), and answered ``none`` with ``reject``."""
    proba, scores = b.predict_scored(x)
    if x_flipped is not None:
        proba = (proba + b.predict_proba(x_flipped)) / 2
    if threshold is None and b.familiar is not None:
        threshold = b.familiar.threshold
    out = []
    for row, (path, p) in enumerate(zip(paths, proba)):
        score = None if scores is None else round(float(scores[row]), 6)
        flag = None if score is None else bool(score > threshold)
        out.append(Prediction(
            path=path, probabilities={c: round(float(v), 6) for c, v in zip(b.class_names, p)},
            top_k=top_k(p, b.class_names, k), unfamiliar=flag, score=score,
            rejected=bool(reject and flag)))
    return out


def predict(bundle: str | os.PathLike | Bundle, inputs: list[str | os.PathLike], k: int = 3,
            weights: str | None = None, batch_size: int = 32, extractor=None,
            tta: bool | None = None, reject: bool = False, unfamiliar_at: float | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> PredictReport:
    """Predict every image in ``inputs`` (files and folders) with a bundle.

    ``weights`` overrides the weights path recorded in the bundle (its identity must still
    match); ``extractor`` may pass a ready reader (``Bundle.reader()``) to reuse across calls;
    ``tta``: average the probabilities over each image and its mirror image (None: as the
    bundle's test part was scored, :attr:`Bundle.tta`); ``reject``: answer ``none`` for photos
    unlike the training photos (score above the bundle's threshold, or ``unfamiliar_at``; the
    score is of the photo itself, not its mirror); ``progress(stage, done, total)`` is called
    after every batch (stage ``"predict"``).
    """
    if batch_size < 1:
        raise FeatxError(f"`batch_size` must be at least 1, got {batch_size}")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    threshold, familiar, notes = unfamiliar_threshold(b, unfamiliar_at)
    files, errors = expand_inputs(inputs)
    if not files and not errors:
        raise FeatxError("no image files found in the given paths")
    report = new_report(b, errors, familiar, notes)
    if not files:
        return report
    extractor = extractor or b.reader(weights)  # image files -> what the model takes
    tta = b.tta if tta is None else tta
    batch_size = min(batch_size, len(files))  # one photo runs the model on one, not on 32
    for start in range(0, len(files), batch_size):  # a batch at a time: bounded memory
        if progress:
            progress("predict", start, len(files))
        chunk = files[start:start + batch_size]
        vectors, ok, failures = extractor.embed_files(chunk, batch_size=batch_size)
        report.errors.extend(failures)
        if not ok:
            continue
        # the same files decode alike: the mirrored batch has the same rows
        flipped = extractor.embed_files(chunk, batch_size, flip=True)[0] if tta else None
        report.predictions.extend(predictions_of(b, vectors, [str(chunk[i]) for i in ok], k,
                                                 flipped, threshold, reject))
    if progress:
        progress("predict", len(files), len(files))
    return report


NO_RECORD = ("this bundle cannot tell photos unlike its training photos (it was made before "
             "featx recorded them); fit it again to add that")
NO_RECORD_CNN = ("the scratch CNN keeps no record of its training photos, so it cannot tell "
                 "photos unlike them; a bundle of featx fit or featx finetune can")


def unfamiliar_threshold(b: Bundle, unfamiliar_at: float | None
                         ) -> tuple[float, dict[str, Any] | None, list[str]]:
    """(threshold, what ``PredictReport.familiar`` says, notes) of a bundle; ``unfamiliar_at``
    overrides the calibrated threshold."""
    record = b.familiar
    if record is None:
        if unfamiliar_at is not None:
            raise FeatxError(f"`unfamiliar_at` needs a bundle that records its training photos; "
                             f"{b.path} does not: fit it again")
        return float("inf"), None, [NO_RECORD_CNN if b.kind == "cnn" else NO_RECORD]
    cal = record.calibration
    threshold = record.threshold if unfamiliar_at is None else float(unfamiliar_at)
    return threshold, {"method": record.method, "threshold": threshold,
                       "set_by": "bundle" if unfamiliar_at is None else "unfamiliar_at",
                       "calibrated_threshold": record.threshold,
                       "target_pass": cal.get("target_pass"),
                       "val_flagged": cal.get("val_flagged")}, []


UNFAMILIAR = "unfamiliar"  # the folder of photos a bundle says look like none of its classes


def csv_text(report: PredictReport) -> str:
    """The predictions as CSV: ``path, label, probability, unfamiliar, unfamiliar_score`` and one
    column per class; an input that could not be predicted is a row with its ``error`` only."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "probability", "unfamiliar", "unfamiliar_score",
                     *report.class_names, "error"])
    for p in report.predictions:
        writer.writerow([p.path, p.label, p.top_k[0][1], _text(p.unfamiliar), _text(p.score),
                         *(p.probabilities[c] for c in report.class_names), ""])
    for path, reason in report.errors:
        writer.writerow([path, "", "", "", "", *([""] * len(report.class_names)), reason])
    return buf.getvalue()


def check_sort_into(dest: str | os.PathLike, inputs: list[str | os.PathLike]) -> Path:
    """Before any work: ``dest`` can be written and lies outside every input folder (else a rerun
    would predict its own links)."""
    from featx.files import check_output

    dest = check_output(dest, "the sorted folder", folder=True)
    for item in map(Path, inputs):
        if item.is_dir() and dest.resolve().is_relative_to(item.resolve()):
            raise FeatxError(f"`sort_into` {dest} is inside the input folder {item}; choose a "
                             f"folder outside it")
    return dest


@dataclass
class SortReport:
    dest: Path
    placed: list[tuple[str, str]] = field(default_factory=list)  # (source, new path)
    already: int = 0  # sorted by an earlier run: the same file is there
    mode: str = "link"

    def as_dict(self) -> dict[str, Any]:
        return {"dest": str(self.dest), "mode": self.mode, "n_placed": len(self.placed),
                "n_already": self.already,
                "placed": [{"path": s, "to": t} for s, t in self.placed]}


def sort_into(report: PredictReport, dest: str | os.PathLike, copy: bool = False) -> SortReport:
    """Put each predicted photo into ``dest/<predicted class>/`` (``unfamiliar/`` when the bundle
    says it looks like none of its classes): a symbolic link to the file, or with ``copy`` a copy.
    The user's files are never moved, and nothing in ``dest`` is overwritten: a name taken by
    another file gets a numbered name (``photo_2.jpg``), and a photo already there from an earlier
    run is left as it is."""
    import shutil

    dest = Path(dest)
    out = SortReport(dest, mode="copy" if copy else "link")
    for p in report.predictions:
        source = Path(p.path).resolve()
        folder = dest / _folder_of(p)
        folder.mkdir(parents=True, exist_ok=True)
        target, same = _free_name(folder, source, copy)
        if same:
            out.already += 1
            continue
        if copy:
            shutil.copy2(source, target)  # target does not exist: nothing is overwritten
        else:
            os.symlink(source, target)
        out.placed.append((p.path, str(target)))
    return out


def _folder_of(p: Prediction) -> str:
    return UNFAMILIAR if p.unfamiliar else p.label


def _text(v) -> str:
    """A CSV cell: empty for None (the bundle cannot tell), booleans as true / false."""
    return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _free_name(folder: Path, source: Path, copy: bool) -> tuple[Path, bool]:
    """(a name in ``folder`` for ``source``, whether that name already holds it)."""
    import filecmp

    stem, suffix = source.stem, source.suffix
    for n in range(1, 100_000):
        target = folder / (source.name if n == 1 else f"{stem}_{n}{suffix}")
        if not os.path.lexists(target):
            return target, False
        if target.is_symlink() and not copy:
            if Path(os.readlink(target)) == source:
                return target, True
        elif copy and target.is_file() and filecmp.cmp(target, source, shallow=False):
            return target, True
    raise FeatxError(f"no free name for {source.name} in {folder}")
