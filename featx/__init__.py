"""featx: transfer learning on images by cached features.

Embed a folder of labelled images once with a pretrained backbone (VGG16 by default), keep the
vectors in an HDF5 store, then train light classifiers on them in seconds.
"""

import os as _os

# TensorFlow's C++ start-up chatter is not for featx's users; set before any TensorFlow import.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from featx import quiet as _quiet  # noqa: E402

if not _quiet.verbose():  # the CLI's quiet start-up for a library user too (FEATX_VERBOSE=1: all)
    _quiet.install()

__version__ = "0.1.0"

from featx.errors import FeatxError  # noqa: E402
from featx.store import Features, iter_chunks, load_features, read_meta  # noqa: E402

__all__ = ["EmbeddingTransformer", "FeatxError", "Features", "iter_chunks", "load_features",
           "read_meta", "__version__"]


def __getattr__(name: str):
    if name == "EmbeddingTransformer":  # lazy: importing featx does not import scikit-learn
        from featx.transformer import EmbeddingTransformer

        return EmbeddingTransformer
    raise AttributeError(f"module 'featx' has no attribute {name!r}")
