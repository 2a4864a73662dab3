"""Writing safely: outputs checked before any work, a full disk or a read-only file system as one
line (exit 2) with nothing left behind, the store's size estimate, the lock, interrupted runs.

A full disk is a real one where this can be had: a small tmpfs the test mounts (root on Linux, as in
CI), filled with a file to leave exactly the room a case needs; elsewhere those tests skip.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from featx import load_features
from featx.embed import ExtractorSettings
from featx.errors import FeatxError
from featx.extract import extract
from featx.files import check_output, free_bytes
from featx.store import estimate_bytes
from featx.writer import store_lock
from tests.conftest import TINY, TINY_ARGS, TINY_DIM, cli, make_images, synthetic_store

SETTINGS = ExtractorSettings(**TINY)


PROGRESS_LINE = re.compile(r"^[\w-]+: \d+/\d+ \(\d+%\)")  # progress on stderr off a terminal


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("featx: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 4 MB tmpfs of our own; ``fill(free)`` leaves about ``free`` bytes of room on it."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")

    def fill(free: int) -> None:
        filler = mnt / "filler"
        filler.unlink(missing_ok=True)
        room = free_bytes(mnt) - free
        if room > 0:
            filler.write_bytes(b"\0" * room)

    try:
        yield mnt, fill
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders featx might have left (none should be)."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock"))


# --- outputs are checked before any work --------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return synthetic_store(tmp_path / "syn.h5")


def test_every_command_checks_its_outputs_first(store: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    bad = str(blocker / "out")  # a path under a regular file
    data = make_images(tmp_path / "data", {"a": 2, "b": 2})
    cases = [
        ["extract", str(data), "-o", bad + ".h5", *TINY_ARGS],
        ["fit", str(store), "-o", bad],
        ["baseline", str(data), "-o", bad, "--size", "48", "--epochs", "1"],
        ["report", str(store), "-o", bad],
        ["export", str(store), "-o", bad + ".npz"],
        ["map", str(store), "-o", bad + ".png"],
        ["map", str(store), "-o", str(tmp_path / "m.png"), "--coords", bad + ".csv"],
        ["neighbors", str(store), "class0/0.jpg", "--grid", bad + ".png"],
        ["duplicates", str(store), "--sheet", bad + ".png"],
    ]
    for args in cases:
        code, _, err = cli(capsys, *args)
        line = one_error_line(err)
        assert code == 2 and "a file is in the way" in line and str(blocker) in line, (args, err)
    assert not (tmp_path / "m.png").exists()  # nothing was computed before the check


def test_a_read_only_file_system_is_named(small_fs):
    mnt, _ = small_fs
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    with pytest.raises(FeatxError, match="read-only file system"):
        check_output(mnt / "models" / "x", "the model bundle", folder=True)


def test_permission_denied_is_named(tmp_path: Path, monkeypatch):
    import tempfile

    def denied(*a, **kw):  # as a non-root user in a folder without write permission
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(FeatxError, match="cannot write the export .*: permission denied"):
        check_output(tmp_path / "x.npz", "the export")


# --- a full disk --------------------------------------------------------------------------------


def _store_bytes(data: Path, tmp: Path, commit_every: int) -> tuple[Path, int, int]:
    """A clean run elsewhere: the store, its size, and the size of one part of ``commit_every``."""
    clean = extract(data, tmp / "clean.h5", SETTINGS, commit_every=commit_every).out
    from featx.store import write_part

    part = write_part(tmp / "p", 0, ["0" * 64] * commit_every,
                      np.zeros((commit_every, TINY_DIM), np.float32), [], {})
    return clean, clean.stat().st_size, part.stat().st_size


def test_full_disk_during_a_part_write_keeps_the_committed_and_resumes(small_fs, tmp_path, capsys):
    mnt, fill = small_fs
    data = make_images(tmp_path / "data", {"a": 6, "b": 6})
    clean, _, part = _store_bytes(data, tmp_path, commit_every=4)
    fill(int(1.6 * part))  # room for one part file, not two
    out = mnt / "s.h5"
    code, _, err = cli(capsys, "extract", str(data), "-o", str(out), "--commit-every", "4",
                       "--batch-size", "4", *TINY_ARGS)
    line = one_error_line(err.replace(_warning_lines(err), ""))
    assert code == 2 and "no space left on the device" in line and "free" in line
    assert leftovers(mnt) == [] and len(list((mnt / "s.h5.parts").glob("part-*.h5"))) == 1
    fill(10 << 20)  # space freed
    report = extract(data, out, SETTINGS, commit_every=4)
    assert report.n_embedded == 12 - 4  # the committed part was kept and reused
    _assert_same_store(out, clean)
    assert leftovers(mnt) == []


def test_full_disk_during_the_merge_keeps_the_parts_and_resumes(small_fs, tmp_path, capsys):
    mnt, fill = small_fs
    data = make_images(tmp_path / "data", {"a": 5, "b": 5})
    clean, size, part = _store_bytes(data, tmp_path, commit_every=4)
    fill(3 * part + size // 3)  # the three parts fit, the store does not
    out = mnt / "s.h5"
    code, _, err = cli(capsys, "extract", str(data), "-o", str(out), "--commit-every", "4", *TINY_ARGS)
    line = one_error_line(err.replace(_warning_lines(err), ""))
    assert code == 2 and "no space left on the device" in line and "feature store" in line
    assert leftovers(mnt) == [] and not out.exists()
    code, info, _ = cli(capsys, "info", str(out))  # what is kept, and how to go on
    assert code == 0 and "interrupted run holds 10 vectors" in info
    fill(10 << 20)
    assert extract(data, out, SETTINGS, commit_every=4).n_embedded == 0  # all vectors were kept
    _assert_same_store(out, clean)


def test_full_disk_during_a_bundle_save_leaves_nothing(small_fs, store: Path, capsys):
    mnt, fill = small_fs
    fill(0)
    code, _, err = cli(capsys, "fit", str(store), "--clf", "logreg", "-o", str(mnt / "bundle"))
    line = one_error_line(err)
    assert code == 2 and "no space left on the device" in line and "model bundle" in line
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]


def test_too_little_space_warns_first_or_refuses_with_strict(small_fs, tmp_path: Path, capsys):
    mnt, _ = small_fs
    data = make_images(tmp_path / "data", {"a": 600, "b": 600}, size=(8, 8))
    code, _, err = cli(capsys, "extract", str(data), "-o", str(mnt / "s.h5"), "--strict", *TINY_ARGS)
    line = one_error_line(err)
    assert code == 2 and "needs about" in line and "free" in line  # refused before any work
    assert list(mnt.iterdir()) == []


def _warning_lines(err: str) -> str:
    return "".join(ln + "\n" for ln in err.splitlines() if ln.startswith("featx: warning:"))


def _assert_same_store(a: Path, b: Path) -> None:
    fa, fb = load_features(a), load_features(b)
    assert fa.paths == fb.paths and list(fa.hashes) == list(fb.hashes)
    np.testing.assert_allclose(fa.features, fb.features, rtol=1e-5, atol=1e-6)


# --- the size estimate, the lock --------------------------------------------------------------------


@pytest.mark.parametrize("n, dim", [(2000, 512), (300, 4096), (5000, 64)])
def test_the_size_estimate_is_within_20_percent(tmp_path: Path, n: int, dim: int):
    path = synthetic_store(tmp_path / "s.h5", counts=(n // 2, n - n // 2), dim=dim)
    actual = path.stat().st_size
    assert abs(estimate_bytes(n, dim) - actual) <= 0.2 * actual, (estimate_bytes(n, dim), actual)


def test_the_lock_is_gone_after_every_kind_of_run(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    extract(image_tree, out, SETTINGS)
    assert not out.with_name("s.h5.lock").exists()
    with pytest.raises(FeatxError, match="other settings"):  # refused
        extract(image_tree, out, ExtractorSettings(**{**TINY, "pooling": "max"}))
    bad = tmp_path / "bad"
    for c in ("a", "b"):
        (bad / c).mkdir(parents=True)
        (bad / c / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(FeatxError, match="could be read"):  # failed, store never existed
        extract(bad, tmp_path / "never.h5", SETTINGS)
    assert leftovers(tmp_path) == [] and not (tmp_path / "never.h5").exists()


def test_a_second_writer_is_refused(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    with store_lock(out):
        with pytest.raises(FeatxError, match="another featx process is writing"):
            extract(image_tree, out, SETTINGS)
    extract(image_tree, out, SETTINGS)  # released: a later run goes ahead
    assert load_features(out).n == 12


def test_stale_temporary_files_of_a_killed_run_are_removed(image_tree: Path, tmp_path: Path):
    out = tmp_path / "s.h5"
    (tmp_path / "s.h5.parts").mkdir()
    stale = [tmp_path / ".s.h5.tmp-99999", tmp_path / "s.h5.parts" / ".part-000000.h5.tmp-99999"]
    for p in stale:
        p.write_bytes(b"half a file")
    extract(image_tree, out, SETTINGS)
    assert not any(p.exists() for p in stale) and os.path.getsize(out) > 0
