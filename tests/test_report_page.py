"""The report page as a reader sees it: HTML without raw Markdown, honest titles and axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featx import figures
from featx.fit import fit_store
from featx.report import make_report
from featx.sweep import run_sweep
from tests.conftest import synthetic_store


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A synthetic store (no images: grey thumbnails), a logreg bundle and a 3-point sweep."""
    base = tmp_path_factory.mktemp("page")
    store = synthetic_store(base / "s.h5", counts=(20, 20), dim=8)
    fit_store(store, "logreg", out=base / "logreg")
    run_sweep(store, ["logreg"], {"C": [0.01, 0.1, 1.0]}, n_jobs=1, backend="threading",
              out_dir=base / "sweep")
    return base, store


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Every figure featx saves, kept open for inspection."""
    figs: list = []
    save = figures.save

    def keep(fig, out, dpi=110):
        figs.append(fig)
        return save(fig, out, dpi)

    monkeypatch.setattr(figures, "save", keep)
    return figs


def test_html_renders_markdown_and_no_history_means_no_curves(workspace):
    base, store = workspace
    r = make_report(store, base / "r1", bundles=[base / "logreg"], sweep=base / "sweep/results.json")
    page = Path(r.files["html"]).read_text()
    assert "`" not in page and "**" not in page
    assert f"<code>{store}</code>" in page and "<b>logreg</b>" in page
    assert "`" in Path(r.files["markdown"]).read_text()  # the Markdown page stays Markdown
    assert "curves" not in r.files and not (base / "r1" / "curves.png").exists()
    assert any("no learning curves" in n for n in r.notes)


def test_curves_title_names_what_is_drawn(workspace, drawn):
    base, store = workspace
    fit_store(store, "softmax", out=base / "softmax", epochs=3)
    make_report(store, base / "r2", bundles=[base / "logreg", base / "softmax"])
    titles = [f.get_suptitle() for f in drawn if "per epoch" in f.get_suptitle()]
    assert titles == ["s: transfer learning (softmax head), per epoch"]  # no CNN: not "vs"


def test_sweep_points_are_dots_not_bars_cut_off_at_the_axis(drawn, tmp_path):
    rows = [{"clf": "logreg", "C": c, "val_accuracy": v}
            for c, v in ((0.01, 0.90), (0.1, 0.95), (1.0, 0.93))]
    figures.plot_sweep(rows, tmp_path / "sweep.png", "sweep")
    ax = drawn[0].axes[0]
    assert not ax.patches  # no bars
    xs = np.concatenate([line.get_xdata() for line in ax.lines])
    assert sorted(xs.tolist()) == [0.90, 0.93, 0.95]
    assert ax.get_xlim()[0] < 0.90
