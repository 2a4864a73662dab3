"""bundle: a trained model that predicts on new images without the training data.

A bundle is a directory, written whole by :func:`save_bundle` and read by :func:`load_bundle`::

    models/<name>/
        bundle.json     what it is and how to feed it (below)
        model.joblib    a scikit-learn Pipeline (logreg, svm, linear-svm), or
        model.keras     a Keras model (the softmax head, the scratch CNN)
        history.json    per-epoch loss / accuracy of heads trained by epochs (also in bundle.json)
        familiar.npz    what the training photos look like in the embedding space (featx.familiar)
        ...             files of the kind (the baseline's test_predictions.json)

``bundle.json`` holds ``featx_bundle`` (the format version), ``kind``, ``clf``, ``params``,
``class_names``, ``input`` (what the model takes), ``extractor`` (how an image becomes that input),
``model_file``, ``store``, ``split``, ``metrics``, ``history``, ``familiar`` (the unfamiliar-photo
detector and its threshold, :mod:`featx.familiar`; absent in older bundles), ``versions`` and
``created``.

``kind`` says how images reach the model; :data:`KINDS` maps it to what the model takes and to
the reader that turns image files into that:

* ``"features"``: a head on cached vectors; an image is embedded with
  ``Extractor.from_meta(bundle.extractor)`` first (``input = {"type": "vectors", "dim": D}``).
* ``"cnn"``: the from-scratch baseline (:mod:`featx.baseline`), a Keras model taking decoded pixels
  (``input = {"type": "pixels", "input_size", "resize", "resample", "scale"}``).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from featx import __version__
from featx.errors import FeatxError
from featx.files import atomic_folder, check_output, utc_now
from featx.heads import Head, load_head
from featx.store import plain

BUNDLE_VERSION = 1
EXTRACTOR_KEYS = ("model", "layer", "pooling", "weights", "weights_id", "precision", "input_size",
                  "resize", "resample", "preprocess", "dim", "keras_backend")
PIXEL_KEYS = ("input_size", "resize", "resample")


def _vectors_reader(info: dict[str, Any], weights: str | None):
    from featx.embed import Extractor

    return Extractor.from_meta(info["extractor"], weights=weights)


def _pixels_reader(info: dict[str, Any], weights: str | None):
    from featx.reader import PixelReader

    return PixelReader.from_input(info["input"])


@dataclass(frozen=True)
class Kind:
    """A bundle kind: what its model takes and how image files become that."""

    input: str  # "vectors" or "pixels": Head.input of the model
    reader: Callable[[dict[str, Any], str | None], Any]  # (bundle.json, weights) -> embed_files()


KINDS: dict[str, Kind] = {"features": Kind("vectors", _vectors_reader),
                          "cnn": Kind("pixels", _pixels_reader)}


@dataclass
class Bundle:
    """A loaded bundle: the model plus everything needed to feed it a new image."""

    path: Path
    kind: str
    clf: str
    class_names: list[str]
    extractor: dict[str, Any]
    params: dict[str, Any]
    head: Head
    info: dict[str, Any] = field(default_factory=dict)  # the whole bundle.json

    @property
    def history(self) -> dict[str, list[float]] | None:
        return self.info.get("history")

    def reader(self, weights: str | None = None):
        """What turns image files into this model's input: ``reader.embed_files(paths)``."""
        return KINDS[self.kind].reader(self.info, weights)

    @property
    def tta(self) -> bool:
        """Whether the bundle's val / test scores average over flips (``featx fit --tta``)."""
        return bool(((self.info.get("split") or {}).get("flips") or {}).get("tta"))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of the model's input (vectors (N, D), or pixels)."""
        self._check_dim(X)
        return self.head.predict_proba(X)

    def _check_dim(self, X: np.ndarray) -> None:
        dim = self.info.get("input", {}).get("dim")
        if dim is not None and X.shape[1] != dim:
            raise FeatxError(f"the extractor gives {X.shape[1]}-d vectors but the bundle's "
                             f"{self.clf} head takes {dim}-d ones; the extractor does not match")

    @cached_property
    def familiar(self):
        """The record of the training photos (:class:`featx.familiar.Record`), or None for a
        bundle made before featx kept one (or a kind that has none)."""
        from featx.familiar import from_bundle

        return from_bundle(self.info, self.path)

    def predict_scored(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(class probabilities, unfamiliarity scores or None without a record) of the model's
        input; the score is of the head's embedding (:meth:`Head.embed`)."""
        self._check_dim(X)
        if self.familiar is None:
            return self.head.predict_proba(X), None
        proba, vectors = self.head.predict_embedded(X)
        return proba, self.familiar.score(vectors)


def default_bundle_dir(name: str, clf: str, folder: Path = Path("models")) -> Path:
    """models/<store-stem or data folder>_<clf>/"""
    return folder / f"{name}_{clf}"


def save_bundle(directory: str | os.PathLike, head: Head, class_names: list[str],
                store_meta: dict, *, store: str | os.PathLike | None = None,
                split: dict | None = None, metrics: dict | None = None,
                extra: dict[str, Any] | None = None,
                files: dict[str, Any] | None = None, familiar=None) -> Path:
    """Write a bundle of any kind into ``directory`` (replaced whole); returns its path.

    ``store_meta`` is the store's metadata (a head on vectors: the extractor settings, ``dim``,
    ``n``, ``data_dir``) or, for a head on pixels, ``input_size``, ``resize``, ``resample``,
    ``data_dir`` and ``n``. ``extra`` adds keys to ``bundle.json``; ``files`` adds JSON files;
    ``familiar``: the training photos' record (:class:`featx.familiar.Record`), when there is one.
    """
    directory = Path(directory)
    kind = next(k for k, v in KINDS.items() if v.input == head.input)
    if head.input == "vectors":
        missing = [k for k in ("model", "layer", "pooling", "weights", "weights_id")
                   if k not in store_meta]
        if missing:
            raise FeatxError(f"the store's metadata lacks the extractor settings {missing}")
        dim = int(store_meta.get("dim") or head.n_features)
        model_input = {"type": "vectors", "dim": dim}
        extractor = {k: store_meta[k] for k in EXTRACTOR_KEYS if k in store_meta} | {"dim": dim}
    else:
        extractor = {k: store_meta[k] for k in PIXEL_KEYS}
        model_input = {"type": "pixels", **extractor,
                       "scale": "RGB 0..255 (the model rescales by 1/255 itself)"}
    with staged(directory) as tmp:
        model_file = head.save(tmp)
        info = {
            "featx_bundle": BUNDLE_VERSION, "kind": kind, "clf": head.name,
            "params": head.get_params(), "class_names": list(class_names),
            "input": model_input, "extractor": extractor, "model_file": model_file,
            "store": {"path": str(store) if store else None, "n": store_meta.get("n"),
                      "data_dir": store_meta.get("data_dir")},
            "split": split, "metrics": metrics, "history": head.history, **(extra or {}),
            **({"familiar": familiar.as_dict()} if familiar is not None else {}),
            "versions": _versions(), "created": utc_now(),
        }
        _write_json(tmp / "bundle.json", info)
        if head.history is not None:
            _write_json(tmp / "history.json", head.history)
        for name, content in (files or {}).items():
            _write_json(tmp / name, content)
        if familiar is not None:
            familiar.save(tmp)
    return directory


def _versions() -> dict[str, str | None]:
    """Library versions, read without importing Keras (and so TensorFlow) for a scikit-learn head."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"featx": __version__}
    for name in ("keras", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    keras = sys.modules.get("keras")
    out["keras_backend"] = keras.backend.backend() if keras is not None else None
    return out


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, default=_plain) + "\n")


def check_bundle_output(directory: str | os.PathLike) -> Path:
    """Before any work: ``directory`` can be written, and is not someone else's folder."""
    directory = check_output(directory, "the model bundle", folder=True)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "bundle.json").is_file():
        raise FeatxError(f"{directory} exists and is not a featx bundle; choose another `out` folder")
    return directory


@contextmanager
def staged(directory: Path) -> Iterator[Path]:
    """Fill a temporary sibling folder, then swap it in for ``directory`` whole (never half a
    bundle; a failed write leaves no temporary folder and is one clear error)."""
    check_bundle_output(directory)
    with atomic_folder(directory, "the model bundle") as tmp:
        yield tmp


def read_bundle_info(path: str | os.PathLike) -> dict[str, Any]:
    """``bundle.json`` of a bundle directory (or the file itself), checked."""
    path = Path(path)
    if not path.exists():
        raise FeatxError(f"bundle not found: {path}")
    meta_file = path / "bundle.json" if path.is_dir() else path
    if not meta_file.is_file() or meta_file.name != "bundle.json":
        raise FeatxError(f"not a featx bundle (no bundle.json): {path}")
    try:
        info = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise FeatxError(f"unreadable bundle.json in {path}: {e}") from None
    if not isinstance(info, dict) or "featx_bundle" not in info:
        raise FeatxError(f"not a featx bundle (bundle.json lacks featx_bundle): {path}")
    if int(info["featx_bundle"]) > BUNDLE_VERSION:
        raise FeatxError(f"{path} was written by a newer featx (bundle format {info['featx_bundle']})")
    if info.get("kind") not in KINDS:
        raise FeatxError(f"bundle kind {info.get('kind')!r} is not supported by this featx "
                         f"(supported: {', '.join(KINDS)})")
    return info


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle folder (or its ``bundle.json``), judged by the file's name."""
    path = Path(path)
    return (path / "bundle.json").is_file() if path.is_dir() else path.name == "bundle.json"


def describe_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """What a bundle holds, for ``featx info``: kind, head and its parameters, classes, input,
    extractor, the store and split it was trained on, its scores, versions and files (bytes).
    Reads ``bundle.json`` only: no model is loaded."""
    info = read_bundle_info(path)
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    metrics = info.get("metrics") or {}
    return {
        "bundle": str(directory), "kind": info["kind"], "clf": info.get("clf"),
        "params": info.get("params", {}), "class_names": info.get("class_names", []),
        "input": info.get("input", {}), "extractor": info.get("extractor", {}),
        "store": info.get("store") or {}, "split": info.get("split") or {},
        "accuracy": {part: (metrics.get(part) or {}).get("accuracy") for part in ("val", "test")},
        "selection": (info.get("selection") or {}).get("picked"),
        "epochs": len((info.get("history") or {}).get("loss", [])) or None,
        "versions": info.get("versions", {}), "created": info.get("created"),
        "files": {f.name: f.stat().st_size for f in sorted(directory.iterdir()) if f.is_file()},
    }


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load a bundle directory of any kind; needs neither the store nor the training images."""
    info = read_bundle_info(path)
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    head = load_head(info["clf"], directory, info.get("params", {}))
    if head.input != KINDS[info["kind"]].input:
        raise FeatxError(f"bundle {directory}: a {info['clf']} model does not take "
                         f"{KINDS[info['kind']].input} (kind {info['kind']!r})")
    head.history = head.history or info.get("history")
    return Bundle(path=directory, kind=info["kind"], clf=info["clf"],
                  class_names=info["class_names"], extractor=info.get("extractor", {}),
                  params=info.get("params", {}), head=head, info=info)


def _plain(v):
    """json.dumps default: numpy values as Python ones (store.plain), anything else as text."""
    out = plain(v)
    return str(out) if out is v else out

