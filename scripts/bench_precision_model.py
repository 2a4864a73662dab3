#!/usr/bin/env python3
"""VGG16 (no top, avg pooling, 224x224, random weights) alone: images/s in float32 against
mixed_bfloat16, side by side in one process, 32 images a round after a warm-up batch.

    python3 scripts/bench_precision_model.py [--rounds 1]

Says whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16 in /proc/cpuinfo)."""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import keras

    from featx.backbones import cpu_description

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    x = (np.random.default_rng(0).random((16, 224, 224, 3)) * 255).astype("float32")
    print(cpu_description())
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3),
                                         pooling="avg")
        model.predict(x, verbose=0)  # warm-up
        for _ in range(args.rounds):
            start = time.perf_counter()
            model.predict(np.concatenate([x, x]), batch_size=16, verbose=0)
            print(f"{policy}: {32 / (time.perf_counter() - start):.2f} images/s")


if __name__ == "__main__":
    main()
