"""web.review: the routes of ``featx review`` on the shared web package (the logic is
:mod:`featx.review`; the page is ``featx/web/review.html``: HTML, CSS and plain JavaScript).

The page's views: Overview, Suspects, Map, Refit (``#overview``, ``#suspects/KIND/OFFSET``,
``#map``, ``#refit``). Keys on Suspects: arrows move, 1-9 relabel as the n-th class, Enter takes
the suggestion, x excludes, space keeps, u (or Ctrl+Z) undoes this tab's last action, n / p turn
pages. A decision shows as done only once the server has answered: the corrections file holds it.

==========================================  =====================================================
``GET /``                                   the page (``?token=T`` sets the token cookie)
``GET /v1/review/overview``                 counts, accuracy, pending corrections, status
``GET /v1/review/suspects?kind&offset&limit``  a page of a ranking, with neighbours
``GET /v1/review/neighbors/{row}?k``        one photo and its neighbours
``POST /v1/review/decide`` ``{row, action}``  a class name, ``exclude`` or ``keep``; answered once
                                            the corrections file holds it
``POST /v1/review/refit``                   refit (answered then), re-audit (in the background);
                                            old and new accuracy, the changed predictions
``GET /v1/review/refit``                    the last refit's answer with its fresh ranking once
                                            ``ranking`` is "ready" (null before a refit)
``GET /v1/review/map``                      the 2-D map's points, or its status while computed
``GET /v1/thumbs/{row}``                    a stored photo's thumbnail, by row
==========================================  =====================================================
"""

from __future__ import annotations

import hmac
import html
import threading
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from featx.review import PAGE, Review
from featx.web.app import TOKEN_COOKIE, WebError, create_app
from featx.web.thumbs import StoreImages, ThumbnailCache, add_thumbnail_route


class Decision(BaseModel):
    row: int
    action: str


def create_review_app(review: Review, token: str | None = None) -> FastAPI:
    """The review app: ``review.prepare()`` (fit and audit) runs at start-up, then the map starts
    in its own thread; ``/readyz`` answers 200 when the fit and audit are done, and the page says
    what it is waiting for meanwhile."""
    map_started = threading.Lock()

    def start_map() -> None:
        """The map in its own thread, once (t-SNE can take minutes; the page polls it)."""
        if review.map is None and map_started.acquire(False):
            review.status["map"] = "queued"
            threading.Thread(target=_quietly, args=(review.compute_map,), name="featx-map",
                             daemon=True).start()

    def startup() -> None:
        review.prepare()
        start_map()  # ready for the Map view by the time someone opens it

    app = create_app("featx review", token=token, startup=startup, public=["/"])
    add_thumbnail_route(app, ThumbnailCache(StoreImages(review.store), size=160))
    page_html = resources.files("featx.web").joinpath("review.html").read_text()

    @app.get("/")
    def page(request: Request) -> Any:
        given = request.query_params.get("token")
        if token and given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise WebError(401, "wrong token")
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        return HTMLResponse(page_html.replace("__TITLE__", html.escape(review.store.name)),
                            headers={"cache-control": "no-store"})

    @app.get("/v1/review/overview")
    def overview() -> dict:
        return review.overview()

    @app.get("/v1/review/suspects")
    def suspects(kind: str = "label", offset: int = 0, limit: int = PAGE) -> dict:
        return review.suspects(kind, offset, limit)

    @app.get("/v1/review/neighbors/{row}")
    def neighbors(row: int, k: int = 12) -> dict:
        return review.neighbors(row, k)

    @app.post("/v1/review/decide")
    def decide(decision: Decision) -> dict:
        return review.decide(decision.row, decision.action)

    @app.post("/v1/review/refit")
    def refit() -> dict:
        if not app.state.ready:
            raise WebError(503, "the first fit and audit are still running")
        return review.refit(wait=False)  # the fresh ranking follows: GET /v1/review/refit

    @app.get("/v1/review/refit")
    def last_refit() -> Any:
        return review.last_refit

    @app.get("/v1/review/map")
    def map_points() -> dict:
        start_map()
        return review.map_points()

    return app


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # recorded in review.status, which the page shows
        pass
