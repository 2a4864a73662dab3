"""web: the one small ASGI package behind ``featx serve`` and ``featx review``.

Everything a featx web command needs that is not its own pages and routes, so each command is only
its routes on top of this package (FastAPI on uvicorn; the ``featx[serve]`` extra)::

    from featx.web import create_app, run_server
    from featx.web.uploads import UploadLimits, read_uploads, decode_uploads
    from featx.web.thumbs import StoreImages, add_thumbnail_route

    app = create_app("featx review", token=token, startup=load_things)  # -> FastAPI
    add_thumbnail_route(app, StoreImages(store))   # GET /v1/thumbs/{row}: the store's own images
    @app.get("/v1/things")
    def things(): ...
    run_server(app, host, port)                    # uvicorn; SIGINT/SIGTERM drain, then return

Modules:

* :mod:`featx.web.app` -- :func:`create_app`: JSON errors (every 4xx/5xx is ``{"error": reason,
  "status": code}``; raise :class:`WebError` or ``fastapi.HTTPException``; a ``FeatxError`` becomes
  400), bearer-token auth on every route but ``public`` ones (``Authorization: Bearer T``, or the
  ``featx_token`` cookie so that ``<img>`` tags work; ``token=None``: no auth), ``GET /healthz``
  (alive) and ``GET /readyz`` (200 once ``startup()`` has finished in its worker thread; 503 with
  the reason before or when it failed), and security headers (nosniff, no framing, no referrer).
  ``app.state.ready`` says whether startup has finished; routes that need it call
  :func:`require_ready`.
* :mod:`featx.web.uploads` -- :func:`read_uploads`: a request's photos (multipart files, or the
  raw body with an ``image/*`` or ``application/octet-stream`` type) read into memory and never to
  disk, with limits (:class:`UploadLimits`: bytes -> 413 as soon as it is exceeded, part count ->
  413, wrong content type -> 415, malformed multipart or client gone mid-upload -> 400);
  :func:`decode_uploads`: decoded in worker threads through :func:`featx.decode.decode_bytes` (the
  one guarded decode: bomb guard, modes, EXIF), each an array or the :class:`DecodeError`.
* :mod:`featx.web.thumbs` -- :class:`StoreImages`: a store's image files by row (never a path from
  the request; stored paths that leave the data folder are refused); :class:`ThumbnailCache`:
  JPEG thumbnails made lazily in worker threads, LRU-bounded in bytes; :func:`add_thumbnail_route`.
* :mod:`featx.web.runner` -- :func:`run_server` (uvicorn with graceful drain on SIGINT/SIGTERM,
  returning normally so the command exits 0), :func:`host_warning` (binding beyond loopback
  without a token), :func:`resolve_token` (``--token`` or the ``FEATX_TOKEN`` variable).

Tests: ``tests/conftest.py`` has :func:`start_server` (a real server subprocess on a free loopback
port, waited for on ``/readyz`` with a deadline), ``free_port`` and the ``browser`` fixture (headless
Debian Chromium through Playwright) with ``screenshot(page, name)`` saving under
``reports/test-artefacts/``.
"""

from featx.web.app import WebError, create_app, require_ready
from featx.web.runner import host_warning, resolve_token, run_server

__all__ = ["WebError", "create_app", "host_warning", "require_ready", "resolve_token", "run_server"]
