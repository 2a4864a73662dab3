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


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory):
    """A plain photo collection (no class subfolders) extracted with the tiny VGG16: (store, err)."""
    from tests.conftest import make_images

    base = tmp_path_factory.mktemp("flat")
    make_images(base / "gen", {"a": 6, "b": 6})
    photos = base / "photos"
    photos.mkdir()
    for f in sorted((base / "gen").rglob("*.jpg")):
        f.rename(photos / f.name)
    (photos / "notes.txt").write_text("not an image")
    return base, photos


def test_a_folder_without_class_subfolders_makes_an_unlabelled_store(flat_store, capsys):
    from featx.discover import UNLABELLED
    from featx.store import load_features
    from tests.conftest import TINY_ARGS

    base, photos = flat_store
    store = base / "flat.h5"
    code, out, err = run_cli(capsys, "extract", photos, "-o", store, *TINY_ARGS)
    assert code == 0, err
    assert err.count("no class subfolders: an unlabelled store of its 12 images") == 1
    feats = load_features(store)
    assert feats.class_names == [UNLABELLED] and feats.n == 12 and set(feats.labels) == {0}
    first = feats.paths[0]
    for args in (["neighbors", store, first, "-k", "3"], ["map", store, "--method", "pca",
                  "-o", base / "map.png"], ["duplicates", store, "--threshold", "0.99"],
                 ["export", store, "-o", base / "flat.npz"]):
        code, out, err = run_cli(capsys, *args, "--json")
        assert code == 0, (args, err)
        json.loads(out)
    assert (base / "map.png").stat().st_size > 0 and (base / "flat.npz").stat().st_size > 0
    for command in ("fit", "audit"):
        code, out, err = run_cli(capsys, command, store)
        assert code == 2 and err.count("\n") == 1
        assert "is unlabelled (made from a folder without class subfolders)" in err
    code, _, err = run_cli(capsys, "baseline", photos, "--size", "64", "--epochs", "1")
    assert code == 2 and "holds images but no class subfolders" in err


@pytest.fixture(scope="module")
def tiny_bundle(tiny_store, tmp_path_factory) -> Path:
    from featx.fit import fit_store

    return fit_store(tiny_store, "logreg", C=1.0, scale="none",
                     out=tmp_path_factory.mktemp("tb") / "bundle").bundle


def test_predict_writes_a_csv_and_sorts_into_class_folders(tiny_store, tiny_bundle, tmp_path,
                                                           capsys):
    import csv

    from featx.store import read_meta

    data = Path(read_meta(tiny_store)["data_dir"])
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted(data.rglob("*.jpg"))[::3]:
        (photos / f.name).write_bytes(f.read_bytes())
    (photos / "broken.jpg").write_bytes(b"no image")
    dest = tmp_path / "sorted"
    (dest / "circle").mkdir(parents=True)
    mine = dest / "circle" / "circle_000.jpg"
    mine.write_bytes(b"the user's own file")  # a name taken: must not be overwritten
    before = {f.name: f.read_bytes() for f in photos.iterdir()}
    code, out, err = run_cli(capsys, "predict", tiny_bundle, photos, "--csv", tmp_path / "p.csv",
                             "--sort-into", dest, "--json")
    assert code == 3 and "broken.jpg" in err
    result = json.loads(out)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    by_path = {r["path"]: r for r in rows}
    for p in result["predictions"]:
        row = by_path[p["path"]]
        assert row["label"] == p["label"] and float(row["probability"]) == p["top_k"][0]["probability"]
        assert row["unfamiliar"] == str(p["unfamiliar"]).lower()
        assert float(row[p["label"]]) == p["probabilities"][p["label"]]
    assert by_path[str(photos / "broken.jpg")]["error"] and not by_path[str(photos / "broken.jpg")]["label"]
    placed = {t: s for s, t in ((d["path"], d["to"]) for d in result["sorted"]["placed"])}
    assert len(placed) == len(result["predictions"])
    for target, source in placed.items():
        target = Path(target)
        assert target.is_symlink() and target.resolve() == Path(source).resolve()
        pred = next(p for p in result["predictions"] if p["path"] == source)
        assert target.parent.name == ("unfamiliar" if pred["unfamiliar"] else pred["label"])
    assert mine.read_bytes() == b"the user's own file"
    assert {f.name: f.read_bytes() for f in photos.iterdir()} == before  # nothing moved
    code, out, _ = run_cli(capsys, "predict", tiny_bundle, photos, "--sort-into", dest)
    assert "0 links; 10 already there" in out  # a rerun adds nothing
    code, out, _ = run_cli(capsys, "predict", tiny_bundle, photos, "--sort-into",
                           tmp_path / "copies", "--copy", "--json")
    copies = [Path(d["to"]) for d in json.loads(out)["sorted"]["placed"]]
    assert copies and all(c.is_file() and not c.is_symlink() for c in copies)
    code, out, _ = run_cli(capsys, "predict", tiny_bundle, photos, "--sort-into",
                           tmp_path / "odd", "--unfamiliar-at", "-1e9", "--json")
    assert {Path(d["to"]).parent.name for d in json.loads(out)["sorted"]["placed"]} == {"unfamiliar"}
    code, _, err = run_cli(capsys, "predict", tiny_bundle, photos, "--sort-into", photos / "in")
    assert code == 2 and "is inside the input folder" in err and not (photos / "in").exists()
    code, _, err = run_cli(capsys, "predict", tiny_bundle, photos, "--copy")
    assert code == 2 and "--copy applies to --sort-into only" in err


def test_evaluate_scores_a_bundle_on_a_new_folder_reusing_stored_vectors(
        tiny_store, tiny_bundle, tmp_path, capsys):
    import math

    from featx.predict import predict
    from featx.store import read_meta
    from tests.conftest import make_images

    data = Path(read_meta(tiny_store)["data_dir"])
    new = make_images(tmp_path / "new", {"circle": 3, "square": 3}, seed=7)
    reused = 0
    for f in sorted(data.rglob("*.jpg"))[::4]:  # known content, under new names
        (new / f.parent.name).mkdir(exist_ok=True)
        (new / f.parent.name / f"copy_{f.name}").write_bytes(f.read_bytes())
        reused += 1
    (new / "circle" / "broken.jpg").write_bytes(b"")
    code, out, err = run_cli(capsys, "evaluate", tiny_bundle, new, "-o", tmp_path / "ev", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n"] == reused + 6 and d["n_reused"] == reused and d["n_embedded"] == 6
    assert [s["path"] for s in d["skipped"]] == ["circle/broken.jpg"]
    truth = {f"{p.parent.name}/{p.name}": p.parent.name for p in new.rglob("*.jpg")}
    preds = predict(tiny_bundle, [new]).predictions  # embeds every file afresh
    got = {str(Path(p.path).relative_to(new)): p.label for p in preds}
    correct = sum(got[p] == truth[p] for p in got)
    assert d["accuracy"] == pytest.approx(correct / d["n"])
    assert sum(map(sum, d["confusion"])) == d["n"]
    n, phat, z = d["n"], correct / d["n"], 1.959964
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert d["accuracy_interval"] == pytest.approx([centre - half, centre + half], abs=1e-4)
    assert len(d["mistakes"]) == min(12, d["n"] - correct)
    assert all(got[m["path"]] == m["predicted"] != m["label"] for m in d["mistakes"])
    assert Path(d["files"]["mistakes"]).stat().st_size > 0
    (new / "triangle").mkdir()
    (new / "circle" / "circle_000.jpg").rename(new / "triangle" / "t.jpg")
    code, _, err = run_cli(capsys, "evaluate", tiny_bundle, new)
    assert code == 2 and "['triangle']" in err and "are not classes of the bundle" in err


def test_duplicates_text_lists_pairs_outside_groups(tmp_path, capsys):
    """A~B and B~C but not A~C: the group is two of them; the third pair is listed too."""
    import numpy as np

    from featx.store import Features, save_features
    from tests.conftest import META

    angles = np.radians([0, 16, 32])  # cos 16 deg = 0.961, cos 32 deg = 0.848
    X = np.zeros((8, 8), np.float32)
    X[:3, 0], X[:3, 1] = np.cos(angles), np.sin(angles)
    X[3:, 2:7] = np.eye(5)  # far from everything
    paths = [f"c{k % 2}/{i}.jpg" for i, k in enumerate(range(8))]
    save_features(tmp_path / "s.h5", Features(X, np.arange(8) % 2, paths,
                                              np.array([f"{i:064x}" for i in range(8)]),
                                              ["c0", "c1"], dict(META)))
    code, out, err = run_cli(capsys, "duplicates", tmp_path / "s.h5", "--threshold", "0.95",
                             "--json")
    d = json.loads(out)
    assert len(d["pairs"]) == 2 and len(d["groups"]) == 1
    code, out, err = run_cli(capsys, "duplicates", tmp_path / "s.h5", "--threshold", "0.95")
    assert code == 0, err
    in_group = {m["path"] for m in d["groups"][0]["members"]}
    loose = [p for p in d["pairs"] if {p["a"]["path"], p["b"]["path"]} != in_group]
    assert len(loose) == 1 and "1 pairs outside any one group" in out
    line = next(ln for ln in out.splitlines() if "~" in ln)
    assert loose[0]["a"]["path"] in line and loose[0]["b"]["path"] in line
    assert f"{loose[0]['similarity']:.3f}" in line


def test_a_cv_bundle_says_it_was_refitted_on_train_and_val(tmp_path, capsys):
    from types import SimpleNamespace

    from featx.report import _table

    store = synthetic_store(tmp_path / "s.h5", counts=(30, 30), dim=8)
    code, _, err = run_cli(capsys, "sweep", store, "--clf", "logreg", "--C", "1,10", "--cv", "3",
                           "--bundle", tmp_path / "b", "-o", tmp_path / "sw", "--quiet")
    assert code == 0, err
    split = json.loads((tmp_path / "b" / "bundle.json").read_text())["split"]
    assert split["refit_on"] == "train+val" and split["n_fit"] == split["n_train"] + split["n_val"]
    code, out, _ = run_cli(capsys, "info", tmp_path / "b")
    assert (f"split: {split['n_fit']} train+val (refitted after 3-fold cross-validation) / "
            f"{split['n_test']} test") in out
    score = json.loads((tmp_path / "b" / "bundle.json").read_text())["selection"]["score"]
    row = {"model": "logreg", "name": "b", "val_accuracy": None, "test_accuracy": 1.0,
           "n_train": split["n_train"], "n_val": split["n_val"], "n_test": split["n_test"],
           "epochs": None, "fit_seconds": 0.1, "refit_on": "train+val", "cv": 3,
           "cv_score": score}
    head, body = _table(SimpleNamespace(table=[row]))
    cells = dict(zip(head, body[0]))
    assert cells["val accuracy"] == f"{score:.4f} (3-fold CV)"
    assert cells["train / val / test"] == f"{split['n_fit']} (train+val) / - / {split['n_test']}"
