"""transformer: image paths -> embeddings, scikit-learn style, with a feature store as the cache.

:class:`EmbeddingTransformer` fits in a ``sklearn.pipeline.Pipeline`` in front of any estimator.
``transform(paths)`` hashes each file (sha256 of its bytes, as ``featx extract`` does), takes the
vectors of known content from an optional read-only ``store`` (e.g. the one ``featx extract`` built)
and from its ``cache`` store, embeds only new content, and adds those vectors to the cache through
:class:`featx.writer.StoreWriter` (a part file, then one atomic rewrite per call, under the store's
lock). The cache is an ordinary featx store whose rows are keyed by content, with
absolute paths, all labelled ``unlabelled``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from featx.discover import hash_file
from featx.errors import FeatxError
from featx import store as st
from featx.writer import StoreWriter, VectorCache

CACHE_CLASS = "unlabelled"
EMBED_BLOCK = 256  # files decoded and embedded at a time: bounds the memory of pixels


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Turn a list of image paths into an (n, D) float32 array of backbone embeddings.

    Parameters are the ``featx extract`` settings plus ``cache``, the store new vectors are added
    to (created on first use), and ``store``, a store read but never written (see
    :meth:`like_store`). Both must have been made with the same settings.
    """

    def __init__(self, cache: str | os.PathLike = "featx-cache.h5", store: str | None = None,
                 model: str = "vgg16",
                 layer: str = "fc2", pooling: str = "avg", weights: str = "imagenet",
                 precision: str = "float32", resize: str = "squash", batch_size: int = 32,
                 input_size: int | None = None):
        self.cache = cache
        self.store = store
        self.model = model
        self.layer = layer
        self.pooling = pooling
        self.weights = weights
        self.precision = precision
        self.resize = resize
        self.batch_size = batch_size
        self.input_size = input_size

    @classmethod
    def like_store(cls, store: str | os.PathLike, cache: str | os.PathLike,
                   weights: str | None = None, **kw) -> "EmbeddingTransformer":
        """Vectors comparable to ``store``'s (its settings), reusing its vectors for known content."""
        meta = st.read_meta(store)
        return cls(cache=cache, store=str(store), model=meta["model"], layer=meta["layer"],
                   pooling=meta["pooling"], weights=weights or meta["weights"], precision=meta["precision"],
                   resize=meta["resize"], input_size=meta.get("input_size"), **kw)

    def fit(self, X, y=None) -> "EmbeddingTransformer":
        """Nothing to learn; checks the settings (and the cache's, if it exists)."""
        self._known(self._extractor().meta)
        return self

    def transform(self, X) -> np.ndarray:
        """Embeddings of the image files ``X`` (a sequence of paths), in order."""
        paths = [Path(p) for p in _as_list(X)]
        if not paths:
            raise FeatxError("transform needs at least one image path")
        hashes = [_content_hash(p) for p in paths]
        extractor = self._extractor()
        cache = Path(self.cache)
        have = self._known(extractor.meta)
        todo: dict[str, Path] = {}
        for h, p in zip(hashes, paths):
            if h not in have and h not in todo:
                todo[h] = p
        new = self._embed(extractor, todo)
        if new:
            self._append(cache, extractor, new, todo)
        vectors = VectorCache()
        try:
            sources = [Path(p) for p in (self.store, cache) if p and Path(p).exists()]
            for path in sources:
                vectors.add(path)
            return vectors.gather(hashes)
        finally:
            vectors.close()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        meta = st.read_meta(self.store or self.cache)
        return np.array([f"{self.model}_{self.layer}_{j}" for j in range(int(meta["dim"]))],
                        dtype=object)

    # -- internals -------------------------------------------------------------------------

    def _extractor(self):
        from featx.embed import Extractor, ExtractorSettings

        settings = ExtractorSettings(model=self.model, layer=self.layer, pooling=self.pooling,
                                     weights=str(self.weights), precision=self.precision,
                                     resize=self.resize, input_size=self.input_size)
        key = (settings, self.batch_size)
        if getattr(self, "_extractor_key", None) != key:
            self._extractor_obj = Extractor(settings)
            self._extractor_key = key
        return self._extractor_obj

    def _known(self, meta: dict) -> set[str]:
        """Hashes in the store and the cache (if they exist); refuses ones made otherwise."""
        known: set[str] = set()
        for path in (self.store, self.cache):
            if path is None or (path == self.cache and not Path(path).exists()):
                continue
            with st.open_store(path) as f:
                st.check_fingerprint(Path(path), st.fingerprint(st.read_attrs(f)),
                                     st.fingerprint(meta), what="cache")
                known.update(st.strings(f["hashes"]))
        return known

    def _embed(self, extractor, todo: dict[str, Path]) -> dict[str, np.ndarray]:
        items = list(todo.items())
        new: dict[str, np.ndarray] = {}
        for start in range(0, len(items), EMBED_BLOCK):
            block = items[start:start + EMBED_BLOCK]
            vectors, ok, failures = extractor.embed_files([p for _, p in block], self.batch_size)
            if failures:
                path, reason = failures[0]
                raise FeatxError(f"cannot embed {path}: {reason}")
            for vec, i in zip(vectors, ok):
                new[block[i][0]] = vec
        return new

    def _append(self, cache: Path, extractor, new: dict[str, np.ndarray],
                todo: dict[str, Path]) -> None:
        """Add the new vectors to the cache store (a part file, then one atomic rewrite)."""
        cache.parent.mkdir(parents=True, exist_ok=True)
        rows = st.Rows([], [], [])
        if cache.exists():
            with st.open_store(cache) as f:
                rows = st.read_rows(f)
        hashes = list(new)
        listing = _CacheListing(st.Rows(rows.paths + [str(todo[h].resolve()) for h in hashes],
                                        rows.labels + [0] * len(hashes), rows.hashes + hashes))
        with StoreWriter(cache, extractor.meta, commit_every=len(hashes) + 1) as writer:
            writer.add(hashes, np.stack([new[h] for h in hashes]), [], listing)
            writer.finish(listing)

    def __getstate__(self) -> dict:  # the Keras model is rebuilt on demand, never pickled
        state = dict(self.__dict__)
        state.pop("_extractor_obj", None)
        state.pop("_extractor_key", None)
        return state


def _as_list(X) -> list:
    if isinstance(X, (str, os.PathLike)):
        raise FeatxError("transform takes a list of image paths, not a single path")
    items = list(np.asarray(X, dtype=object).ravel()) if isinstance(X, np.ndarray) else list(X)
    return [os.fspath(p) for p in items]


def _content_hash(path: Path) -> str:
    h, reason = hash_file(path)
    if h is None:
        raise FeatxError(f"cannot read {path}: {reason}")
    return h


class _CacheListing:
    """The cache store's rows: every cached content once, with its absolute path, unlabelled."""

    root = None
    class_names = [CACHE_CLASS]

    def __init__(self, rows: st.Rows) -> None:
        self._rows = rows

    def rows(self, has) -> st.Rows:
        return self._rows

    def skipped(self, failed) -> list[tuple[str, str, str]]:
        return []
