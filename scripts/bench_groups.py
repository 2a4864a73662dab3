"""Leaks of the default split and of ``--group near``, and what grouping does to test accuracy.

    python3 scripts/bench_groups.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5

Per store: near-twin pairs (cosine >= 0.95, exact scan), the pairs that straddle the derived
split's parts (test-train, val-train, test-val) and the test images with a near-twin in train,
with the default grouping (content hash) and with near-twin groups (featx.index.near_groups);
then `featx fit`'s default logreg (C picked by CV on the train part) with each, its test accuracy.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from featx.backbones import cpu_description
from featx.fit import fit_store
from featx.index import NEAR_THRESHOLD, Index, near_groups, split_groups
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


def main(stores: list[str]) -> None:
    out = {"cpu": cpu_description(), "load": os.getloadavg(), "threshold": NEAR_THRESHOLD}
    for store in stores:
        feats = load_features(store)
        pairs = Index.for_store(store, exact=True).range_pairs(NEAR_THRESHOLD, 10**7)
        groups = near_groups(feats, NEAR_THRESHOLD)
        sizes = np.unique(groups, return_counts=True)[1]
        row = {"n": feats.n, "near_pairs": len(pairs), "groups_of_2_or_more": int((sizes > 1).sum()),
               "largest_group": int(sizes.max())}
        for name, g in (("hash", None), ("near", groups)):
            parts = split_indices(feats.hashes, feats.labels, groups=g)
            row[name] = leaks(pairs, parts, feats.n)
            t0 = time.perf_counter()
            grouping, label = split_groups(store, name)
            fit = fit_store(store, "logreg", groups=grouping, group_name=label).summary()
            row[name].update(test_accuracy=fit["test_accuracy"], n_test=fit["n_test"],
                             fit_s=round(time.perf_counter() - t0, 1))
        out[store] = row
        print(json.dumps({store: row}), flush=True)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
