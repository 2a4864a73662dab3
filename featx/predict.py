"""predict: a bundle + image files or folders -> class probabilities and top-k, per image.

Images are embedded exactly as the bundle's store was built (``Extractor.from_meta`` on the
bundle's extractor settings: same backbone, layer, pooling, weights identity, precision, decode and
``preprocess_input``). A file that cannot be read gets a per-file error; the others are predicted.
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


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top_k[0][0]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "probabilities": self.probabilities,
                "top_k": [{"class": c, "probability": p} for c, p in self.top_k]}


@dataclass
class PredictReport:
    bundle: Path
    class_names: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "class_names": self.class_names,
                "n_predicted": len(self.predictions), "n_errors": len(self.errors),
                "predictions": [p.as_dict() for p in self.predictions],
                "errors": [{"path": p, "reason": r} for p, r in self.errors]}


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
        elif item.is_file():
            files.append(item)
        else:
            errors.append((str(item), "no such file or folder"))
    return files, errors


def top_k(proba: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-proba, kind="stable")[:max(1, k)]
    return [(class_names[i], round(float(proba[i]), 6)) for i in order]


def predictions_of(b: Bundle, x: np.ndarray, paths: list[str], k: int = 3,
                   x_flipped: np.ndarray | None = None) -> list[Prediction]:
    """One :class:`Prediction` per row of the model's input ``x`` (vectors or pixels), averaged
    with the mirror images' ``x_flipped`` when given: the one place a prediction is built
    (``featx predict`` and ``featx serve``)."""
    proba = b.predict_proba(x)
    if x_flipped is not None:
        proba = (proba + b.predict_proba(x_flipped)) / 2
    return [Prediction(path=path,
                       probabilities={c: round(float(v), 6) for c, v in zip(b.class_names, p)},
                       top_k=top_k(p, b.class_names, k))
            for path, p in zip(paths, proba)]


def predict(bundle: str | os.PathLike | Bundle, inputs: list[str | os.PathLike], k: int = 3,
            weights: str | None = None, batch_size: int = 32, extractor=None,
            tta: bool | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> PredictReport:
    """Predict every image in ``inputs`` (files and folders) with a bundle.

    ``weights`` overrides the weights path recorded in the bundle (its identity must still
    match); ``extractor`` may pass a ready reader (``Bundle.reader()``) to reuse across calls;
    ``tta``: average the probabilities over each image and its mirror image (None: as the
    bundle's test part was scored, :attr:`Bundle.tta`); ``progress(stage, done, total)`` is called
    after every batch (stage ``"predict"``).
    """
    if batch_size < 1:
        raise FeatxError(f"`batch_size` must be at least 1, got {batch_size}")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    files, errors = expand_inputs(inputs)
    if not files and not errors:
        raise FeatxError("no image files found in the given paths")
    report = PredictReport(bundle=b.path, class_names=b.class_names, errors=errors)
    if not files:
        return report
    extractor = extractor or b.reader(weights)  # image files -> what the model takes
    tta = b.tta if tta is None else tta
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
        report.predictions.extend(predictions_of(b, vectors, [str(chunk[i]) for i in ok], k, flipped))
    if progress:
        progress("predict", len(files), len(files))
    return report
