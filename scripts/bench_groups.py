"""Leaks of the default split and of ``--group near``, and what grouping does to test accuracy.

    python3 scripts/bench_groups.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5

Per store and threshold (cosine 0.85, 0.90, 0.95): near-twin pairs (exact scan), the pairs that
straddle the derived split's parts (test-train, val-train, test-val) and the test images with a
near-twin in train, with the default grouping (content hash) and with near-twin groups
(featx.index.near_groups); then `featx fit`'s default logreg (C picked by CV on the train part)
with each, its test accuracy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from featx.backbones import cpu_description
from featx.fit import fit_store
from featx.index import Index, near_groups, split_groups
from featx.split import split_indices
from featx.store import load_features

PAIRS = (("test", "train"), ("val", "train"), ("test", "val"))


def leaks(pairs, parts: dict[str, np.ndarray], n: int) -> dict:
    part_of = np.empty(n, dtype=object)
    for name, rows in parts.items():
        part_of[rows] = name
    counts = {f"{a}-{b}": 0 for a, b in PAIRS}
    test_with_twin = set()
    for a, b, _ in pairs:
        pa, pb = part_of[a], part_of[b]
        for x, y in PAIRS:
            if {pa, pb} == {x, y}:
                counts[f"{x}-{y}"] += 1
        if {pa, pb} == {"test", "train"}:
            test_with_twin.add(a if pa == "test" else b)
    return {"leak_pairs": sum(counts.values()), **counts,
            "test_images_with_twin_in_train": len(test_with_twin)}


def main(stores: list[str], thresholds=(0.85, 0.90, 0.95)) -> None:
    out = {"cpu": cpu_description(), "load": os.getloadavg()}
    for store in stores:
        feats = load_features(store)
        hash_parts = split_indices(feats.hashes, feats.labels)
        fit = fit_store(store, "logreg").summary()
        row = {"n": feats.n, "hash": {"test_accuracy": fit["test_accuracy"],
                                      "n_test": fit["n_test"]}}
        for t in thresholds:
            pairs = Index.for_store(store, exact=True).range_pairs(t, 10**7)
            groups = near_groups(feats, t)
            sizes = np.unique(groups, return_counts=True)[1]
            near_parts = split_indices(feats.hashes, feats.labels, groups=groups)
            grouping, label = split_groups(store, "near", t)
            fit = fit_store(store, "logreg", groups=grouping, group_name=label).summary()
            row[f"cosine>={t}"] = {
                "near_pairs": len(pairs), "groups_of_2_or_more": int((sizes > 1).sum()),
                "largest_group": int(sizes.max()), "hash_split": leaks(pairs, hash_parts, feats.n),
                "near_split": {**leaks(pairs, near_parts, feats.n),
                               "test_accuracy": fit["test_accuracy"], "n_test": fit["n_test"]}}
        out[store] = row
        print(json.dumps({store: row}), flush=True)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
