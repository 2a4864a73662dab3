"""heads.registry: every head by name: a new one (:func:`make_head`) or a saved one (:func:`load_head`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featx.errors import FeatxError
from featx.heads.base import Head
from featx.heads.keras_heads import CnnHead, FinetuneHead, SoftmaxHead
from featx.heads.params import head_params
from featx.heads.sklearn_heads import SklearnHead

HEADS: dict[str, type[Head]] = {"logreg": SklearnHead, "svm": SklearnHead,
                                "linear-svm": SklearnHead, "softmax": SoftmaxHead, "cnn": CnnHead,
                                "finetune": FinetuneHead}


def make_head(clf: str, **params: Any) -> Head:
    """A new, unfitted head: ``make_head("logreg", C=0.1)``."""
    p = head_params(clf, **params)
    return SoftmaxHead(p) if clf == "softmax" else SklearnHead(clf, p)


def load_head(clf: str, directory: str | Path, params: dict[str, Any]) -> Head:
    """A fitted head saved by :meth:`Head.save` in ``directory`` (any head, ``cnn`` included)."""
    cls = HEADS.get(clf)
    if cls is None:
        raise FeatxError(f"unknown classifier {clf!r} in {directory}")
    path = Path(directory) / cls.model_file
    if not path.is_file():
        raise FeatxError(f"bundle {directory} lacks its model file {cls.model_file}")
    return cls.load(Path(directory), clf, params)
