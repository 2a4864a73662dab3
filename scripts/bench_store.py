"""Time the store's write path (part commits + merges) without a model, on a synthetic run.

    nice -n 5 python3 scripts/bench_store.py --n 1000000 --dim 512
    nice -n 5 python3 scripts/bench_store.py --n 100000 --dim 4096 --json out.json
    python3 scripts/bench_store.py --n 100000 --dim 512 --add 10000   # a rerun adding 10k images

Drives featx's own :class:`featx.writer.StoreWriter` exactly as ``featx extract`` does: the
"model" hands over random float32 vectors in batches, every ``--commit-every`` vectors become a
part file, parts are merged into the store geometrically and at the end. File names, labels and
sha256 hashes are fake but shaped like real ones.

Reported: wall time of the write path, time in merges, bytes written (every part file and every
store rewrite, against the minimum: the final store once), the peak disk footprint (store + parts
+ temporary files), the most open file descriptors, and the final store's read speed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from featx.backbones import cpu_description

import numpy as np

from featx import store as st
from featx.writer import StoreWriter

META = {"model": "bench", "layer": "x", "pooling": "none", "input_size": 224, "resize": "squash",
        "resample": "bilinear", "precision": "float32", "weights_id": "none", "weights": "none"}


class Listing:
    """A data folder of ``n`` images in ``classes`` class folders, discovery order."""

    root = Path("/bench")

    def __init__(self, n: int, classes: int = 10) -> None:
        self.class_names = [f"class_{c:03d}" for c in range(classes)]
        self.labels = [i * classes // n for i in range(n)]
        self.paths = [f"{self.class_names[c]}/IMG_{i:08d}.jpg" for i, c in enumerate(self.labels)]
        self.hashes = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n)]

    def rows(self, has) -> st.Rows:
        keep = [i for i, h in enumerate(self.hashes) if h in has]
        return st.Rows([self.paths[i] for i in keep], [self.labels[i] for i in keep],
                       [self.hashes[i] for i in keep])

    def skipped(self, failed) -> list:
        return []


class Meter:
    """Bytes written, peak disk use (the store, its parts and the new store at each merge, the
    moment disk use peaks) and open descriptors (sampled after every batch)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.written, self.peak_disk, self.peak_fds = folder, 0, 0, 0
        self.merges: list[tuple[int, float]] = []
        real_part, real_store = st.write_part, st.write_store

        def write_part(*a, **kw):
            path = real_part(*a, **kw)
            self.written += path.stat().st_size
            return path

        def write_store(path, rows, *a, **kw):
            before = folder_bytes(self.folder)  # old store + parts, all still there at the rename
            t0 = time.perf_counter()
            real_store(path, rows, *a, **kw)
            self.merges.append((len(rows.paths), time.perf_counter() - t0))
            size = Path(path).stat().st_size
            self.written += size
            self.peak_disk = max(self.peak_disk, before + size)

        st.write_part, st.write_store = write_part, write_store

    def sample(self) -> None:
        """Open descriptors now (disk use is measured at the merges: walking thousands of part
        files after every batch would cost more than the commits being measured)."""
        self.peak_fds = max(self.peak_fds, len(os.listdir("/proc/self/fd")))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(listing: Listing, out: Path, dim: int, commit_every: int, batch: int, start: int,
        meter: Meter) -> float:
    """Add images ``start:`` of the listing to the store at ``out``; the write path's seconds."""
    pool = np.random.default_rng(0).random((4096, dim), dtype=np.float32)
    t0 = time.perf_counter()
    with StoreWriter(out, META, commit_every) as writer:
        for a in range(start, len(listing.hashes), batch):
            b = min(a + batch, len(listing.hashes))
            writer.add(listing.hashes[a:b], pool[np.arange(a, b) % len(pool)], [], listing)
            meter.sample()
        writer.finish(listing)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="images in the store at the end")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--add", type=int, default=0,
                    help="measure a rerun that adds this many images to a store of n - add")
    ap.add_argument("--commit-every", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32, help="vectors handed over at a time")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="featx-bench-store-", dir=a.dir))
    try:
        listing = Listing(a.n)
        out = folder / "bench.h5"
        first = a.n - a.add if a.add else 0
        if a.add:  # the store as it was before the rerun, written once
            base = Listing(a.n)
            base.hashes, base.paths, base.labels = (x[:first] for x in (listing.hashes,
                                                                        listing.paths, listing.labels))
            run(base, out, a.dim, a.commit_every, 4096, 0, Meter(folder))
        meter = Meter(folder)
        seconds = run(listing, out, a.dim, a.commit_every, a.batch, first, meter)
        final = out.stat().st_size
        t0 = time.perf_counter()
        with st.open_store(out) as f:
            f["features"][:]
        read_s = time.perf_counter() - t0
        result = {
            "n": a.n, "dim": a.dim, "added": a.n - first, "commit_every": a.commit_every,
            "write_path_seconds": round(seconds, 2),
            "merge_seconds": round(sum(s for _, s in meter.merges), 2),
            "merges": [(n, round(s, 3)) for n, s in meter.merges],
            "bytes_written": meter.written, "final_store_bytes": final,
            "written_over_added": round(meter.written / max(1, (a.n - first) * a.dim * 4), 2),
            "peak_disk_over_final": round(meter.peak_disk / final, 2),
            "peak_open_fds": meter.peak_fds, "full_read_seconds_warm": round(read_s, 2),
            "machine": cpu_description(),
            "load": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=1))
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
