"""featx report: figures and page, with numbers checked against the bundles' stored histories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.bundle import load_bundle
from featx.cli import main
from featx.fit import load_split
from featx.errors import FeatxError
from featx.report import make_report, sample_rows, worst_mistakes
from featx.store import load_features
from tests.conftest import TINY, make_images, needs_shared


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny data set with its store, a softmax bundle, a logreg bundle, a baseline and a sweep."""
    from featx.embed import ExtractorSettings
    from featx.extract import extract

    base = tmp_path_factory.mktemp("rep")
    data = make_images(base / "data", {"circle": 10, "square": 10, "star": 10}, size=(64, 64))
    store = extract(data, base / "data.h5", ExtractorSettings(**TINY), batch_size=16).out
    models = base / "models"
    runs = [["fit", str(store), "--clf", "softmax", "--epochs", "6", "--patience", "10",
             "-o", str(models / "data_softmax")],
            ["fit", str(store), "--clf", "logreg", "-o", str(models / "data_logreg")],
            ["baseline", str(data), "--store", str(store), "--size", "48", "--epochs", "3",
             "--batch-size", "8", "-o", str(models / "data_cnn")],
            ["sweep", str(store), "--clf", "logreg", "--C", "0.1,1", "--jobs", "1",
             "--backend", "threading", "-o", str(base / "sweep")]]
    for args in runs:
        with pytest.raises(SystemExit) as e:
            main(args + ["--json"])
        assert e.value.code == 0, args
    return {"base": base, "data": data, "store": store, "models": models,
            "sweep": base / "sweep" / "results.json"}


@pytest.fixture(scope="module")
def report(workspace):
    return make_report(workspace["store"], workspace["base"] / "report", models=workspace["models"],
                       sweep=workspace["sweep"], per_class=4, n_mistakes=6)


def _bundle(workspace, name) -> dict:
    return json.loads((workspace["models"] / name / "bundle.json").read_text())


def test_curves_are_drawn_for_the_models_with_a_history(report):
    assert set(report.curves) == {"data_cnn", "data_softmax"}  # logreg: no per-epoch history
    assert len(report.curves["data_cnn"]["val_loss"]) == 3  # the baseline's 3 epochs


def test_table_is_every_bundle_with_its_stored_metrics(workspace, report):
    rows = {r["name"]: r for r in report.table}
    assert set(rows) == {"data_cnn", "data_softmax", "data_logreg"}
    assert report.table[0]["name"] == "data_cnn"  # the baseline heads the table
    split = load_split(workspace["store"])
    for name, row in rows.items():  # each number recomputed from the saved model's predictions
        if name == "data_cnn":
            preds = json.loads((workspace["models"] / name / "test_predictions.json").read_text())
            correct = np.argmax(preds["proba"], axis=1) == np.array(preds["labels"])
        else:
            head = load_bundle(workspace["models"] / name).head
            correct = head.predict(split.X("test")) == split.y("test")
            assert row["val_accuracy"] == np.mean(head.predict(split.X("val")) == split.y("val"))
        assert row["test_accuracy"] == pytest.approx(np.mean(correct), abs=1e-12)
    # one split for all: the baseline (streamed images) and the heads (cached vectors)
    assert len({(r["n_train"], r["n_val"], r["n_test"]) for r in report.table}) == 1
    assert not [n for n in report.notes if "split" in n]
    md = Path(report.files["markdown"]).read_text()
    for row in report.table:
        assert f"| {row['test_accuracy']:.4f} |" in md


def test_confusion_of_the_chosen_matches_its_stored_test_metrics(workspace, report):
    assert report.chosen["name"] == "data_softmax"  # the default
    test = _bundle(workspace, "data_softmax")["metrics"]["test"]
    assert report.chosen["confusion"] == test["confusion"]
    assert report.chosen["test_accuracy"] == pytest.approx(test["accuracy"])
    assert not [n for n in report.notes if "differs" in n]


def test_figures_and_pages_are_written(report):
    for key in ("curves", "confusion", "samples", "mistakes", "sweep", "unfamiliar"):
        with Image.open(report.files[key]) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200, key
    page = Path(report.files["html"]).read_text()
    assert page.count("data:image/png;base64,") == 6  # self-contained
    assert "scratch CNN" in page and "softmax head" in page
    saved = json.loads(Path(report.files["json"]).read_text())
    assert saved["table"] == report.table


def test_baseline_as_chosen_and_the_cli(workspace, capsys):
    out_dir = workspace["base"] / "report-cnn"
    with pytest.raises(SystemExit) as e:
        main(["report", str(workspace["store"]), "--models", str(workspace["models"]),
              "--clf", "cnn", "-o", str(out_dir), "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    cnn = _bundle(workspace, "data_cnn")
    assert doc["chosen"]["name"] == "data_cnn"
    assert doc["chosen"]["confusion"] == cnn["metrics"]["test"]["confusion"]
    assert "sweep" not in doc["files"]  # no sweep results next to this store
    assert (out_dir / "mistakes.png").is_file()


def test_report_scores_a_bundle_on_the_rows_it_was_scored_on(workspace, tmp_path):
    """A bundle fitted with --exclude-from-test was scored on fewer test rows: the report's
    confusion matrix is over those rows, not the bare derivation's."""
    plain = load_split(workspace["store"])
    dropped = [plain.feats.paths[i] for i in plain.rows["test"][:2]]
    listing = tmp_path / "drop.txt"
    listing.write_text("\n".join(dropped) + "\n")
    bundle = tmp_path / "models" / "excl"
    with pytest.raises(SystemExit) as e:
        main(["fit", str(workspace["store"]), "--clf", "logreg", "--C", "1", "--scale", "l2",
              "--exclude", str(listing), "--exclude-from-test", "-o", str(bundle), "--json"])
    assert e.value.code == 0
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["split"]["n_test"] == plain.n("test") - 2
    report = make_report(workspace["store"], tmp_path / "r", bundles=[bundle])
    assert report.chosen["n_test"] == plain.n("test") - 2
    assert report.chosen["confusion"] == info["metrics"]["test"]["confusion"]


def test_no_bundles_is_a_clear_error(workspace, tmp_path):
    with pytest.raises(FeatxError, match="no model bundle"):
        make_report(workspace["store"], tmp_path / "r", models=tmp_path / "none")
    with pytest.raises(FeatxError, match="matches clf='svm'") as e:  # the library names parameters
        make_report(workspace["store"], tmp_path / "r", models=workspace["models"], clf="svm")
    assert e.value.params == ["clf"]


def test_helpers(workspace):
    feats = load_features(workspace["store"])
    picks = sample_rows(feats.paths, feats.labels, 3, 4)
    assert [len(p) for p in picks] == [4, 4, 4]
    assert all(feats.labels[i] == k for k, rows in enumerate(picks) for i in rows)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    assert worst_mistakes(np.array([1, 1, 1, 0]), proba, 5) == [0, 2, 3]


@needs_shared
def test_real_pets_baseline_and_softmax_report(pets_store: Path, tmp_path: Path):
    """On 300 real pets-dev photos: baseline (48 px, 2 epochs) and softmax head on one split, and
    the report's curves and table are the stored histories and metrics."""
    from featx.store import read_meta

    data = read_meta(pets_store)["data_dir"]
    models = tmp_path / "models"
    for args in (["baseline", data, "--store", str(pets_store), "--size", "48", "--epochs", "2",
                  "-o", str(models / "cnn")],
                 ["fit", str(pets_store), "--clf", "softmax", "-o", str(models / "softmax")]):
        with pytest.raises(SystemExit) as e:
            main(args + ["--json"])
        assert e.value.code == 0, args
    report = make_report(pets_store, tmp_path / "report", models=models)
    cnn = json.loads((models / "cnn" / "bundle.json").read_text())
    softmax = json.loads((models / "softmax" / "bundle.json").read_text())
    assert set(report.curves) == {"cnn", "softmax"}
    rows = {r["name"]: r for r in report.table}
    assert rows["cnn"]["test_accuracy"] == cnn["metrics"]["test"]["accuracy"]
    assert rows["softmax"]["test_accuracy"] == softmax["metrics"]["test"]["accuracy"]
    assert cnn["split"]["n_test"] == softmax["split"]["n_test"] == 44
    assert rows["softmax"]["test_accuracy"] > 0.85  # VGG16 vectors separate cats from dogs
