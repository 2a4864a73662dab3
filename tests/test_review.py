"""featx review: the suspects, their corrections, the refit and the corrected folder copy.

The store has made-up vectors over generated photos (``planted_store``), with a few photos moved
into another class's folder: the audit must put those first, a correction must land in the
corrections file before the call returns, and a refit must count it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from featx import corrections as corr
from featx.errors import FeatxError
from featx.cli import main
from tests.conftest import free_port, planted_store

COUNTS = {"cat": 40, "dog": 40, "fox": 40}
PLANTED = 6


@pytest.fixture
def store(tmp_path) -> tuple[Path, list[str]]:
    return planted_store(tmp_path, COUNTS, PLANTED)


@pytest.fixture
def review(store):
    from featx.review import Review, Settings

    r = Review(store[0], Settings(map_method="pca"))
    r.prepare()
    return r


def test_the_planted_photos_rank_first_and_each_shows_its_neighbours(review, store):
    page = review.suspects("label", 0, PLANTED)
    assert sorted(it["path"] for it in page["items"]) == sorted(store[1])
    first = page["items"][0]
    assert first["suggested"] != first["label"] and first["quality"] < 0.2
    assert len(first["neighbors"]) == 6 and first["row"] not in {n["row"] for n in first["neighbors"]}
    # the neighbours of a planted photo are of its true class: the folder it was taken from
    true = Path(first["path"]).name.split("_")[1]
    assert sum(n["label"] == true for n in first["neighbors"]) >= 5


def test_pages_through_every_photo_without_repeats(review):
    total = review.suspects("all", 0, 1)["total"]
    seen = [it["row"] for off in range(0, total, 50) for it in review.suspects("all", off, 50)["items"]]
    assert total == sum(COUNTS.values()) and sorted(seen) == list(range(total))
    outliers = review.suspects("outlier", 0, 10)["items"]
    assert [it["score"] for it in outliers] == sorted((it["score"] for it in outliers), reverse=True)
    with pytest.raises(FeatxError, match="kind must"):
        review.suspects("nonsense")


def test_leaks_pair_a_photo_with_its_near_twin_in_another_part(tmp_path):
    from featx.review import Review, Settings

    store, _ = planted_store(tmp_path, COUNTS, 0, sep=1.5, twins=20)
    r = Review(store, Settings(C=0.01, scale="none"))
    r.prepare()
    leaks = r.suspects("leak", 0, 50)
    assert leaks["total"] == len(leaks["items"]) > 0
    for it in leaks["items"]:
        pair = it["pair"]
        names = sorted(Path(p).name for p in (it["path"], pair["path"]))
        assert names[1] == "twin_" + names[0]  # a photo and its own near-copy
        assert pair["part"] != it["part"] and pair["similarity"] >= 0.95


def test_a_decision_is_in_the_file_when_decide_returns(review, store):
    it = review.suspects("label", 0, 1)["items"][0]
    state = review.decide(it["row"], it["suggested"])
    latest = corr.load(store[0]).latest
    row = latest[str(review.feats.hashes[it["row"]])]
    assert (row["old_label"], row["new_label"], row["path"]) == (it["label"], it["suggested"], it["path"])
    assert state["current"] == it["suggested"] and state["pending"] == 1
    review.decide(it["row"], "exclude")
    assert review.overview()["excluded"] == 1 and review.overview()["relabelled"] == 0
    review.decide(it["row"], "keep")  # undo: the stored label again
    assert review.pending() == 0 and review.row_state(it["row"])["current"] == it["label"]
    with pytest.raises(FeatxError, match="action must"):
        review.decide(it["row"], "wolf")


def test_refit_counts_a_fixed_held_out_label_and_ranks_afresh(review):
    held = [it for it in review.suspects("label", 0, PLANTED)["items"] if it["part"] in ("val", "test")]
    assert held, "the planting put no error in the val or test part"
    it = held[0]
    before = review.head.val if it["part"] == "val" else review.head.test
    review.decide(it["row"], it["suggested"])
    result = review.refit()
    after = result["new"][it["part"]]
    n = result["new"]["n_" + it["part"]]
    assert result["old"][it["part"]] == before and after == pytest.approx(before + 1 / n)
    assert result["corrections_applied"] == 1 and review.pending() == 0
    assert it["row"] not in {x["row"] for x in review.suspects("label", 0, 50)["items"]}
    assert result["label_issues"]["before"] == PLANTED
    assert result["label_issues"]["after"] <= PLANTED - 1


def test_outlier_distances_follow_a_relabel(review):
    from featx.audit import knn_distance
    from featx.review import unit_vectors

    it = review.suspects("label", 0, 1)["items"][0]
    review.decide(it["row"], it["suggested"])
    review.refit()
    x, labels = unit_vectors(review.feats), review.in_force
    exact = knn_distance(x, labels, review.settings.outlier_k)
    assert review.ranking.distance[it["row"]] == pytest.approx(exact[it["row"]], abs=1e-5)


def test_the_audit_and_the_head_are_cached_beside_the_store(review, store, monkeypatch):
    import featx.review as rv

    assert (rv.cache_dir(store[0]) / "audit.npz").is_file()
    review.compute_map()
    monkeypatch.setattr(rv, "rank_labels", lambda *a, **k: pytest.fail("the audit was not cached"))
    monkeypatch.setattr("featx.selection.choose_params", lambda *a, **k: pytest.fail("C was not cached"))
    monkeypatch.setattr(rv, "find_leaks", lambda *a, **k: pytest.fail("the leaks were not cached"))
    monkeypatch.setattr("featx.maps.make_map", lambda *a, **k: pytest.fail("the map was not cached"))
    again = rv.Review(store[0], review.settings)
    again.prepare()
    assert np.array_equal(again.ranking.issues, review.ranking.issues)
    assert again.head.params == review.head.params
    assert again.leaks() == review.leaks()
    again.compute_map()
    assert again.map_points()["points"] == review.map_points()["points"]
    assert len(again.map_points()["points"]) == sum(COUNTS.values())


def test_a_corrections_file_of_another_store_is_refused(review, store, tmp_path):
    from featx.review import Review

    review.decide(0, "exclude")
    other, _ = planted_store(tmp_path / "other", {"ant": 10, "bee": 10}, 0)
    shutil.copyfile(corr.corrections_path(store[0]), corr.corrections_path(other))
    with pytest.raises(FeatxError, match="another store"):
        Review(other)


def test_write_folders_links_each_photo_under_its_corrected_class(review, store, tmp_path, capsys):
    from featx.review import write_folders

    data = Path(review.data_dir())
    listing = sorted(p.relative_to(data) for p in data.rglob("*"))
    planted = review.suspects("label", 0, 2)["items"]
    review.decide(planted[0]["row"], planted[0]["suggested"])
    review.decide(planted[1]["row"], "exclude")
    dest = tmp_path / "corrected"
    with pytest.raises(SystemExit) as e:
        main(["review", str(store[0]), "--write-folders", str(dest), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert e.value.code == 0 and (out["linked"], out["relabelled"], out["excluded"]) == (119, 1, 1)
    moved = dest / planted[0]["suggested"] / Path(planted[0]["path"]).name
    assert moved.is_symlink() and moved.resolve() == (data / planted[0]["path"]).resolve()
    assert not list(dest.rglob(Path(planted[1]["path"]).name))
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == listing  # photos untouched
    write_folders(store[0], dest)  # its own earlier copy is replaced
    with pytest.raises(FeatxError, match="outside the data folder"):
        write_folders(store[0], data / "copy")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FeatxError, match="other files"):
        write_folders(store[0], tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]


def test_cli_refuses_bad_input_in_one_line(store, tmp_path, capsys):
    port = ["--port", str(free_port())]
    for args, expected in ((["review", str(tmp_path / "missing.h5"), *port], "feature store not found"),
                           (["review", str(store[0]), "--port", "70000"], "--port must be"),
                           (["review", str(store[0]), "--map-method", "umap", *port], "--map-method"),
                           (["review", str(store[0]), "--scale", "huge", *port], "--scale")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and expected in err[0], err


def test_a_decision_written_elsewhere_shows_on_the_next_request(review, store):
    it = review.suspects("label", 0, 1)["items"][0]
    corr.record(store[0], str(review.feats.hashes[it["row"]]), it["path"], it["label"], "exclude")
    assert review.overview()["excluded"] == 1
    assert review.suspects("label", 0, 1)["items"][0]["current"] == "exclude"
