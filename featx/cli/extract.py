"""featx extract / featx info."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from featx.cli import JSON_OPTION, app, emit, err, graceful_stop, out, progress_bar, warn


@app.command()
def extract(
    data_dir: Path = typer.Argument(..., help="Folder with one subfolder of images per class."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output",
        help="Store to write [default: features/<data>_<model>_<layer>_<pooling>.h5, with the "
        "settings that are not at their defaults added, e.g. ..._avg_mixed_bfloat16.h5]."),
    model: str = typer.Option("vgg16", help="Backbone: vgg16, vgg19, resnet50, mobilenet_v2."),
    layer: str = typer.Option(
        "fc2", help="Layer to read: fc1, fc2 (4096-d), block5_pool or block4_pool (maps)."),
    pooling: str = typer.Option("avg", help="For convolutional layers: avg, max or none (flatten)."),
    weights: str = typer.Option(
        "imagenet", help="'imagenet' (downloads once) or a local .weights.h5 file (offline)."),
    precision: str = typer.Option("float32", help="float32, bfloat16 (fast on AMX CPUs) or float16."),
    resize: str = typer.Option("squash", help="squash (stretch to a square) or crop (centre crop)."),
    input_size: Optional[int] = typer.Option(
        None, "--input-size", help="Square input size for convolutional layers (fc1/fc2: 224) "
        "[default: 224]."),
    augment: str = typer.Option(
        "none", help="flip: also store each mirrored image's vector (one model pass more)."),
    store_dtype: str = typer.Option(
        "float32", "--store-dtype", help="float32, or float16 to halve the file (for maps)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    workers: int = typer.Option(2, help="Decoding threads."),
    commit_every: int = typer.Option(256, "--commit-every", help="Vectors per committed part file.",
                                     hidden=True),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse to start when the disk looks too small for the store."),
    engine: str = typer.Option("local", help="local (threads + one model) or ray (see README)."),
    address: Optional[str] = typer.Option(
        None, help="ray: auto, HOST:PORT or ray://HOST:PORT (default: RAY_ADDRESS, else local)."),
    num_workers: Optional[int] = typer.Option(
        None, "--num-workers", help="ray: model actors (default: one per GPU, else 1)."),
    gpus_per_worker: Optional[float] = typer.Option(
        None, "--gpus-per-worker", help="ray: GPUs per model actor (default: 1 if any, else 0)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Embed every image under DATA_DIR into an HDF5 feature store (resumes where it stopped)."""
    from featx.backbones import precision_hint
    from featx.embed import ExtractorSettings
    from featx.extract import Interrupted
    from featx.extract import extract as run_extract

    hint = precision_hint(precision)
    if hint:
        err.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)

    settings = ExtractorSettings(model=model, layer=layer, pooling=pooling, weights=weights,
                                 precision=precision, resize=resize, input_size=input_size,
                                 augment=augment, store_dtype=store_dtype)
    with graceful_stop() as stop:  # Ctrl-C, SIGTERM: finish the batch, commit, exit 130 / 143
        try:
            with progress_bar() as bar:
                report = run_extract(data_dir, output, settings, batch_size=batch_size,
                                     workers=workers, commit_every=commit_every,
                                     on_progress=bar, strict=strict, on_warning=warn,
                                     engine=engine, address=address, num_workers=num_workers,
                                     gpus_per_worker=gpus_per_worker, stop=stop)
        except Interrupted as e:
            if e.n_kept:
                err.print(f"interrupted: {e.n_kept} vectors are kept in {e.out} ({e.n_new} "
                          f"committed by this run); run the same command to resume",
                          markup=False)
            else:
                err.print("interrupted before any vector was embedded: nothing to keep; run the "
                          "same command to start again", markup=False)
            sys.exit(stop.exit_code if stop.is_set() else 130)
    emit(report.as_dict(), as_json, lambda: _print_extract(report))


def _print_extract(report) -> None:
    if report.n_embedded == 0 and not report.wrote:
        out.print(f"{report.out}: up to date, {report.n_images} vectors; nothing to embed")
    else:
        mirrored = f", {report.n_mirrored} mirror images added" if report.n_mirrored else ""
        changes = [f"{n} {what}" for n, what in ((report.n_renamed, "renamed or moved"),
                                                  (report.n_removed, "removed")) if n]
        removed = f"; {', '.join(changes)} since the last run" if changes else ""
        out.print(f"{report.out}: {report.n_images} vectors of {report.dim} dims "
                  f"({report.n_embedded} embedded, {report.n_reused} already stored, "
                  f"{report.n_duplicates} exact duplicate{'' if report.n_duplicates == 1 else 's'} "
                  f"of another file{mirrored}{removed})")
    if report.n_embedded:
        t = report.timings
        out.print(f"  {report.images_per_second:.1f} images/s; seconds: hash {t['hash']:.1f}, "
                  f"decode {t['decode']:.1f} (workers, overlapped), model {t['model']:.1f}, "
                  f"waiting for decode {t['wait']:.1f}, write {t['write']:.1f}, "
                  f"load model {t.get('load_model', 0):.1f}, total {t['total']:.1f}")
    for worker, n in report.workers.items():
        out.print(f"  ray worker {worker}: {n} images")
    _print_skipped(report.skipped)


def _print_skipped(skipped: list[tuple[str, str]], limit: int = 20) -> None:
    if not skipped:
        return
    out.print(f"  skipped {len(skipped)} files:")
    for path, reason in skipped[:limit]:
        out.print(f"    {path}: {reason}")
    if len(skipped) > limit:
        out.print(f"    ... and {len(skipped) - limit} more (all listed with --json)")


@app.command()
def info(
    store: Path = typer.Argument(..., help="A featx feature store (.h5) or a model bundle folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show what a feature store holds (counts per class, dimensions, settings, skipped files) or
    what a model bundle is (head, classes, extractor, store, split, scores, files)."""
    from featx.bundle import describe_bundle, is_bundle

    if is_bundle(store):
        result = describe_bundle(store)
        emit(result, as_json, lambda: _print_bundle_info(result))
        return
    from featx.split import describe_store

    result = describe_store(store)
    emit(result, as_json, lambda: _print_info(store, result))


def _print_bundle_info(d: dict) -> None:
    params = ", ".join(f"{k}={v}" for k, v in d["params"].items() if v is not None)
    out.print(f"{d['bundle']}: a {d['kind']} bundle, {d['clf']} ({params})", markup=False)
    out.print(f"  classes ({len(d['class_names'])}): {', '.join(d['class_names'])}", markup=False)
    inp, ex = d["input"], d["extractor"]
    if inp.get("type") == "vectors":
        out.print(f"  input: {inp.get('dim')}-d vectors of {ex.get('model')} {ex.get('layer')}/"
                  f"{ex.get('pooling')} at {ex.get('input_size')} px ({ex.get('precision')}, "
                  f"resize {ex.get('resize')}); weights {ex.get('weights')} "
                  f"({str(ex.get('weights_id'))[:19]})", markup=False)
    else:
        out.print(f"  input: pixels, {inp.get('input_size')} px (resize {inp.get('resize')})",
                  markup=False)
    store = d["store"]
    out.print(f"  trained on: {store.get('path') or store.get('data_dir')} "
              f"({store.get('n')} images; data folder {store.get('data_dir')})", markup=False)
    split = d["split"]
    if split.get("refit_on") == "train+val":
        out.print(f"  split: {split.get('n_fit')} train+val (refitted after {split.get('cv')}-fold "
                  f"cross-validation) / {split.get('n_test')} test, seed {split.get('seed')}",
                  markup=False)
    elif split:
        parts = "/".join(str(split.get(f"n_{p}", "?")) for p in ("train", "val", "test"))
        out.print(f"  split: {parts} (train/val/test), seed {split.get('seed')}", markup=False)
    scores = ", ".join(f"{p} accuracy {v:.4f}" for p, v in d["accuracy"].items() if v is not None)
    if scores:
        out.print(f"  {scores}", markup=False)
    if d["selection"]:
        out.print(f"  picked by cross-validation: {d['selection']}", markup=False)
    if d["epochs"]:
        out.print(f"  trained for {d['epochs']} epochs", markup=False)
    versions = ", ".join(f"{k} {v}" for k, v in d["versions"].items() if v)
    out.print(f"  created {d['created']} with {versions}", markup=False)
    out.print("  files: " + ", ".join(f"{n} ({b:,} bytes)" for n, b in d["files"].items()),
              markup=False)


def _print_info(store: Path, d: dict) -> None:
    if d["n"] == 0 and d.get("interrupted"):
        out.print(f"{store}: no store yet; an interrupted run holds {d['pending_vectors']} vectors "
                  f"in {d['pending_parts']} part files ({d['parts_dir']}); run the same featx "
                  f"extract command again to resume", markup=False)
        return
    meta = d["meta"]
    out.print(f"{store}: {d['n']} vectors x {d['dim']} dims, {len(d['classes'])} classes")
    table = Table("class", "images", box=None, pad_edge=False)
    for name, count in d["classes"].items():
        table.add_row(name, str(count))
    out.print(table)
    for key in ("model", "layer", "pooling", "input_size", "resize", "precision", "weights",
                "weights_id", "data_dir", "keras_version", "keras_backend", "featx_version",
                "created", "updated"):
        out.print(f"  {key}: {meta.get(key)}")
    if d["pending_parts"]:
        out.print(f"  interrupted run: {d['pending_vectors']} more vectors in "
                  f"{d['pending_parts']} part files; rerun featx extract to merge them")
    c = d.get("corrections")
    if c and c["exists"]:
        out.print(f"  corrections: {c['relabelled']} relabelled, {c['excluded']} excluded in every "
                  f"command ({c['rows']} rows in {c['file']}; --no-corrections ignores them)",
                  markup=False)
    _print_skipped([(s["path"], s["reason"]) for s in d["skipped"]])
