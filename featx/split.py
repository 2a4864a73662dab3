"""split: the rows every command trains, scores and audits on, derived in one place.

The parts are *derived*, not stored: each group of rows (by default the rows sharing a content
hash; :func:`split_indices`' ``groups`` can make larger groups, such as near-twins) gets a rank
from ``sha256(f"{seed}:{group}")``, and within each class the groups are ordered by that rank and
cut at the requested fractions. So every consumer that has a store's hashes and labels gets the
same split, a group always lands in one part, and adding images to a data set moves few existing
ones across parts.

On top of the derived parts, :func:`split_rows` applies, in this order and for every command:

* the store's **label corrections** (:mod:`featx.corrections`, ``FILE.h5.labels.csv``): labels
  changed, ``exclude``-d rows dropped from every part; the parts are derived from the stored
  labels, so a correction never moves other images across parts;
* an **exclusion list** (``exclude``: ``suspects.csv`` of ``featx audit``, or paths): its label
  issues and leaks (outliers only when asked) dropped from the training part, and from the
  validation and test parts too with ``exclude_from_test``;
* one set of checks and messages (two classes, two in training, a validation part when needed).

The result (:class:`Rows`) records in ``info`` what a bundle needs to score again on the very same
rows (:func:`replay`); :class:`Split` adds the vectors and the mirrored copies (:class:`Flips`).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from featx.discover import check_labelled
from featx.errors import FeatxError

PARTS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
EXCLUDE_FINDINGS = ("label", "leak")  # what --exclude takes from suspects.csv by default
WIDE_EXCLUSION = 0.05  # an exclusion dropping more than this share of a class's training rows


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'70/15/15' (shares adding up to 100) or '0.7,0.15,0.15' (adding up to 1) -> (0.7, 0.15, 0.15)."""
    try:
        values = [float(v) for v in text.replace("/", ",").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 0:
        raise FeatxError(f"`fractions` takes three non-negative numbers like 70/15/15, got {text!r}")
    total = sum(values)
    if not any(abs(total - whole) <= 1e-6 * whole for whole in (100.0, 1.0)):
        raise FeatxError(f"`fractions` shares must add up to 100 (e.g. 70/15/15), got {text} "
                         f"(sum {total:g})")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def split_indices(hashes, labels, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  seed: int = 0, groups=None) -> dict[str, np.ndarray]:
    """Row indices of each part: {"train": ..., "val": ..., "test": ...}, each sorted.

    Stratified by label; a group of rows (``groups``: a group id per row; by default the content
    hashes, so exact duplicates) is placed as one unit (by its first row's label), so a group
    never straddles parts.
    """
    keys = _text(hashes if groups is None else groups)
    labels = np.asarray(labels)
    if len(keys) != len(labels):
        raise ValueError("hashes (or groups) and labels differ in length")
    members: dict[str, list[int]] = {}
    for i, h in enumerate(keys):
        members.setdefault(h, []).append(i)
    by_class: dict[int, list[str]] = {}
    for h, rows in members.items():
        by_class.setdefault(int(labels[rows[0]]), []).append(h)
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for label in sorted(by_class):
        ordered = sorted(by_class[label], key=lambda h: _rank(seed, h))
        n = len(ordered)
        n_train = int(round(fractions[0] * n))
        n_val = int(round((fractions[0] + fractions[1]) * n)) - n_train
        cuts = {"train": ordered[:n_train], "val": ordered[n_train:n_train + n_val],
                "test": ordered[n_train + n_val:]}
        for part, hs in cuts.items():
            for h in hs:
                parts[part].extend(members[h])
    return {p: np.array(sorted(rows), dtype=np.int64) for p, rows in parts.items()}


def describe_split(parts: dict[str, np.ndarray], fractions, seed: int) -> dict:
    """The split as recorded in bundles and JSON output: method, fractions, seed, part sizes."""
    return {"method": "derived from content hashes (featx.split)", "fractions": list(fractions),
            "seed": seed, **{f"n_{p}": int(len(parts[p])) for p in PARTS}}


def _rank(seed: int, h: str) -> bytes:
    return hashlib.sha256(f"{seed}:{h}".encode()).digest()


def rows_digest(hashes: Iterable[str]) -> str:
    """A short fingerprint of a set of rows (their content hashes, order ignored)."""
    return hashlib.sha256("\n".join(sorted(_text(hashes))).encode()).hexdigest()[:16]


# --- exclusion lists ------------------------------------------------------------------------------


def read_path_list(file: str | os.PathLike, findings: Iterable[str] | None = None) -> list[str]:
    """Paths from a CSV with a ``path`` column (as ``suspects.csv``) or one path a line; with a
    ``finding`` column, only the rows of ``findings`` (None: every row)."""
    return read_listing(file, findings)[0]


def read_listing(file: str | os.PathLike, findings: Iterable[str] | None = EXCLUDE_FINDINGS
                 ) -> tuple[list[str], dict[str, int]]:
    """:func:`read_path_list`, and how many rows of each other finding were passed over."""
    file = Path(file)
    if not file.is_file():
        raise FeatxError(f"`exclude` file not found: {file}")
    rows = [r for r in csv.reader(file.read_text(encoding="utf-8-sig").splitlines()) if r]
    col, kind = 0, None
    if rows and "path" in (head := [c.strip().lower() for c in rows[0]]):
        col, rows = head.index("path"), rows[1:]
        kind = head.index("finding") if "finding" in head else None
    paths, passed = [], {}
    wanted = None if findings is None else set(findings)
    for r in rows:
        if len(r) <= col or not r[col].strip() or r[col].lstrip().startswith("#"):
            continue
        finding = r[kind].strip() if kind is not None and len(r) > kind else ""
        if wanted is not None and finding and finding not in wanted:
            passed[finding] = passed.get(finding, 0) + 1
            continue
        paths.append(r[col].strip())
    return paths, passed


def _stored_path(path: str, data_dir: str | None) -> str:
    """A listed path as the store writes it: relative to the data folder, ``/`` separators."""
    p = path.replace("\\", "/")
    if data_dir and os.path.isabs(p):
        try:
            return Path(p).relative_to(data_dir).as_posix()
        except ValueError:
            return p
    return p


def exclude_rows(feats, rows: dict[str, np.ndarray], exclude: str | os.PathLike | Iterable[str],
                 from_test: bool = False, findings: Iterable[str] | None = EXCLUDE_FINDINGS
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Drop the listed paths (a file for :func:`read_path_list`, or the paths) from the training
    part only, or from every part with ``from_test``; the new rows and what was done. ``feats``:
    anything with ``paths`` and ``meta`` (``data_dir``)."""
    is_file = isinstance(exclude, (str, os.PathLike))
    listed, passed = read_listing(exclude, findings) if is_file else (list(exclude), {})
    listed = list(dict.fromkeys(listed))
    data_dir = feats.meta.get("data_dir")
    wanted = {_stored_path(p, data_dir) for p in listed}
    hit = np.array([p in wanted for p in feats.paths], dtype=bool)
    known = {p for p in feats.paths if p in wanted}
    unknown = [p for p in listed if _stored_path(p, data_dir) not in known]
    parts = PARTS if from_test else ("train",)
    new = {part: r[~hit[r]] if part in parts else r for part, r in rows.items()}
    info = {"file": str(exclude) if is_file else None, "listed": len(listed),
            "from_test": from_test,
            **{part: int(len(rows[part]) - len(new[part])) for part in PARTS},
            "kept": {part: int(hit[rows[part]].sum()) for part in PARTS if part not in parts},
            "not_in_store": len(unknown), "not_in_store_examples": unknown[:5]}
    if is_file:
        info["findings"] = None if findings is None else list(findings)
        info["passed_over"] = passed
    return new, info


# --- the rows of a store --------------------------------------------------------------------------


@dataclass
class Rows:
    """A store's rows after the split: the parts (row indices), the labels in force (corrected),
    the group of every row (for cross-validation folds) and ``info`` (recorded in bundles)."""

    rows: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def n(self, part: str) -> int:
        return len(self.rows[part])

    def __getitem__(self, part: str) -> np.ndarray:  # read as the dict of parts it replaces
        return self.rows[part]

    def items(self):
        return self.rows.items()


@dataclass
class _Table:
    """The columns :func:`split_rows` reads (a store's, a map store's or a folder's rows)."""

    hashes: Any
    labels: Any
    paths: list[str]
    class_names: list[str]
    meta: dict


def split_rows(hashes, labels, paths: list[str], class_names: list[str], *,
               store: str | os.PathLike | None = None, meta: dict | None = None,
               fractions=DEFAULT_FRACTIONS, seed: int = 0, groups=None,
               group_name: str = "content hash", exclude=None, exclude_from_test: bool = False,
               exclude_findings: Iterable[str] | None = EXCLUDE_FINDINGS,
               corrections: bool = True, need_val: bool = False,
               purpose: str = "a classifier") -> Rows:
    """The parts of a store's rows, corrected, with the exclusions, checked (FeatxError) for
    training ``purpose``. ``store``: where the corrections file lies (none read without it, or
    with ``corrections`` False); ``meta``: the store's metadata (``data_dir`` for the exclusion
    list's absolute paths); ``groups``: a group id per row, or a function of the rows (an object
    with ``hashes``, ``labels``, ``paths``, ``class_names``, ``meta``) returning them, named
    ``group_name`` in ``info``. See the module's docstring for the order of things."""
    where = store if store is not None else "the data"
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    check_labelled(where, class_names, purpose)
    if len(class_names) < 2 or len(present) < 2:
        name = class_names[present[0]] if len(present) else "none"
        raise FeatxError(f"{where} holds one class ({name}); {purpose} needs at least two")
    hashes = np.asarray(_text(hashes))
    table = _Table(hashes, labels, paths, class_names, meta or {})
    if callable(groups):
        groups = groups(table)
    groups = hashes if groups is None else np.asarray(_text(groups))
    if len(groups) != len(labels):
        raise FeatxError(f"`groups` gives {len(groups)} group ids for {len(labels)} rows")
    derived = rows = split_indices(hashes, labels, fractions, seed, groups)
    info = describe_split(rows, fractions, seed)
    if group_name != "content hash":
        info["groups"] = group_name
    new_labels = labels
    if corrections and store is not None:
        rows, new_labels, info["corrections"] = _correct(store, table, rows)
    if exclude is not None:
        rows, info["excluded"] = exclude_rows(table, rows, exclude, exclude_from_test,
                                              exclude_findings)
    info.update({f"n_{p}": int(len(rows[p])) for p in PARTS})
    held = _held_out_changes(hashes, labels, new_labels, derived, rows)
    if held:
        info["held_out_changes"] = held
    info["test_rows"] = rows_digest(hashes[rows["test"]])
    result = Rows(rows, new_labels, groups, info,
                  _wide_exclusions(labels, derived, rows, class_names))
    if exclude_from_test and exclude is None:
        result.warnings.append("`exclude_from_test` applies with `exclude` only (it drops the "
                               "listed paths from the validation and test parts too); ignored")
    if len(np.unique(new_labels[rows["train"]])) < 2:
        raise FeatxError(f"the training part of {where} has fewer than two classes "
                         f"({result.n('train')} rows); add images or change `fractions`")
    if need_val and result.n("val") == 0:
        raise FeatxError(f"the validation part of {where} is empty; give it a share with "
                         "`fractions`")
    return result


def _correct(store, table: _Table, rows: dict[str, np.ndarray]):
    """Apply the store's corrections file: (rows, labels, what was done) ."""
    from featx.corrections import load

    found = load(store)
    new, dropped = found.decisions(table.hashes, table.labels, table.class_names)
    changed = new != table.labels
    info = {"file": str(found.file), "relabelled": int(changed.sum()),
            "excluded": int(dropped.sum())}
    if dropped.any():
        rows = {part: r[~dropped[r]] for part, r in rows.items()}
    return rows, new, info


def _held_out_changes(hashes, stored, labels, bare, rows) -> dict[str, Any]:
    """What makes the val and test rows differ from the bare derivation ``bare``: the hashes
    dropped from them and the corrected labels of those kept (so :func:`replay` needs no file)."""
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        dropped = np.setdiff1d(bare[part], rows[part])
        kept = rows[part][labels[rows[part]] != stored[rows[part]]]
        if len(dropped):
            out.setdefault("dropped", []).extend(hashes[dropped].tolist())
        if len(kept):
            out.setdefault("relabelled", {}).update(
                {h: int(v) for h, v in zip(hashes[kept], labels[kept])})
    return out


def _wide_exclusions(labels, bare, rows, class_names) -> list[str]:
    """A warning per class whose training rows the exclusions (or the corrections) cut by more
    than :data:`WIDE_EXCLUSION` (``bare``: the derived parts; ``labels``: the stored ones)."""
    warnings = []
    before = np.bincount(labels[bare["train"]], minlength=len(class_names))
    after = np.bincount(labels[rows["train"]], minlength=len(class_names))
    for c, name in enumerate(class_names):
        if before[c] and (before[c] - after[c]) / before[c] > WIDE_EXCLUSION:
            warnings.append(f"the exclusions drop {before[c] - after[c]} of the {before[c]} "
                            f"training images of class {name!r} ({(before[c] - after[c]) / before[c]:.0%})"
                            "; check the list (featx audit's outliers are taken only when asked)")
    return warnings


def replay(hashes, labels, info: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The val and test rows (and the labels in force) a bundle was scored on, from its recorded
    split ``info`` and the store's rows: the derivation again, less the recorded drops, with the
    recorded corrections. Training rows are not replayed (``rows["train"]`` is the derivation's).
    FeatxError when the test rows found differ from the recorded ones (``test_rows``)."""
    hashes = np.asarray(_text(hashes))
    labels = np.asarray(labels, dtype=np.int64).copy()
    if info.get("groups"):
        raise FeatxError(f"the bundle's split keeps {info['groups']} groups together; "
                         "replaying it needs those groups")
    rows = split_indices(hashes, labels, tuple(info.get("fractions", DEFAULT_FRACTIONS)),
                         int(info.get("seed", 0)))
    changes = info.get("held_out_changes") or {}
    dropped = np.isin(hashes, np.asarray(changes.get("dropped", []), dtype=str))
    for part in ("val", "test"):
        rows[part] = rows[part][~dropped[rows[part]]]
    for h, label in (changes.get("relabelled") or {}).items():
        labels[hashes == h] = label
    want = info.get("test_rows")
    if want and rows_digest(hashes[rows["test"]]) != want:
        raise FeatxError(f"the store's test rows ({len(rows['test'])}) are not those the bundle "
                         f"was scored on ({info.get('n_test')}); was the store changed since?")
    return rows, labels


# --- the rows with their vectors ------------------------------------------------------------------


@dataclass(frozen=True)
class Flips:
    """How a store's mirrored images' vectors (``featx extract --augment flip``) are used: ``train``
    on them too (each beside its original, in its original's part and fold), and ``tta``: predict
    from the mean of an image's and its mirror's class probabilities."""

    train: bool = False
    tta: bool = False

    @classmethod
    def choose(cls, feats, train: bool | None, tta: bool | None) -> "Flips":
        """None: use them when the store has them. Asking for them without them: FeatxError."""
        has = feats.flipped is not None
        if (train or tta) and not has:
            flag = "train_flips" if train else "tta"
            raise FeatxError(f"`{flag}` needs mirrored vectors, and this store has none: extract "
                             "them with featx extract DATA_DIR --augment flip -o STORE")
        return cls(has if train is None else train, has if tta is None else tta)

    def as_dict(self) -> dict[str, bool]:
        return {"train": self.train, "tta": self.tta}


def parse_tta(tta: str | None) -> bool | None:
    """``tta`` flip | none -> True / False (None: not given, so on when the store has mirrors)."""
    if tta is None:
        return None
    if tta not in ("flip", "none"):
        raise FeatxError(f"`tta` is flip or none, got {tta!r}")
    return tta == "flip"


def with_flips(X: np.ndarray, y: np.ndarray, X_flip: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on: ``X`` and, when given, the mirrored copies after them (same labels)."""
    return (X, y) if X_flip is None else (np.concatenate([X, X_flip]), np.concatenate([y, y]))


@dataclass
class Split:
    """A store's vectors cut into train / validation / test (rows from :func:`split_rows`);
    ``labels``: the labels in force (the store's, corrected)."""

    feats: Any  # featx.store.Features
    rows: dict[str, np.ndarray]
    fractions: tuple[float, float, float]
    seed: int
    excluded: dict[str, Any] | None = None  # what ``exclude`` dropped (see exclude_rows)
    flips: Flips = Flips()
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    recorded: dict[str, Any] | None = None  # split_rows' info
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.labels is None:
            self.labels = np.asarray(self.feats.labels)
        if self.groups is None:
            self.groups = np.asarray(self.feats.hashes)

    def X(self, part: str) -> np.ndarray:
        return self.feats.features[self.rows[part]]

    def y(self, part: str) -> np.ndarray:
        return self.labels[self.rows[part]]

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
        """(X, y, groups, X_flip) of some parts for cross-validation: groups are the split's
        (content hashes by default); X_flip the mirrored vectors when any use of flips is on."""
        idx = np.concatenate([self.rows[p] for p in parts])
        use = self.flips.train or self.flips.tta
        return (self.feats.features[idx], self.labels[idx], self.groups[idx],
                self.feats.flipped[idx] if use else None)

    @property
    def info(self) -> dict[str, Any]:
        info = dict(self.recorded) if self.recorded else describe_split(self.rows, self.fractions,
                                                                         self.seed)
        if self.excluded:
            info["excluded"] = self.excluded
        if self.feats.flipped is not None:
            info["flips"] = self.flips.as_dict()
        return info


def load_split(store: str | os.PathLike, fractions=DEFAULT_FRACTIONS, seed: int = 0,
               need_val: bool = False, exclude=None, exclude_from_test: bool = False,
               train_flips: bool | None = None, tta: bool | None = None, *,
               corrections: bool = True, groups=None, group_name: str = "content hash",
               exclude_findings: Iterable[str] | None = EXCLUDE_FINDINGS) -> Split:
    """Load a store and split it (:func:`split_rows`); FeatxError when it cannot train a
    classifier. ``train_flips``, ``tta``: see :class:`Flips` (None: on when the store has
    mirrored vectors); ``groups``: a group id per row kept in one part (and one fold)."""
    from featx.store import load_features

    feats = load_features(store)
    return split_features(feats, store, fractions, seed, need_val, exclude, exclude_from_test,
                          train_flips, tta, corrections=corrections, groups=groups,
                          group_name=group_name, exclude_findings=exclude_findings)


def split_features(feats, store, fractions=DEFAULT_FRACTIONS, seed: int = 0,
                   need_val: bool = False, exclude=None, exclude_from_test: bool = False,
                   train_flips: bool | None = None, tta: bool | None = None, *,
                   corrections: bool = True, groups=None, group_name: str = "content hash",
                   exclude_findings: Iterable[str] | None = EXCLUDE_FINDINGS,
                   purpose: str = "a classifier") -> Split:
    """:func:`load_split` of a store already in memory (``feats``: :class:`featx.store.Features`)."""
    check_vectors(feats.meta, store, purpose)
    flips = Flips.choose(feats, train_flips, tta)
    got = split_rows(feats.hashes, feats.labels, feats.paths, list(feats.class_names),
                     store=store, meta=feats.meta, fractions=fractions, seed=seed, groups=groups,
                     group_name=group_name, exclude=exclude, exclude_from_test=exclude_from_test,
                     exclude_findings=exclude_findings, corrections=corrections,
                     need_val=need_val, purpose=purpose)
    return Split(feats, got.rows, tuple(fractions), seed, got.info.get("excluded"), flips,
                 got.labels, got.groups, got.info, got.warnings)


def check_vectors(meta: dict, store, purpose: str) -> None:
    """Refuse a store of the spatial maps ``featx finetune`` trains on (block4_pool, unpooled;
    100,352 values a row for VGG16): a head or an audit on them is not what was meant, and
    pooling them here would give other vectors than the store says. The message gives the
    command that makes pooled vectors of the same folder."""
    from featx.backbones import BACKBONES

    backbone = BACKBONES.get(meta.get("model"))
    if not meta.get("map_shape") or backbone is None or meta.get("layer") != backbone.tune_from:
        return
    parts = ["featx extract", str(meta.get("data_dir") or "DATA_DIR")]
    if meta.get("model") not in (None, "vgg16"):
        parts.append(f"--model {meta['model']}")
    if meta.get("weights") not in (None, "imagenet"):
        parts.append(f"--weights {meta['weights']}")
    if meta.get("input_size") not in (None, 224):
        parts.append(f"--input-size {meta['input_size']}")
    parts.append(f"-o {Path(str(store)).stem}_vectors.h5")
    raise FeatxError(f"{store} holds {meta.get('layer')} maps of shape {tuple(meta['map_shape'])} "
                     f"(for featx finetune), not pooled vectors, and {purpose} is not run on "
                     f"them; make block5_pool vectors of the same photos with: {' '.join(parts)}")


def describe_store(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`featx.store.describe`, plus ``corrections``: the store's corrections file and how
    many of its rows it changes (relabelled, excluded) in every command."""
    from featx.corrections import load
    from featx.store import describe, open_store, read_rows, strings

    d = describe(path)
    if d["n"] == 0:
        return d
    found = load(path)
    with open_store(path) as f:
        rows, names = read_rows(f), strings(f["class_names"])
    new, dropped = found.decisions(rows.hashes, rows.labels, names)
    d["corrections"] = {"file": str(found.file), "exists": found.file.is_file(),
                        "rows": len(found.rows),
                        "relabelled": int(np.sum(new != np.asarray(rows.labels))),
                        "excluded": int(dropped.sum())}
    return d
