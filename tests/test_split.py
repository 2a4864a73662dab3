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
