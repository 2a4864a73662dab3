"""bundle: a trained model that predicts on new images without the training data.

A bundle is a directory::

    models/<store-stem>_<clf>/
        bundle.json     what it is and how to feed it (below)
        model.joblib    a scikit-learn Pipeline (logreg, svm, linear-svm), or
        model.keras     the Keras softmax head
        history.json    the softmax head's per-epoch loss / accuracy (also inside bundle.json)

``bundle.json`` holds ``featx_bundle`` (format version), ``kind``, ``clf``, ``params``,
``class_names``, ``input`` (what the model takes), ``extractor`` (the store's settings: model,
layer, pooling, weights, weights_id, precision, input_size, resize, resample, preprocess, dim),
``store``, ``split``, ``metrics``, ``history``, ``versions`` and ``created``.

``kind`` says how images reach the model:

* ``"features"``: a head on cached vectors; an image is embedded with
  ``Extractor.from_meta(bundle.extractor)`` first (``input = {"type": "vectors", "dim": D}``).
* ``"cnn"``: the from-scratch baseline (:mod:`featx.baseline`), a ``model.keras`` taking decoded
  pixels (``input = {"type": "pixels", "input_size", "resize", "resample", "scale"}``); written by
  ``featx.baseline.save_baseline``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from featx import __version__
from featx.errors import FeatxError
from featx.heads import Head, check_clf, load_head
from featx.store import plain

BUNDLE_VERSION = 1
KINDS = ("features", "cnn")  # "cnn": the from-scratch baseline (featx.baseline)
EXTRACTOR_KEYS = ("model", "layer", "pooling", "weights", "weights_id", "precision", "input_size",
                  "resize", "resample", "preprocess", "dim", "keras_backend")


@dataclass
class Bundle:
    """A loaded bundle: the head plus everything needed to embed a new image like the store."""

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

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of embedded vectors (N, D) -> (N, n_classes)."""
        dim = self.info.get("input", {}).get("dim")
        if dim is not None and X.shape[1] != dim:
            raise FeatxError(f"the extractor gives {X.shape[1]}-d vectors but the bundle's "
                             f"{self.clf} head takes {dim}-d ones; the extractor does not match")
        return self.head.predict_proba(X)


def save_bundle(directory: str | os.PathLike, head: Head, class_names: list[str],
                store_meta: dict, *, metrics: dict | None = None, split: dict | None = None,
                store: str | os.PathLike | None = None) -> Path:
    """Write a ``kind="features"`` bundle into ``directory`` (replaced whole); returns its path."""
    import keras
    import sklearn

    directory = Path(directory)
    missing = [k for k in ("model", "layer", "pooling", "weights", "weights_id") if k not in store_meta]
    if missing:
        raise FeatxError(f"the store's metadata lacks the extractor settings {missing}")
    with staged(directory) as tmp:
        model_file = head.save(tmp)
        dim = int(store_meta.get("dim") or head.n_features)
        info = {
            "featx_bundle": BUNDLE_VERSION, "kind": "features", "clf": head.name,
            "params": head.get_params(), "class_names": list(class_names),
            "input": {"type": "vectors", "dim": dim},
            "extractor": {k: store_meta[k] for k in EXTRACTOR_KEYS if k in store_meta} | {"dim": dim},
            "model_file": model_file,
            "store": {"path": str(store) if store else None, "n": store_meta.get("n"),
                      "data_dir": store_meta.get("data_dir")},
            "split": split, "metrics": metrics, "history": head.history,
            "versions": {"featx": __version__, "keras": keras.__version__,
                         "keras_backend": keras.backend.backend(), "sklearn": sklearn.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2, default=_plain) + "\n")
    return directory


@contextmanager
def staged(directory: Path) -> Iterator[Path]:
    """Fill a temporary sibling folder, then swap it in for ``directory`` whole (never half a bundle)."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if directory.exists():
            if not (directory / "bundle.json").is_file() and any(directory.iterdir()):
                raise FeatxError(f"{directory} exists and is not a featx bundle; choose another -o")
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_bundle_info(path: str | os.PathLike) -> dict[str, Any]:
    """``bundle.json`` of a bundle directory (or the file itself), checked."""
    path = Path(path)
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


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load a bundle directory; needs neither the store nor the training images."""
    info = read_bundle_info(path)
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    if info["kind"] == "cnn":  # decoded pixels in, see featx.baseline
        from featx.baseline import load_cnn_head

        return Bundle(path=directory, kind="cnn", clf="cnn", class_names=info["class_names"],
                      extractor=info.get("extractor", {}), params=info.get("params", {}),
                      head=load_cnn_head(directory, info), info=info)
    clf = check_clf(info["clf"])
    model_path = directory / info.get("model_file", "")
    if not model_path.is_file():
        raise FeatxError(f"bundle {directory} lacks its model file {info.get('model_file')}")
    head = load_head(clf, directory, info.get("params", {}))
    if head.history is None:
        head.history = info.get("history")
    return Bundle(path=directory, kind=info["kind"], clf=clf, class_names=info["class_names"],
                  extractor=info["extractor"], params=info.get("params", {}), head=head, info=info)


def _plain(v):
    """json.dumps default: numpy values as Python ones (store.plain), anything else as text."""
    out = plain(v)
    return str(out) if out is v else out
