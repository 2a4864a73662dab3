import numpy as np
import pytest

from featx.errors import FeatxError
from featx.split import parse_fractions, split_indices


def fake(n_per_class=(100, 40), dup_every=7):
    hashes, labels = [], []
    for label, n in enumerate(n_per_class):
        for i in range(n):
            hashes.append(f"{label}-{i}")
            labels.append(label)
    for i in range(0, len(hashes), dup_every):  # exact duplicates, one across classes
        hashes.append(hashes[i])
        labels.append(1 - labels[i] if i == 0 else labels[i])
    return hashes, np.array(labels)


def test_partition_is_complete_disjoint_and_stratified():
    hashes, labels = fake()
    parts = split_indices(hashes, labels)
    rows = np.concatenate(list(parts.values()))
    assert sorted(rows.tolist()) == list(range(len(labels)))
    for label in (0, 1):
        counts = {p: int((labels[idx] == label).sum()) for p, idx in parts.items()}
        total = sum(counts.values())
        assert abs(counts["train"] / total - 0.7) < 0.05
        assert abs(counts["test"] / total - 0.15) < 0.05


def test_duplicates_never_straddle_parts():
    hashes, labels = fake()
    part_of = {}
    for part, idx in split_indices(hashes, labels).items():
        for i in idx:
            assert part_of.setdefault(hashes[i], part) == part


def test_deterministic_and_seeded():
    hashes, labels = fake()
    a, b = split_indices(hashes, labels, seed=0), split_indices(hashes, labels, seed=0)
    c = split_indices(hashes, labels, seed=1)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert not np.array_equal(a["test"], c["test"])


def test_order_of_rows_does_not_matter():
    hashes, labels = fake()
    perm = np.random.default_rng(0).permutation(len(hashes))
    a = split_indices(hashes, labels)
    b = split_indices([hashes[i] for i in perm], labels[perm])
    assert {hashes[i] for i in a["test"]} == {hashes[perm[i]] for i in b["test"]}


def test_parse_fractions():
    assert parse_fractions("70/15/15") == pytest.approx((0.7, 0.15, 0.15))
    assert parse_fractions("0.8,0.2,0") == pytest.approx((0.8, 0.2, 0.0))
    with pytest.raises(FeatxError):
        parse_fractions("70/30")


@pytest.mark.parametrize("text", ["80/30/10", "70/15/10", "0.5,0.2,0.2", "1/1/1"])
def test_shares_must_add_up_to_100(text):
    with pytest.raises(FeatxError, match="add up to 100"):
        parse_fractions(text)


def test_bad_split_is_one_line_naming_the_flag_before_any_work(tmp_path, capsys):
    from featx.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(tmp_path / "absent.h5"), "--split", "80/30/10"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--split shares must add up to 100" in err


# --- the rows of a store: corrections, exclusions, groups -----------------------------------------

from featx import corrections  # noqa: E402
from featx.split import describe_store, load_split, replay, split_rows  # noqa: E402
from featx.store import load_features  # noqa: E402
from tests.conftest import synthetic_store  # noqa: E402


@pytest.fixture
def store(tmp_path):
    return synthetic_store(tmp_path / "s.h5", counts=(100, 100))


def test_corrections_relabel_exclude_undo_and_last_row_wins(store):
    feats = load_features(store)
    plain = load_split(store)
    a, b, c = (plain.rows["test"][0], plain.rows["train"][5], plain.rows["val"][0])
    name = feats.class_names
    corrections.record(store, feats.hashes[a], feats.paths[a], name[feats.labels[a]], "exclude")
    corrections.record(store, feats.hashes[b], feats.paths[b], name[feats.labels[b]],
                       name[1 - feats.labels[b]])
    corrections.record(store, feats.hashes[c], feats.paths[c], name[feats.labels[c]], "exclude")
    corrections.record(store, feats.hashes[c], feats.paths[c], name[feats.labels[c]],
                       name[feats.labels[c]])  # undone: kept as it is
    text = corrections.corrections_path(store).read_text().splitlines()
    assert text[0].startswith("# featx corrections ") and text[1] == "hash,path,old_label,new_label,time"
    split = load_split(store)
    assert split.n("test") == plain.n("test") - 1 and a not in split.rows["test"]
    assert split.n("val") == plain.n("val") and c in split.rows["val"]
    assert split.labels[b] == 1 - feats.labels[b] and split.y("train").tolist().count(
        1 - feats.labels[b]) == plain.y("train").tolist().count(1 - feats.labels[b]) + 1
    assert split.info["corrections"] == {"file": str(corrections.corrections_path(store)),
                                         "relabelled": 1, "excluded": 1}
    ignored = load_split(store, corrections=False)
    assert ignored.n("test") == plain.n("test") and "corrections" not in ignored.info
    assert describe_store(store)["corrections"]["relabelled"] == 1
    # the report's replay finds the same rows from the record alone (the file may change later)
    corrections.corrections_path(store).unlink()
    rows, labels = replay(feats.hashes, feats.labels, split.info)
    assert np.array_equal(rows["test"], split.rows["test"])


def test_a_corrections_file_of_another_store_is_refused(store, tmp_path):
    other = synthetic_store(tmp_path / "other.h5", counts=(10, 10, 10))
    feats = load_features(other)
    corrections.record(other, feats.hashes[0], feats.paths[0], "class0", "class2")
    corrections.corrections_path(other).rename(corrections.corrections_path(store))
    with pytest.raises(FeatxError, match="another store"):
        load_split(store)
    with pytest.raises(FeatxError, match="not a class"):
        corrections.record(other, feats.hashes[0], feats.paths[0], "class0", "dog")


def test_exclusion_takes_label_issues_and_leaks_and_warns_when_wide(store, tmp_path):
    feats = load_features(store)
    plain = load_split(store)
    train = [feats.paths[i] for i in plain.rows["train"]]
    suspects = tmp_path / "suspects.csv"
    suspects.write_text("path,label,finding,score,suggestion\n"
                        + "".join(f"{p},x,outlier,0.5,\n" for p in train[:10])
                        + f"{train[10]},x,label,0.1,y\n{train[11]},x,leak,0.99,\n")
    split = load_split(store, exclude=suspects)
    x = split.info["excluded"]
    assert (x["train"], x["passed_over"]) == (2, {"outlier": 10}) and not split.warnings
    everything = load_split(store, exclude=suspects, exclude_findings=None)
    assert everything.info["excluded"]["train"] == 12
    assert any("class 'class0'" in w or "class 'class1'" in w for w in everything.warnings)
    assert "applies with `exclude` only" in load_split(store, exclude_from_test=True).warnings[0]


def test_groups_keep_a_group_in_one_part():
    hashes, labels = fake(dup_every=1000)
    groups = [h.split("-")[0] + "-" + str(int(h.split("-")[1]) // 5) for h in hashes]
    got = split_rows(hashes, labels, list(hashes), ["a", "b"], groups=groups, group_name="near")
    part_of = {}
    for part, idx in got.rows.items():
        for i in idx:
            assert part_of.setdefault(groups[i], part) == part
    assert got.info["groups"] == "near" and np.array_equal(got.groups, np.asarray(groups))
    assert got.n("test") > 0 and got.n("train") > got.n("test")
