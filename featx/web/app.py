"""app: the FastAPI app every featx web command starts from (errors, auth, health, start-up)."""

from __future__ import annotations

import hmac
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from featx import __version__
from featx.errors import FeatxError

log = logging.getLogger("featx.web")

TOKEN_COOKIE = "featx_token"
PUBLIC = ("/healthz", "/readyz")
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "no-referrer"}


class WebError(StarletteHTTPException):
    """An answer with a 4xx/5xx status and a reason, sent as ``{"error": reason, "status": code}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status_code=status, detail=reason)


def error_response(status: int, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": reason, "status": status, **extra}, status_code=status)


def create_app(title: str, token: str | None = None,
               startup: Callable[[], None] | None = None,
               public: Iterable[str] = ()) -> FastAPI:
    """A FastAPI app with featx's JSON errors, bearer-token auth (``token``; None: none), health
    routes and security headers. ``startup()`` runs once in a worker thread after the server
    starts; ``/readyz`` answers 200 when it has returned. ``public``: paths served without the
    token (besides the health routes), e.g. a page that holds no data itself."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if startup is not None:
            threading.Thread(target=_start, args=(app,), name="featx-startup", daemon=True).start()
        yield

    def _start(app: FastAPI) -> None:
        try:
            startup()
            app.state.ready = True
        except Exception as e:  # reported by /readyz; the process stays up to say so
            log.exception("start-up failed")
            app.state.failed = f"start-up failed: {e}"

    app = FastAPI(title=title, version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.ready, app.state.failed = startup is None, None
    _add_errors(app)
    _add_auth(app, token, set(PUBLIC) | set(public))
    _add_health(app)
    return app


def require_ready(request: Request) -> None:
    """Raise 503 until the app's start-up has finished."""
    app = request.app
    if not app.state.ready:
        raise WebError(503, app.state.failed or "starting up: the model is loading")


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = (e.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"invalid request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(FeatxError)
    async def user_error(request: Request, e: FeatxError) -> JSONResponse:
        return error_response(400, str(e))


def _add_auth(app: FastAPI, token: str | None, public: set[str]) -> None:
    expected = token.encode() if token else None

    @app.middleware("http")
    async def auth_and_headers(request: Request, call_next):
        if expected is not None and request.url.path not in public:
            given = _given_token(request)
            if given is None or not hmac.compare_digest(given.encode(), expected):
                response = error_response(401, "missing or wrong token: send the header "
                                          "'Authorization: Bearer TOKEN'")
                response.headers["www-authenticate"] = "Bearer"
                return _secure(response)
        return _secure(await call_next(request))


def _given_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.cookies.get(TOKEN_COOKIE)


def _secure(response):
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        if request.app.state.ready:
            return JSONResponse({"status": "ready"})
        return error_response(503, request.app.state.failed or "starting up: the model is loading")
