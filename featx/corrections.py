"""corrections: a store's label corrections, kept beside it in ``FILE.h5.labels.csv``.

One row per decision, keyed by content hash (so a rename or a copy of a photo keeps its
correction): ``hash,path,old_label,new_label,time``. ``new_label`` is a class name, or ``exclude``
(drop the image from every part); a row whose ``new_label`` equals the stored label undoes earlier
rows (keep it as it is). The last row of a hash wins. The first line is a comment recording the
store's identity (its data folder and class names), so a file beside another store is refused.

Every write rewrites the whole file atomically (:func:`featx.files.write_text`); 25,000 rows take
milliseconds. :mod:`featx.split` applies the corrections in every command that reads labels.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.errors import FeatxError
from featx.files import utc_now, write_text

FIELDS = ("hash", "path", "old_label", "new_label", "time")
EXCLUDE = "exclude"
HEADER = "# featx corrections "


def corrections_path(store: str | os.PathLike) -> Path:
    """``FILE.h5.labels.csv`` beside the store."""
    store = Path(store)
    return store.with_name(store.name + ".labels.csv")


def store_identity(store: str | os.PathLike) -> dict[str, Any]:
    """What a corrections file records of its store: the data folder and the class names."""
    from featx.store import read_meta

    meta = read_meta(store)
    return {"data_dir": meta.get("data_dir"), "class_names": list(meta["class_names"])}


@dataclass
class Corrections:
    """The decisions in force for a store: content hash -> new label (a class name or
    ``exclude``), with the path each was made on. Rows that undo a decision are kept in ``rows``
    (the file's history) and leave nothing in ``latest``."""

    file: Path
    identity: dict[str, Any]
    rows: list[dict[str, str]] = field(default_factory=list)  # every row, in file order

    @property
    def latest(self) -> dict[str, dict[str, str]]:
        """hash -> the last row recorded for it."""
        last: dict[str, dict[str, str]] = {}
        for row in self.rows:
            last[row["hash"]] = row
        return last

    def decisions(self, hashes, labels, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(new labels, excluded mask) for rows with these hashes and stored labels: a row's
        label is its last correction's class, unchanged when none or when the correction equals
        the stored label; ``excluded`` marks the rows whose last correction is ``exclude``."""
        index = {name: i for i, name in enumerate(class_names)}
        latest = self.latest
        new = np.asarray(labels, dtype=np.int64).copy()
        excluded = np.zeros(len(new), dtype=bool)
        for i, h in enumerate(hashes):
            row = latest.get(str(h))
            if row is None:
                continue
            if row["new_label"] == EXCLUDE:
                excluded[i] = True
            elif row["new_label"] in index:
                new[i] = index[row["new_label"]]
            else:
                raise FeatxError(f"{self.file}: the correction of {row['path']} names class "
                                 f"{row['new_label']!r}, which the store does not have "
                                 f"({', '.join(class_names)})")
        return new, excluded

    def apply(self, feats) -> tuple[np.ndarray, np.ndarray]:
        """(labels, excluded mask) of a store's rows (``feats``: anything with ``hashes``,
        ``labels`` and ``class_names``, such as :class:`featx.store.Features`)."""
        return self.decisions(feats.hashes, feats.labels, list(feats.class_names))

    def n_applied(self, hashes, labels, class_names: list[str]) -> int:
        """How many rows the corrections change (relabelled or excluded)."""
        new, excluded = self.decisions(hashes, labels, class_names)
        return int(np.sum(excluded | (new != np.asarray(labels))))

    def text(self) -> str:
        out = io.StringIO(newline="")
        out.write(HEADER + json.dumps(self.identity, sort_keys=True) + "\n")
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


def load(store: str | os.PathLike, file: str | os.PathLike | None = None) -> Corrections:
    """The corrections of a store (none when its file does not exist); FeatxError when the file
    was made for another store or cannot be read."""
    identity = store_identity(store)
    path = Path(file) if file is not None else corrections_path(store)
    if not path.is_file():
        return Corrections(path, identity)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FeatxError(f"cannot read the corrections file {path}: {e}") from None
    if not lines or not lines[0].startswith(HEADER):
        raise FeatxError(f"{path} is not a featx corrections file (its first line should be "
                         f"{HEADER.strip()!r} and the store's identity)")
    try:
        recorded = json.loads(lines[0][len(HEADER):])
    except ValueError:
        raise FeatxError(f"{path}: cannot read the store identity on its first line") from None
    _check_identity(path, recorded, identity, store)
    reader = csv.DictReader(lines[1:])
    if reader.fieldnames is None or not set(FIELDS) <= set(reader.fieldnames):
        raise FeatxError(f"{path}: expected the columns {','.join(FIELDS)}")
    rows = [{k: (r.get(k) or "").strip() for k in FIELDS} for r in reader if (r.get("hash") or "").strip()]
    return Corrections(path, recorded, rows)


def _check_identity(path: Path, recorded: dict, identity: dict, store) -> None:
    same_dir = recorded.get("data_dir") == identity["data_dir"]
    missing = [c for c in recorded.get("class_names", []) if c not in identity["class_names"]]
    if not same_dir or missing:
        why = (f"data folder {recorded.get('data_dir')} vs {identity['data_dir']}" if not same_dir
               else f"classes {', '.join(missing)} are not in the store")
        raise FeatxError(f"{path} records corrections of another store than {store} ({why}); "
                         "move it away or pass `no_corrections`")


def record(store: str | os.PathLike, hash: str, path: str, old: str, new: str,
           file: str | os.PathLike | None = None) -> Corrections:
    """Append one decision (``new``: a class name, ``exclude``, or ``old`` to undo) and rewrite
    the file atomically; returns the corrections now in force."""
    corrections = load(store, file)
    names = corrections.identity["class_names"]
    for label, param in ((old, "old"), (new, "new")):
        if label not in names and not (param == "new" and label == EXCLUDE):
            raise FeatxError(f"`{param}` label {label!r} is not a class of {store} "
                             f"({', '.join(names)}{' or exclude' if param == 'new' else ''})")
    corrections.rows.append({"hash": str(hash), "path": str(path), "old_label": old,
                             "new_label": new, "time": utc_now()})
    write_text(corrections.file, corrections.text(), "the corrections file")
    return corrections
