"""serve: a bundle as a web service: ``POST /v1/predict``, ``GET /v1/info``, the try-it page.

The model is built once and warmed for every batch size it will see; concurrent requests' photos
are gathered into one model call (:class:`Batcher`: up to ``max_batch`` images, waiting at most
``max_wait_ms`` after the first); uploads are decoded in worker threads by :mod:`featx.web.uploads`
(the one guarded decode). The answer is ``featx predict --json``'s document, built by
:func:`featx.predict.predictions_of`; with a store each prediction also lists its nearest stored
photos (cosine, :func:`featx.neighbors.topk_cosine`) with thumbnail URLs by row.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import anyio
import numpy as np
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse

from featx import __version__
from featx.bundle import Bundle, load_bundle
from featx.errors import FeatxError
from featx.predict import Prediction, new_report, predictions_of, unfamiliar_threshold

MATCH_KEYS = ("model", "layer", "pooling", "weights_id", "input_size", "resize")


@dataclass(frozen=True)
class ServeSettings:
    """How ``featx serve`` batches and what a request may send."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0
    max_files: int = 64
    top_k: int = 3
    neighbors: int = 6  # stored photos shown per prediction (with a store)
    decode_threads: int = 4
    reject: bool = False  # answer "none" for photos unlike the training photos
    unfamiliar_at: float | None = None  # the unfamiliarity threshold (None: the bundle's)

    def check(self) -> "ServeSettings":
        for name in ("max_batch", "max_files", "top_k", "decode_threads"):
            if getattr(self, name) < 1:
                raise FeatxError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise FeatxError(f"`max_wait_ms` must be 0 or more, got {self.max_wait_ms}")
        if self.max_upload_mb <= 0:
            raise FeatxError(f"`max_upload_mb` must be more than 0, got {self.max_upload_mb}")
        if self.neighbors < 0:
            raise FeatxError(f"`neighbors` must be 0 or more, got {self.neighbors}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StoreVectors:
    """A store's vectors, L2-normalised in memory, to find a new photo's nearest stored ones."""

    def __init__(self, store: str | os.PathLike, bundle: Bundle) -> None:
        from featx.neighbors import normalize
        from featx.store import load_features

        feats = load_features(store)
        if bundle.kind != "features":
            raise FeatxError(f"`store` neighbours need a bundle on vectors; {bundle.path} is a "
                             f"{bundle.kind} bundle")
        differ = [k for k in MATCH_KEYS
                  if str(feats.meta.get(k)) != str(bundle.extractor.get(k))]
        if differ or feats.dim != bundle.extractor.get("dim", feats.dim):
            raise FeatxError(f"`store` {store} was made with another extractor than the bundle "
                             f"(differs in {', '.join(differ) or 'dim'})")
        self.path = Path(store)
        self.vectors = normalize(feats.features)
        self.paths, self.labels, self.class_names = feats.paths, feats.labels, feats.class_names

    def nearest(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        from featx.neighbors import topk_cosine

        k = min(k, len(self.paths))
        rows, sims = topk_cosine(queries, [(0, self.vectors)], k)
        return [[{"row": int(r), "path": self.paths[r],
                  "label": self.class_names[int(self.labels[r])],
                  "similarity": round(float(s), 6), "thumbnail": f"/v1/thumbs/{int(r)}"}
                 for r, s in zip(rr, ss)] for rr, ss in zip(rows, sims)]


def bucket(n: int, max_batch: int) -> int:
    """The padded batch size of ``n`` images: the next power of two, at most ``max_batch``
    (few distinct shapes, each traced once at warm-up; little padding)."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max(max_batch, n))


class Model:
    """A bundle's model, built once: decoded pixels -> predictions (and stored neighbours)."""

    def __init__(self, bundle: Bundle, settings: ServeSettings, weights: str | None = None,
                 store: str | os.PathLike | None = None) -> None:
        self.bundle, self.settings = bundle, settings
        self.reader = bundle.reader(weights)  # checks the weights; builds nothing yet
        self.decode = self.reader.decode_settings
        self.store = StoreVectors(store, bundle) if store is not None else None
        self.threshold, self.familiar, self.notes = unfamiliar_threshold(bundle,
                                                                         settings.unfamiliar_at)

    def warm_up(self) -> None:
        """Build the model and trace every batch shape it will run."""
        size, n = self.decode.size, 1
        while True:
            self.run(np.zeros((n, size, size, 3), np.uint8), [""] * n)
            if n >= self.settings.max_batch:
                break
            n = min(n * 2, self.settings.max_batch)

    def run(self, pixels: np.ndarray, names: list[str]) -> list[tuple[Prediction, list | None]]:
        """One model call (two with flips): each image's prediction and neighbours."""
        size = bucket(len(pixels), self.settings.max_batch)
        x = self.reader.embed_pixels(pixels, batch_size=size)
        flipped = self.reader.embed_pixels(pixels[:, :, ::-1], batch_size=size) \
            if self.bundle.tta else None
        preds = predictions_of(self.bundle, x, names, self.settings.top_k, flipped,
                               self.threshold, self.settings.reject)
        near = self.store.nearest(x, self.settings.neighbors) \
            if self.store is not None and self.settings.neighbors else [None] * len(preds)
        return list(zip(preds, near))


class Batcher:
    """Gathers images from concurrent requests into one model call: up to ``max_batch``,
    waiting at most ``max_wait_s`` after the first for more. The model runs in one worker
    thread, so the event loop keeps reading and decoding requests meanwhile."""

    def __init__(self, run: Callable[[np.ndarray, list[str]], list], max_batch: int,
                 max_wait_s: float) -> None:
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="featx-model")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.stats = {"images": 0, "batches": 0, "largest_batch": 0}

    async def submit(self, pixels: np.ndarray, name: str):
        """The model's answer for one decoded image."""
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, name, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(loop)
            live = [item for item in batch if not item[2].done()]  # a cancelled client's: gone
            if not live:
                continue
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run, np.stack([p for p, _, _ in live]),
                    [n for _, n, _ in live])
            except Exception as e:  # a failed batch fails its requests, not the server
                for _, _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.stats["images"] += len(live)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
            for (_, _, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

    async def _gather(self, loop) -> list:
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - loop.time()
            try:
                batch.append(self.queue.get_nowait() if left <= 0 else
                             await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return batch


def page_html() -> str:
    """The try-it page (drop or choose photos; classes with bars; stored neighbours)."""
    return resources.files("featx.web").joinpath("predict.html").read_text()


def create_serve_app(bundle: str | os.PathLike, store: str | os.PathLike | None = None,
                     settings: ServeSettings = ServeSettings(), weights: str | None = None,
                     token: str | None = None, load_now: bool = False):
    """The ``featx serve`` app. Inputs are checked now (FeatxError); the model is built and
    warmed in the background after the server starts (``/readyz``), or now with ``load_now``."""
    from featx.decode import DecodeError
    from featx.web import create_app, require_ready
    from featx.web.app import error_response
    from featx.web.thumbs import StoreImages, add_thumbnail_route
    from featx.web.uploads import UploadLimits, decode_uploads, read_uploads

    settings = settings.check()
    b = load_bundle(bundle)
    model = Model(b, settings, weights, store)
    batcher = Batcher(model.run, settings.max_batch, settings.max_wait_ms / 1000)
    limits = UploadLimits(max_bytes=int(settings.max_upload_mb * 2**20),
                          max_files=settings.max_files)
    if load_now:
        model.warm_up()
    app = create_app("featx serve", token=token, startup=None if load_now else model.warm_up,
                     public=["/"])
    app.state.model, app.state.batcher, app.state.limiter = model, batcher, None
    if store is not None:
        add_thumbnail_route(app, StoreImages(store))

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html()

    @app.get("/v1/info")
    def info(request: Request) -> dict:
        return {"featx_version": __version__, "bundle": str(b.path), "kind": b.kind,
                "clf": b.clf, "class_names": b.class_names, "extractor": b.extractor,
                "metrics": b.info.get("metrics"), "tta": b.tta, "ready": request.app.state.ready,
                "store": None if model.store is None else
                {"path": str(model.store.path), "n": len(model.store.paths)},
                "settings": settings.as_dict(), "stats": dict(batcher.stats)}

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        require_ready(request)
        uploads = await read_uploads(request, limits)
        if request.app.state.limiter is None:
            request.app.state.limiter = anyio.CapacityLimiter(settings.decode_threads)
        decoded = await decode_uploads(uploads, model.decode, request.app.state.limiter)
        good = [(u.name, d) for u, d in zip(uploads, decoded) if not isinstance(d, DecodeError)]
        errors = [(u.name, str(d)) for u, d in zip(uploads, decoded) if isinstance(d, DecodeError)]
        results = await asyncio.gather(*(batcher.submit(d, name) for name, d in good))
        report = new_report(b, errors, model.familiar, model.notes)
        report.predictions.extend(p for p, _ in results)
        report = report.as_dict()
        for entry, (_, near) in zip(report["predictions"], results):
            if near is not None:
                entry["neighbors"] = near
        if not good:
            name, reason = errors[0]
            return error_response(422, f"{name}: {reason}", **report)
        return JSONResponse(report)

    return app
