"""Every pass that opens images, over a generated corpus of odd files: each bad file is skipped
with its reason (or, where one file is the whole input, refused with a FeatxError naming it), and
no pass raises anything else or blocks (a FIFO named like an image)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY, bad_image_corpus, make_images, simulate_unreadable
from featx.errors import FeatxError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(data folder, bad name -> reason fragment, good names, store, bundle), unreadable simulated."""
    from featx.embed import ExtractorSettings
    from featx.extract import extract
    from featx.fit import fit_store

    base = tmp_path_factory.mktemp("bad")
    data = base / "data"
    bad, good = bad_image_corpus(data / "odd")
    make_images(data, {"plain": 10})
    with pytest.MonkeyPatch.context() as mp:
        simulate_unreadable(mp)
        report = extract(data, base / "s.h5", ExtractorSettings(**TINY), batch_size=8)
        bundle = fit_store(report.out, "logreg", C=1.0, scale="none", out=base / "bundle").bundle
        yield data, bad, good, report, bundle


def _by_name(pairs) -> dict[str, str]:
    return {Path(p).name: r for p, r in pairs}


def _check_reasons(bad: dict[str, str], got: dict[str, str]) -> None:
    for name, fragment in bad.items():
        assert name in got, f"{name} not reported"
        assert fragment in got[name], (name, got[name])


def test_extract_skips_each_bad_file_with_its_reason(corpus):
    data, bad, good, report, _ = corpus
    _check_reasons(bad, _by_name(report.skipped))
    from featx.store import load_features

    stored = {Path(p).name for p in load_features(report.out).paths}
    assert set(good) <= stored and not stored & set(bad)
    assert "folder.jpg" not in stored


def test_size_hint_scan_and_baseline_rows_skip_bad_files(corpus, monkeypatch):
    from featx import reader
    from featx.baseline import images_from_folder

    data, bad, good, _, _ = corpus
    simulate_unreadable(monkeypatch)
    files = [p for p in (data / "odd").iterdir()]  # the FIFO and the folder named x.jpg included
    assert reader.typical_size(files) == (32, 24)  # the good files' size; bad ones left out
    scan = reader.scan(data)
    failed = reader.decode_failures(scan)
    _check_reasons(bad, _by_name((p, r) for p, r, _ in scan.skipped(failed)))
    images = images_from_folder(data)
    _check_reasons(bad, _by_name(images.skipped))


def test_decode_and_thumbnails_never_raise(corpus, monkeypatch):
    from featx.decode import DecodeError, DecodeSettings, decode_file
    from featx.figures import Cell, draw_cells
    from featx.thumbs import thumbnail

    data, bad, good, _, _ = corpus
    simulate_unreadable(monkeypatch)
    for name, fragment in {**bad, "folder.jpg": "a folder"}.items():
        with pytest.raises(DecodeError, match=fragment):
            decode_file(data / "odd" / name, DecodeSettings(size=32))
        assert thumbnail(data / "odd" / name, 40).size == (40, 40)  # the grey placeholder
    for name in good:
        assert decode_file(data / "odd" / name, DecodeSettings(size=32)).shape == (32, 32, 3)
        assert thumbnail(data / "odd" / name, 16).size in ((16, 12), (12, 16))  # not the placeholder
    cells = [Cell(data / "odd" / n, n) for n in [*bad, *good, "folder.jpg"]]
    assert draw_cells(cells, data.parent / "sheet.png", "odd files").stat().st_size > 0


def test_predict_reports_each_bad_file_and_predicts_the_rest(corpus, monkeypatch):
    from featx.predict import predict

    data, bad, good, _, bundle = corpus
    simulate_unreadable(monkeypatch)
    explicit = [data / "odd" / n for n in bad]
    for inputs in ([data / "odd"], explicit):
        report = predict(bundle, inputs)
        _check_reasons({n: f for n, f in bad.items()}, _by_name(report.errors))
        if inputs != explicit:
            assert {Path(p.path).name for p in report.predictions} == set(good)


def test_neighbour_queries_and_the_transformer_refuse_a_bad_file_by_name(corpus, monkeypatch):
    from featx.neighbors import find_neighbors
    from featx.transformer import EmbeddingTransformer

    data, bad, good, report, _ = corpus
    simulate_unreadable(monkeypatch)
    embed = EmbeddingTransformer.like_store(report.out, cache=data.parent / "cache.h5")
    for name in [*bad, "folder.jpg"]:
        path = str(data / "odd" / name)
        with pytest.raises(FeatxError, match="odd"):
            find_neighbors(report.out, [path], k=2)
        with pytest.raises(FeatxError, match="odd"):
            embed.transform([path])
    assert embed.transform([str(data / "odd" / good[0])]).shape == (1, 512)
