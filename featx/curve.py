"""curve: test accuracy against photos per class (a learning curve), and what more photos would give.

:func:`learning_curve` trains ``featx fit``'s head (:func:`featx.fit.fit_split`, the automatic choice
of ``C`` and ``scale`` of :func:`featx.selection.choose_params`) on seeded draws of the train part of
log-spaced sizes (5, 10, 20, 50, ... photos a class, and all of it), and scores every draw on the one
fixed test part, so the points compare. Draws are nested (a seed's 20 photos of a class hold its
10) and made over distinct contents, so a duplicate never counts twice; the rows come from
:func:`featx.split.load_split`, so corrections, exclusions and flips apply as in ``featx fit``.

:func:`fit_curve` fits a saturating curve to the mean accuracy per size (weighted by the spread of
the draws; the power law ``a - b n^-c`` unless asked for another of :data:`MODELS`: measured, it
extrapolated best, see BENCHMARKS.md) and says where it flattens and what doubling the photos is
expected to give, with a parametric bootstrap for the spread.
:func:`extrapolation` is the honest check: fitted on sizes up to half the train part alone, what
did the curve predict at the full train part, against what was measured?
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx.errors import FeatxError
from featx.files import check_output, write_text
from featx.heads import DEFAULTS, make_head
from featx.split import DEFAULT_FRACTIONS, EXCLUDE_FINDINGS

SEEDS = 5
LADDER = (1, 2, 5)  # sizes 5, 10, 20, 50, 100, 200, 500, 1000, ...
FIRST_SIZE = 5
CHOICES = ("once", "size", "point")  # when C / scale are picked: once, per size, per draw
FAR = 100  # the summary names where the curve flattens only within FAR times the train part
FLAT_GAIN = 0.002  # "flattens": from where doubling the photos gains less than 0.2 points
BOOTSTRAP = 100
CURVE_FILE = "curve.json"


# --- the curve models ---------------------------------------------------------------------------


def _power(n, a, b, c):
    return a - b * np.power(n, -c)


def _power_jac(n, a, b, c):
    t = np.power(n, -c)
    return np.stack([np.ones_like(n), -t, b * t * np.log(n)], axis=1)


def _exp(n, a, b, c):
    return a - b * np.exp(-n / c)


def _exp_jac(n, a, b, c):
    t = np.exp(-n / c)
    return np.stack([np.ones_like(n), -t, -b * t * n / c ** 2], axis=1)


def _loglin(n, a, b, c):  # no ceiling: a straight line in log n, for comparison
    return a + b * np.log(n) + 0.0 * c


def _loglin_jac(n, a, b, c):
    return np.stack([np.ones_like(n), np.log(n), np.zeros_like(n)], axis=1)


MODELS: dict[str, tuple[Callable, Callable, Callable]] = {
    # name: (function, its Jacobian, (x, y) -> (p0, bounds))
    "power": (_power, _power_jac,
              lambda x, y: ([min(1.0, y.max() + 0.01), max(y.max() - y.min(), 1e-3), 0.5],
                            ([0.0, 0.0, 0.01], [1.0, 10.0, 3.0]))),
    "exp": (_exp, _exp_jac,
            lambda x, y: ([min(1.0, y.max() + 0.005), max(y.max() - y.min(), 1e-3),
                           float(np.median(x))], ([0.0, 0.0, 0.1], [1.0, 10.0, 1e6]))),
    "loglinear": (_loglin, _loglin_jac, lambda x, y: ([float(y.min()), 0.01, 0.0],
                                                      ([-10.0, -10.0, -1.0], [10.0, 10.0, 1.0]))),
}
DEFAULT_MODEL = "power"
FORMULAS = {"power": "a - b * n^-c", "exp": "a - b * exp(-n / c)", "loglinear": "a + b * ln(n)"}


# --- sizes and draws ----------------------------------------------------------------------------


def default_sizes(full: int) -> list[int]:
    """5, 10, 20, 50, ... below ``full`` (2, 5 when ``full`` is under 10), then ``full``."""
    sizes, decade = [], 1
    while True:
        for step in LADDER:
            n = step * decade
            if n >= full:
                return sizes + [full]
            if n >= (FIRST_SIZE if full >= 2 * FIRST_SIZE else 2):
                sizes.append(n)
        decade *= 10


def parse_sizes(text: str | None) -> list[int] | None:
    """``"5,10,50"`` -> [5, 10, 50]; None stays None."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FeatxError(f"`sizes` takes whole numbers of photos a class like 5,10,20, got "
                         f"{text!r}") from None


def check_sizes(sizes: list[int] | None, counts: dict[str, int]) -> list[int]:
    """The sizes to draw (sorted, distinct), or a FeatxError saying why they cannot be."""
    full = max(counts.values())
    have = ", ".join(f"{k} {v}" for k, v in counts.items())
    if sizes is None:
        if full < 3:
            raise FeatxError(f"the train part has at most {full} photos a class ({have}); a "
                             "learning curve needs two sizes, so at least 3 photos a class")
        return default_sizes(full)
    bad = [n for n in sizes if n < 1]
    if bad:
        raise FeatxError(f"`sizes` are photos a class, at least 1; got {bad[0]}")
    over = [n for n in sizes if n > full]
    if over:
        raise FeatxError(f"`sizes` asks for {max(over)} photos a class, and the train part has at "
                         f"most {full} ({have})")
    sizes = sorted(set(sizes))
    if len(sizes) < 2:
        raise FeatxError(f"`sizes` needs at least two different sizes for a curve, got "
                         f"{','.join(map(str, sizes))}")
    return sizes


def class_orders(labels: np.ndarray, hashes: np.ndarray, seed: int) -> list[list[np.ndarray]]:
    """Per class, a seeded order of its distinct contents, each as its row indices (into
    ``labels``): the first ``n`` of an order are a draw of ``n`` photos, so draws are nested."""
    rng = np.random.default_rng(seed)
    orders = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        _, first, inverse = np.unique(hashes[rows], return_index=True, return_inverse=True)
        groups = [rows[inverse == g] for g in range(len(first))]
        orders.append([groups[i] for i in rng.permutation(len(groups))])
    return orders


def per_class(n: int, counts: dict[str, int]) -> float:
    """Photos a class in a draw of size ``n``: the mean over classes of min(n, the class's)."""
    return round(float(np.mean([min(n, c) for c in counts.values()])), 3)


def draw(orders: list[list[np.ndarray]], n: int) -> np.ndarray:
    """Row indices of ``n`` photos of each class (all of a class that has fewer), sorted."""
    return np.sort(np.concatenate([g for order in orders for g in order[:n]]))


# --- fitting points -----------------------------------------------------------------------------


def pick_params(split, clf: str, params: dict[str, Any], choose_folds: int = 3
                ) -> tuple[dict, dict | None]:
    """``params`` with the free ``C`` / ``scale`` picked as ``featx fit`` does, and the choice."""
    from featx.selection import choose_params

    free = [k for k in ("C", "scale") if params.get(k) is None]
    if not free:
        return params, None
    fixed = {k: v for k, v in params.items() if v is not None and k != "seed"}
    selection = choose_params(split, clf, fixed, free, folds=choose_folds,
                              seed=params.get("seed") or 0, n_jobs=1)
    return {**params, **(selection["picked"] or {})}, selection


def fit_point(split, rows: np.ndarray, clf: str, params: dict[str, Any],
              choose_folds: int = 3) -> dict[str, Any]:
    """Fit ``clf`` on the train rows ``rows`` (C / scale picked on them when left None), score it
    on the split's test part: accuracy, per-class recall and the parameters used."""
    from featx.fit import evaluate, fit_split

    sub = replace(split, rows={**split.rows, "train": rows})
    used, selection = pick_params(sub, clf, params, choose_folds)
    head, seconds = fit_split(sub, clf, **used)
    test = evaluate(head, sub, "test")
    return {"n_train": int(len(rows)), "accuracy": test["accuracy"], "recall": test["recall"],
            "C": head.params.get("C"), "scale": head.params.get("scale"),
            "fit_seconds": round(seconds, 4), "chose": selection is not None}


def _run(tasks: list[Callable[[], dict]], n_jobs: int) -> list[dict]:
    """Run the point fits in ``n_jobs`` threads (BLAS one thread each), in order."""
    import scipy.optimize  # noqa: F401  load SciPy's and scikit-learn's BLAS before limiting it
    import sklearn.linear_model  # noqa: F401
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    if n_jobs <= 1:
        return [t() for t in tasks]
    with threadpool_limits(1, user_api="blas"):
        return Parallel(n_jobs=n_jobs, backend="threading")(delayed(t)() for t in tasks)


# --- fitting the curve --------------------------------------------------------------------------


def _fit_model(name: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray,
               p0: np.ndarray | None = None) -> np.ndarray | None:
    """The parameters of model ``name`` fitted to (x, y) (weighted least squares, SciPy's
    ``curve_fit``; from ``p0`` when given), or None when the fit fails."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    f, jac, start = MODELS[name]
    guess, bounds = start(x, y)
    p0 = np.clip(guess if p0 is None else p0, bounds[0], bounds[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(f, x, y, p0=p0, sigma=sigma, bounds=bounds, jac=jac, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return p


def size_means(points: list[dict[str, Any]], key: str = "accuracy", n_test: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photos per class, mean, sigma) per size: sigma is the draws' standard error, at least
    half a test image (so one draw, or identical draws, still has a weight)."""
    xs = sorted({p["photos_per_class"] for p in points})
    x, mean, sigma = [], [], []
    floor = 0.5 / max(n_test, 1)
    for v in xs:
        vals = np.array([_value(p, key) for p in points if p["photos_per_class"] == v])
        x.append(v)
        mean.append(vals.mean())
        sigma.append(max(vals.std(ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0, floor))
    return np.array(x, float), np.array(mean), np.array(sigma)


def _value(point: dict[str, Any], key: str) -> float:
    if key == "accuracy":
        return point["accuracy"]
    return point["recall"][int(key)]


def choose_model(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, hold: int = 2
                 ) -> tuple[str, dict[str, float | None]]:
    """The model that best predicts the ``hold`` largest sizes from the others (mean absolute
    error); power law when there are too few sizes to compare. Returns (name, errors)."""
    if len(x) < hold + 3:
        return DEFAULT_MODEL, {}
    errors: dict[str, float | None] = {}
    for name in MODELS:
        p = _fit_model(name, x[:-hold], y[:-hold], sigma[:-hold])
        errors[name] = None if p is None else float(np.mean(np.abs(MODELS[name][0](x[-hold:], *p)
                                                                   - y[-hold:])))
    ok = {k: v for k, v in errors.items() if v is not None}
    return (min(ok, key=ok.get) if ok else DEFAULT_MODEL), errors


def flat_from(f: Callable, p: np.ndarray, start: float, gain: float = FLAT_GAIN) -> float | None:
    """Photos a class from which doubling them gains less than ``gain`` (None beyond 10^7)."""
    grid = np.geomspace(max(start / 64, 1.0), 1e7, 600)
    small = np.flatnonzero(f(2 * grid, *p) - f(grid, *p) < gain)
    return float(grid[small[0]]) if len(small) else None


@dataclass
class CurveFit:
    """A saturating curve through the mean accuracy per size, and what it predicts."""

    model: str
    params: list[float]
    at: float  # photos a class where the predictions are made (the full train part)
    predicted: float  # accuracy the curve gives at ``at``
    doubled: float  # ... and at twice as many
    gain: float  # doubled - predicted
    gain_spread: float  # standard deviation of ``gain`` over bootstrap draws
    ceiling: float | None  # the asymptote (None: the model has none)
    ceiling_spread: float | None
    flat_from: float | None  # photos a class from which doubling gains < FLAT_GAIN
    held_back: dict[str, float | None] = field(default_factory=dict)  # model -> error

    def __call__(self, n) -> np.ndarray:
        return MODELS[self.model][0](np.asarray(n, float), *self.params)

    def as_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
        return {"model": self.model, "formula": FORMULAS[self.model],
                "params": dict(zip("abc", map(r, self.params))), "at": self.at,
                "predicted": r(self.predicted), "doubled": r(self.doubled), "gain": r(self.gain),
                "gain_spread": r(self.gain_spread), "ceiling": r(self.ceiling),
                "ceiling_spread": r(self.ceiling_spread), "flat_from": r(self.flat_from),
                "flat_gain": FLAT_GAIN, "held_back_errors": self.held_back}


def fit_curve(points: list[dict[str, Any]], at: float, key: str = "accuracy", n_test: int = 0,
              model: str | None = None, seed: int = 0, spread: bool = True) -> CurveFit | None:
    """Fit the curve (``model``, default the power law) to the points' mean per size; None with
    fewer than 3 sizes or a failed fit. With ``spread``, the spreads come from a parametric
    bootstrap (else they are 0) and ``held_back`` holds every model's error at predicting the two
    largest sizes from the others (:func:`choose_model`), for comparison."""
    x, y, sigma = size_means(points, key, n_test)
    if len(x) < 3:
        return None
    held = choose_model(x, y, sigma)[1] if spread else {}
    model = model or DEFAULT_MODEL
    p = _fit_model(model, x, y, sigma)
    if p is None:
        return None
    f = MODELS[model][0]
    gains, ceilings = _bootstrap(points, model, key, n_test, at, p, seed) if spread else ([], [])
    ceiling = float(p[0]) if model != "loglinear" else None
    return CurveFit(model=model, params=[float(v) for v in p], at=float(at),
                    predicted=float(f(at, *p)), doubled=float(f(2 * at, *p)),
                    gain=float(f(2 * at, *p) - f(at, *p)),
                    gain_spread=float(np.std(gains)) if gains else 0.0, ceiling=ceiling,
                    ceiling_spread=float(np.std(ceilings)) if ceilings and ceiling is not None
                    else None, flat_from=flat_from(f, p, at), held_back=held)


def _bootstrap(points, model: str, key: str, n_test: int, at: float, p0: np.ndarray, seed: int,
               reps: int = BOOTSTRAP) -> tuple[list[float], list[float]]:
    """Doubling gains and ceilings of the curve refitted on noisy copies of the size means (a
    parametric bootstrap: each mean moved by a normal draw of its own sigma, the draws' standard
    error or, for a size with one draw, half a test photo)."""
    rng = np.random.default_rng(seed)
    x, y, sigma = size_means(points, key, n_test)
    f = MODELS[model][0]
    gains, ceilings = [], []
    for _ in range(reps):
        p = _fit_model(model, x, y + rng.normal(0.0, sigma), sigma, p0)
        if p is not None:
            gains.append(float(f(2 * at, *p) - f(at, *p)))
            ceilings.append(float(p[0]))
    return gains, ceilings


def extrapolation(points: list[dict[str, Any]], full: float, n_test: int,
                  model: str | None = None) -> dict[str, Any] | None:
    """Fit on sizes up to half of ``full`` photos a class alone and predict ``full``: the
    prediction, the measured mean there and the difference (None: too few small sizes)."""
    small = [p for p in points if p["photos_per_class"] <= full / 2]
    measured = [p["accuracy"] for p in points if p["photos_per_class"] == full]
    curve = fit_curve(small, full, n_test=n_test, model=model, spread=False)
    if curve is None or not measured:
        return None
    upto = max(p["photos_per_class"] for p in small)
    return {"fitted_upto": upto, "at": full, "model": curve.model, "predicted": curve.predicted,
            "measured": float(np.mean(measured)), "error": curve.predicted - float(np.mean(measured))}


# --- the whole curve ----------------------------------------------------------------------------


@dataclass
class CurveResult:
    store: Path
    clf: str
    class_names: list[str]
    sizes: list[int]
    seeds: int
    choose: str
    points: list[dict[str, Any]]  # one per draw: size, seed, photos_per_class, accuracy, recall
    full: float  # photos a class of the whole train part (mean over classes)
    n_test: int
    split: dict[str, Any]
    fit: CurveFit | None
    per_class: list[dict[str, Any]]
    check: dict[str, Any] | None  # :func:`extrapolation`
    selection: dict[str, Any] | None  # the choice made once (choose="once")
    seconds: float
    files: dict[str, str] = field(default_factory=dict)

    def measured(self, n: float) -> tuple[float, float]:
        """Mean and standard deviation of the accuracy over the draws at ``n`` photos a class."""
        acc = np.array([p["accuracy"] for p in self.points if p["photos_per_class"] == n])
        return float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0

    def summary(self) -> list[str]:
        """The result in plain words, a sentence a line."""
        mean, _ = self.measured(self.full)
        se = 100 * np.sqrt(max(mean * (1 - mean), 0.25 / self.n_test) / self.n_test)
        lines = [f"at {_n(self.full)} a class (the whole train part): {100 * mean:.1f}% "
                 f"± {se:.1f} (the standard error of one test part of {self.n_test} photos)"]
        c = self.fit
        if c is None:
            lines.append("too few sizes to fit a curve (it takes three)")
            return lines
        words = f"twice as many photos: about {100 * c.gain:+.1f} points (± {100 * c.gain_spread:.2f})"
        if c.ceiling is not None:
            words += (f"; the curve flattens near {100 * c.ceiling:.1f}% "
                      f"(± {100 * (c.ceiling_spread or 0):.1f})")
        if c.flat_from is not None and c.flat_from <= FAR * self.full:
            words += (f", doubling gains under {100 * FLAT_GAIN:.1f} points from about "
                      f"{_n(c.flat_from)} a class")
        else:
            words += (f"; doubling still gains {100 * FLAT_GAIN:.1f} points or more at {FAR} "
                      "times these photos")
        lines.append(words + f" ({c.model} fit, {FORMULAS[c.model]})")
        if self.check:
            k = self.check
            lines.append(f"check: fitted on up to {_n(k['fitted_upto'])} a class alone, the curve "
                         f"predicted {100 * k['predicted']:.1f}% at {_n(k['at'])}; measured "
                         f"{100 * k['measured']:.1f}% ({100 * k['error']:+.1f} points)")
        gainers = [r for r in self.per_class if r.get("gain") is not None]
        if gainers:
            lines.append("gains most from more photos: " + ", ".join(
                f"{r['class']} {100 * r['gain']:+.1f}" for r in gainers[:3])
                + " points of recall when doubled")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "clf": self.clf, "class_names": self.class_names,
                "sizes": self.sizes, "seeds": self.seeds, "choose": self.choose,
                "full": self.full, "n_test": self.n_test, "split": self.split,
                "summary": self.summary(), "points": self.points,
                "fit": self.fit.as_dict() if self.fit else None,
                "curve": self.drawn_curve(), "per_class": self.per_class,
                "check": self.check, "selection": self.selection,
                "seconds": round(self.seconds, 3), "files": self.files}

    def drawn_curve(self) -> dict[str, list[float]] | None:
        """The fitted curve sampled from the smallest size to four times the train part."""
        if self.fit is None:
            return None
        x = np.geomspace(min(self.sizes), 4 * self.full, 60)
        return {"photos_per_class": [round(float(v), 3) for v in x],
                "accuracy": [round(float(v), 6) for v in self.fit(x)]}


def _n(v: float) -> str:
    """A count of photos as said: 700, 1,500 (two significant digits from 1,000 on)."""
    return f"{float(f'{v:.2g}') if v >= 1000 else round(v):,.0f}"


def default_output(store: str | os.PathLike) -> Path:
    """reports/<store>_curve/"""
    return Path("reports") / f"{Path(store).stem}_curve"


def per_class_gains(points: list[dict[str, Any]], class_names: list[str], full: float,
                    n_test: int, model: str) -> list[dict[str, Any]]:
    """Per class: mean recall per size, and the recall gained by doubling the photos (the same
    curve model fitted to its recall), largest gain first."""
    rows = []
    for k, name in enumerate(class_names):
        x, y, _ = size_means(points, str(k), n_test)
        c = fit_curve(points, full, key=str(k), n_test=n_test, model=model, spread=False)
        rows.append({"class": name, "photos_per_class": x.tolist(), "recall": y.round(6).tolist(),
                     "gain": round(c.gain, 6) if c else None,
                     "ceiling": round(c.ceiling, 6) if c and c.ceiling is not None else None})
    return sorted(rows, key=lambda r: -(r["gain"] if r["gain"] is not None else -1.0))


def learning_curve(store: str | os.PathLike, clf: str = "logreg", sizes: list[int] | None = None,
                   seeds: int = SEEDS, choose: str = "once", choose_folds: int = 3,
                   fractions=DEFAULT_FRACTIONS, split_seed: int = 0, exclude=None,
                   exclude_from_test: bool = False, train_flips: bool | None = None,
                   tta: bool | None = None, corrections: bool = True,
                   exclude_findings=EXCLUDE_FINDINGS, n_jobs: int = 2, model: str | None = None,
                   out_dir: str | os.PathLike | None = None,
                   on_point: Callable[[int, int], None] | None = None,
                   **params: Any) -> CurveResult:
    """Test accuracy of ``clf`` trained on ``seeds`` draws of each size of photos a class.

    ``C`` / ``scale`` left None are picked by ``featx fit``'s cross-validation: ``choose="once"``
    on the whole train part (then used at every size), ``"size"`` on each size's first draw,
    ``"point"`` on every draw. ``model``: the curve to fit (:data:`MODELS`; None: the power law).
    ``exclude``, ``exclude_findings``, ``corrections``, ``train_flips``, ``tta``: see
    :func:`featx.split.load_split`. ``on_point(done, total)`` is called as draws finish.
    ``out_dir``: where :func:`write_curve` writes the JSON, the points and the picture.
    """
    from featx.split import load_split

    start = time.perf_counter()
    make_head(clf, **params)  # the name and parameters, before loading any data
    if choose not in CHOICES:
        raise FeatxError(f"`choose` is one of {', '.join(CHOICES)}, got {choose!r}")
    if seeds < 1:
        raise FeatxError(f"`seeds` must be at least 1, got {seeds}")
    if model is not None and model not in MODELS:
        raise FeatxError(f"`model` is one of {', '.join(MODELS)}, got {model!r}")
    if out_dir is not None:
        check_output(out_dir, "the curve", folder=True)
    split = load_split(store, fractions, split_seed, exclude=exclude,
                       exclude_from_test=exclude_from_test, train_flips=train_flips, tta=tta,
                       corrections=corrections, exclude_findings=exclude_findings)
    names = list(split.feats.class_names)
    train = split.rows["train"]
    labels, hashes = split.y("train"), split.pool("train")[2]  # labels in force, groups
    counts = {names[c]: int(len(np.unique(hashes[labels == c]))) for c in np.unique(labels)}
    sizes = check_sizes(sizes, counts)
    if not split.n("test"):
        raise FeatxError(f"the test part of {store} is empty; a curve is scored on it (`fractions`)")
    selection = None
    if choose == "once":
        params, selection = pick_params(split, clf, params, choose_folds)
    orders = [[[train[g] for g in groups] for groups in class_orders(labels, hashes, s)]
              for s in range(seeds)]  # per seed, per class: the draw order, as store rows
    draws = [(n, s, draw(orders[s], n)) for n in sizes  # every draw of the whole part is the same
             for s in range(1 if n >= max(counts.values()) else seeds)]
    results = run_draws(split, draws, clf, params, choose, choose_folds, n_jobs)
    if on_point:
        on_point(len(results), len(draws))
    points = [{"size": n, "seed": s, "photos_per_class": per_class(n, counts), **r}
              for (n, s, _), r in zip(draws, results)]
    full = max(p["photos_per_class"] for p in points)
    n_test = split.n("test")
    fit = fit_curve(points, full, n_test=n_test, model=model)
    result = CurveResult(
        store=Path(store), clf=clf, class_names=names, sizes=sizes, seeds=seeds, choose=choose,
        points=points, full=full, n_test=n_test, split=split.info, fit=fit,
        per_class=per_class_gains(points, names, full, n_test, fit.model if fit else DEFAULT_MODEL),
        check=extrapolation(points, full, n_test, model), selection=selection,
        seconds=time.perf_counter() - start)
    if out_dir is not None:
        write_curve(result, out_dir)
    return result


def write_curve(result: CurveResult, out_dir: str | os.PathLike) -> dict[str, str]:
    """``curve.json`` (:meth:`CurveResult.as_dict`), ``points.csv`` and ``curve.png`` in ``out_dir``."""
    from featx.figures import plot_photos_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = ["size", "seed", "photos_per_class", "n_train", "accuracy", "C", "scale",
            *[f"recall_{c}" for c in result.class_names]]
    lines = [",".join(head)] + [",".join(map(str, [p[k] for k in head[:7]] + p["recall"]))
                                for p in result.points]
    result.files["csv"] = str(write_text(out / "points.csv", "\n".join(lines) + "\n", "the points"))
    name = Path(result.store).stem
    result.files["png"] = str(plot_photos_curve(result.as_dict(), out / "curve.png", title(name, result)))
    result.files["json"] = str(out / CURVE_FILE)
    write_text(out / CURVE_FILE, json.dumps(result.as_dict(), indent=2) + "\n", "the curve")
    return result.files


def title(name: str, result: "CurveResult") -> str:
    """The picture's title: store, head, draws, and the summary's first two sentences."""
    return (f"{name}: {result.clf}, {result.seeds} seeded draws a size, one test part of "
            f"{result.n_test}\n" + "\n".join(result.summary()[:2]))


def run_draws(split, draws: list[tuple[int, int, np.ndarray]], clf: str, params: dict[str, Any],
              choose: str, folds: int, n_jobs: int) -> list[dict[str, Any]]:
    """:func:`fit_point` of every (size, seed, rows) draw, in order. C / scale still None are
    picked on every draw (``choose="point"``), or on each size's first draw and used by its
    others (``"size"``); else (``"once"``, already picked) the head's defaults fill them."""
    free = [k for k in ("C", "scale") if params.get(k) is None]
    if choose == "point" or not free:
        return _run([partial(fit_point, split, rows, clf, params, folds)
                     for _, _, rows in draws], n_jobs)
    if choose == "once":
        filled = {**params, **{k: DEFAULTS[clf][k] for k in free}}
        return _run([partial(fit_point, split, rows, clf, filled, folds)
                     for _, _, rows in draws], n_jobs)
    first = [i for i, (_, s, _) in enumerate(draws) if s == 0]
    done = dict(zip(first, _run([partial(fit_point, split, draws[i][2], clf, params, folds)
                                 for i in first], n_jobs)))
    picked = {draws[i][0]: {k: done[i][k] for k in free} for i in first}
    rest = [i for i in range(len(draws)) if i not in done]
    done.update(zip(rest, _run([partial(fit_point, split, draws[i][2], clf,
                                        {**params, **picked[draws[i][0]]}, folds)
                                for i in rest], n_jobs)))
    return [done[i] for i in range(len(draws))]
