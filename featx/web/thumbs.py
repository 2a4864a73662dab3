"""thumbs: a store's own images by row, as JPEG thumbnails made lazily and cached in memory.

A thumbnail URL names a **row** of the store (``/v1/thumbs/17``), never a path: the file is the
one the store lists for that row, under the store's data folder. A stored path that is absolute or
climbs out of the data folder (``..``) is refused, so no request can reach another file.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image, ImageOps

from featx import store as st
from featx.decode import DecodeError, open_image, to_rgb
from featx.web.app import WebError


class StoreImages:
    """The image files of a store, by row: paths, labels and class names read once."""

    def __init__(self, store: str | os.PathLike) -> None:
        with st.open_store(store) as f:
            self.meta = st.read_attrs(f)
            self.paths = st.strings(f["paths"])
            self.labels = f["labels"][:]
            self.class_names = st.strings(f["class_names"])
        self.store = Path(store)
        data_dir = self.meta.get("data_dir")
        self.root = Path(data_dir) if data_dir else None

    def __len__(self) -> int:
        return len(self.paths)

    def label(self, row: int) -> str:
        return self.class_names[int(self.labels[row])]

    def file(self, row: int) -> Path:
        """The image file of ``row``; WebError 404 for a row out of range or a path that would
        leave the data folder."""
        if not 0 <= row < len(self.paths) or self.root is None:
            raise WebError(404, f"no image for row {row}")
        rel = PurePosixPath(self.paths[row])
        if rel.is_absolute() or ".." in rel.parts:
            raise WebError(404, f"no image for row {row}")
        return self.root.joinpath(*rel.parts)


def make_thumbnail(data: bytes, size: int, quality: int = 85) -> bytes:
    """JPEG bytes of an image fitting in ``size`` x ``size`` (aspect kept), through the guarded
    open of :mod:`featx.decode`; raises DecodeError."""
    with open_image(data) as im:
        im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
        try:
            im.load()
            im = to_rgb(ImageOps.exif_transpose(im))
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise DecodeError(f"undecodable image ({e})") from None
        im.thumbnail((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return buf.getvalue()


class ThumbnailCache:
    """Thumbnails of a store's rows, made on first request, kept LRU within ``max_bytes``."""

    def __init__(self, images: StoreImages, size: int = 160, max_bytes: int = 32 * 2**20) -> None:
        self.images, self.size, self.max_bytes = images, size, max_bytes
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, row: int) -> bytes:
        """JPEG bytes of ``row``'s thumbnail (blocking: call it from a worker thread)."""
        with self._lock:
            if row in self._cache:
                self._cache.move_to_end(row)
                return self._cache[row]
        path = self.images.file(row)
        try:
            jpeg = make_thumbnail(path.read_bytes(), self.size)
        except (OSError, DecodeError) as e:
            raise WebError(404, f"the image of row {row} cannot be read: {e}") from None
        with self._lock:
            if row not in self._cache:
                self._cache[row] = jpeg
                self._bytes += len(jpeg)
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= len(old)
        return jpeg

    @property
    def cached(self) -> tuple[int, int]:
        """(thumbnails, bytes) held now."""
        with self._lock:
            return len(self._cache), self._bytes


def add_thumbnail_route(app: FastAPI, cache: ThumbnailCache | StoreImages,
                        path: str = "/v1/thumbs/{row}") -> ThumbnailCache:
    """``GET /v1/thumbs/{row}``: the JPEG thumbnail of a store row (404 for anything else)."""
    if isinstance(cache, StoreImages):
        cache = ThumbnailCache(cache)

    @app.get(path)
    async def thumbnail(row: str, request: Request) -> Response:
        if not row.isdigit() or len(row) > 12:
            raise WebError(404, f"no image for row {row[:40]!r}")
        jpeg = await anyio.to_thread.run_sync(cache.get, int(row))
        return Response(jpeg, media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600"})

    app.state.thumbnails = cache
    return cache
