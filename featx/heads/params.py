"""heads.params: the heads' names, the parameters each accepts and their defaults, and their checks."""

from __future__ import annotations

from typing import Any

from featx.errors import FeatxError

CLASSIFIERS = ("logreg", "svm", "linear-svm", "softmax")  # heads on vectors: fit, sweep, audit
SCALES = ("none", "l2", "standard", "l2+standard")
SOLVERS = ("lbfgs", "adam")
SOLVER_EPOCHS = {"lbfgs": 1000, "adam": 100}  # the softmax head's default budget per solver

# The parameters each head accepts, with defaults (a sweep only varies the ones a head accepts).
DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 1000, "seed": 0},
    "svm": {"C": 1.0, "class_weight": None, "scale": "none", "gamma": "scale", "seed": 0},
    "linear-svm": {"C": 1.0, "class_weight": None, "scale": "none", "max_iter": 2000, "seed": 0},
    "softmax": {"C": 1.0, "class_weight": None, "scale": "none", "solver": "lbfgs",
                "epochs": None, "lr": 1e-2, "batch_size": 256, "patience": 10, "seed": 0},
}


def check_clf(name: str) -> str:
    """Validate a classifier name; a FeatxError listing the known ones otherwise."""
    if name not in CLASSIFIERS:
        raise FeatxError(f"unknown classifier {name!r} (`clf`); choose one of {', '.join(CLASSIFIERS)}")
    return name


def _check_choice(params: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if key in params and params[key] not in choices:
        raise FeatxError(f"`{key}` is one of {', '.join(choices)}, got {params[key]!r}")


ADAM_ONLY = ("lr", "batch_size", "patience")  # the softmax head's Adam settings


def unused_params(clf: str, **given: Any) -> list[str]:
    """One line per given (non-None) parameter that ``clf`` does not use, naming the head (or
    solver) that takes it: ``solver`` for an SVM, ``lr`` for the L-BFGS softmax head."""
    lines = []
    for key, value in given.items():
        if value is None:
            continue
        takers = [c for c in CLASSIFIERS if key in DEFAULTS[c]]
        if takers and key not in DEFAULTS[check_clf(clf)]:
            lines.append(f"`{key}` applies to the {' and '.join(takers)} head only; "
                         f"{clf} ignores it")
        elif clf == "softmax" and key in ADAM_ONLY and given.get("solver") != "adam":
            lines.append(f"`{key}` applies to the softmax head's adam solver only (`solver`=adam); "
                         "lbfgs ignores it")
    return lines


def head_params(clf: str, **params: Any) -> dict[str, Any]:
    """The full parameter dict for ``clf``: defaults updated with the given (non-None) values that
    the head accepts; unknown keys are ignored so one option set can serve several heads."""
    out = dict(DEFAULTS[check_clf(clf)])
    out.update({k: v for k, v in params.items() if k in out and v is not None})
    if out.get("class_weight") in ("none", "None"):
        out["class_weight"] = None
    if out.get("class_weight") not in (None, "balanced"):
        raise FeatxError(f"`class_weight` is 'none' or 'balanced', got {out['class_weight']!r}")
    _check_choice(out, "scale", SCALES)
    _check_choice(out, "solver", SOLVERS)
    if out.get("C") is not None and not float(out["C"]) > 0:
        raise FeatxError(f"`C` must be positive, got {out['C']}")
    if clf == "softmax" and out["epochs"] is None:
        out["epochs"] = SOLVER_EPOCHS[out["solver"]]
    for key in ("epochs", "batch_size", "max_iter"):
        if key in out and int(out[key]) < 1:
            raise FeatxError(f"`{key}` must be at least 1, got {out[key]}")
    return out
