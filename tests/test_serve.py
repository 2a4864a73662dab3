"""featx serve: a real server process on a loopback port, real HTTP, the page in headless Chromium.

One server for the module (a logreg bundle on the tiny VGG16 32x32 store, with that store for
neighbours); every good answer is checked against ``featx predict`` on the same bytes.
"""

from __future__ import annotations

import io
import random
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, free_port, screenshot, start_server

pytest.importorskip("fastapi")

MAX_FILES = 8


@pytest.fixture(scope="module")
def photos(tiny_store, tmp_path_factory) -> dict[str, bytes]:
    """Good photos by name: some of the store's own and new ones in other modes and sizes."""
    from featx.store import read_meta

    data = Path(read_meta(tiny_store)["data_dir"])
    out = {p.name: p.read_bytes() for p in sorted(data.rglob("*.jpg"))[::4]}
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    variants = {"grey.png": ("L", "PNG"), "rgba.png": ("RGBA", "PNG"), "big.jpg": ("RGB", "JPEG"),
                "cmyk.jpg": ("CMYK", "JPEG"), "tiny.png": ("RGB", "PNG"), "pal.gif": ("P", "GIF")}
    for name, (mode, fmt) in variants.items():
        im = Image.fromarray(pixels).convert(mode)
        if name == "big.jpg":
            im = im.resize((900, 700))
        if name == "tiny.png":
            im = im.resize((1, 1))
        buf = io.BytesIO()
        im.save(buf, fmt)
        out[name] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def reference(tiny_bundle, photos, tmp_path_factory) -> dict[str, dict]:
    """``featx predict --json``'s prediction of each good photo, by name; under "" the document
    less its per-photo lists."""
    from featx.predict import predict

    folder = tmp_path_factory.mktemp("photos")
    for name, data in photos.items():
        (folder / name).write_bytes(data)
    report = predict(tiny_bundle, [folder / n for n in photos]).as_dict()
    assert report["n_errors"] == 0
    by_name = {Path(p["path"]).name: p for p in report["predictions"]}
    return {**by_name, "": {k: v for k, v in report.items() if k not in ("predictions", "errors")}}


@pytest.fixture(scope="module")
def server(tiny_bundle, tiny_store, tmp_path_factory):
    srv = start_server(["serve", str(tiny_bundle), "--store", str(tiny_store), "--max-upload-mb",
                        "1", "--max-files", str(MAX_FILES), "--max-batch", "8", "--max-wait-ms",
                        "50"], tmp_path_factory.mktemp("serve") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def same(answer: dict, expected: dict) -> None:
    """An answer of the server is featx predict's for the same photo (to float32 rounding: a
    batch padded to another size may differ in the 7th digit)."""
    assert answer["label"] == expected["label"]
    assert [t["class"] for t in answer["top_k"]] == [t["class"] for t in expected["top_k"]]
    for c, p in expected["probabilities"].items():
        assert answer["probabilities"][c] == pytest.approx(p, abs=2e-6)
    assert set(expected) <= set(answer)  # every field of predict's (e.g. unfamiliar) comes along
    if expected.get("unfamiliar_score") is not None:  # "none of these": the same score and flag
        assert answer["unfamiliar_score"] == pytest.approx(expected["unfamiliar_score"], abs=1e-4)
        assert answer["unfamiliar"] == expected["unfamiliar"]


def test_health_info_and_the_predict_json(client, photos, reference, tiny_bundle):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/info").json()
    assert info["class_names"] == ["circle", "square", "star"]
    assert info["extractor"]["input_size"] == 32 and info["store"]["n"] == 30
    names = ["grey.png", "circle_000.jpg", "cmyk.jpg"]
    r = client.post("/v1/predict", files=[("photos", (n, photos[n], "image/jpeg")) for n in names])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_predicted"] == 3 and body["errors"] == [] and body["class_names"] == info["class_names"]
    whole = reference[""]  # featx predict's document, less its per-photo lists
    assert set(body) == {*whole, "predictions", "errors"}
    for key, value in whole.items():  # bundle, class names, ...; counts are of other photos
        if not key.startswith("n_"):
            assert body[key] == value, key
    assert [p["path"] for p in body["predictions"]] == names
    for p in body["predictions"]:
        same(p, reference[p["path"]])
    stored = body["predictions"][1]["neighbors"]
    assert len(stored) == 6 and stored[0]["path"] == "circle/circle_000.jpg"
    assert stored[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    thumb = client.get(stored[0]["thumbnail"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size[0] > 0
    raw = client.post("/v1/predict", content=photos["big.jpg"],
                      headers={"content-type": "image/jpeg", "x-filename": "big.jpg"})
    same(raw.json()["predictions"][0], reference["big.jpg"])


def test_concurrent_requests_are_batched(client, server, photos, reference):
    before = client.get("/v1/info").json()["stats"]
    names = sorted(photos)[:12]

    def one(name):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v1/predict", files={"p": (name, photos[name], "image/png")}).json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, names))
    for name, a in zip(names, answers):
        same(a["predictions"][0], reference[name])
    after = client.get("/v1/info").json()["stats"]
    assert after["images"] - before["images"] == 12
    assert after["batches"] - before["batches"] < 12  # some model calls took several photos
    assert after["largest_batch"] >= 2


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")
    return buf.getvalue()


def _disconnect(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=b\r\nContent-Length: 500000\r\n\r\n--b\r\nContent-Disposition: "
                  b"form-data; name=\"p\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8" + b"\0" * 4000)


def bad_request(case: str, c: httpx.Client, photos: dict, url: str):
    """Send one bad request; (the status it must get, the response), or None for no answer."""
    jpeg = photos["circle_000.jpg"]
    part = lambda name, data, ct="image/jpeg": ("p", (name, data, ct))  # noqa: E731
    if case == "disconnect":
        _disconnect(url)
        return None
    sends = {
        "non-image": (422, dict(files=[part("notes.jpg", b"hello, not a photo")])),
        "truncated": (422, dict(files=[part("cut.jpg", jpeg[: len(jpeg) // 2])])),
        "empty": (422, dict(files=[part("empty.jpg", b"")])),
        "bomb": (422, dict(files=[part("bomb.png", _bomb(), "image/png")])),
        "random-bytes": (422, dict(content=bytes(random.Random(0).randbytes(3000)),
                                   headers={"content-type": "image/jpeg"})),
        "too-large": (413, dict(files=[part("huge.jpg", b"\xff" * 1_300_000)])),
        "wrong-type": (415, dict(content=b'{"a": 1}', headers={"content-type": "application/json"})),
        "text-part": (415, dict(files=[part("a.txt", b"hello", "text/plain")])),
        "many-parts": (413, dict(files=[part(f"{i}.jpg", jpeg) for i in range(MAX_FILES + 1)])),
        "malformed": (400, dict(content=b"--zz\r\nnonsense",
                                headers={"content-type": "multipart/form-data; boundary=q"})),
        "no-file": (400, dict(content=b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
                                      b'value\r\n--b--\r\n',
                              headers={"content-type": "multipart/form-data; boundary=b"})),
    }
    want, kwargs = sends[case]
    return want, c.post("/v1/predict", **kwargs)


BAD = ["non-image", "truncated", "empty", "bomb", "random-bytes", "too-large", "wrong-type",
       "text-part", "many-parts", "malformed", "no-file", "disconnect"]


def test_fuzz_bad_input_mixed_with_good(server, photos, reference):
    rng = random.Random(7)
    plan = [("bad", case) for case in BAD * 2] + \
           [("good", rng.sample(sorted(photos), rng.randint(1, 3))) for _ in range(24)]
    rng.shuffle(plan)

    def run(item):
        kind, what = item
        with httpx.Client(base_url=server.url, timeout=60) as c:
            if kind == "bad":
                return item, bad_request(what, c, photos, server.url)
            files = [("p", (n, photos[n], "application/octet-stream")) for n in what]
            return item, c.post("/v1/predict", files=files)

    with ThreadPoolExecutor(6) as pool:
        done = list(pool.map(run, plan))
    for (kind, what), got in done:
        if kind == "good":
            assert got.status_code == 200, got.text
            assert [p["path"] for p in got.json()["predictions"]] == what
            for p in got.json()["predictions"]:
                same(p, reference[p["path"]])
        elif got is not None:
            want, r = got
            assert r.status_code == want, (what, r.text)
            body = r.json()
            assert body["status"] == want and isinstance(body["error"], str) and body["error"]
    assert server.alive()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/predict", files={"p": ("star_000.jpg", photos["star_000.jpg"])})
        same(r.json()["predictions"][0], reference["star_000.jpg"])
        mixed = c.post("/v1/predict", files=[("p", ("x.jpg", b"nope")),
                                              ("p", ("star_000.jpg", photos["star_000.jpg"]))])
        assert mixed.status_code == 200 and mixed.json()["n_errors"] == 1
        assert "not an image" in mixed.json()["errors"][0]["reason"]


def test_thumbnails_are_rows_only(client):
    assert client.get("/v1/thumbs/29").status_code == 200
    for bad in ("30", "-1", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "1;ls"):
        r = client.get(f"/v1/thumbs/{bad}")
        assert r.status_code == 404 and r.json()["status"] == 404, bad


def test_page_in_headless_chromium(server, browser, tiny_store, reference):
    from featx.store import read_meta

    photo = Path(read_meta(tiny_store)["data_dir"]) / "star" / "star_000.jpg"
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(server.url + "/", timeout=30_000)
    page.wait_for_function("document.getElementById('about').textContent.includes('star')",
                           timeout=30_000)
    page.set_input_files("#files", str(photo))
    page.wait_for_selector(".card[data-state=done]", timeout=60_000)
    card = page.locator(".card").first
    assert card.get_attribute("data-label") == reference["star_000.jpg"]["label"]
    assert card.locator(".row").count() == 3  # a bar per class
    thumbs = card.locator(".neighbors img")
    assert thumbs.count() == 6
    page.wait_for_function("[...document.querySelectorAll('.neighbors img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    assert "star" in card.locator(".neighbors figcaption").first.inner_text()
    assert screenshot(page, "serve-page").stat().st_size > 0
    page.set_input_files("#files", str(ROOT / "pyproject.toml"))
    page.wait_for_selector(".card[data-state=error]", timeout=60_000)
    assert "unsupported content type" in page.locator(".card").first.inner_text()
    page.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from featx.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_cli_checks_before_serving(tiny_bundle, tmp_path):
    r = _cli("serve", str(tmp_path / "nope"), "--port", str(free_port()))
    assert r.returncode == 2 and "featx: error: bundle not found" in r.stderr
    r = _cli("serve", str(tiny_bundle), "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch must be at least 1" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _cli("serve", str(tiny_bundle), "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr and "--port" in r.stderr


def test_host_warning_and_token():
    from featx.web import host_warning, resolve_token

    assert host_warning("127.0.0.1", None) is None and host_warning("::1", None) is None
    assert host_warning("0.0.0.0", "t") is None
    assert "without a token" in host_warning("0.0.0.0", None)
    assert resolve_token("a") == "a"


def test_sigterm_exits_0(server, client):
    assert client.get("/readyz").status_code == 200
    assert server.stop(signal.SIGTERM) == 0, server.output()
    assert "featx: stopped" in server.output()


def test_reject_and_the_threshold_as_featx_predict(tiny_bundle, photos, reference):
    from featx.bundle import load_bundle
    from featx.decode import decode_bytes
    from featx.serve import Model, ServeSettings

    b = load_bundle(tiny_bundle)
    strict = Model(b, ServeSettings(reject=True, unfamiliar_at=-1.0, max_batch=2))
    pixels = decode_bytes(photos["star_000.jpg"], strict.decode)[None]
    (pred, near), = strict.run(pixels, ["star_000.jpg"])
    assert near is None  # no store
    if b.familiar is None:
        pytest.skip("this bundle records no training photos")
    assert pred.as_dict()["label"] == "none" and pred.unfamiliar is True
    assert strict.familiar["threshold"] == -1.0
    (plain, _), = Model(b, ServeSettings(max_batch=2)).run(pixels, ["star_000.jpg"])
    same(plain.as_dict(), reference["star_000.jpg"])
