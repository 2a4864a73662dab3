"""featx review in a real server process and headless Chromium: relabel, exclude, undo, refit,
two tabs at once, the map, and kill -9 of the server mid-way through a stream of decisions.

Screenshots are kept under reports/test-artefacts/ (review-*.png).
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from featx import corrections as corr
from tests.conftest import planted_store, screenshot, start_server

pytest.importorskip("fastapi")

COUNTS = {"cat": 40, "dog": 40, "fox": 40}
PLANTED = 6
WAIT_MS = 60_000  # the longest any page wait may take (a loaded 2-core box)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("review-web")
    store, planted = planted_store(base, COUNTS, PLANTED)
    server = start_server(["review", str(store), "--map-method", "pca"], base / "server.log")
    yield server, store, planted
    assert server.stop() == 0, server.output()[-2000:]


@pytest.fixture
def page(served, browser):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def latest(store, path: str) -> dict | None:
    """The corrections file's last row for a stored path (read from the file, not the server)."""
    rows = [r for r in corr.load(store).rows if r["path"] == path]
    return rows[-1] if rows else None


def open_suspects(page, url: str) -> list[dict]:
    page.goto(url + "/#suspects/label/0")
    page.wait_for_selector("#cards .card")
    return page.evaluate("() => items")


def card(page, row: int):
    return page.locator(f'#cards .card[data-row="{row}"]')


def test_relabel_a_planted_photo_in_the_page_then_refit(served, page):
    server, store, planted = served
    items = open_suspects(page, server.url)
    top = [it["path"] for it in items[:PLANTED]]
    assert set(top) & set(planted), f"no planted photo among the first {PLANTED}: {top}"
    held = next(it for it in items[:PLANTED] if it["path"] in planted and it["part"] != "train")
    screenshot(page, "review-suspects")
    card(page, held["row"]).locator(f'button[data-act="{held["suggested"]}"]').click()
    page.wait_for_function(
        f'() => document.querySelector(\'.card[data-row="{held["row"]}"] .state\').textContent'
        f' === "relabelled as {held["suggested"]}"')
    rows = [r for r in corr.load(store).rows if r["path"] == held["path"]]
    assert [(r["old_label"], r["new_label"]) for r in rows] == [(held["label"], held["suggested"])]
    page.click("#nav-refit")
    page.click("#refit-btn")
    page.wait_for_selector("#refit-table")
    part = held["part"]
    old = float(page.text_content(f"#old-{part}"))
    new = float(page.text_content(f"#new-{part}"))
    assert new > old, f"{part} accuracy {old} -> {new} after fixing a held-out label"
    assert page.text_content("#pending") == "0 pending"
    page.wait_for_function("() => document.querySelector('#ranking-state').textContent"
                           ".includes('Label issues')")  # the fresh audit, polled by the page
    assert held["path"] not in page.text_content("#fresh")
    screenshot(page, "review-refit")
    page.click("#nav-overview")
    page.wait_for_selector("#acc-val")
    assert float(page.text_content(f"#acc-{part}")) == new


def test_exclude_then_undo_with_the_keyboard(served, page):
    server, store, _ = served
    items = open_suspects(page, server.url)
    target = next(i for i, it in enumerate(items) if it["decision"] is None)
    for _ in range(target):
        page.keyboard.press("ArrowRight")
    it = items[target]
    state = f'.card[data-row="{it["row"]}"] .state'
    page.keyboard.press("x")
    page.wait_for_function(f"() => document.querySelector('{state}').textContent === 'excluded'")
    assert latest(store, it["path"])["new_label"] == "exclude"
    page.keyboard.press("u")
    page.wait_for_function(
        f"() => document.querySelector('{state}').textContent === 'kept as {it['label']}'")
    assert latest(store, it["path"])["new_label"] == it["label"]
    assert httpx.get(server.url + "/v1/review/overview").json()["excluded"] == 0
    page.keyboard.press("Enter")  # takes the suggestion
    page.wait_for_function(f"() => document.querySelector('{state}').textContent"
                           f" === 'relabelled as {it['suggested']}'")
    assert latest(store, it["path"])["new_label"] == it["suggested"]
    screenshot(page, "review-undo")
    page.keyboard.press("u")
    page.wait_for_function(
        f"() => document.querySelector('{state}').textContent === 'kept as {it['label']}'")


def test_two_tabs_correcting_at_once_both_keep_their_corrections(served, browser):
    server, store, _ = served
    tabs = []
    for _ in range(2):
        context = browser.new_context()
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tabs.append((context, tab))
    # a page of "all photos", so that there are rows enough no other test decided on
    for _, tab in tabs:
        tab.goto(server.url + "/#suspects/all/48")
        tab.wait_for_selector("#cards .card")
    items = tabs[0][1].evaluate("() => items")
    mine = {0: items[0:12:2], 1: items[1:12:2]}
    for k, (_, tab) in enumerate(tabs):  # every click's request in flight before any answer
        rows = [it["row"] for it in mine[k]]
        tab.evaluate("""rows => rows.forEach(r => document.querySelector(
            `.card[data-row="${r}"] button[data-act="exclude"]`).click())""", rows)
    for k, (_, tab) in enumerate(tabs):
        for it in mine[k]:
            tab.wait_for_function(f"""() => document.querySelector(
                '.card[data-row="{it["row"]}"] .state').textContent === 'excluded'""")
    decided = {r["path"]: r["new_label"] for r in corr.load(store).rows}
    assert all(decided.get(it["path"]) == "exclude" for it in mine[0] + mine[1])
    screenshot(tabs[1][1], "review-second-tab")
    with httpx.Client(base_url=server.url) as client:  # put them back for the other tests
        for it in mine[0] + mine[1]:
            client.post("/v1/review/decide", json={"row": it["row"], "action": "keep"}).raise_for_status()
    for context, _ in tabs:
        context.close()


def test_concurrent_clients_lose_no_decision(served):
    server, store, _ = served
    n = len(corr.load(store).rows)

    def decide(rows):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for r in rows:
                client.post("/v1/review/decide", json={"row": r, "action": "keep"}).raise_for_status()

    threads = [threading.Thread(target=decide, args=(range(k, 120, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(corr.load(store).rows) == n + 120


def test_the_map_shows_a_photo_on_hover_and_neighbours_on_click(served, page):
    server, _, _ = served
    page.goto(server.url + "/#map")
    page.wait_for_selector("#map")
    page.wait_for_function("() => mapData && mapData.points.length === 120 && mapData.points[0].px")
    x, y = page.evaluate("() => [mapData.points[5].px, mapData.points[5].py]")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#tip img", state="visible")
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#mapnbrs figure")
    assert page.locator("#mapnbrs figure").count() == 8
    screenshot(page, "review-map")


AUTH = {"authorization": "Bearer t0ken"}


@pytest.fixture
def token_server(tmp_path):
    """A server of its own, with a token (killed in the test; here too if the test fails first)."""
    store, _ = planted_store(tmp_path, COUNTS, PLANTED)
    server = start_server(["review", str(store), "--map-method", "pca", "--token", "t0ken"],
                          tmp_path / "server.log", headers=AUTH)
    yield server, store
    if server.alive():
        server.stop(signal.SIGKILL, timeout=30)


def test_with_a_token_then_kill_9_keeps_every_answered_decision_and_a_readable_file(token_server):
    server, store = token_server
    auth = AUTH
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/").status_code == 200  # the page holds no data itself
        assert anonymous.get("/v1/review/overview").status_code == 401
        assert anonymous.get("/v1/thumbs/0").status_code == 401
        assert anonymous.post("/v1/review/decide", json={"row": 0, "action": "exclude"}
                              ).status_code == 401
        assert anonymous.get("/?token=wrong").status_code == 401
        opened = anonymous.get("/?token=t0ken", follow_redirects=True)  # featx prints it
        assert opened.status_code == 200 and anonymous.get("/v1/review/overview").status_code == 200
    assert corr.load(store).rows == []
    answered: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=30, headers=auth) as client:
            for row in range(120):
                try:
                    r = client.post("/v1/review/decide", json={"row": row, "action": "exclude"})
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    answered.append(row)
                if stop.is_set():
                    return

    worker = threading.Thread(target=stream)
    worker.start()
    deadline = time.monotonic() + 120
    while len(answered) < 20 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)  # a poll interval: the loop waits on the count the worker publishes
    server.proc.send_signal(signal.SIGKILL)
    stop.set()
    worker.join(timeout=60)
    assert server.proc.wait(timeout=30) == -signal.SIGKILL
    found = corr.load(store)  # readable, and of this store
    excluded = {r["path"] for r in found.rows}
    assert len(answered) >= 20
    from featx.store import load_features

    paths = load_features(store).paths
    assert {paths[r] for r in answered} <= excluded
    assert len(excluded) <= len(answered) + 1  # at most the decision in flight beyond those
