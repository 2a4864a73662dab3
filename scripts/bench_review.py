"""featx review, measured: page load and refit on a large store, planted errors on the first page.

    python3 scripts/bench_review.py big [N]                 # default N = 25000 (from the repo root)
    python3 scripts/bench_review.py recall STORE N [SEEDS]  # N planted label errors, SEEDS seeds

``big``: a generated store of N x 512 vectors (ReLU'd Gaussian blobs, 2 classes, 2% of the labels
moved to the other class) over N generated 64x48 JPEGs, served by ``featx review`` in a real
process. Times: start to ready (first: featx fit's automatic choice of C and the audit; again:
from the cache beside the store), the Suspects page in headless Chromium until every thumbnail of
the first page (24 photos and their 6 neighbours each) has loaded, cold (thumbnails made now) and
warm (from the server's cache), page 100 of "all photos", and a refit after 50 corrections.

``recall``: a copy of STORE with N random labels moved to another class (vectors, paths and photos
unchanged, so the photo shows its true class), reviewed in-process; how many of the N are on the
first page of suspects (24), and among the first 2N label issues.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featx.backbones import cpu_description  # noqa: E402
from featx.review import PAGE, Review, Settings  # noqa: E402
from featx.store import Features, load_features, save_features  # noqa: E402
from tests.conftest import META, free_port, wait_ready  # noqa: E402


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def make_big(root: Path, n: int, dim: int = 512, seed: int = 0) -> tuple[Path, np.ndarray]:
    """The generated store and its photos; returns it and the rows whose label was moved."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    true = rng.integers(0, 2, n)
    centres = rng.normal(size=(2, dim)) * 0.5
    X = (np.maximum(centres[true] + rng.normal(size=(n, dim)), 0) * 6).astype(np.float32)
    moved = rng.choice(n, n // 50, replace=False)
    labels = true.copy()
    labels[moved] = 1 - labels[moved]
    names = ["cat", "dog"]
    paths = [f"{names[labels[i]]}/{i:05d}.jpg" for i in range(n)]
    data = root / "data"
    for c in names:
        (data / c).mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 60, size=(48, 64, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        img = base.copy()
        img[..., 2 * true[i]] += 150  # the true class's colour
        y0, x0 = (i * 7) % 24, (i * 13) % 32
        img[y0:y0 + 16, x0:x0 + 21] = 255
        Image.fromarray(img).save(data / p, quality=80)
    hashes = np.array([f"{i:064x}" for i in range(n)])
    store = root / "big.h5"
    save_features(store, Features(X, labels, paths, hashes, names,
                                  {**META, "data_dir": str(data.resolve())}))
    return store, moved


def serve(store: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from featx.cli import main; main()", "review",
                             str(store), "--port", str(port), "--map-method", "pca"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, timeout=900)
    return proc, url, time.perf_counter() - t0


def page_load(browser, url: str) -> tuple[float, float]:
    """Seconds from navigation to the first Suspects page's cards shown, and to every thumbnail
    on it (its photos and their neighbours) loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#cards .card")
    cards = time.perf_counter() - t0
    page.evaluate("() => document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    page.wait_for_function("() => [...document.querySelectorAll('#cards img')].every("
                           "i => i.complete && i.naturalWidth > 0)")
    seconds = time.perf_counter() - t0
    context.close()
    return cards, seconds


def big(n: int) -> None:
    import httpx
    import psutil
    from playwright.sync_api import sync_playwright

    print(f"CPU: {cpu_description()}; load average {load_average()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, moved = make_big(Path(tmp), n)
        print(f"{n} photos and their store written in {time.perf_counter() - t0:.1f} s", flush=True)
        for attempt in ("first start (fit's choice of C, the audit)", "second start (cached)"):
            proc, url, ready = serve(store, Path(tmp) / "server.log")
            print(f"{attempt}: ready in {ready:.1f} s (load {load_average()})", flush=True)
            if attempt.startswith("first"):
                proc.terminate()
                proc.wait(60)
        try:
            t = time.perf_counter()
            while httpx.get(url + "/v1/review/map").json()["status"] != "ready":
                time.sleep(0.2)  # the map starts after the audit: let it finish before timing pages
            print(f"the map (pca, 5,000 of {n}) ready {time.perf_counter() - t:.1f} s after the "
                  f"server", flush=True)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                for label, hash_ in (("cold thumbnails", "label/0"), ("warm thumbnails", "label/0"),
                                     ("page 100 of all photos", "all/2376")):
                    cards, loaded = page_load(browser, f"{url}/#suspects/{hash_}")
                    print(f"Suspects page, {label}: cards shown in {cards:.2f} s, every "
                          f"thumbnail loaded in {loaded:.2f} s", flush=True)
                browser.close()
            with httpx.Client(base_url=url, timeout=120) as client:
                t = time.perf_counter()
                client.get("/v1/review/suspects?kind=label&offset=0&limit=24").raise_for_status()
                print(f"suspects JSON (24 with neighbours): {time.perf_counter() - t:.3f} s")
                issues = client.get("/v1/review/suspects?kind=label&offset=0&limit=50").json()
                for it in issues["items"]:
                    client.post("/v1/review/decide", json={"row": it["row"], "action": it["suggested"]}
                                ).raise_for_status()
                t = time.perf_counter()
                r = client.post("/v1/review/refit").json()
                wall = time.perf_counter() - t
                hit = len({it["row"] for it in issues["items"]} & set(moved.tolist()))
                print(f"refit after 50 corrections ({hit} of them planted rows): {wall:.2f} s wall "
                      f"(the fit {r['seconds']['fit']:.2f} s); "
                      f"val {r['old']['val']:.4f} -> {r['new']['val']:.4f}, test "
                      f"{r['old']['test']:.4f} -> {r['new']['test']:.4f}; {r['n_changed']} "
                      f"predictions changed")
                t = time.perf_counter()
                while client.get("/v1/review/refit").json()["ranking"] == "running":
                    time.sleep(0.1)  # poll the fresh audit
                print(f"  its fresh audit done {time.perf_counter() - t + wall:.2f} s after the "
                      f"refit began; label issues {client.get('/v1/review/refit').json()['label_issues']}")
            rss = psutil.Process(proc.pid).memory_info().rss
            print(f"server memory: {rss / 2**20:.0f} MiB RSS; load {load_average()}")
        finally:
            proc.terminate()
            proc.wait(60)


def plant(store: Path, out: Path, n: int, seed: int) -> set[int]:
    """A copy of ``store`` with ``n`` random labels moved to another class; the moved rows."""
    feats = load_features(store)
    rng = np.random.default_rng(seed)
    rows = rng.choice(feats.n, n, replace=False)
    k = len(feats.class_names)
    labels = feats.labels.copy()
    labels[rows] = (labels[rows] + 1 + rng.integers(0, k - 1, n)) % k
    save_features(out, Features(feats.features, labels, feats.paths, feats.hashes,
                                feats.class_names, feats.meta, flipped=feats.flipped))
    return set(rows.tolist())


def recall(store: Path, n: int, seeds: int) -> None:
    print(f"CPU: {cpu_description()}; load average {load_average()}", flush=True)
    first, at_2n = [], []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / store.name
            planted = plant(store, copy, n, seed)
            t0 = time.perf_counter()
            r = Review(copy, Settings(map_method="pca"))
            r.prepare()
            seconds = time.perf_counter() - t0
            page = {it["row"] for it in r.suspects("label", 0, PAGE)["items"]}
            ranked = [int(i) for i in r.ranking.issues]
            first.append(len(page & planted))
            at_2n.append(len(set(ranked[:2 * n]) & planted))
            print(f"seed {seed}: {first[-1]} of the first page's {len(page)} are planted "
                  f"({n} planted); {at_2n[-1]} of {n} among the first {2 * n} label issues "
                  f"({len(ranked)} listed); prepared in {seconds:.1f} s; head val "
                  f"{r.head.val:.4f} test {r.head.test:.4f}", flush=True)
            shutil.rmtree(Path(tmp), ignore_errors=True)
    print(f"{store.name}, {n} planted: first page {np.mean(first):.1f} of {PAGE} planted "
          f"(per seed {first}); recall at {2 * n}: {np.sum(at_2n) / (n * seeds):.3f}; "
          f"load {load_average()}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "big":
        big(int(sys.argv[2]) if len(sys.argv) > 2 else 25000)
    elif len(sys.argv) >= 4 and sys.argv[1] == "recall":
        recall(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 3)
    else:
        sys.exit(__doc__)
