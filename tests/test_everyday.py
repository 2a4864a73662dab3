"""The everyday commands a new user reaches for (issue 28): info on a bundle, evaluate on a new
labelled folder, predict to a CSV or sorted into folders, unlabelled photo collections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, synthetic_store


@pytest.fixture(scope="module")
def syn_bundle(tmp_path_factory) -> Path:
    from featx.fit import fit_store

    base = tmp_path_factory.mktemp("syn")
    store = synthetic_store(base / "syn.h5")
    return fit_store(store, "logreg", C=1.0, scale="none", out=base / "bundle").bundle


def test_info_describes_a_bundle(syn_bundle: Path, capsys):
    code, out, err = run_cli(capsys, "info", syn_bundle)
    assert code == 0, err
    assert "a features bundle, logreg" in out and "class0, class1, class2" in out
    info = json.loads((syn_bundle / "bundle.json").read_text())
    split = info["split"]
    assert f"{split['n_train']}/{split['n_val']}/{split['n_test']}" in out
    assert f"test accuracy {info['metrics']['test']['accuracy']:.4f}" in out
    code, out, _ = run_cli(capsys, "info", syn_bundle, "--json")
    d = json.loads(out)
    assert d["kind"] == "features" and d["class_names"] == info["class_names"]
    assert d["files"]["bundle.json"] == (syn_bundle / "bundle.json").stat().st_size
