"""Ctrl-C and SIGTERM during ``featx extract``, in real processes with real signals: the message
comes at once, the batch on the model is finished, every vector embedded so far is committed
(however few), the lock is removed and the exit code is 130 (Ctrl-C) or 143 (SIGTERM)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_ARGS, make_images


def _start(data: Path, store: Path) -> tuple[subprocess.Popen, list[str]]:
    """featx extract in a process of its own; its stderr lines are collected as they come."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "FEATX_PROGRESS_SECONDS": "0"}
    args = [a if a != "32" else "96" for a in TINY_ARGS]  # 96 px: slow enough to interrupt
    proc = subprocess.Popen([sys.executable, "-c", "from featx.cli import main; main()", "extract",
                             str(data), "-o", str(store), *args, "--batch-size", "4"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines


def _wait_for(predicate, deadline: float, what: str) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("sig") / "data", {"a": 150, "b": 150})


def test_ctrl_c_and_sigterm_finish_the_batch_keep_the_vectors_and_remove_the_lock(data, tmp_path):
    from featx.split import describe_store

    runs = {signal.SIGINT: _start(data, tmp_path / "int.h5"),
            signal.SIGTERM: _start(data, tmp_path / "term.h5")}  # side by side: one start-up
    deadline = time.monotonic() + 240
    for signum, (proc, lines) in runs.items():  # both signalled before either is awaited
        _wait_for(lambda lines=lines: any(re.match(r"embed: [1-9]\d*/300", ln) for ln in lines), deadline,
                  "the first embedded batch")
        proc.send_signal(signum)
    for signum, (proc, lines) in runs.items():
        _wait_for(lambda lines=lines: any("finishing the current batch" in ln for ln in lines), deadline,
                  "the message")
        assert proc.wait(timeout=max(1, deadline - time.monotonic())) == 128 + signum
        _wait_for(lambda lines=lines: any(ln.startswith("interrupted:") for ln in lines), deadline,
                  "the end")
        text = "".join(lines)
        kept = int(re.search(r"interrupted: (\d+) vectors are kept", text).group(1))
        store = tmp_path / ("int.h5" if signum == signal.SIGINT else "term.h5")
        assert not Path(f"{store}.lock").exists()
        info = describe_store(store)
        assert 0 < kept == info["pending_vectors"] + info["n"] < 300  # fewer than one commit's 256
        said = next(i for i, ln in enumerate(lines) if "finishing the current batch" in ln)
        assert said < next(i for i, ln in enumerate(lines) if ln.startswith("interrupted:"))
