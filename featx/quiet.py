"""quiet: third-party start-up noise stays off a featx user's terminal; real errors still show.

TensorFlow writes 6-7 lines to file descriptor 2 when it is imported and when it first looks for a
GPU ("Could not find cuda drivers", "failed call to cuInit", CPU instruction notes), through C++
logging that ``TF_CPP_MIN_LOG_LEVEL`` does not reach before absl is initialised (an upstream
issue). :func:`install` makes the first ``import tensorflow`` of the process, from wherever it comes
(``import keras`` in any featx module, in a joblib worker, in a library), run with descriptor 2
pointed at a temporary file, together with the device look-up; afterwards every captured line that
is not known noise (:data:`NOISE`) is written to stderr, so a real error is never lost. TensorFlow's
Python logger then shows errors only (no tf.function retracing notes).

``import featx`` installs it unless asked for everything (``FEATX_VERBOSE=1``; the CLI's
``--verbose`` sets it and uninstalls), in the CLI and in a library user's process alike, and sets
``FEATX_QUIET_IMPORTS=1`` for worker processes (loky), which import featx too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Iterator

VERBOSE_ENV = "FEATX_VERBOSE"
QUIET_ENV = "FEATX_QUIET_IMPORTS"

# Lines TensorFlow, XLA and absl print while starting, and nothing else: info (I) and warning (W)
# records of absl's C++ log, its "before InitializeLog" banner, the CPU-instructions notes, and
# the CUDA look-ups that fail on a machine without a GPU driver; Ray's C++ info records when it
# starts (``--engine ray``).
NOISE = re.compile(
    r"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions|"
    r"E\d{4} .*(?:cuInit|cuda_dnn|cuda_fft|cuda_blas|Unable to register cu\w+ factory)|"
    r"\[[\d\- :,]+ I \d+ \d+\] )"
)

# Warnings from third-party code that tell a featx user nothing they can act on.
WARNINGS = (
    # loky restarts a worker whose memory grew by the size of TensorFlow: expected, not a leak
    (r"A worker stopped while some jobs were given to the executor", UserWarning),
)


def verbose() -> bool:
    """True when the user asked to see third-party output (``FEATX_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def install() -> None:
    """Quiet TensorFlow's start-up and the known third-party warnings in this process and in the
    worker processes it starts (idempotent)."""
    os.environ[QUIET_ENV] = "1"
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())


def uninstall() -> None:
    """Show everything again (``--verbose``): undo :func:`install` for later imports."""
    os.environ.pop(QUIET_ENV, None)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]


def filter_noise(text: str) -> str:
    """``text`` without the lines :data:`NOISE` matches."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextmanager
def stderr_captured() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file; afterwards write what is not noise to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = filter_noise(tmp.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` inside :func:`stderr_captured`, then finds devices."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stderr_captured():
            self._loader.exec_module(module)
            module.config.list_physical_devices()  # the CUDA look-up happens here, not later
        # tf.function retracing notes and the like: TensorFlow's Python warnings, not featx's
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def __getattr__(self, name: str):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual and wraps its loader in :class:`_QuietLoader`."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec
