"""reader: everything about image files on the way in. Discover, hash, what is new, decode.

The one place that touches a data folder's files: ``featx extract`` (both engines), the
from-scratch baseline and the feature store's row list all go through it, so they agree on which
files are images, which content is new, and why a file was skipped.

* :func:`scan` lists the images (:func:`featx.discover.discover`) and keys each by the sha256 of
  its bytes, in worker threads. A :class:`Scan` answers what content is new for a store, which rows
  a store holds (every file whose content has a vector, in discovery order) and what was skipped.
* :func:`decode_batch` reads and decodes one batch (failures are returned, never raised): the unit
  of work of the local engine's threads and of the Ray engine's tasks alike.
* :func:`decoded_batches` runs it in threads, at most ``workers + 1`` batches ahead of the consumer,
  so memory holds a few batches whatever the number of images.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Iterable, Iterator, Mapping

import numpy as np

from featx.decode import DecodeError, DecodeSettings, decode_file, decode_files, image_size
from featx.discover import Dataset, discover, hash_file
from featx.store import Rows

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Item = tuple[str, Path]  # (content hash, a file with that content)


@dataclass
class Scan:
    """A data folder's images keyed by content: discovery plus one sha256 per file."""

    dataset: Dataset
    hashes: list[str | None]  # None: the file could not be read (see read_failures)
    read_failures: dict[int, str]  # file index -> reason

    @property
    def root(self) -> Path:
        return self.dataset.root

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def file(self, i: int) -> Path:
        return self.dataset.root / self.dataset.paths[i]

    def content(self) -> list[Item]:
        """One (hash, file) per distinct readable content, in discovery order."""
        first: dict[str, int] = {}
        for i, h in enumerate(self.hashes):
            if h is not None:
                first.setdefault(h, i)
        return [(h, self.file(i)) for h, i in first.items()]

    def new_content(self, known: Container[str], failed: Container[str] = ()) -> list[Item]:
        """One (hash, file) per distinct content neither ``known`` nor known to ``failed``."""
        return [(h, f) for h, f in self.content() if h not in known and h not in failed]

    def rows(self, has: Container[str]) -> Rows:
        """Every file whose content ``has`` a vector, in discovery order: a store's rows."""
        ds = self.dataset
        keep = [i for i, h in enumerate(self.hashes) if h is not None and h in has]
        return Rows([ds.paths[i] for i in keep], [ds.labels[i] for i in keep],
                    [self.hashes[i] for i in keep])

    def skipped(self, failed: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """(path, reason, hash) of every file that is not a row: by name, unreadable, undecodable."""
        out = [(p, r, "") for p, r in self.dataset.skipped]
        for i, h in enumerate(self.hashes):
            if i in self.read_failures:
                out.append((self.dataset.paths[i], self.read_failures[i], ""))
            elif h in failed:
                out.append((self.dataset.paths[i], failed[h], h))
        return out


def scan(data: str | os.PathLike | Dataset, workers: int = 2,
         progress: Progress | None = None) -> Scan:
    """Hash every image file of a data folder (discovered now, or already) in ``workers`` threads."""
    dataset = data if isinstance(data, Dataset) else discover(data)
    files = [dataset.root / p for p in dataset.paths]
    hashes: list[str | None] = []
    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, (h, reason) in enumerate(pool.map(hash_file, files, chunksize=64)):
            hashes.append(h)
            if reason:
                failures[i] = reason
            if progress and (i % 256 == 0 or i == len(files) - 1):
                progress("hash", i + 1, len(files))
    return Scan(dataset, hashes, failures)


@dataclass
class Batch:
    """One decoded batch: the hashes that decoded, their pixels, and the failures."""

    hashes: list[str]
    pixels: np.ndarray | None  # (n, size, size, 3): uint8, or what ``prepare`` made of it
    failures: list[tuple[str, str]]  # (hash, reason)
    seconds: float  # time spent reading and decoding

    def __len__(self) -> int:
        return len(self.hashes) + len(self.failures)


def decode_batch(items: Iterable[Item], settings: DecodeSettings,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> Batch:
    """Read and decode files; failures become (hash, reason), never exceptions."""
    t0 = time.perf_counter()
    hashes, pixels, failures = [], [], []
    for h, path in items:
        try:
            pixels.append(decode_file(path, settings))
            hashes.append(h)
        except DecodeError as e:
            failures.append((h, str(e)))
    x = np.stack(pixels) if pixels else None
    if x is not None and prepare is not None:
        x = prepare(x)
    return Batch(hashes, x, failures, time.perf_counter() - t0)


def decoded_batches(items: list[Item], settings: DecodeSettings, batch_size: int, workers: int,
                    prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[Batch]:
    """Decode ``items`` in batches in worker threads, at most ``workers + 1`` batches ahead."""
    batches = (items[i:i + batch_size] for i in range(0, len(items), batch_size))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        window: deque = deque()
        for batch in batches:
            window.append(pool.submit(decode_batch, batch, settings, prepare))
            if len(window) > workers:
                break
        while window:
            done = window.popleft().result()
            nxt = next(batches, None)
            if nxt is not None:
                window.append(pool.submit(decode_batch, nxt, settings, prepare))
            yield done


def decode_failures(scan: Scan, workers: int = 2, progress: Progress | None = None) -> dict[str, str]:
    """hash -> reason for every distinct content that does not decode (decoded once, small)."""
    check = DecodeSettings(size=32)  # whether a file decodes does not depend on the size
    todo = scan.new_content(known=())
    failed: dict[str, str] = {}
    done = 0
    for batch in decoded_batches(todo, check, 64, workers):
        failed.update(batch.failures)
        done += len(batch)
        if progress:
            progress("check", done, len(todo))
    return failed


def typical_size(files: list[Path], k: int = 32) -> tuple[int, int] | None:
    """The median (width, height) of up to ``k`` files spread over the list (headers only)."""
    sizes = []
    for path in files[::max(1, len(files) // k)][:k]:
        try:
            sizes.append(image_size(path))
        except DecodeError:  # the scan records why; a hint only needs the others
            continue
    if not sizes:
        return None
    w, h = np.median(np.array(sizes), axis=0)
    return int(w), int(h)


class PixelReader:
    """Image files -> decoded RGB pixels, behind the Extractor's ``embed_files`` interface: the
    "extractor" of models that take pixels (the scratch CNN of ``featx baseline``)."""

    def __init__(self, decode_settings: DecodeSettings) -> None:
        self.decode_settings = decode_settings

    @classmethod
    def from_input(cls, model_input: dict) -> "PixelReader":
        """From a bundle's ``input``: ``{"input_size", "resize", ...}``."""
        return cls(DecodeSettings(size=int(model_input["input_size"]),
                                  resize=model_input.get("resize", "squash")))

    def embed_pixels(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Decoded pixels are this model's input as they are (the Extractor's interface)."""
        return pixels

    def embed_files(self, paths, batch_size: int = 32, flip: bool = False):
        """(pixels (N, size, size, 3) uint8 (``flip``: mirrored), indices decoded, failures)."""
        pixels, ok, failures = decode_files(paths, self.decode_settings)
        return (pixels[:, :, ::-1] if flip else pixels), ok, failures
