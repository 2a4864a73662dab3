"""Small fixes found by trying every command as a new user would (issue 28): paths recorded
resolved, progress and --json/--quiet, import-time quiet, slow refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featx.embed import Extractor, ExtractorSettings


def test_the_weights_path_is_recorded_resolved_and_found_from_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "my.weights.h5").write_bytes(b"not really weights, but hashed all the same")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    settings = ExtractorSettings(layer="block5_pool", weights="w/my.weights.h5")
    meta = Extractor(settings).meta
    assert meta["weights"] == str(tmp_path / "w" / "my.weights.h5")
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = Extractor.from_meta(meta)  # found, and its sha256 checked
    assert again.weights_id == meta["weights_id"]
    (tmp_path / "w" / "my.weights.h5").write_bytes(b"other bytes")
    from featx.errors import FeatxError

    with pytest.raises(FeatxError, match="are not the ones"):
        Extractor.from_meta(meta)


def test_small_maps_use_the_exact_tsne(monkeypatch):
    """90 points took 46 s with Barnes-Hut's threads on the loaded box; exact: 2.4 s, same KL."""
    import numpy as np
    import sklearn.manifold

    from featx.maps import EXACT_UP_TO, embed_2d

    made = []
    real = sklearn.manifold.TSNE

    def spy(**kw):
        made.append(kw)
        return real(**{**kw, "max_iter": 250})

    monkeypatch.setattr(sklearn.manifold, "TSNE", spy)
    x = np.random.default_rng(0).normal(size=(90, 64)).astype(np.float32)
    coords = embed_2d(x)
    assert coords.shape == (90, 2) and np.isfinite(coords).all()
    assert made[-1]["method"] == "exact" and made[-1]["n_jobs"] == 1 and 90 <= EXACT_UP_TO


def _linked_copy(tiny_store, tmp_path):
    """A folder of symlinks to the tiny store's images, and a copy of the store for it."""
    import shutil

    from featx.store import read_meta

    data = Path(read_meta(tiny_store)["data_dir"])
    folder = tmp_path / "data"
    for f in sorted(data.rglob("*.jpg")):
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / f.parent.name / f.name).symlink_to(f)
    shutil.copyfile(tiny_store, tmp_path / "s.h5")
    return folder, tmp_path / "s.h5"


def test_adding_one_image_runs_the_model_on_one_image(tiny_store, tmp_path, monkeypatch):
    """It ran a warm-up batch of 32 and then the one image padded to 32 (BENCHMARKS.md)."""
    from featx.extract import extract
    from tests.conftest import TINY, make_images

    folder, store = _linked_copy(tiny_store, tmp_path)
    make_images(tmp_path / "new", {"circle": 1}, seed=5)
    (tmp_path / "new" / "circle" / "circle_000.jpg").rename(folder / "circle" / "new.jpg")
    calls = []
    real = Extractor.embed_preprocessed

    def spy(self, x, batch_size=None):
        calls.append((len(x), batch_size))
        return real(self, x, batch_size)

    monkeypatch.setattr(Extractor, "embed_preprocessed", spy)
    report = extract(folder, store, ExtractorSettings(**TINY), batch_size=32)
    assert report.n_embedded == 1 and report.n_images == 31
    assert calls == [(1, 1)]


def test_a_rename_is_counted_as_a_rename(tiny_store, tmp_path, capsys):
    from tests.conftest import TINY_ARGS, run_cli

    folder, store = _linked_copy(tiny_store, tmp_path)
    (folder / "circle" / "circle_001.jpg").rename(folder / "circle" / "renamed.jpg")
    (folder / "star" / "star_002.jpg").rename(folder / "square" / "moved.jpg")  # and relabelled
    (folder / "star" / "star_003.jpg").unlink()
    code, out, err = run_cli(capsys, "extract", folder, "-o", store, *TINY_ARGS, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["n_renamed"], d["n_removed"], d["n_embedded"]) == (2, 1, 0)
    (folder / "circle" / "renamed.jpg").rename(folder / "circle" / "again.jpg")
    code, out, err = run_cli(capsys, "extract", folder, "-o", store, *TINY_ARGS)
    assert "; 1 renamed or moved since the last run" in out and "removed)" not in out


@pytest.mark.parametrize("args, message", [
    (["finetune", "absent.h5", "--tune", "5"], "--tune is at most 3"),
    (["baseline", ".", "-o", "/sys/featx-bundle"], "cannot write the model bundle /sys/featx-bundle"),
])
def test_slow_commands_refuse_before_importing_tensorflow(args, message, tmp_path):
    import subprocess
    import sys

    if args[0] == "baseline" and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here (a folder even root cannot create in)")
    code = ("import sys\nfrom featx.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print(e.code, 'tensorflow' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert res.stdout == "2 False\n", res.stderr
    assert message in res.stderr and res.stderr.count("\n") == 1


def test_augment_flip_on_an_existing_store_adds_the_mirrors_to_it(tiny_store, tmp_path,
                                                                  monkeypatch):
    """Without -o, --augment flip used to start a second, _flip store from scratch."""
    from featx.extract import extract
    from featx.store import load_features
    from tests.conftest import TINY

    folder, _ = _linked_copy(tiny_store, tmp_path)
    monkeypatch.chdir(tmp_path)
    first = extract(folder, None, ExtractorSettings(**TINY))
    assert first.out == Path("features/data_vgg16_block5_pool_avg_32.h5") and first.n_embedded == 30
    again = extract(folder, None, ExtractorSettings(**TINY, augment="flip"))
    assert again.out == first.out and again.n_embedded == 0 and again.n_mirrored == 30
    assert load_features(first.out).flipped.shape == (30, 512)
    assert sorted(p.name for p in Path("features").iterdir()) == [first.out.name]


def test_json_keeps_progress_on_stderr_and_quiet_silences_it(tiny_store, tmp_path, capsys,
                                                              monkeypatch):
    from tests.conftest import TINY_ARGS, run_cli

    monkeypatch.setenv("FEATX_PROGRESS_SECONDS", "0")  # a line at every step, not every 5 s
    folder, store = _linked_copy(tiny_store, tmp_path)
    code, out, err = run_cli(capsys, "extract", folder, "-o", tmp_path / "new.h5", *TINY_ARGS,
                             "--json")
    assert code == 0 and json.loads(out)["n_embedded"] == 30
    assert "embed: 30/30 (100%)" in err and "hash: 30/30" in err
    for args in (["--quiet", "duplicates", store, "--json"], ["duplicates", store, "--quiet"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0 and err == "", err
    code, out, err = run_cli(capsys, "duplicates", store, "--json")
    assert "pairs: 30/30 (100%)" in err and json.loads(out)["n"] == 30


def _drawn(monkeypatch):
    """Figures drawn by featx.figures, kept instead of closed when saved."""
    import featx.figures as figures

    kept = []
    real = figures.save

    def keep(fig, out, **kw):
        kept.append(fig)  # its axes stay readable after saving
        return real(fig, out, **kw)

    monkeypatch.setattr(figures, "save", keep)
    return kept


def test_one_epoch_curves_have_integer_ticks_and_the_sweep_axis_stops_at_one(tmp_path,
                                                                            monkeypatch):
    from types import SimpleNamespace

    from featx.figures import plot_curves, plot_sweep

    kept = _drawn(monkeypatch)
    entry = SimpleNamespace(name="b", label="softmax", kind="features", clf="softmax",
                            history={"loss": [0.5], "val_loss": [0.4], "accuracy": [0.9],
                                     "val_accuracy": [0.95]})
    plot_curves([entry], tmp_path / "c.png", "one epoch")
    for ax in kept[-1].axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    rows = [{"clf": "logreg", "label": f"C={c}", "val_accuracy": v}
            for c, v in ((1, 1.0), (10, 0.99), (100, 0.98))]
    plot_sweep(rows, tmp_path / "s.png", "sweep")
    assert kept[-1].axes[0].get_xlim()[1] <= 1.0


def test_sheet_cells_are_framed_so_a_white_image_shows(tmp_path, monkeypatch):
    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle
    from PIL import Image

    from featx.figures import Cell, draw_cells

    kept = _drawn(monkeypatch)
    Image.new("RGB", (60, 40), "white").save(tmp_path / "white.png")
    draw_cells([Cell(tmp_path / "white.png", "outlier 1")], tmp_path / "sheet.png", "outliers")
    cell = next(ax for ax in kept[-1].axes if ax.images)
    frames = [p for p in cell.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert frames and np.mean(to_rgb(frames[0].get_edgecolor())) < 0.9
    assert (frames[0].get_width(), frames[0].get_height()) == cell.images[0].get_array().shape[1::-1]
