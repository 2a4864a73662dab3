#!/usr/bin/env python3
"""featx predict on one photo: VGG16 block5_pool/avg at 224 (real weights), the model run on the
photo padded to a batch of 32 against a batch of 1, each shape traced first.

    python3 scripts/bench_predict_one.py [--weights ../shared/weights/vgg16_notop_imagenet.weights.h5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from featx.backbones import cpu_description
    from featx.embed import Extractor, ExtractorSettings

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", default=str(ROOT.parent / "shared/weights/vgg16_notop_imagenet.weights.h5"))
    p.add_argument("--photo", default=str(next((ROOT.parent / "shared/data/pets-dev/cat").glob("*.jpg"))))
    args = p.parse_args()
    ex = Extractor(ExtractorSettings(layer="block5_pool", pooling="avg", weights=args.weights))
    print(cpu_description())
    for batch in (32, 1, 32, 1):
        ex.embed_files([args.photo], batch_size=batch)  # trace this shape
        start = time.perf_counter()
        ex.embed_files([args.photo], batch_size=batch)
        print(f"one photo, padded to {batch}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
