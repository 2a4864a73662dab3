"""Photos unlike the training photos: every detector side by side, on the same photos.

    nice -n 10 python3 scripts/bench_familiar.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5 \
        [--per-set 30] [--cache reports/bench_familiar] [--json OUT.json]

For each store A of the two (the other, B, is the unfamiliar photo set), on A's derived 70/15/15
split (seed 0), the head ``featx fit`` would train (C and scale picked by CV on train):

* detectors: the maximum softmax probability and the energy score of that head; class-conditional
  Mahalanobis (shared Ledoit-Wolf covariance; raw, L2-normalised, L2 + the top 64 / 128 principal
  axes); k-th nearest neighbour on L2-normalised vectors (k = 1, 5, 10, 50 on a bank of all train
  vectors; k = 10 on seeded banks of 1,000 and 500; k = 1 and 5 on 500 k-means centroids);
* sets: A's test part (familiar); all of B (unfamiliar); generated non-photos (noise, flat colour,
  text on white; unfamiliar); A's test photos changed (crop, rescale, JPEG re-encode, colour shift,
  small rotation: photos of the same classes taken elsewhere, which should pass);
* numbers: AUROC and FPR at 95% TPR (the share of B that passes a threshold passing 95% of A's
  test part), and the share flagged with the threshold calibrated on A's validation part.

The generated and changed photos are embedded with the store's own extractor (its weights and
precision): ``--per-set`` test photos x 5 changes per store and 3 x ``--per-set`` generated images;
their vectors are cached in ``--cache`` (a folder, one file a group) so a rerun costs no model
time.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

CHANGES = ("crop", "rescale", "jpeg", "jpeg40", "colour", "rotate", "tilt")


# --- images -------------------------------------------------------------------------------------


def generated_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` each of noise, flat colour and text on white (PNG, 224 to 400 px)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    words = ("invoice total due date receipt page chapter the quick brown fox jumps over lazy dog "
             "meeting notes agenda summary account number address phone").split()
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(224, 400, 2))
        kind = i % 3
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if kind == 0 else \
            np.clip(rng.normal(128, 60, (h, w, 3)), 0, 255).astype(np.uint8) if kind == 1 else \
            np.repeat(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 1), dtype=np.uint8), 3, 2)
        if kind == 2:
            noise = np.kron(noise, np.ones((8, 8, 1), np.uint8))[:h, :w]
        paths.append(_save(Image.fromarray(noise), folder / f"noise_{i}.png"))
        flat = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        paths.append(_save(flat, folder / f"flat_{i}.png"))
        page = Image.new("RGB", (w, h), (255, 255, 255))
        draw = ImageDraw.Draw(page)
        size = int(rng.integers(12, 40))
        font = ImageFont.load_default(size=size)
        for line in range(int(h // (size * 1.4))):
            text = " ".join(rng.choice(words, int(rng.integers(2, 7))))
            draw.text((8, 6 + line * size * 1.4), text, fill=(0, 0, 0), font=font)
        paths.append(_save(page, folder / f"text_{i}.png"))
    return paths


def _save(img, path: Path) -> Path:
    img.save(path)
    return path


def changed_photos(files: list[Path], folder: Path, seed: int = 0,
                   only: tuple[str, ...] = CHANGES) -> dict[str, list[Path]]:
    """Each photo changed seven ways: a random crop of 50 to 80% of its area, scaled to 40% of
    its size, re-encoded as JPEG quality 15 and 40, its colours shifted (a hue rotation,
    saturation, brightness), rotated by 5 to 12 degrees either way (black corners: ``rotate``) and
    so rotated and cropped to the largest upright rectangle inside (``tilt``: a tilted camera)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {c: [] for c in only}
    for i, f in enumerate(files):
        changed = _changes(Image.open(f).convert("RGB"), rng)
        for c in only:
            out[c].append(_save(changed[c](), folder / f"{c}_{i}.png"))
    return out


def _changes(img, rng: np.random.Generator) -> dict:
    """The seven changes of ``img`` (see :func:`changed_photos`), as functions; draws from ``rng``."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    s = np.sqrt(rng.uniform(0.5, 0.8))
    cw, ch = int(w * s), int(h * s)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    changed = {"crop": lambda: img.crop((x0, y0, x0 + cw, y0 + ch)),
               "rescale": lambda: img.resize((max(8, int(w * 0.4)), max(8, int(h * 0.4))),
                                             Image.BILINEAR),
               "jpeg": lambda: _jpeg(img, 15), "jpeg40": lambda: _jpeg(img, 40)}
    hue, sat, bright = int(rng.integers(15, 40)), float(rng.uniform(0.6, 1.4)), \
        float(rng.uniform(0.7, 1.3))

    def colour():
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + hue) % 256
        shifted = ImageEnhance.Color(Image.fromarray(hsv, "HSV").convert("RGB")).enhance(sat)
        return ImageEnhance.Brightness(shifted).enhance(bright)

    angle = float(rng.uniform(5, 12)) * (1 if rng.random() < 0.5 else -1)
    changed["colour"] = colour
    changed["rotate"] = lambda: img.rotate(angle, resample=Image.BILINEAR)
    changed["tilt"] = lambda: _upright(img.rotate(angle, resample=Image.BILINEAR), angle)
    return changed


def _jpeg(img, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _upright(rotated, angle: float):
    """The largest axis-aligned rectangle of the original's aspect inside a rotated image."""
    w, h = rotated.size
    a = np.radians(abs(angle))
    k = 1.0 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = int(w * k), int(h * k)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((x0, y0, x0 + cw, y0 + ch))


def embed(extractor, paths: list[Path]) -> np.ndarray:
    vectors, ok, failures = extractor.embed_files(paths, batch_size=16)
    if failures:
        raise RuntimeError(f"could not embed {failures[:3]}")
    return vectors


def embedded_sets(stores: dict[str, Path], per_set: int, cache: Path,
                  data_root: Path) -> dict[str, np.ndarray]:
    """{"generated/noise", ..., "<store>/crop", ...}: vectors, cached per group in ``cache``
    (a folder: generated.npz, <store>.npz), so each group is embedded once."""
    out: dict[str, np.ndarray] = {}
    cache.mkdir(parents=True, exist_ok=True)
    groups = {"generated": None, **stores}
    for group, store in groups.items():
        path = cache / f"{group}.npz"
        have: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as f:
                have = {k: f[k] for k in f.files}
        missing = tuple(c for c in CHANGES if f"{group}/{c}" not in have)
        if not have or (store is not None and missing):
            t0 = time.perf_counter()
            vectors = _embed_group(group, store, stores, per_set, data_root,
                                   missing if have else CHANGES)
            np.savez(path, **{**have, **vectors})
            print(f"{group}: embedded {sum(len(v) for k, v in vectors.items() if 'files' not in k)}"
                  f" images in {time.perf_counter() - t0:.0f} s", flush=True)
        with np.load(path) as f:
            out.update({k: f[k] for k in f.files})
    return out


def _embed_group(group: str, store: Path | None, stores: dict[str, Path], per_set: int,
                 data_root: Path, changes: tuple[str, ...] = CHANGES) -> dict[str, np.ndarray]:
    from featx.embed import Extractor
    from featx.store import read_meta

    meta = read_meta(next(p for p in stores.values() if p.is_file()))
    extractor = Extractor.from_meta(meta)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if store is None:
            gen = generated_images(tmp, per_set)
            X = embed(extractor, gen)
            for kind in ("noise", "flat", "text"):
                out[f"generated/{kind}"] = X[[i for i, p in enumerate(gen) if p.name.startswith(kind)]]
            return out
        files = test_files(data_root / group, per_set)
        out[f"{group}/files"] = np.array([str(f) for f in files])
        for change, paths in changed_photos(files, tmp, only=changes).items():
            out[f"{group}/{change}"] = embed(extractor, paths)
    return out


def test_files(data: Path, n: int) -> list[Path]:
    """``n`` photos of the test part of the store of ``data`` (the split derives from the content
    hashes alone, so the store itself is not needed), spread evenly over it."""
    from featx.reader import scan
    from featx.split import split_indices

    found = scan(data)
    first: dict[str, int] = {}
    for i, h in enumerate(found.hashes):
        first.setdefault(h, i)
    rows = np.array(sorted(first.values()))
    labels = np.asarray(found.dataset.labels)[rows]
    test = split_indices(np.array([found.hashes[i] for i in rows]), labels)["test"]
    pick = np.sort(test)[np.linspace(0, len(test) - 1, n).round().astype(int)]
    return [data / found.dataset.paths[rows[i]] for i in pick]


# --- detectors ----------------------------------------------------------------------------------


def detectors(split, head) -> dict[str, callable]:
    """name -> score(X) (higher: less familiar), each fitted on the train part."""
    from sklearn.cluster import KMeans

    from featx import familiar as fm

    X, y = split.X("train"), split.y("train")
    out = {"msp": lambda Z: fm.msp_score(head.predict_proba(Z)),
           "energy": lambda Z: fm.energy_score(fm.head_logits(head, Z))}

    def record(method, **params):
        arrays = fm.FIT[method](X, y, **params)
        keep = {k: v for k, v in params.items() if k not in ("bank", "seed", "bank_bytes")}
        return lambda Z: fm.SCORE[method](arrays, Z, **keep)

    out["mahalanobis raw"] = record("mahalanobis", normalize=False)
    out["mahalanobis l2"] = record("mahalanobis", normalize=True)
    out["mahalanobis l2 pca128"] = record("mahalanobis", normalize=True, dims=128)
    out["mahalanobis l2 pca64"] = record("mahalanobis", normalize=True, dims=64)
    for k in (1, 5, 10, 50):
        out[f"knn k={k} all {len(X)}"] = record("knn", k=k, bank=len(X))
    for m in (1000, 500):
        out[f"knn k=10 bank {m}"] = record("knn", k=10, bank=m)
    centres = KMeans(500, n_init=1, random_state=0).fit(fm.unit(X)).cluster_centers_
    for k in (1, 5):
        arrays = {"bank": fm.unit(centres).astype(np.float16)}
        out[f"knn k={k} 500 k-means"] = partial(fm.score_knn, arrays, k=k)
    return out


def metrics(familiar: np.ndarray, unfamiliar: np.ndarray) -> dict[str, float]:
    """AUROC (unfamiliar as positives) and FPR at 95% TPR (share of unfamiliar that pass a
    threshold passing 95% of the familiar ones)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(familiar)), np.ones(len(unfamiliar))]
    threshold = np.quantile(familiar, 0.95)
    return {"auroc": float(roc_auc_score(y, np.r_[familiar, unfamiliar])),
            "fpr95": float(np.mean(unfamiliar <= threshold))}


def bench_store(name: str, store: Path, other: str, B: np.ndarray,
                sets: dict[str, np.ndarray], B_paths: list[str] | None = None) -> dict:
    """Every detector of a model on ``store``, with ``B`` (vectors) as the unfamiliar photos;
    for featx's default (kNN, k=10), the unfamiliar photos that look most familiar."""
    from featx.fit import fit_store, load_split

    split = load_split(store)
    fit = fit_store(store, split=split)
    gen = np.concatenate([sets[f"generated/{k}"] for k in ("noise", "flat", "text")])
    rows = []
    for det, score in detectors(split, fit.head).items():
        t0 = time.perf_counter()
        val, test = score(split.X("val")), score(split.X("test"))
        threshold = float(np.quantile(val, 0.95))  # what a bundle records
        row = {"detector": det, "pair": metrics(test, score(B)),
               "generated": metrics(test, score(gen)),
               "flagged": {"test": float(np.mean(test > threshold)),
                           other: float(np.mean(score(B) > threshold)),
                           **{f"generated {k}": float(np.mean(score(sets[f'generated/{k}']) > threshold))
                              for k in ("noise", "flat", "text")},
                           **{c: float(np.mean(score(sets[f"{name}/{c}"]) > threshold))
                              for c in CHANGES}}}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if det.startswith("knn k=10 all") and B_paths is not None:
            sB = score(B)
            order = np.argsort(sB)[:8]
            row["most_familiar_unfamiliar"] = [(B_paths[i], round(float(sB[i]), 4)) for i in order]
            row["threshold"] = threshold
        rows.append(row)
    return {"store": str(store), "unfamiliar": other, "params": fit.params,
            "test_accuracy": fit.test["accuracy"], "n": {p: split.n(p) for p in ("train", "val", "test")},
            "n_unfamiliar": int(len(B)), "n_generated": int(len(gen)),
            "n_changed": int(len(sets[f"{name}/crop"])), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stores", nargs=2, type=Path)
    ap.add_argument("--per-set", type=int, default=30)
    ap.add_argument("--cache", type=Path, default=Path("reports/bench_familiar"))
    ap.add_argument("--embed-only", action="store_true", help="Embed (and cache) the sets, stop.")
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/data"),
                    help="Where each store's photos are: DATA_ROOT/<store stem>/.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from featx.backbones import cpu_description

    names = {p.stem: p for p in args.stores}
    sets = embedded_sets(names, args.per_set, args.cache, args.data_root)
    if args.embed_only:
        return
    from featx.store import load_features

    (a, pa), (b, pb) = names.items()
    fa, fb = load_features(pa), load_features(pb)
    results = [bench_store(a, pa, b, fb.features, sets, fb.paths),
               bench_store(b, pb, a, fa.features, sets, fa.paths)]
    print(f"CPU: {cpu_description()}")
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def report(results: list[dict]) -> None:
    for r in results:
        name, other = Path(r["store"]).stem, r["unfamiliar"]
        print(f"\n{name} model (test {r['test_accuracy']:.3f}, {r['params'].get('scale')} C="
              f"{r['params'].get('C')}; train/val/test {r['n']}), unfamiliar: {other} "
              f"({r['n_unfamiliar']}), generated ({r['n_generated']}), changed test photos "
              f"({r['n_changed']} each)")
        print(f"{'detector':28} {'AUROC':>7} {'FPR95':>6} | {'gen AUROC':>9} {'FPR95':>6} | flagged: "
              f"{'test':>5} {other[:7]:>7} noise  flat  text | " + " ".join(f"{c[:6]:>6}" for c in CHANGES))
        for row in r["rows"]:
            f = row["flagged"]
            print(f"{row['detector']:28} {row['pair']['auroc']:7.4f} {row['pair']['fpr95']:6.3f} | "
                  f"{row['generated']['auroc']:9.4f} {row['generated']['fpr95']:6.3f} | "
                  f"{f['test']:5.3f} {f[other]:7.3f} {f['generated noise']:5.2f} "
                  f"{f['generated flat']:5.2f} {f['generated text']:5.2f} | "
                  + " ".join(f"{f[c]:6.3f}" for c in CHANGES))
            if row.get("most_familiar_unfamiliar"):
                print(f"    closest {other} photos (threshold {row['threshold']:.4f}): "
                      + ", ".join(f"{p} {v:.3f}" for p, v in row["most_familiar_unfamiliar"]))


if __name__ == "__main__":
    main()
