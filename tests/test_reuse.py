"""Reusing a store: neighbors, map, duplicates, export, and the EmbeddingTransformer.

Mechanics run on a generated store (``synthetic``: Gaussian blobs written with ``save_features``,
no model). Real properties run on real VGG16 features of flowers5 photos (the ``flowers_store``
fixture, marked ``shared``); the planted-duplicate store reuses that store's vectors through
``featx extract``'s content cache, so only the one re-encoded image costs model time.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx import load_features
from featx.errors import FeatxError
from featx.neighbors import find_neighbors, normalize, topk_cosine
from tests.conftest import FLOWERS, SHARED_WEIGHTS, needs_shared, subset, synthetic_store

real = pytest.mark.shared


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """200 vectors in 4 classes of 50 (rows 0 and 1 are exact duplicates), paths that do not exist."""
    return synthetic_store(tmp_path / "syn.h5", counts=(50, 50, 50, 50), dim=24)


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from featx.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# --- neighbors ---------------------------------------------------------------------------


def test_chunked_topk_equals_brute_force():
    rng = np.random.default_rng(0)
    base, queries = rng.normal(size=(1000, 64)), rng.normal(size=(7, 64))
    blocks = [(s, base[s:s + 128]) for s in range(0, 1000, 128)]  # 8 blocks, last one short
    rows, sims = topk_cosine(queries, blocks, k=10)
    full = normalize(queries) @ normalize(base).T
    expect = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(rows, expect)
    np.testing.assert_allclose(sims, np.take_along_axis(full, expect, 1), rtol=1e-5)


@needs_shared
@real
def test_every_stored_image_is_its_own_nearest_neighbour(flowers_store: Path):
    feats = load_features(flowers_store)
    results = find_neighbors(flowers_store, feats.paths, k=5, chunk_rows=64)  # 4 chunks
    for path, res in zip(feats.paths, results):
        assert res.source == "stored"
        top = res.neighbors[0]
        assert top.path == path and abs(top.similarity - 1.0) < 1e-5
        assert all(n.similarity < 1.0 - 1e-4 for n in res.neighbors[1:])  # no duplicates here
        sims = [n.similarity for n in res.neighbors]
        assert sims == sorted(sims, reverse=True)
    # neighbours carry class information: most nearest (non-self) neighbours share the class
    agree = np.mean([r.neighbors[1].label == r.label for r in results])
    assert agree > 0.5  # chance is 0.2 with five balanced classes


@needs_shared
@real
def test_new_image_file_is_embedded_with_the_store_settings(flowers_store: Path, tmp_path: Path):
    feats = load_features(flowers_store)
    src = Path(feats.meta["data_dir"]) / feats.paths[7]
    mirrored = tmp_path / "mirrored.png"  # new content: not in the store
    Image.open(src).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    copy = tmp_path / "copy.jpg"  # same bytes as a stored file, outside the data folder
    shutil.copy(src, copy)
    queries = [str(mirrored), str(copy), str(src)]
    res_new, res_copy, res_abs = find_neighbors(flowers_store, queries, k=3)
    assert res_new.source == "file" and res_new.label is None
    assert res_new.neighbors[0].path == feats.paths[7] and res_new.neighbors[0].similarity > 0.85
    assert res_copy.source == "file" and res_copy.neighbors[0].path == feats.paths[7]
    assert res_copy.neighbors[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert res_abs.source == "stored" and res_abs.label == feats.class_names[feats.labels[7]]


def test_cli_neighbors_json_grid_and_misuse(store: Path, tmp_path: Path):
    # stored queries only: no model, and no image files (the grid shows grey placeholders)
    feats = load_features(store)
    grid = tmp_path / "nn.png"
    proc = _cli("neighbors", str(store), feats.paths[0], feats.paths[100], "-k", "4",
                "--grid", str(grid), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [q["neighbors"][0]["path"] for q in doc["queries"]] == [feats.paths[0], feats.paths[100]]
    assert all(len(q["neighbors"]) == 4 for q in doc["queries"])
    w, h = _png_size(grid)
    assert w > h > 200  # two rows of five images
    for args, message in [
        (["nope/missing.jpg"], "neither a path stored"),
        ([feats.paths[0], "-k", "0"], "-k must be at least 1"),
    ]:
        proc = _cli("neighbors", str(store), *args)
        assert proc.returncode == 2 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("neighbors", str(grid), feats.paths[0])
    assert proc.returncode == 2 and "not an HDF5 file" in proc.stderr


# --- duplicates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_store(flowers_store: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The flowers store's folder plus an exact copy of a daisy under rose and a re-encoded tulip
    under sunflower, extracted for real (reusing the stored vectors for known content)."""
    from featx.embed import ExtractorSettings
    from featx.extract import extract

    base = tmp_path_factory.mktemp("planted")
    data = subset(FLOWERS, base / "data", 40)
    daisy = sorted((data / "daisy").iterdir())[3]
    tulip = sorted((data / "tulip").iterdir())[5]
    shutil.copyfile(daisy, data / "rose" / "planted_copy.jpg")
    Image.open(tulip).convert("RGB").save(data / "sunflower" / "planted_reencoded.jpg", quality=80)
    out = base / "planted.h5"
    shutil.copy(flowers_store, out)
    settings = ExtractorSettings(layer="block5_pool", pooling="avg", weights=str(SHARED_WEIGHTS),
                                 input_size=load_features(flowers_store).meta["input_size"])
    report = extract(data, out, settings, batch_size=16)
    assert report.n_images == 202 and report.n_embedded == 1  # only the re-encoded tulip
    planted = {"copy": ("daisy/" + daisy.name, "rose/planted_copy.jpg"),
               "near": ("sunflower/planted_reencoded.jpg", "tulip/" + tulip.name)}
    return out, planted


@needs_shared
@real
def test_planted_copies_are_reported_as_cross_label_duplicates(planted_store):
    from featx.near_duplicates import find_duplicates

    store, planted = planted_store
    report = find_duplicates(store, threshold=0.95)
    doc = report.as_dict()
    flagged = {(p["a"]["path"], p["b"]["path"]): p for p in doc["pairs"] if p["cross_label"]}
    exact = flagged[planted["copy"]]
    assert exact["kind"] == "exact" and exact["similarity"] == 1.0
    near = flagged[planted["near"]]
    assert near["kind"] == "near" and 0.95 <= near["similarity"] < 1.0
    assert set(flagged) == {planted["copy"], planted["near"]}
    assert doc["pairs"][0]["cross_label"] and doc["pairs"][1]["cross_label"]  # flagged first
    assert all(not p["cross_label"] for p in doc["pairs"][2:])
    assert doc["groups"][0]["cross_label"] and doc["groups"][1]["cross_label"]
    # the same-class near pairs of flowers5 (two daisy photos of one scene) are found too
    assert doc["n_near_pairs"] >= 2


@needs_shared
@real
def test_cli_duplicates_json_and_sheet(planted_store, tmp_path: Path):
    store, planted = planted_store
    sheet = tmp_path / "dups.png"
    proc = _cli("duplicates", str(store), "--json", "--sheet", str(sheet))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["n"] == 202 and doc["n_cross_label_pairs"] == 2 and doc["n_exact_pairs"] == 1
    assert _png_size(sheet)[0] > 600
    proc = _cli("duplicates", str(store), "--threshold", "1.5")
    assert proc.returncode == 2 and "--threshold" in proc.stderr


def test_too_low_a_threshold_is_refused_not_run_out_of_memory(store: Path):
    from featx.near_duplicates import find_duplicates

    with pytest.raises(FeatxError, match="raise threshold"):
        find_duplicates(store, threshold=0.1, max_pairs=1000)
    exact = find_duplicates(store, threshold=0.9999)  # the planted exact pair, nothing else
    assert [(p.a, p.b, p.kind) for p in exact.pairs] == [(0, 1, "exact")]


# --- map ---------------------------------------------------------------------------------


@needs_shared
@real
def test_cli_map_writes_one_row_per_image(flowers_store: Path, tmp_path: Path):
    feats = load_features(flowers_store)
    png, mosaic, coords = tmp_path / "map.png", tmp_path / "mosaic.png", tmp_path / "xy.csv"
    proc = _cli("map", str(flowers_store), "-o", str(png), "--mosaic", str(mosaic),
                "--coords", str(coords), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["n_points"] == doc["n_total"] == 200 and doc["method"] == "tsne"
    with open(coords) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == feats.paths  # one row per image, in store order
    assert [r["label"] for r in rows] == [feats.class_names[i] for i in feats.labels]
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert np.isfinite(xy).all() and len(np.unique(xy, axis=0)) == 200
    # t-SNE keeps neighbourhoods: an image's nearest 2-D neighbour usually shares its class
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(feats.labels[d.argmin(1)] == feats.labels) > 0.4  # chance is 0.2
    assert _png_size(png)[0] >= 800 and _png_size(mosaic)[0] >= 2000


def test_map_subsamples_to_max_points_and_saves_json(store: Path, tmp_path: Path):
    from featx.maps import make_map, save_coords

    m = make_map(store, method="pca", max_points=50, seed=3)
    assert m.coords.shape == (50, 2) and len(set(m.rows.tolist())) == 50 and m.n_total == 200
    doc = json.loads(save_coords(m, tmp_path / "xy.json").read_text())
    assert len(doc["points"]) == 50 and doc["n_total"] == 200
    assert np.array_equal(make_map(store, method="pca", max_points=50, seed=3).rows, m.rows)
    with pytest.raises(FeatxError, match="choose tsne or pca"):
        make_map(store, method="umap")


# --- export and the API ------------------------------------------------------------------


def test_export_npz_and_csv_round_trip(store: Path, tmp_path: Path):
    feats = load_features(store)
    proc = _cli("export", str(store), "--format", "npz", "-o", str(tmp_path / "f.npz"))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "f.npz") as z:  # no allow_pickle needed
        np.testing.assert_array_equal(z["features"], feats.features)
        np.testing.assert_array_equal(z["labels"], feats.labels)
        assert z["paths"].tolist() == feats.paths and z["class_names"].tolist() == feats.class_names
    from featx.export import export

    out = export(store, tmp_path / "f.csv", "csv", chunk_rows=64)
    with open(out) as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 201 and rows[0][:5] == ["path", "label", "class", "hash", "f0"]
    assert [r[0] for r in rows[1:]] == feats.paths
    np.testing.assert_array_equal(np.array([r[4:] for r in rows[1:]], dtype=np.float32),
                                  feats.features)


def test_iter_chunks_covers_the_store(store: Path):
    import featx

    feats = featx.load_features(store)
    blocks = list(featx.iter_chunks(store, chunk_rows=64))
    assert [b[1].shape[0] for b in blocks] == [64, 64, 64, 8]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), feats.features)


@needs_shared
@real
def test_transformer_reuses_store_and_cache_and_fits_in_a_pipeline(flowers_store, tmp_path, monkeypatch):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    import featx
    from featx.embed import Extractor

    calls: list[int] = []
    real = Extractor.embed_files

    def counting(self, paths, *a, **kw):
        calls.append(len(paths))
        return real(self, paths, *a, **kw)

    monkeypatch.setattr(Extractor, "embed_files", counting)
    feats = load_features(flowers_store)
    files = [str(Path(feats.meta["data_dir"]) / p) for p in feats.paths]
    cache = tmp_path / "cache.h5"
    emb = featx.EmbeddingTransformer.like_store(flowers_store, cache=cache)
    assert clone(emb).get_params()["layer"] == "block5_pool"

    pipe = make_pipeline(emb, LogisticRegression(max_iter=2000))
    pipe.fit(files[::2], feats.labels[::2])  # every vector comes from the store: no model run
    assert calls == [] and not cache.exists()
    assert pipe.score(files[1::2], feats.labels[1::2]) > 0.5  # chance is 0.2

    new = tmp_path / "new.jpg"
    Image.open(files[3]).convert("RGB").resize((100, 100)).save(new, quality=85)
    x = emb.transform([files[0], str(new), str(new)])
    assert calls == [1]  # only the new content was embedded, once
    np.testing.assert_array_equal(x[0], feats.features[0])
    np.testing.assert_array_equal(x[1], x[2])
    assert load_features(cache).n == 1
    x2 = featx.EmbeddingTransformer(cache=cache, store=None, **{
        k: v for k, v in emb.get_params().items() if k not in ("cache", "store")}).transform([str(new)])
    assert calls == [1]  # the cache answered
    np.testing.assert_array_equal(x2[0], x[1])
    # a real embedding made like the store's: the nearest stored vector is its source image
    assert np.argmax(normalize(feats.features) @ normalize(x[1:2]).T) == 3
    other = featx.EmbeddingTransformer(cache=cache, pooling="max", weights=str(SHARED_WEIGHTS),
                                       layer="block5_pool")
    with pytest.raises(FeatxError, match="pooling: avg .stored. vs max"):
        other.transform([str(new)])
