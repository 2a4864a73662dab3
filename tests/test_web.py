"""featx.web, the package under serve and review: a small app on it in a real server process.

One server for the module (real HTTP over loopback, httpx): auth, JSON errors, the guarded upload
reader (limits, content types, malformed and abandoned bodies), decoding, thumbnails by row only,
and a graceful drain on SIGTERM with exit code 0.
"""

from __future__ import annotations

import io
import signal
import socket

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import META, make_images, screenshot, start_server

pytest.importorskip("fastapi")

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}

APP = r'''
import sys
import anyio
from fastapi import Request
from fastapi.responses import HTMLResponse, StreamingResponse
from featx.decode import DecodeError, DecodeSettings
from featx.web import create_app, require_ready, run_server
from featx.web.thumbs import StoreImages, add_thumbnail_route
from featx.web.uploads import UploadLimits, decode_uploads, read_uploads

port, store = int(sys.argv[1]), sys.argv[2]
app = create_app("test", token="s3cret-token", startup=lambda: None, public=["/page"])
limits = UploadLimits(max_bytes=300_000, max_files=4)

@app.get("/page")
def page():
    return HTMLResponse("<h1>thumbs</h1><img id=t src='/v1/thumbs/0'><img id=u src='/v1/thumbs/4'>")

@app.post("/echo")
async def echo(request: Request):
    require_ready(request)
    uploads = await read_uploads(request, limits)
    decoded = await decode_uploads(uploads, DecodeSettings(size=8))
    return {"files": [{"name": u.name, "type": u.content_type, "bytes": len(u.data),
                       "reason": str(d) if isinstance(d, DecodeError) else None,
                       "shape": None if isinstance(d, DecodeError) else list(d.shape)}
                      for u, d in zip(uploads, decoded)]}

@app.get("/hold")
async def hold():
    async def body():
        yield b"first;"
        await anyio.sleep(1.0)  # in-flight work that a SIGTERM must let finish
        yield b"last"
    return StreamingResponse(body(), media_type="text/plain")

add_thumbnail_route(app, StoreImages(store))
run_server(app, "127.0.0.1", port)
'''


def jpeg(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store (no model: made-up vectors) listing generated photos, plus one row whose stored
    path climbs out of the data folder."""
    from featx.store import Features, save_features

    base = tmp_path_factory.mktemp("webstore")
    data = make_images(base / "data", {"a": 2, "b": 2})
    (base / "secret.jpg").write_bytes(jpeg())
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg")) + ["../secret.jpg"]
    labels = np.array([0, 0, 1, 1, 1])
    feats = Features(np.ones((5, 4), np.float32), labels, paths,
                     np.array([f"{i:064x}" for i in range(5)]), ["a", "b"],
                     dict(META, data_dir=str(data)))
    save_features(base / "s.h5", feats)
    return base / "s.h5"


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = start_server([str(store)], tmp_path_factory.mktemp("log") / "server.log", code=APP,
                       timeout=60, headers=AUTH)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


def files(*items):
    return [("photos", item) for item in items]


def test_auth_on_every_route_but_health_and_public(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        assert anon.get("/readyz").status_code == 200
        assert anon.get("/page").status_code == 200
        r = anon.post("/echo", files=files(("x.jpg", jpeg(), "image/jpeg")))
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = anon.get("/v1/thumbs/0", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        cookie = anon.get("/v1/thumbs/0", headers={"cookie": f"featx_token={TOKEN}"})
        assert cookie.status_code == 200 and cookie.headers["content-type"] == "image/jpeg"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_uploads_decoded_and_bad_ones_named(client):
    r = client.post("/echo", files=files(("a.jpg", jpeg(), "image/jpeg"),
                                         ("b.png", b"not an image at all", "image/png"),
                                         ("c.jpg", jpeg()[:60], "application/octet-stream")))
    assert r.status_code == 200, r.text
    got = r.json()["files"]
    assert [f["name"] for f in got] == ["a.jpg", "b.png", "c.jpg"]
    assert got[0]["shape"] == [8, 8, 3] and got[0]["reason"] is None
    assert "not an image" in got[1]["reason"]
    assert got[2]["reason"] and got[2]["shape"] is None
    raw = client.post("/echo", content=jpeg(), headers={"content-type": "image/jpeg",
                                                        "x-filename": "raw.jpg"})
    assert raw.json()["files"][0] == {"name": "raw.jpg", "type": "image/jpeg",
                                      "bytes": len(jpeg()), "reason": None, "shape": [8, 8, 3]}


def test_decompression_bomb_is_refused_before_decoding(client):
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 Mpx in a few kB; the guard allows 64
    r = client.post("/echo", files=files(("bomb.png", buf.getvalue(), "image/png")))
    assert "decompression bomb" in r.json()["files"][0]["reason"]


@pytest.mark.parametrize("case", ["declared", "streamed", "parts", "type", "part-type",
                                  "malformed", "empty", "no-boundary"])
def test_bad_requests_get_json_4xx_and_the_server_goes_on(client, case):
    big = b"\0" * 400_000
    if case == "declared":
        r = client.post("/echo", files=files(("big.jpg", big, "image/jpeg")))
        want = 413
    elif case == "streamed":  # chunked: no Content-Length, stopped as it passes the limit
        r = client.post("/echo", content=iter([big[:100_000]] * 4),
                        headers={"content-type": "image/jpeg"})
        want = 413
    elif case == "parts":
        r = client.post("/echo", files=files(*[(f"{i}.jpg", jpeg(), "image/jpeg")
                                               for i in range(5)]))
        want = 413
    elif case == "type":
        r = client.post("/echo", content=b"{}", headers={"content-type": "application/json"})
        want = 415
    elif case == "part-type":
        r = client.post("/echo", files=files(("a.txt", b"hello", "text/plain")))
        want = 415
    elif case == "malformed":
        r = client.post("/echo", content=b"--xyz\r\nbroken",
                        headers={"content-type": "multipart/form-data; boundary=abc"})
        want = 400
    elif case == "empty":
        r = client.post("/echo", content=b"", headers={"content-type": "image/jpeg"})
        assert "empty file" in r.json()["files"][0]["reason"]
        return
    else:
        r = client.post("/echo", content=b"x", headers={"content-type": "multipart/form-data"})
        want = 400
    assert r.status_code == want, r.text
    body = r.json()
    assert body["status"] == want and body["error"]
    ok = client.post("/echo", files=files(("a.jpg", jpeg(), "image/jpeg")))
    assert ok.status_code == 200 and ok.json()["files"][0]["shape"] == [8, 8, 3]


def test_client_disconnecting_mid_upload(server, client):
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                      + b"\r\nContent-Type: image/jpeg\r\nContent-Length: 200000\r\n\r\n"
                      + b"\xff\xd8" * 500)
    ok = client.post("/echo", files=files(("a.jpg", jpeg(), "image/jpeg")))
    assert ok.status_code == 200 and ok.json()["files"][0]["reason"] is None


def test_thumbnails_by_row_only(client, store):
    r = client.get("/v1/thumbs/2")
    assert r.status_code == 200
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and max(im.size) <= 160
    for bad in ("4", "5", "-1", "99999999999999", "..%2F..%2Fetc%2Fpasswd", "0.5", "1e3"):
        r = client.get(f"/v1/thumbs/{bad}")
        assert r.status_code == 404, bad
        assert r.json()["status"] == 404
    assert client.get("/v1/thumbs/../../etc/passwd").status_code == 404
    assert client.get("/nowhere").json() == {"error": "Not Found", "status": 404}


def test_sigterm_drains_in_flight_requests_and_exits_0(store, tmp_path):
    srv = start_server([str(store)], tmp_path / "drain.log", code=APP, timeout=60, headers=AUTH)
    try:
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=30) as c:
            with c.stream("GET", "/hold") as r:
                chunks = r.iter_raw()
                assert next(chunks) == b"first;"  # the request is in flight
                srv.proc.send_signal(signal.SIGTERM)
                rest = b"".join(chunks)
        assert rest == b"last"
        assert srv.stop(timeout=60) == 0, srv.output()
    finally:
        srv.stop(signal.SIGKILL)


def test_page_in_headless_chromium_shows_thumbnails_with_the_cookie(server, browser):
    context = browser.new_context()
    context.add_cookies([{"name": "featx_token", "value": TOKEN, "url": server.url}])
    page = context.new_page()
    page.goto(server.url + "/page", timeout=30_000)
    page.wait_for_function("document.getElementById('t').complete", timeout=30_000)
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert widths[0] > 0 and widths[1] == 0  # row 4's stored path leaves the data folder
    assert screenshot(page, "web-thumbnails").stat().st_size > 0
    context.close()
