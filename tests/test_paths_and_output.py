"""Small fixes found by trying every command as a new user would (issue 28): paths recorded
resolved, progress and --json/--quiet, import-time quiet, slow refusals."""

from __future__ import annotations

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
