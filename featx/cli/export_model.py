"""featx export-model: a bundle as one model file from pixels to class probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from featx.cli import JSON_OPTION, app, emit, out, progress_bar


@app.command("export-model")
def export_model(
    bundle: Path = typer.Argument(..., help="A model bundle (featx fit, finetune or baseline)."),
    fmt: str = typer.Option(..., "--format", help="keras, saved_model, onnx or litert."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="The model file (folder for saved_model) [BUNDLE.onnx, ...]."),
    weights: Optional[str] = typer.Option(
        None, help="Where the extractor's weights file is now (its identity must match)."),
    flips: Optional[bool] = typer.Option(
        None, "--flips/--no-flips",
        help="Average over each image and its mirror inside the model [as the bundle does]."),
    int8: bool = typer.Option(
        False, "--int8", help="Post-training int8 quantisation: onnx static, calibrated on the "
        "bundle's training photos or --calibrate; litert dynamic-range (no calibration)."),
    calibrate: Optional[List[Path]] = typer.Option(
        None, "--calibrate", help="Calibration images or folders for onnx --int8 (repeatable)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One model from RGB uint8 pixels (N, S, S, 3) to class probabilities, with its metadata
    beside it (PATH.json); decode and resize the photos as featx does (README)."""
    from featx.bundle import load_bundle
    from featx.errors import FeatxError
    from featx.export_model import (calibration_from_files, check_export_output, check_format,
                                    default_output)
    from featx.export_model import export_model as run_export
    from featx.predict import expand_inputs

    check_format(fmt, int8)
    if output is not None:
        check_export_output(output, fmt)
    calibration = None
    if calibrate and not (int8 and fmt == "onnx"):
        raise FeatxError("--calibrate applies to --format onnx --int8 (litert's int8 is "
                         "dynamic-range and needs no calibration)")
    if int8 and calibrate:
        files, _ = expand_inputs(list(calibrate))
        calibration = calibration_from_files(files, load_bundle(bundle))
    with progress_bar(not as_json) as bar:
        result = run_export(bundle, fmt, output if output is not None else default_output(
            bundle, fmt, int8), weights=weights, flips=flips, int8=int8,
            calibration=calibration, progress=bar)
    emit(result.as_dict(), as_json, lambda: out.print(
        f"{result.path} ({result.format}{', int8' if result.int8 else ''}, "
        f"{result.size_bytes / 1e6:.1f} MB, {result.clf} head"
        f"{', mean over flips' if result.flips else ''}); metadata: {result.metadata_path}",
        markup=False))
