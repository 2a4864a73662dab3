#!/usr/bin/env python3
"""Benchmark featx serve: images/s and latency under concurrent clients, against featx extract.

On the same photos with the same extractor: ``featx extract`` (its own images/s, the embedding
loop; run before and after the serving runs, the ratio taken against the mean, as the load of a
shared box drifts), then ``featx fit`` (a bundle), then ``featx serve`` in a subprocess on a
loopback port and 1, 4, 16 and 64 clients (threads, one photo a request, for ``--seconds``
each): images/s, the ratio to extract's, p50/p95 latency, and the server's peak RSS (psutil,
sampled). ``--soak S``:
then 16 clients for S seconds, RSS sampled, to see that memory does not grow. Example::

    python scripts/bench_serve.py --data ../shared/data/pets-dev --limit 96 \
        --weights ../shared/weights/vgg16_notop_imagenet.weights.h5 --seconds 30 --soak 600

All traffic goes to 127.0.0.1 and every loop is bounded in time. Prints a table; ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
FEATX = [sys.executable, "-c", "from featx.cli import main; main()"]


def subset(src: Path, dest: Path, limit: int) -> list[Path]:
    """Symlinks to the first ``limit`` photos (split evenly over the classes, sorted)."""
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    per = max(1, limit // len(classes))
    files = []
    for c in classes:
        (dest / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[:per]:
            (dest / c.name / f.name).symlink_to(f.resolve())
            files.append(dest / c.name / f.name)
    return files


def run_json(args: list[str]) -> dict:
    res = subprocess.run(FEATX + args + ["--json"], capture_output=True, text=True, env=ENV,
                         timeout=7200)
    if res.returncode != 0:
        sys.exit(f"featx {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


class RSS:
    """Samples a process's resident memory (with its children) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.proc, self.interval = psutil.Process(pid), interval
        self.samples: list[tuple[float, float]] = []  # (time, MB)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                mb = sum(p.memory_info().rss for p in procs) / 2**20
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), mb))

    def peak(self, since: float = 0.0) -> float:
        return max((mb for t, mb in self.samples if t >= since), default=0.0)


def load(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    """``clients`` threads posting one photo a request for ``seconds``: throughput and latency."""
    end = time.monotonic() + seconds
    lat: list[float] = []
    errors = [0]
    counter = iter(range(10**9))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            while time.monotonic() < end:
                with lock:
                    name, data = photos[next(counter) % len(photos)]
                t0 = time.perf_counter()
                r = c.post("/v1/predict", files={"p": (name, data, "image/jpeg")})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 900)
    wall = time.monotonic() - t0
    ms = np.array(lat) * 1000
    return {"clients": clients, "images": len(lat), "errors": errors[0], "seconds": round(wall, 1),
            "images_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"featx serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit(f"featx serve not ready within {timeout} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="A labelled photo folder.")
    p.add_argument("--limit", type=int, default=96, help="Photos used (split over the classes).")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--layer", default="block5_pool")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--precision", default="float32")
    p.add_argument("--clients", default="1,4,16,64")
    p.add_argument("--seconds", type=float, default=30, help="Per concurrency level.")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5)
    p.add_argument("--soak", type=float, default=0, help="Seconds of a 16-client soak after.")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    from featx.backbones import cpu_description

    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    files = subset(a.data, work / "data", a.limit)
    settings = ["--layer", a.layer, "--weights", a.weights, "--precision", a.precision]
    if a.input_size:
        settings += ["--input-size", str(a.input_size)]
    load_avg = os.getloadavg()
    ext = run_json(["extract", str(work / "data"), "-o", str(work / "s.h5"), *settings])
    run_json(["fit", str(work / "s.h5"), "-o", str(work / "bundle"), "--clf", "logreg"])
    photos = [(f.name, f.read_bytes()) for f in files]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(FEATX + ["serve", str(work / "bundle"), "--port", str(port),
                                       "--max-batch", str(a.max_batch), "--max-wait-ms",
                                       str(a.max_wait_ms)], env=ENV, stdin=subprocess.DEVNULL)
    rss = RSS(server.pid)
    wait_ready(url, server, 900)
    ready_rss = rss.peak()
    rows = []
    try:
        for c in map(int, a.clients.split(",")):
            t = time.monotonic()
            row = load(url, photos, c, a.seconds)
            row["peak_rss_mb"] = round(rss.peak(t), 0)
            rows.append(row)
            print(json.dumps(row), flush=True)
        soak = None
        if a.soak:
            t = time.monotonic()
            row = load(url, photos, 16, a.soak)
            samples = [(s - t, mb) for s, mb in rss.samples if s >= t]
            first = [mb for s, mb in samples if s < 60] or [0]
            last = [mb for s, mb in samples if s > a.soak - 60] or [0]
            soak = {**row, "rss_first_minute_mb": round(max(first)), "rss_last_minute_mb":
                    round(max(last)), "rss_peak_mb": round(max(mb for _, mb in samples)),
                    "rss_at_ready_mb": round(ready_rss)}
            print(json.dumps(soak), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=120)
        rss.stop.set()
    # extract again after the serve runs: the load on a shared box drifts, so the ratio is taken
    # against the mean of the two extract runs that bracket them
    ext2 = run_json(["extract", str(work / "data"), "-o", str(work / "s2.h5"), *settings])
    ext_mean = (ext["images_per_second"] + ext2["images_per_second"]) / 2
    for row in rows:
        row["ratio_to_extract"] = round(row["images_per_s"] / ext_mean, 3)
    result = {"machine": cpu_description(), "python": platform.python_version(),
              "load_average_before": [round(x, 2) for x in load_avg],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "photos": len(files), "data": str(a.data), "settings": settings,
              "max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms,
              "extract_images_per_s": [ext["images_per_second"], ext2["images_per_second"]],
              "levels": rows, "soak": soak,
              "server_exit_code": rc}
    print(f"\n{result['machine']}; load {load_avg[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"{len(files)} photos; featx extract: {ext['images_per_second']:.2f} images/s before, "
          f"{ext2['images_per_second']:.2f} after (ratios against the mean)")
    print(f"{'clients':>7} {'images/s':>9} {'x extract':>9} {'p50 ms':>8} {'p95 ms':>8} {'peak MB':>8}")
    for r in rows:
        print(f"{r['clients']:>7} {r['images_per_s']:>9.2f} {r['ratio_to_extract']:>9.2f} "
              f"{r['p50_ms']:>8} {r['p95_ms']:>8} {r['peak_rss_mb']:>8.0f}")
    if soak:
        print(f"soak {a.soak:.0f} s, 16 clients: {soak['images_per_s']} images/s, RSS first minute "
              f"{soak['rss_first_minute_mb']} MB, last minute {soak['rss_last_minute_mb']} MB")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}

if __name__ == "__main__":
    main()
