"""featx finetune: block5 + a head on cached block4_pool maps; the bundle, predict and the report.

Mechanics on generated images and VGG16 with seeded random weights at 32x32 (block4_pool maps of
2x2x512); one small real run on ../shared photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.bundle import load_bundle
from featx.cli import main
from featx.embed import Extractor, ExtractorSettings
from featx.errors import FeatxError
from featx.extract import extract
from featx.finetune import (FinetuneSettings, block5_weights, build_model, finetune, flip_maps,
                            map_batches, map_split, open_map_store, read_maps)
from featx.fit import load_split
from featx.store import FLIPPED, load_features, read_meta
from tests.conftest import PETS, TINY, _shared_store, make_images, needs_shared

MAPS = {**TINY, "layer": "block4_pool", "pooling": "none", "store_dtype": "float16"}
SETTINGS = FinetuneSettings(epochs=3, patience=5, batch_size=8)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Generated photos (3 classes x 10), their map store and vector store, and one fine-tuned
    bundle (3 epochs)."""
    base = tmp_path_factory.mktemp("finetune")
    data = make_images(base / "data", {"circle": 10, "square": 10, "star": 10}, size=(64, 64))
    maps = extract(data, base / "maps.h5", ExtractorSettings(**MAPS), batch_size=16).out
    vectors = extract(data, base / "vectors.h5", ExtractorSettings(**TINY), batch_size=16).out
    epochs: list[dict] = []
    result = finetune(maps, SETTINGS, out=base / "models" / "ft",
                      on_epoch=lambda e, logs: epochs.append(logs))
    return {"base": base, "data": data, "maps": maps, "vectors": vectors, "result": result,
            "bundle": base / "models" / "ft", "epochs": epochs}


def test_map_store_records_the_shape_and_compresses_rows(ws):
    with h5py.File(ws["maps"], "r") as f:
        ds = f["features"]
        assert ds.shape == (30, 2 * 2 * 512) and ds.dtype == np.float16
        assert ds.chunks == (1, 2048) and ds.compression == "gzip" and ds.shuffle
        assert list(f.attrs["map_shape"]) == [2, 2, 512]
    with h5py.File(ws["vectors"], "r") as f:
        assert f["features"].chunks is None  # pooled vectors stay contiguous


def test_the_start_is_the_stores_network(ws):
    """Before training, the pooled output of the model on the stored maps is the block5_pool/avg
    vector of the same network (same seeded random weights), up to the maps' float16 rounding."""
    store = open_map_store(ws["maps"])
    _, pooled = build_model(store.map_shape, 3, block5_weights(store.meta), SETTINGS)
    got = np.asarray(pooled.predict(read_maps(store, np.arange(30)), verbose=0))
    want = load_features(ws["vectors"]).features
    assert got.shape == want.shape == (30, 512)
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()
    assert np.abs(want).max() > 0.01  # not vacuous: the vectors are not all zeros


def test_the_head_starts_as_fits_logreg_on_l2_normalised_vectors(ws):
    """The model's untrained output, with the logreg head start, is featx fit's logreg (--scale l2)
    on the same pooled vectors: the UnitNormalization layer and the copied weights agree."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from featx.finetune import logreg_head

    store = open_map_store(ws["maps"])
    model, pooled = build_model(store.map_shape, 3, block5_weights(store.meta), SETTINGS)
    maps = read_maps(store, np.arange(30))
    X = np.asarray(pooled.predict(maps, verbose=0))
    y = store.labels
    norm = X / np.linalg.norm(X, axis=1, keepdims=True)
    model.get_layer("softmax").set_weights(list(logreg_head(norm, y, 3, SETTINGS.C, 0)))
    ref = make_pipeline(Normalizer(), LogisticRegression(C=SETTINGS.C, max_iter=1000)).fit(X, y)
    got = np.asarray(model.predict(maps, verbose=0))
    np.testing.assert_allclose(got, ref.predict_proba(X), atol=2e-3)
    assert got.max(axis=1).min() < 0.99  # not saturated: a real check


def test_flip_maps_reverses_the_columns():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 60)
    flipped = flip_maps(x, (3, 4, 5)).reshape(2, 3, 4, 5)
    grid = x.reshape(2, 3, 4, 5)
    for col in range(4):
        np.testing.assert_array_equal(flipped[:, :, col], grid[:, :, 3 - col])


def test_batches_cover_the_rows_once_an_epoch_in_a_new_order(ws):
    store = open_map_store(ws["maps"])
    rows = map_split(store)["train"]
    data = map_batches(store, rows, 8, shuffle=True, seed=1)
    maps = read_maps(store, np.arange(30))
    orders = []
    for _ in range(2):
        seen = []
        for i in range(len(data)):
            x, y = data[i]
            idx = np.sort(data.order[i * 8:(i + 1) * 8])
            np.testing.assert_array_equal(x, maps[idx])  # the stored maps of those rows
            np.testing.assert_array_equal(y.argmax(axis=1), store.labels[idx])
            seen += idx.tolist()
        assert sorted(seen) == sorted(rows.tolist())
        orders.append(data.order.copy())
        data.on_epoch_end()
    data.close()
    assert not np.array_equal(orders[0], orders[1])


def test_split_is_fits_split_of_the_other_store(ws):
    """Same folder, two stores (block4 maps, block5 vectors): the same derived parts."""
    parts = map_split(open_map_store(ws["maps"]))
    other = load_split(ws["vectors"])
    maps_paths = open_map_store(ws["maps"]).paths
    for part in ("train", "val", "test"):
        assert [maps_paths[i] for i in parts[part]] == [other.feats.paths[i]
                                                        for i in other.rows[part]]
    split = json.loads((ws["bundle"] / "bundle.json").read_text())["split"]
    assert {k: split[k] for k in ("n_train", "n_val", "n_test")} == \
        {k: other.info[k] for k in ("n_train", "n_val", "n_test")}


def test_loss_falls_on_a_separable_set(ws):
    """A few Adam steps (random head, no dropout) on the generated classes lower the loss, and
    move the tuned convolution (block5_conv3 with tune=1), not the frozen ones."""
    import keras

    store = open_map_store(ws["maps"])
    model, _ = build_model(store.map_shape, 3, block5_weights(store.meta),
                           FinetuneSettings(lr=1e-3, dropout=0.0, head_init="random", tune=1))
    rows = np.concatenate([np.flatnonzero(store.labels == k)[:4] for k in range(3)])
    x = read_maps(store, rows)
    y = keras.utils.to_categorical(store.labels[rows], 3)
    convs = {k: model.get_layer(f"block5_conv{k}").get_weights()[0].copy() for k in (1, 3)}
    before = float(model.evaluate(x, y, verbose=0)[0])
    for _ in range(6):
        model.train_on_batch(x, y)
    after = float(model.evaluate(x, y, verbose=0)[0])
    assert after < 0.9 * before
    assert np.array_equal(model.get_layer("block5_conv1").get_weights()[0], convs[1])
    assert not np.array_equal(model.get_layer("block5_conv3").get_weights()[0], convs[3])


def test_bundle_predicts_as_the_model_in_memory(ws):
    r = ws["result"]
    bundle = load_bundle(ws["bundle"])
    assert bundle.clf == "finetune" and bundle.kind == "features"
    store = open_map_store(ws["maps"])
    test = map_split(store)["test"]
    loaded = bundle.predict_proba(read_maps(store, test))
    np.testing.assert_allclose(loaded, r.test_proba, rtol=0, atol=1e-6)
    acc = float(np.mean(loaded.argmax(axis=1) == store.labels[test]))
    assert acc == r.test["accuracy"]
    proba, scores = bundle.predict_scored(read_maps(store, test))  # one pass: both outputs
    np.testing.assert_allclose(proba, r.test_proba, rtol=0, atol=1e-6)
    assert bundle.familiar.arrays["bank"].shape[1] == 512  # block5's pooled vectors
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    from featx.familiar import keras_outputs

    graph = keras_outputs(bundle)(read_maps(store, test))["unfamiliarity"]  # an export's output
    np.testing.assert_allclose(np.asarray(graph), scores, rtol=1e-4, atol=1e-5)


def test_history_and_best_epoch_are_kept(ws):
    info = json.loads((ws["bundle"] / "bundle.json").read_text())
    history = info["history"]
    assert info["clf"] == "finetune" and info["extractor"]["layer"] == "block4_pool"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        assert len(history[key]) == 3, key
    assert json.loads((ws["bundle"] / "history.json").read_text()) == history
    assert [e["val_loss"] for e in ws["epochs"]] == history["val_loss"]  # one call an epoch
    losses = [info["finetune"]["initial"]["val_loss"], *history["val_loss"]]
    assert info["finetune"]["best_epoch"] == int(np.argmin(losses))  # epoch 0: the head alone


def test_predict_a_new_photo_through_the_frozen_part(ws, tmp_path, capsys):
    new = make_images(tmp_path / "new", {"star": 1}, size=(64, 64), seed=7) / "star" / "star_000.jpg"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(ws["bundle"]), str(new), "--json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    maps, ok, _ = Extractor.from_meta(read_meta(ws["maps"])).embed_files([new])
    want = ws["result"].head.predict_proba(maps)[0]  # the in-memory model
    got = [doc["predictions"][0]["probabilities"][c] for c in ws["result"].class_names]
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_report_puts_scratch_frozen_and_finetuned_side_by_side(ws):
    from featx.report import make_report

    models = ws["base"] / "models"
    for args in (["fit", str(ws["vectors"]), "--clf", "logreg", "-o", str(models / "logreg")],
                 ["baseline", str(ws["data"]), "--size", "48", "--epochs", "2", "--batch-size",
                  "8", "-o", str(models / "cnn")]):
        with pytest.raises(SystemExit) as e:
            main(args + ["--json"])
        assert e.value.code == 0, args
    report = make_report(ws["vectors"], ws["base"] / "report", models=models, per_class=2,
                         n_mistakes=3)
    rows = {r["name"]: r for r in report.table}
    assert set(rows) == {"cnn", "logreg", "ft"}
    assert rows["ft"]["test_accuracy"] == ws["result"].test["accuracy"]
    assert rows["ft"]["model"].startswith("fine-tuned")
    assert len({(r["n_train"], r["n_val"], r["n_test"]) for r in report.table}) == 1
    assert set(report.curves) == {"cnn", "ft"}  # the models with a per-epoch history
    assert report.chosen["name"] == "ft"  # recomputed from the map store, as stored:
    assert not [n for n in report.notes if "differs" in n or "split" in n]


def test_flip_stored_reads_the_mirrored_photos_maps(ws, tmp_path):
    store_path = extract(ws["data"], tmp_path / "flip.h5",
                         ExtractorSettings(**{**MAPS, "augment": "flip"}), batch_size=16).out
    store = open_map_store(store_path, "flip-stored")
    with h5py.File(store_path, "r") as f:
        plain, mirrored = f["features"][:].astype(np.float32), f[FLIPPED][:].astype(np.float32)
    rows = np.arange(30)
    data = map_batches(store, rows, 30, augment="flip-stored", seed=3)
    x, _ = data[0]
    data.close()
    is_plain = np.all(x == plain, axis=1)
    is_mirrored = np.all(x == mirrored, axis=1)
    assert np.all(is_plain | is_mirrored) and 5 < is_mirrored.sum() < 25
    assert not np.array_equal(plain, mirrored)
    # the default, auto: the mirrored photos' maps when the store has them, else flipped maps
    result = finetune(store_path, FinetuneSettings(epochs=1, batch_size=16))
    assert result.head.params["augment"] == "flip-stored"
    assert ws["result"].head.params["augment"] == "flip"  # asked auto, on a store without them


def test_bad_input_is_one_line_naming_the_extraction(ws, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", str(ws["vectors"]), "-o", str(tmp_path / "b")])
    assert e.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and "vgg16 block5_pool/avg vectors" in line
    assert (f"featx extract {Path(ws['data']).resolve()} --layer block4_pool --pooling none "
            f"--store-dtype float16 --weights none --input-size 32") in line
    with pytest.raises(FeatxError, match="flip-stored needs the mirrored"):
        finetune(ws["maps"], FinetuneSettings(augment="flip-stored"))
    with pytest.raises(FeatxError, match="tune is at most 3") as e2:
        finetune(ws["maps"], FinetuneSettings(tune=4))
    assert e2.value.params == ["tune"]
    assert not (tmp_path / "b").exists()


def test_ctrl_c_keeps_no_half_bundle(ws, tmp_path):
    out = tmp_path / "models" / "ft"

    def stop(epoch, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(ws["maps"], FinetuneSettings(epochs=2, head_init="random"), out=out,
                 on_epoch=stop)
    assert not out.exists()
    parent = tmp_path / "models"
    assert not parent.exists() or not list(parent.iterdir())  # no temporary folder either


@needs_shared
@pytest.mark.shared
def test_real_pets_finetune_beats_chance(request, tmp_path):
    """40 cats and 40 dogs (112x112 input: 7x7x512 maps, a quarter of the model time), 2 epochs:
    the fine-tuned model is far above chance on the validation and test parts together."""
    store = _shared_store(request, "pets", PETS, 40, layer="block4_pool", pooling="none",
                          store_dtype="float16", input_size=112)
    r = finetune(store, FinetuneSettings(epochs=2, batch_size=16), out=tmp_path / "b")
    correct = r.val["accuracy"] * r.split["n_val"] + r.test["accuracy"] * r.split["n_test"]
    assert correct / (r.split["n_val"] + r.split["n_test"]) >= 0.8  # chance: 0.5
