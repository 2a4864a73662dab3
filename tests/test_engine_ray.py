"""featx extract --engine ray and sweep --backend ray|dask, on one local Ray instance (conftest).

The instance has 2 CPUs and 2 fake GPUs (resources only: Keras runs on the CPU). Every Ray run
builds its model actors afresh, which dominates these tests' time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featx import load_features
from featx.embed import ExtractorSettings
from featx.errors import FeatxError
from featx.extract import extract
from featx.sweep import run_sweep
from tests.conftest import ROOT, TINY, make_images, spawn_cli, synthetic_store

SETTINGS = ExtractorSettings(**TINY)
FLIPS = ExtractorSettings(**{**TINY, "augment": "flip"})  # mirror images' vectors beside each row
N_ROWS = 25  # 24 generated images + an exact duplicate; one broken file is skipped


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    data = make_images(tmp_path_factory.mktemp("ray") / "data", {"a": 8, "b": 8, "c": 8})
    (data / "a" / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(data / "b" / "b_001.jpg", data / "a" / "copy_of_b_001.jpg")
    return data


@pytest.fixture(scope="module")
def local_store(folder: Path, tmp_path_factory) -> Path:
    return extract(folder, tmp_path_factory.mktemp("local") / "local.h5", SETTINGS, batch_size=4).out


@pytest.fixture(scope="module")
def local_flips(folder: Path, tmp_path_factory) -> Path:
    return extract(folder, tmp_path_factory.mktemp("local") / "flips.h5", FLIPS, batch_size=4).out


def assert_same_store(path: Path, reference: Path) -> None:
    """Same rows, paths, labels, hashes, classes and skip list; vectors within float tolerance."""
    a, b = load_features(path), load_features(reference)
    assert a.n == b.n == N_ROWS and len(set(a.paths)) == a.n
    assert a.paths == b.paths and list(a.hashes) == list(b.hashes)
    assert a.labels.tolist() == b.labels.tolist() and a.class_names == b.class_names
    assert a.skipped == b.skipped and len(a.skipped) == 1
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    assert (a.flipped is None) == (b.flipped is None)
    if a.flipped is not None:
        np.testing.assert_allclose(a.flipped, b.flipped, rtol=1e-5, atol=1e-6)
        assert np.abs(a.flipped - a.features).max() > 1e-3  # mirror images are other inputs


def test_same_store_as_local_engine_on_distinct_gpus(ray_session, folder, local_flips, tmp_path):
    import ray

    free_gpus: list[float] = []

    def watch_gpus(stage: str, done: int, total: int) -> None:
        if stage == "embed" and done > 0 and not free_gpus:
            free_gpus.append(ray.available_resources().get("GPU", 0.0))

    report = extract(folder, tmp_path / "ray.h5", FLIPS, batch_size=4, engine="ray",
                     num_workers=2, gpus_per_worker=1, on_progress=watch_gpus)
    assert_same_store(report.out, local_flips)
    assert report.engine == "ray" and report.n_embedded == N_ROWS - 1  # the copy is reused
    assert sum(report.workers.values()) == N_ROWS - 1
    assert free_gpus == [0.0]  # the two actors hold the two fake GPUs, one each
    devices = [name.split(" GPU ")[1] for name in report.workers]  # those that got batches
    assert set(devices) <= {"0", "1"} and len(set(devices)) == len(devices), report.workers
    assert {"connect", "decode", "model", "wait", "load_model", "embed_wall"} <= set(report.timings)


# The driver kills itself (SIGKILL: no clean-up runs) once two parts are committed: a kill from
# outside raced a quiet machine, where Ray delivered all 25 rows between two polls.
DRIVER = """
import os, signal, sys
from featx.embed import ExtractorSettings
from featx.extract import extract
from tests.conftest import TINY

def kill_after_two_parts(stage, done, total):
    if stage == "embed" and done >= 8:  # commit_every=4: two parts committed, none merged yet
        os.kill(os.getpid(), signal.SIGKILL)

extract(sys.argv[1], sys.argv[2], ExtractorSettings(**TINY), batch_size=4, commit_every=4,
        engine="ray", address=sys.argv[3], gpus_per_worker=0, on_progress=kill_after_two_parts)
"""


def test_driver_killed_then_same_command_embeds_each_image_once(ray_session, folder, local_store,
                                                                 local_flips, tmp_path):
    out = tmp_path / "s.h5"
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(folder), str(out), ray_session],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    parts = tmp_path / "s.h5.parts"
    assert len(list(parts.glob("part-*.h5"))) >= 2

    report = extract(folder, out, SETTINGS, batch_size=4, engine="ray", gpus_per_worker=0)
    assert 0 < report.n_embedded < N_ROWS - 1  # committed work was not redone
    assert_same_store(out, local_store)
    assert not parts.exists()

    report = extract(folder, out, FLIPS, batch_size=4, engine="ray", gpus_per_worker=0)
    assert report.n_mirrored == N_ROWS - 1 and report.n_embedded == 0  # the store gains flips
    assert_same_store(out, local_flips)


def test_worker_killed_mid_run_is_retried(ray_session, folder, local_store, tmp_path, monkeypatch):
    import psutil

    from featx import engine_ray

    killed: list[int] = []
    embed = engine_ray.embed

    def kill_the_actor_of_the_first_batch(*args, **kw):
        """The engine's batches, the actor that embedded the first one killed once it is in."""
        for batch in embed(*args, **kw):
            if not killed and batch.workers:
                name = next(iter(batch.workers))  # "IP pid N": an actor that embedded this batch
                killed.append(int(name.split(" pid ")[1].split()[0]))
                psutil.Process(killed[0]).send_signal(signal.SIGKILL)
            yield batch

    monkeypatch.setattr(engine_ray, "embed", kill_the_actor_of_the_first_batch)
    report = extract(folder, tmp_path / "s.h5", SETTINGS, batch_size=4, engine="ray",
                     gpus_per_worker=0)
    assert len(killed) == 1
    assert len(report.workers) == 2, report.workers  # the restarted actor did the rest
    assert any(name.endswith(f" pid {killed[0]}") for name in report.workers)
    assert_same_store(report.out, local_store)


def test_unreachable_address_is_one_clear_line(folder, tmp_path):
    proc = spawn_cli("extract", str(folder), "-o", str(tmp_path / "s.h5"), "--weights", "none",
                    "--engine", "ray", "--address", "127.0.0.1:9")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in stderr.splitlines() if ln.startswith("featx: error:")]
    assert len(lines) == 1 and "cannot reach a Ray cluster at --address 127.0.0.1:9" in lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "s.h5").exists()


def test_misuse_is_refused_before_any_work(ray_session, folder, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    with pytest.raises(FeatxError, match="need 3 GPUs; the Ray cluster has 2"):
        extract(folder, out, SETTINGS, engine="ray", num_workers=3, gpus_per_worker=1)
    with pytest.raises(FeatxError, match="`?address`? applies to `?engine`?=ray only"):
        extract(folder, out, SETTINGS, address="auto")
    with pytest.raises(FeatxError, match="unknown engine 'spark'"):
        extract(folder, out, SETTINGS, engine="spark")
    with pytest.raises(FeatxError, match="unknown backend 'spark'"):
        run_sweep(synthetic_store(tmp_path / "v.h5"), ["logreg"], {"C": [1.0]}, backend="spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(FeatxError, match=r"needs Ray, an optional extra: pip install 'featx\[ray\]'"):
        extract(folder, out, SETTINGS, engine="ray")
    assert not out.exists()


GRID = {"C": [0.001, 0.1, 10.0]}


def sweep_rows(store: Path, backend: str, out: Path) -> list[dict]:
    """A 3-point logreg sweep's rows on ``backend``, without timings, in C order."""
    result = run_sweep(store, ["logreg"], GRID, n_jobs=2, backend=backend, out_dir=out)
    assert result.n_points == len(result.rows) == 3
    assert (out / "results.csv").read_text().count("\n") == 4  # header + 3 rows
    return sorted(({k: v for k, v in r.items() if k != "fit_seconds"} for r in result.rows),
                  key=lambda r: r["C"])


@pytest.fixture(scope="module")
def loky_sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    base = tmp_path_factory.mktemp("sweep")
    store = synthetic_store(base / "s.h5", counts=(40, 40, 40), dim=16, sep=1.0)
    rows = sweep_rows(store, "loky", base / "loky")
    assert len({r["val_accuracy"] for r in rows}) > 1  # the points differ: a real comparison
    return store, rows


@pytest.mark.parametrize("backend", ["threading", "ray", "dask"])
def test_sweep_on_any_joblib_backend_equals_loky(backend, loky_sweep, tmp_path, request):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    store, expected = loky_sweep
    assert sweep_rows(store, backend, tmp_path / backend) == expected
