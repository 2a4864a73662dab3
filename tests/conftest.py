"""Shared fixtures: generated image folders, a tiny real store, and ../shared material.

Fast tests use generated images and small backbones with random weights (``weights="none"``,
seeded, so reproducible). Tests marked ``shared`` use the real ImageNet weights and photos in
``../shared`` and are skipped cleanly when it is absent.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.errors import FeatxError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cli(capsys, *args) -> tuple[int, str, str]:
    """``featx ARGS`` in this process (paths taken as they are): (exit code, stdout, stderr)."""
    from featx.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def spawn_cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """featx in a child process (stdout and stderr piped, text)."""
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll a condition on the files a child writes (not a sleep standing in for sync)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out waiting for the child"
        time.sleep(0.05)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATX_SHARED", ROOT.parent / "shared"))  # worktrees: set it
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_notop_imagenet.weights.h5"
PETS = SHARED / "data" / "pets-dev"
FLOWERS = SHARED / "data" / "flowers5"

needs_shared = pytest.mark.skipif(
    not (SHARED_WEIGHTS.is_file() and PETS.is_dir() and FLOWERS.is_dir()),
    reason="../shared (real weights and photos) is absent",
)

# A small, fast extractor for tests that need real Keras models but not real weights: VGG16's
# convolutional base with seeded random weights at 32x32 input (512-d vectors of magnitude ~0.1;
# a random MobileNetV2 gives ~1e-11, too small for equality tests to mean anything).
TINY = dict(model="vgg16", layer="block5_pool", pooling="avg", weights="none", input_size=32)
TINY_DIM = 512
TINY_ARGS = ["--model", "vgg16", "--layer", "block5_pool", "--weights", "none", "--input-size", "32"]

# Store metadata of a made-up VGG16 block5_pool store (for stores written without a model).
META = dict(model="vgg16", layer="block5_pool", pooling="avg", weights="none", weights_id="none",
            precision="float32", input_size=224, resize="squash", resample="bilinear")


def synthetic_store(path: Path, counts=(60, 60, 60), dim=32, sep=3.0, seed=0) -> Path:
    """Gaussian blobs, one a class, as a store; the first two rows are exact duplicates."""
    from featx.store import Features, save_features

    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    centres = rng.normal(size=(len(counts), dim)) * sep
    X = (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
    hashes = np.array([f"{i:064x}" for i in range(len(y))])
    hashes[1] = hashes[0]
    X[1] = X[0]
    names = [f"class{k}" for k in range(len(counts))]
    save_features(path, Features(X, y, [f"{names[k]}/{i}.jpg" for i, k in enumerate(y)], hashes,
                                 names, dict(META)))
    return path


def make_images(root: Path, counts: dict[str, int], size=(64, 48), seed: int = 0,
                ext: str = ".jpg") -> Path:
    """Write ``counts[class]`` generated JPEGs per class: each class has its own hue and shape."""
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, size=(size[1], size[0], 3), dtype=np.uint8)
            img[..., k % 3] += 150  # class colour
            y0, x0 = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
            img[y0:y0 + size[1] // 3, x0:x0 + size[0] // 3] = 255 - 40 * k
            Image.fromarray(img).save(root / name / f"{name}_{i:03d}{ext}", quality=90)
    return root


def subset(src: Path, dest: Path, per_class: int) -> Path:
    """A folder of symlinks to the first ``per_class`` files (sorted) of each class of ``src``."""
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            (dest / class_dir.name / f.name).symlink_to(f)
    return dest


def plant_label_errors(store: Path, dest: Path, n: int, seed: int = 0) -> tuple[Path, list[str]]:
    """A copy of ``store``'s data folder at ``dest`` (symlinks) with ``n`` random files moved to
    another class folder; returns (the folder, the moved files' new paths, as a store lists them)."""
    from featx.store import load_features

    feats = load_features(store)
    src = Path(feats.meta["data_dir"])
    rng = np.random.default_rng(seed)
    moved = set(rng.choice(feats.n, size=n, replace=False).tolist())
    planted = []
    for i, path in enumerate(feats.paths):
        target = path
        if i in moved:
            others = [c for c in feats.class_names if c != feats.class_names[feats.labels[i]]]
            target = f"{others[rng.integers(len(others))]}/planted_{path.replace('/', '_')}"
            planted.append(target)
        (dest / target).parent.mkdir(parents=True, exist_ok=True)
        (dest / target).symlink_to((src / path).resolve())
    return dest, planted


def reuse_store(store: Path, data_dir: Path, out: Path) -> Path:
    """The store of ``data_dir``, made from a copy of ``store`` by ``featx extract``: files whose
    content ``store`` holds cost no model time."""
    import shutil

    from featx.embed import Extractor
    from featx.extract import extract
    from featx.store import read_meta

    shutil.copyfile(store, out)
    settings = Extractor.from_meta(read_meta(store)).settings
    return extract(data_dir, out, settings, batch_size=16).out


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """Two classes of six generated 64x48 JPEGs each."""
    return make_images(tmp_path / "data", {"cat": 6, "dog": 6})


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A real store from ``featx.extract`` (MobileNetV2, random weights) on 3 x 10 generated images."""
    from featx.embed import ExtractorSettings
    from featx.extract import extract

    base = tmp_path_factory.mktemp("tiny")
    data = make_images(base / "data", {"circle": 10, "square": 10, "star": 10})
    report = extract(data, base / "tiny.h5", ExtractorSettings(**TINY), batch_size=16)
    return report.out


def _shared_store(request, name: str, src: Path, per_class: int, **settings) -> Path:
    """A VGG16 block5_pool/avg store (or other ``settings``) of a fixed subset of a shared data
    set, with the real weights.

    Cached in pytest's cache folder between local runs (extraction resumes, so a cached store is
    checked, not trusted); a clean checkout, as in CI, builds it afresh.
    """
    from featx.embed import ExtractorSettings
    from featx.extract import extract

    cache = request.config.cache.mkdir("featx-shared")
    data = cache / f"{name}-{per_class}"
    if not data.exists():
        subset(src, data, per_class)
    stem = "-".join([f"{name}-{per_class}", *map(str, settings.values())])
    settings = ExtractorSettings(**{"layer": "block5_pool", "pooling": "avg",
                                    "weights": str(SHARED_WEIGHTS), **settings})
    deadline = time.monotonic() + 1800
    while True:  # another test session (a git worktree sharing this cache) may hold the lock
        try:
            return extract(data, cache / f"{stem}.h5", settings, batch_size=16).out
        except FeatxError as e:
            if "another featx process" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)  # poll the other session's lock


@pytest.fixture(scope="session")
def pets_store(request) -> Path:
    """Real VGG16 features of 300 pets-dev photos (150 cats, 150 dogs) at 160x160 (the photos are
    180 px; half the model time of 224, and logreg still scores 0.977 on the test part)."""
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared is absent")
    return _shared_store(request, "pets", PETS, 150, input_size=160)


@pytest.fixture(scope="session")
def flowers_store(request) -> Path:
    """Real VGG16 features of 200 flowers5 photos (40 per class) at the photos' own 128x128 (a third
    of the model time of 224, the same test accuracy)."""
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared is absent")
    return _shared_store(request, "flowers", FLOWERS, 40, input_size=128)


def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist (``--dist loadgroup``) a module runs in one worker, so its module fixtures are
    built once; the modules on the one Ray instance share a worker."""
    ray_modules = {item.module.__name__ for item in items
                   if "ray_session" in getattr(item, "fixturenames", ())}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("ray" if module in ray_modules else module))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session: 2 CPUs and 2 fake GPUs (resources only).

    Its value is the instance's GCS address, for drivers in subprocesses (``--address``)."""
    ray = pytest.importorskip("ray")
    from featx.engine_ray import quiet_ray

    quiet_ray()
    info = ray.init(num_cpus=2, num_gpus=2, include_dashboard=False,
                    object_store_memory=300 * 1024**2, log_to_driver=False,
                    logging_level=logging.WARNING)
    yield info.address_info["gcs_address"]
    ray.shutdown()


def structured_vectors(n: int, dim: int = 64, clusters: int = 40, rank: int = 6, twins: int = 30,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Vectors with the structure of image embeddings: non-negative, in clusters that vary along
    a few directions each (a low-dimensional manifold, not isotropic noise), plus ``twins``
    planted near-twins (a row plus a little noise, cosine about 0.99). Returns (vectors, cluster
    of each row, the planted (original, twin) row pairs)."""
    rng = np.random.default_rng(seed)
    base = n - twins
    centres = np.maximum(rng.normal(size=(clusters, dim)), 0) + 0.2
    bases = rng.normal(size=(clusters, rank, dim)) * 0.5
    c = rng.integers(0, clusters, base)
    z = rng.normal(size=(base, rank))
    x = np.maximum(centres[c] + np.einsum("nr,nrd->nd", z, bases[c])
                   + 0.05 * rng.normal(size=(base, dim)), 0)
    src = rng.choice(base, twins, replace=False)
    twin = np.maximum(x[src] + 0.03 * rng.normal(size=(twins, dim)), 0)
    x = np.concatenate([x, twin]).astype(np.float32)
    return x, np.concatenate([c, c[src]]), [(int(s), base + i) for i, s in enumerate(src)]


def structured_store(path: Path, n: int, classes: int = 4, **kw) -> tuple[Path, list[tuple[int, int]]]:
    """:func:`structured_vectors` as a store (label = cluster mod ``classes``, one hash a row)."""
    from featx.store import Features, save_features

    x, c, twins = structured_vectors(n, **kw)
    y = c % classes
    names = [f"class{k}" for k in range(classes)]
    hashes = np.array([f"{i:064x}" for i in range(n)])
    save_features(path, Features(x, y, [f"{names[k]}/{i}.jpg" for i, k in enumerate(y)], hashes,
                                 names, dict(META)))
    return path, twins


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels and holds almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def bad_image_corpus(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Odd files in ``folder``, and a folder named ``folder.jpg``: (bad file name -> expected reason
    fragment, names of files that must decode: every PIL mode, EXIF rotation, a PNG named .jpg).

    ``unreadable.jpg`` is ``chmod 000``, which stops no one when tests run as root: there use
    :func:`simulate_unreadable`, which makes featx's one file reader refuse it as the OS would."""
    import io
    import stat

    folder.mkdir(parents=True, exist_ok=True)
    bad = {"bomb.png": "decompression bomb", "huge_header.png": "decompression bomb",
           "truncated.jpg": "truncated", "empty.jpg": "empty file",
           "text.jpg": "not an image", "fifo.jpg": "not a regular file",
           "unreadable.jpg": "cannot read file"}
    # a real bomb over featx's 64 Mpx limit (1-bit, so cheap to write) and a header past PIL's
    Image.new("1", (8200, 8200)).save(folder / "bomb.png")
    (folder / "huge_header.png").write_bytes(_png_header(20_000, 20_000))
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(
        photo, "JPEG")
    (folder / "truncated.jpg").write_bytes(photo.getvalue()[:len(photo.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all\n")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "unreadable.jpg").write_bytes(photo.getvalue()[:-1] + b"\xd9")
    os.chmod(folder / "unreadable.jpg", 0)
    good = []
    rgb = np.random.default_rng(1).integers(0, 255, (24, 32, 3), np.uint8)
    base = Image.fromarray(rgb)
    modes = {"L": base.convert("L"), "LA": base.convert("LA"), "RGBA": base.convert("RGBA"),
             "P": base.convert("P"), "CMYK": base.convert("CMYK"), "1": base.convert("1"),
             "I16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
             "F": Image.fromarray(rgb[..., 1].astype(np.float32))}
    for name, im in modes.items():
        ext = {"CMYK": ".jpg", "F": ".tif"}.get(name, ".png")
        im.save(folder / f"mode_{name}{ext}")
        good.append(f"mode_{name}{ext}")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    base.save(folder / "exif_rotated.jpg", exif=exif)
    base.save(folder / "png_named.jpg", format="PNG")
    good += ["exif_rotated.jpg", "png_named.jpg"]
    (folder / "folder.jpg").mkdir()
    assert stat.S_ISFIFO(os.stat(folder / "fifo.jpg").st_mode)
    return bad, good


def simulate_unreadable(monkeypatch, name: str = "unreadable.jpg") -> None:
    """As root (where ``chmod 000`` reads fine), make :func:`featx.decode.read_file`, the one
    place featx reads image files, get the PermissionError a normal user gets for ``name``."""
    import builtins

    import featx.decode

    if os.geteuid() != 0:
        return

    def fake_open(path, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(featx.decode, "open", fake_open, raising=False)


run_cli = cli  # the name some test files use for the same helper


# --- web: real server processes and a headless browser ------------------------------------------

ARTEFACTS = ROOT / "reports" / "test-artefacts"  # screenshots of pages under test (not in git)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess on a loopback port: ``url``, ``stop()`` -> exit code, ``output()``."""

    def __init__(self, proc, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int | None = None, timeout: float = 60) -> int:
        """Send ``sig`` (SIGTERM) and wait for the exit code (killed after ``timeout``)."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def wait_ready(url: str, proc=None, timeout: float = 180, path: str = "/readyz",
               headers: dict | None = None) -> None:
    """Poll ``url + path`` until it answers 200, the process dies, or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5, headers=headers) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode} before ready")
            try:
                r = client.get(url + path)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.TransportError as e:
                last = repr(e)
            time.sleep(0.1)  # a poll interval, not synchronisation: the loop waits on the answer
    raise TimeoutError(f"{url}{path} not ready within {timeout} s: {last}")


def start_server(args: list[str], log: Path, timeout: float = 180, env: dict | None = None,
                 code: str | None = None, headers: dict | None = None) -> ServerProcess:
    """Start ``featx ARGS --port P`` (or ``python -c CODE P`` with ``code``) on a free loopback
    port and wait for ``/readyz``; output goes to ``log``. Stop it with ``.stop()``."""
    import subprocess
    import sys

    port = free_port()
    if code is None:
        cmd = [sys.executable, "-c", "from featx.cli import main; main()", *args,
               "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", code, str(port), *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                stdin=subprocess.DEVNULL)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server.url, proc, timeout, headers=headers)
    except Exception as e:
        server.stop(timeout=10)
        raise RuntimeError(f"{e}\n--- server output ---\n{server.output()[-3000:]}") from None
    return server


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (skipped without either)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


def screenshot(page, name: str) -> Path:
    """Save a screenshot of ``page`` as a test artefact (reports/test-artefacts/NAME.png)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tiny_store, tmp_path_factory) -> Path:
    """A logreg bundle fitted on ``tiny_store`` (VGG16 32x32, random weights)."""
    from featx.fit import fit_store

    return fit_store(tiny_store, "logreg", out=tmp_path_factory.mktemp("bundle") / "b", n_jobs=1).bundle


# --- review: a store with planted label errors --------------------------------------------------


def planted_store(root: Path, counts: dict[str, int], planted: int, dim: int = 32,
                  sep: float = 3.0, seed: int = 0, twins: int = 0) -> tuple[Path, list[str]]:
    """A store of made-up vectors (Gaussian blobs, one a class) over generated photos in
    ``root/data`` (each class its own hue), with ``planted`` photos moved into another class's
    folder: their label (the folder) is wrong, their vector and picture are of their true class.
    ``twins``: that many near-copies of the first photos added (``twin_...``, a new hash each).
    Returns the store and the planted photos' stored paths."""
    from featx.store import Features, save_features

    data = make_images(root / "data", counts, seed=seed)
    names = sorted(counts)
    rng = np.random.default_rng(seed)
    true = np.concatenate([np.full(counts[c], k) for k, c in enumerate(names)])
    files = [f"{c}/{c}_{i:03d}.jpg" for c in names for i in range(counts[c])]
    labels = true.copy()
    moved = rng.choice(len(files), planted, replace=False)
    planted_paths = []
    for i in moved:
        labels[i] = (true[i] + 1 + rng.integers(len(names) - 1)) % len(names)
        new = f"{names[labels[i]]}/planted_{Path(files[i]).name}"
        (data / files[i]).rename(data / new)
        files[i] = new
        planted_paths.append(new)
    centres = rng.normal(size=(len(names), dim)) * sep
    X = (centres[true] + rng.normal(size=(len(true), dim))).astype(np.float32)
    for i in range(twins):
        twin = f"{Path(files[i]).parent}/twin_{Path(files[i]).name}"
        (data / twin).write_bytes((data / files[i]).read_bytes())
        files.append(twin)
    X = np.concatenate([X, X[:twins] + 0.01 * rng.normal(size=(twins, dim)).astype(np.float32)])
    labels, true = np.concatenate([labels, labels[:twins]]), np.concatenate([true, true[:twins]])
    hashes = np.array([f"{rng.integers(2**63):016x}{i:048x}" for i in range(len(true))])
    store = root / "planted.h5"
    save_features(store, Features(X, labels, files, hashes, names,
                                  {**META, "data_dir": str(data.resolve())}))
    return store, planted_paths
