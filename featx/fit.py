"""fit: train one head on a store's cached vectors with the derived split, and evaluate it.

The split comes from :func:`featx.split.split_indices` (derived from the content hashes, so fit,
sweep and the from-scratch baseline all see the same parts). ``C`` and ``scale``, when not given,
are picked by cross-validation on the train part alone (:func:`featx.sweep.choose_params`). Metrics:
accuracy, per-class precision / recall and the confusion matrix on the validation and test parts,
beside the chance level and the majority class's accuracy; wall-clock fit time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.bundle import check_bundle_output, save_bundle
from featx.errors import FeatxError
from featx.heads import Head, make_head
from featx.metrics import classification_metrics
from featx.split import DEFAULT_FRACTIONS, describe_split, split_indices
from featx.store import Features, load_features


@dataclass(frozen=True)
class Flips:
    """How a store's mirrored images' vectors (``featx extract --augment flip``) are used: ``train``
    on them too (each beside its original, in its original's part and fold), and ``tta``: predict
    from the mean of an image's and its mirror's class probabilities."""

    train: bool = False
    tta: bool = False

    @classmethod
    def choose(cls, feats: Features, train: bool | None, tta: bool | None) -> "Flips":
        """None: use them when the store has them. Asking for them without them: FeatxError."""
        has = feats.flipped is not None
        if (train or tta) and not has:
            flag = "train_flips" if train else "tta"
            raise FeatxError(f"`{flag}` needs mirrored vectors, and this store has none: extract "
                             "them with featx extract DATA_DIR --augment flip -o STORE")
        return cls(has if train is None else train, has if tta is None else tta)

    def as_dict(self) -> dict[str, bool]:
        return {"train": self.train, "tta": self.tta}


def with_flips(X: np.ndarray, y: np.ndarray, X_flip: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on: ``X`` and, when given, the mirrored copies after them (same labels)."""
    return (X, y) if X_flip is None else (np.concatenate([X, X_flip]), np.concatenate([y, y]))


def predict_labels(head: Head, X: np.ndarray, X_flip: np.ndarray | None = None) -> np.ndarray:
    """Class indices; with ``X_flip``, from the mean of both copies' probabilities."""
    if X_flip is None:
        return head.predict(X)
    return np.argmax(head.predict_proba(X) + head.predict_proba(X_flip), axis=1)


@dataclass
class Split:
    """A store's vectors cut into train / validation / test (rows from ``split_indices``)."""

    feats: Features
    rows: dict[str, np.ndarray]
    fractions: tuple[float, float, float]
    seed: int
    excluded: dict[str, Any] | None = None  # what ``exclude`` dropped (featx.audit.exclude_rows)
    flips: Flips = Flips()

    def X(self, part: str) -> np.ndarray:
        return self.feats.features[self.rows[part]]

    def y(self, part: str) -> np.ndarray:
        return self.feats.labels[self.rows[part]]

    def n(self, part: str) -> int:
        return len(self.rows[part])

    def X_flip(self, part: str) -> np.ndarray | None:
        """The part's mirrored vectors when predictions average over flips, else None."""
        return self.feats.flipped[self.rows[part]] if self.flips.tta else None

    def train_data(self) -> tuple[np.ndarray, np.ndarray]:
        """What a head is fitted on: the train part (and its mirrored copies, with ``flips.train``)."""
        return with_flips(self.X("train"), self.y("train"), self.feats.flipped[self.rows["train"]]
                          if self.flips.train else None)

    def pool(self, *parts: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(X, y, groups, X_flip) of some parts for cross-validation: groups are the content
        hashes; X_flip the mirrored vectors when any use of flips is on, else None."""
        idx = np.concatenate([self.rows[p] for p in parts])
        use = self.flips.train or self.flips.tta
        return (self.feats.features[idx], self.feats.labels[idx],
                np.asarray(self.feats.hashes)[idx], self.feats.flipped[idx] if use else None)

    @property
    def info(self) -> dict[str, Any]:
        info = describe_split(self.rows, self.fractions, self.seed)
        if self.excluded:
            info["excluded"] = self.excluded
        if self.feats.flipped is not None:
            info["flips"] = self.flips.as_dict()
        return info


def load_split(store: str | os.PathLike, fractions=DEFAULT_FRACTIONS, seed: int = 0,
               need_val: bool = False, exclude=None, exclude_from_test: bool = False,
               train_flips: bool | None = None, tta: bool | None = None) -> Split:
    """Load a store and split it; FeatxError when it cannot train a classifier.

    ``exclude``: a file of paths (``suspects.csv`` of ``featx audit``) or the paths, dropped from
    the training part after the split is derived (so the other parts do not change), and from
    the validation and test parts too with ``exclude_from_test``. ``train_flips``, ``tta``: see
    :class:`Flips` (None: on when the store has mirrored vectors)."""
    feats = load_features(store)
    flips = Flips.choose(feats, train_flips, tta)
    classes = np.unique(feats.labels)
    if len(feats.class_names) < 2 or len(classes) < 2:
        name = feats.class_names[0] if feats.class_names else "none"
        raise FeatxError(f"{store} holds one class ({name}); a classifier needs at least two")
    rows = split_indices(feats.hashes, feats.labels, fractions, seed)
    excluded = None
    if exclude is not None:
        from featx.audit import exclude_rows

        rows, excluded = exclude_rows(feats, rows, exclude, exclude_from_test)
    split = Split(feats, rows, tuple(fractions), seed, excluded, flips)
    if len(np.unique(split.y("train"))) < 2:
        raise FeatxError(f"the training part of {store} has fewer than two classes "
                         f"({split.n('train')} rows); add images or change --split")
    if need_val and split.n("val") == 0:
        raise FeatxError(f"the validation part of {store} is empty; give it a share with `fractions`")
    return split


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


@dataclass
class FitResult:
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
    familiar: Any = None  # the training photos' record (featx.familiar.Record), if any

    @property
    def metrics(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "fit_seconds": round(self.fit_seconds, 4)}

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``featx fit --json``."""
        return {
            "clf": self.clf, "params": self.params, "store": str(self.store),
            "val_accuracy": self.val["accuracy"] if self.val else None,
            "test_accuracy": self.test["accuracy"] if self.test else None,
            "n_train": self.split["n_train"], "n_val": self.split["n_val"],
            "n_test": self.split["n_test"], "fit_seconds": round(self.fit_seconds, 4),
            "class_names": self.class_names, "split": self.split,
            "val": self.val, "test": self.test, "selection": self.selection, **self.extra,
            "familiar": self.familiar.as_dict() if self.familiar is not None else None,
            "bundle": str(self.bundle) if self.bundle else None,
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
              tta: bool | None = None, n_jobs: int = 2, **params: Any) -> FitResult:
    """Fit ``clf`` on a store's train part and evaluate it on the validation and test parts;
    with ``out``, save it there as a bundle (see :func:`featx.bundle.save_bundle`); ``exclude``,
    ``train_flips``, ``tta``: see :func:`load_split`.

    ``C`` or ``scale`` left None are picked by cross-validation on the train part
    (:func:`featx.sweep.choose_params`, ``n_jobs`` in parallel); the choice is in ``selection``.
    """
    from featx.familiar import from_split
    from featx.sweep import choose_params

    make_head(clf, **params)  # validate the name and parameters before loading any data
    if out is not None:
        check_bundle_output(out)
    split = split or load_split(store, fractions, split_seed, exclude=exclude,
                                exclude_from_test=exclude_from_test, train_flips=train_flips,
                                tta=tta)
    free = [k for k in ("C", "scale") if params.get(k) is None]
    selection = None
    if free:
        fixed = {k: v for k, v in params.items() if v is not None and k != "seed"}
        selection = choose_params(split, clf, fixed, free, seed=params.get("seed") or 0,
                                  n_jobs=n_jobs)
        params.update(selection["picked"] or {})
    head, seconds = fit_split(split, clf, **params)
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
        familiar=from_split(split),
    )
    if out is not None:
        result.bundle = save_bundle(out, head, result.class_names, result.store_meta, store=store,
                                    split=result.split, metrics=result.metrics,
                                    extra={"selection": selection} if selection else None,
                                    familiar=result.familiar)
    return result
