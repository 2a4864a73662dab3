"""featx finetune: VGG16's block5 + a new head, trained on a store's cached block4_pool maps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from featx.cli import JSON_OPTION, app, emit, err, out, progress_bar
from featx.cli.fit import NO_CORRECTIONS_OPTION, SPLIT_OPTION, SPLIT_SEED_OPTION, _print_familiar
from featx.finetune import FinetuneSettings

D = FinetuneSettings()


@app.command()
def finetune(
    store: Path = typer.Argument(..., help="A store of block4_pool maps (featx extract --layer "
                                 "block4_pool --pooling none)."),
    epochs: int = typer.Option(D.epochs, "--epochs", help="Most epochs (early stopping on val loss)."),
    lr: float = typer.Option(D.lr, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", help="Maps per step."),
    patience: int = typer.Option(D.patience, "--patience",
                                 help="Epochs without a lower val loss before stopping."),
    dropout: float = typer.Option(D.dropout, "--dropout", help="Dropout before the softmax layer."),
    augment: str = typer.Option(D.augment, "--augment", help="auto (flip-stored when the store has "
                                "mirrored maps, else flip), flip (mirror the cached maps), "
                                "flip-stored (the mirrored photos' own maps) or none."),
    tune: int = typer.Option(D.tune, "--tune", help="block5 convolutions trained, the last ones "
                             "(1 to 3)."),
    head_init: str = typer.Option(D.head_init, "--head-init", help="logreg (fit the head on the "
                                  "frozen features first) or random."),
    scale: str = typer.Option(D.scale, "--scale", help="The head's input: l2 (the pooled vector "
                              "divided by its length, as featx fit --scale l2) or none."),
    C: float = typer.Option(D.C, "--C", help="Inverse L2 strength of --head-init logreg."),
    precision: str = typer.Option(D.precision, "--precision", help="float32 or bfloat16."),
    seed: int = typer.Option(D.seed, "--seed", help="Seed of initialisation, order and flips."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    no_corrections: bool = NO_CORRECTIONS_OPTION,
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Bundle directory [default: models/<store>_finetune/]."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fine-tune VGG16's block5 and a new softmax head on cached maps; save a bundle that predicts
    photos (same split as featx fit)."""
    from featx.finetune import default_output
    from featx.finetune import finetune as run_finetune
    from featx.split import parse_fractions

    settings = FinetuneSettings(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience,
                                dropout=dropout, augment=augment, tune=tune, head_init=head_init,
                                scale=scale, C=C, precision=precision, seed=seed)
    try:
        with progress_bar() as bar:
            result = run_finetune(store, settings, fractions=parse_fractions(split),
                                  split_seed=split_seed, out=output or default_output(store),
                                  progress=bar, corrections=not no_corrections,
                                  on_epoch=_print_epoch(epochs))
    except KeyboardInterrupt:
        err.print("interrupted: no bundle was written (bundles are written whole at the end)")
        sys.exit(130)
    summary = result.summary()
    emit(summary, as_json, lambda: _print_finetune(summary))


def _print_epoch(epochs: int):
    def show(epoch: int, logs: dict[str, float]) -> None:
        err.print(f"  epoch {epoch}/{epochs}: loss {logs['loss']:.4f}, accuracy "
                  f"{logs['accuracy']:.4f}, val loss {logs['val_loss']:.4f}, val accuracy "
                  f"{logs['val_accuracy']:.4f} ({logs['epoch_seconds']:.0f} s)",
                  markup=False, highlight=False)
    return show


def _print_finetune(s: dict[str, Any]) -> None:
    from featx.metrics import accuracy_text

    def acc(part):
        return accuracy_text(s.get(part))
    p, init = s["params"], s["initial"]
    out.print(f"finetune on {s['store']}: train {s['n_train']}, val {s['n_val']}, test "
              f"{s['n_test']} maps; {s['epochs_run']} epochs, {s['seconds_per_epoch']:.0f} s an "
              f"epoch; tuned {p['tune']} of block5's convolutions, augment {p['augment']}",
              markup=False)
    if init:
        out.print(f"  head only (epoch 0): val loss {init['val_loss']:.4f}, val accuracy "
                  f"{init['val_accuracy']:.4f}")
    out.print(f"  best (kept) epoch {s['best_epoch']}: val accuracy {acc('val')}, test accuracy "
              f"{acc('test')}")
    _print_familiar(s.get("familiar"))
    out.print(f"  bundle: {s['bundle']}", markup=False)
