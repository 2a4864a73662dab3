"""fit: train one head on a store's cached vectors with the derived split, and evaluate it.

The rows come from :func:`featx.split.load_split` (parts derived from the content hashes, so fit,
sweep and the from-scratch baseline all see the same parts; corrections and exclusions applied
there). ``C`` and ``scale``, when not given, are picked by cross-validation on the train part
alone (:func:`featx.selection.choose_params`). Metrics:
accuracy, per-class precision / recall and the confusion matrix on the validation and test parts,
beside the chance level and the majority class's accuracy; wall-clock fit time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.bundle import check_bundle_output, default_bundle_dir, save_bundle
from featx.errors import FeatxError
from featx.familiar import from_split
from featx.heads import Head, make_head, unused_params
from featx.metrics import ScoredResult, classification_metrics, small_sample_note
from featx.selection import choose_params, degenerate, predict_labels, predict_proba
from featx.split import (  # noqa: F401  Flips, with_flips, load_split, Split lived here before
    DEFAULT_FRACTIONS, EXCLUDE_FINDINGS, Flips, Split, load_split, with_flips)


def reference_levels(split: Split) -> dict[str, Any]:
    """What an accuracy is to be read against: chance (1 / classes) and always answering the
    training part's most frequent class (its accuracy on val and test)."""
    n_classes = len(split.feats.class_names)
    majority = int(np.argmax(np.bincount(split.y("train"), minlength=n_classes)))
    share = {part: float(np.mean(split.y(part) == majority)) if split.n(part) else None
             for part in ("val", "test")}
    return {"chance": 1.0 / n_classes, "majority_class": split.feats.class_names[majority],
            "majority_val": share["val"], "majority_test": share["test"]}


def evaluate(head: Head, split: Split, part: str) -> dict[str, Any] | None:
    """:func:`featx.metrics.classification_metrics` of the head's predictions on a part (averaged
    over flips with ``split.flips.tta``); None when the part is empty."""
    if not split.n(part):
        return None
    return classification_metrics(split.y(part), predict_labels(head, split.X(part), split.X_flip(part)),
                                  len(split.feats.class_names))


def default_output(store: str | os.PathLike, clf: str) -> Path:
    """models/<store>_<clf>/: where ``featx fit`` saves a bundle unless told."""
    return default_bundle_dir(Path(store).stem, clf)


def check_degenerate(head: Head, split: Split, allow: bool = False) -> None:
    """FeatxError when the head gives every image of its validation part (training part without
    one) the same probabilities: it answers one thing to everything (an RBF SVM with a tiny C
    and unscaled vectors: a constant decision function, which Platt scaling maps to one value)."""
    part = "val" if split.n("val") > 1 else "train"
    if allow or not degenerate(predict_proba(head, split.X(part), split.X_flip(part))):
        return
    raise FeatxError(f"the fitted {head.name} head gives every {part} image the same "
                     "probabilities (a constant decision function); it would answer one class "
                     "for everything. Raise `C`, or give `scale`=l2; `allow_degenerate` saves it "
                     "anyway")


def accuracy_warnings(result: "FitResult") -> list[str]:
    """Plain warnings on the accuracies: below chance on the validation part (loud: something
    is wrong), or resting on fewer than 100 images."""
    lines = []
    chance = result.extra["reference"]["chance"]
    if result.val and result.val["accuracy"] < chance:
        lines.append(f"the validation accuracy {result.val['accuracy']:.3f} is below chance "
                     f"({chance:.3f}): the head is worse than guessing; check the labels, `C` "
                     "and `scale`")
    for part in ("val", "test"):
        note = small_sample_note(part, getattr(result, part))
        if note:
            lines.append(note)
    return lines


@dataclass
class FitResult(ScoredResult):
    """A fitted head and its evaluation (see :func:`fit_store`)."""

    head: Head
    clf: str
    params: dict[str, Any]
    class_names: list[str]
    store: Path
    store_meta: dict
    split: dict[str, Any]
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    fit_seconds: float
    history: dict[str, list[float]] | None = None
    selection: dict[str, Any] | None = None  # how C / scale were picked, when they were
    extra: dict[str, Any] = field(default_factory=dict)
    bundle: Path | None = None  # where it was saved, if it was
    warnings: list[str] = field(default_factory=list)  # said on stderr by the CLI
    familiar: Any = None  # the training photos' record (featx.familiar.Record), if any

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx fit --json``."""
        return {
            "clf": self.clf, "params": self.params, "store": str(self.store),
            **self.scores(),
            "class_names": self.class_names, "split": self.split,
            "val": self.val, "test": self.test, "selection": self.selection, **self.extra,
            "familiar": self.familiar.as_dict() if self.familiar is not None else None,
            "bundle": str(self.bundle) if self.bundle else None, "warnings": self.warnings,
        }


def fit_split(split: Split, clf: str = "logreg", **params: Any) -> tuple[Head, float]:
    """Fit a new head on the train part (validation part for early stopping); (head, seconds)."""
    head = make_head(clf, **params)
    n_classes = len(split.feats.class_names)
    head.fit(*split.train_data(), split.X("val"), split.y("val"), n_classes=n_classes)
    return head, head.fit_seconds


def fit_store(store: str | os.PathLike, clf: str = "logreg", fractions=DEFAULT_FRACTIONS,
              split_seed: int = 0, split: Split | None = None, out: str | os.PathLike | None = None,
              exclude=None, exclude_from_test: bool = False, train_flips: bool | None = None,
              tta: bool | None = None, n_jobs: int = 2, corrections: bool = True,
              exclude_findings=EXCLUDE_FINDINGS, groups=None, group_name: str = "content hash",
              allow_degenerate: bool = False, **params: Any) -> FitResult:
    """Fit ``clf`` on a store's train part and evaluate it on the validation and test parts;
    with ``out``, save it there as a bundle (see :func:`featx.bundle.save_bundle`); ``exclude``,
    ``exclude_findings``, ``corrections``, ``train_flips``, ``tta``: see :func:`load_split`.

    ``C`` or ``scale`` left None are picked by cross-validation on the train part
    (:func:`featx.selection.choose_params`, ``n_jobs`` in parallel); the choice is in ``selection``.
    A head whose probabilities are the same for every image is refused (FeatxError) unless
    ``allow_degenerate``; ``warnings`` says what does not apply, what rests on few images and
    an accuracy below chance.
    """
    make_head(clf, **params)  # validate the name and parameters before loading any data
    notes = unused_params(clf, **params)
    if out is not None:
        check_bundle_output(out)
    split = split or load_split(store, fractions, split_seed, exclude=exclude,
                                exclude_from_test=exclude_from_test, train_flips=train_flips,
                                tta=tta, corrections=corrections,
                                exclude_findings=exclude_findings, groups=groups,
                                group_name=group_name)
    free = [k for k in ("C", "scale") if params.get(k) is None]
    selection = None
    if free:
        fixed = {k: v for k, v in params.items() if v is not None and k != "seed"}
        selection = choose_params(split, clf, fixed, free, seed=params.get("seed") or 0,
                                  n_jobs=n_jobs)
        params.update(selection["picked"] or {})
    head, seconds = fit_split(split, clf, **params)
    check_degenerate(head, split, allow_degenerate)
    extra: dict[str, Any] = {"reference": reference_levels(split), "n_iter": head.n_iter,
                             "converged": head.converged}
    if head.history:
        extra.update(epochs_run=len(head.history["loss"]), best_epoch=head.best_epoch,
                     solver=head.params.get("solver"), stop_reason=head.stop_reason)
    result = FitResult(
        head=head, clf=clf, params=head.get_params(), class_names=list(split.feats.class_names),
        store=Path(store), store_meta=split.feats.meta, split=split.info,
        val=evaluate(head, split, "val"), test=evaluate(head, split, "test"),
        fit_seconds=seconds, history=head.history, selection=selection, extra=extra,
        warnings=notes + list(split.warnings), familiar=from_split(split),
    )
    result.warnings += accuracy_warnings(result)
    if out is not None:
        result.bundle = save_bundle(out, head, result.class_names, result.store_meta, store=store,
                                    split=result.split, metrics=result.metrics,
                                    extra={"selection": selection} if selection else None,
                                    familiar=result.familiar)
    return result
