"""suggest: which unlabelled photos to label next, so that labelling them helps the most.

:func:`suggest` embeds a folder of unlabelled photos into a store of its own with the labelled
store's extractor settings (``featx extract``'s loop, so reruns reuse the vectors), fits ``featx
fit``'s head on the labelled store's train part (its automatic choice of ``C`` and ``scale``,
corrections, exclusions and flips included), and ranks the photos with :func:`rank`:

* **uncertainty**: the margin between the head's two most probable classes (small: the head is
  torn, so the label teaches it the most);
* **spread**: among the ``pool`` x ``n`` most uncertain photos, k-means (``n`` clusters, on
  L2-normalised vectors) and the most uncertain photo of each cluster, so that 50 near-copies of
  one hard photo yield one suggestion, not 50.

Photos whose content the labelled store already holds, and exact duplicates within the folder,
are not suggested. It writes ``suggestions.csv`` (rank, path, the head's guess), a contact sheet
``suggestions.png`` and ``suggest.json``. A person labels them by moving the files into the class
folders of the labelled data folder and reruns ``featx extract``.

The strategies of :data:`STRATEGIES` (``random``, ``margin``, ``entropy``, ``margin-diverse``) are
compared by simulation in ``scripts/sim_suggest.py``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx.errors import FeatxError
from featx.files import check_output, write_text
from featx.split import DEFAULT_FRACTIONS, EXCLUDE_FINDINGS

STRATEGIES = ("margin-diverse", "margin", "entropy", "random")
DEFAULT_STRATEGY = "margin-diverse"
POOL = 4  # margin-diverse: k-means over the POOL x n most uncertain photos


def margins(proba: np.ndarray) -> np.ndarray:
    """The top class's probability minus the runner-up's, per row (0: torn, 1: sure)."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row's class probabilities (nats)."""
    p = np.clip(proba, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def rank(proba: np.ndarray, X: np.ndarray, n: int, strategy: str = DEFAULT_STRATEGY,
         seed: int = 0, pool: int = POOL) -> np.ndarray:
    """Row indices of the ``n`` photos to label first, in the order to label them."""
    check_strategy(strategy)
    n = min(n, len(proba))
    if strategy == "random":
        return np.random.default_rng(seed).permutation(len(proba))[:n]
    if strategy == "entropy":
        return np.argsort(-entropy(proba), kind="stable")[:n]
    order = np.argsort(margins(proba), kind="stable")
    if strategy == "margin" or n == len(proba):
        return order[:n]
    return diverse(order[:min(len(order), pool * n)], X, n, seed)


def diverse(candidates: np.ndarray, X: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` of ``candidates`` (most uncertain first) spread over the embedding space: k-means
    into ``n`` clusters on L2-normalised vectors, the first candidate of each cluster, in the
    candidates' order."""
    from sklearn.cluster import KMeans

    if len(candidates) <= n:
        return candidates
    Z = X[candidates].astype(np.float64)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=n, n_init=1, random_state=seed).fit_predict(Z)
    _, first = np.unique(labels, return_index=True)
    return candidates[np.sort(first)]


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise FeatxError(f"`strategy` is one of {', '.join(STRATEGIES)}, got {strategy!r}")


# --- the unlabelled store -----------------------------------------------------------------------


def default_unlabelled_store(store: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """features/<folder>_<the labelled store's settings part>.h5, beside ``store``'s naming."""
    from featx.embed import Extractor
    from featx.extract import default_output
    from featx.store import read_meta

    settings = Extractor.from_meta(read_meta(store)).settings
    return default_output(Path(folder), _no_flips(settings))


def _no_flips(settings):
    """The store's settings without mirrored vectors: suggestions need one vector a photo."""
    from dataclasses import replace

    return replace(settings, augment="none")


def embed_folder(store: str | os.PathLike, folder: str | os.PathLike, out: str | os.PathLike,
                 batch_size: int = 32, workers: int = 2, weights: str | None = None,
                 on_progress=None):
    """Embed every image under ``folder`` into the store ``out`` with ``store``'s extractor
    settings (``featx.extract``: reruns reuse the stored vectors). A folder without class
    subfolders becomes an unlabelled store; one with subfolders, a store of those (their names
    are not used here)."""
    from featx.embed import Extractor
    from featx.extract import extract
    from featx.store import read_meta

    folder = Path(folder)
    if not folder.is_dir():
        raise FeatxError(f"the folder of photos to label is not found: {folder}")
    settings = _no_flips(Extractor.from_meta(read_meta(store), weights).settings)
    return extract(folder, out, settings, batch_size=batch_size, workers=workers,
                   on_progress=on_progress, min_classes=1)


def photo_path(stored: str, folder: Path) -> Path:
    """Where a row of the folder's store is on disk."""
    return folder / stored


# --- the command --------------------------------------------------------------------------------


@dataclass
class Suggestions:
    store: Path
    folder: Path
    unlabelled_store: Path
    clf: str
    strategy: str
    class_names: list[str]
    n_photos: int  # photos in the folder with a vector
    n_known: int  # ... whose content the labelled store already holds (not suggested)
    n_duplicates: int  # ... that repeat another photo of the folder (not suggested)
    rows: list[dict[str, Any]]  # rank, path, guess, probability, runner_up, margin
    test_accuracy: float | None
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "folder": str(self.folder),
                "unlabelled_store": str(self.unlabelled_store), "clf": self.clf,
                "strategy": self.strategy, "class_names": self.class_names,
                "n_photos": self.n_photos, "n_known": self.n_known,
                "n_duplicates": self.n_duplicates, "n_suggested": len(self.rows),
                "test_accuracy": self.test_accuracy, "suggestions": self.rows,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "seconds": round(self.seconds, 3), "files": self.files}


def default_output(folder: str | os.PathLike) -> Path:
    """reports/<folder>_suggest/"""
    return Path("reports") / f"{Path(folder).resolve().name}_suggest"


def suggest(store: str | os.PathLike, folder: str | os.PathLike, n: int = 50,
            clf: str = "logreg", strategy: str = DEFAULT_STRATEGY,
            out_dir: str | os.PathLike | None = None,
            unlabelled_store: str | os.PathLike | None = None, fractions=DEFAULT_FRACTIONS,
            split_seed: int = 0, exclude=None, exclude_findings=EXCLUDE_FINDINGS,
            corrections: bool = True, train_flips: bool | None = None,
            batch_size: int = 32, workers: int = 2, weights: str | None = None, n_jobs: int = 2,
            on_progress: Callable[[str, int, int], None] | None = None,
            **params: Any) -> Suggestions:
    """The ``n`` photos of ``folder`` to label next for ``store``'s classifier (see the module
    docstring); with ``out_dir``, the list, the sheet and the JSON are written there."""
    from featx.fit import fit_store
    from featx.heads import make_head
    from featx.store import load_features

    start = time.perf_counter()
    check_strategy(strategy)
    if n < 1:
        raise FeatxError(f"`n` must be at least 1, got {n}")
    make_head(clf, **params)
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatxError(f"the folder of photos to label is not found: {folder}")
    unlabelled_store = Path(unlabelled_store or default_unlabelled_store(store, folder))
    if out_dir is not None:
        check_output(out_dir, "the suggestions", folder=True)
    check_output(unlabelled_store, "the unlabelled photos' store")
    fitted = fit_store(store, clf, fractions, split_seed, exclude=exclude,
                       exclude_findings=exclude_findings, corrections=corrections,
                       train_flips=train_flips, n_jobs=n_jobs, **params)
    report = embed_folder(store, folder, unlabelled_store, batch_size, workers, weights,
                          on_progress)
    new = load_features(unlabelled_store)
    known = set(np.asarray(load_features(store).hashes).tolist())
    _, first = np.unique(new.hashes, return_index=True)
    keep = np.array(sorted(i for i in first if new.hashes[i] not in known), dtype=np.int64)
    proba = fitted.head.predict_proba(new.features[keep]) if len(keep) else np.empty((0, 0))
    picked = keep[rank(proba, new.features[keep], n, strategy, seed=params.get("seed") or 0)] \
        if len(keep) else keep
    at = {int(r): i for i, r in enumerate(keep)}
    result = Suggestions(
        store=Path(store), folder=folder, unlabelled_store=unlabelled_store, clf=clf,
        strategy=strategy, class_names=fitted.class_names, n_photos=len(new.paths),
        n_known=int(sum(h in known for h in new.hashes)),
        n_duplicates=int(len(new.paths) - len(first)),
        rows=[_row(k + 1, new.paths[r], folder, proba[at[int(r)]], fitted.class_names)
              for k, r in enumerate(picked)],
        test_accuracy=fitted.test["accuracy"] if fitted.test else None,
        seconds=time.perf_counter() - start, skipped=report.skipped)
    if out_dir is not None:
        write_suggestions(result, out_dir)
    return result


def _row(k: int, stored: str, folder: Path, p: np.ndarray, names: list[str]) -> dict[str, Any]:
    top = np.argsort(-p, kind="stable")
    return {"rank": k, "path": str(photo_path(stored, folder)), "guess": names[top[0]],
            "probability": round(float(p[top[0]]), 4),
            "runner_up": names[top[1]] if len(top) > 1 else None,
            "margin": round(float(p[top[0]] - (p[top[1]] if len(top) > 1 else 0.0)), 4)}


def write_suggestions(result: Suggestions, out_dir: str | os.PathLike) -> dict[str, str]:
    """suggestions.csv, suggestions.png (a contact sheet) and suggest.json in ``out_dir``."""
    import csv
    import io

    from featx.figures import Cell, draw_cells
    from featx.thumbs import short

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    keys = ["rank", "path", "guess", "probability", "runner_up", "margin"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    result.files["csv"] = str(write_text(out / "suggestions.csv", buf.getvalue(), "the list"))
    cells = [Cell(Path(r["path"]), f"#{r['rank']} {r['guess']} {r['probability']:.2f}"
                  f"{' / ' + r['runner_up'] if r['runner_up'] else ''}\n"
                  f"{short(Path(r['path']).name, 22)}") for r in result.rows]
    title = (f"{len(result.rows)} photos of {result.folder} to label next for "
             f"{Path(result.store).name} ({result.strategy}); caption: the head's guess, its "
             f"probability / the runner-up. Label them by moving each file into its class folder.")
    result.files["png"] = str(draw_cells(cells, out / "suggestions.png", title))
    result.files["json"] = str(out / "suggest.json")
    write_text(out / "suggest.json", json.dumps(result.as_dict(), indent=2) + "\n", "the list")
    return result.files
