"""audit: the mislabeled, leaked and odd images of a labelled store, found from its vectors.

=================  ================================================================================
label issues       out-of-fold class probabilities for every row (k-fold over the whole store with
                   one of featx's heads; seeded, stratified, exact duplicates in one fold), ranked by
                   confident learning: cleanlab's ``find_label_issues`` and its label-quality score
                   (the out-of-fold probability of the given label, "self-confidence")
leaks              near-duplicate pairs (cosine >= ``threshold``, :mod:`featx.near_duplicates`) whose
                   images fall in different parts of the derived split (:mod:`featx.split`)
outliers           mean cosine distance to the ``k`` nearest images of the same class, scored by the
                   modified z-score within the class (median and MAD: Iglewicz and Hoaglin); the
                   images above ``outlier_z`` (3.5) are listed, so the list scales with the store
summary            per class: images, label issues, outliers, out-of-fold recall; cleanlab's estimate
                   of the share of wrong labels and the (given, likely true) class pairs it confuses
=================  ================================================================================

:func:`write_audit` draws a contact sheet per finding, one HTML page, ``audit.json`` and
``suspects.csv`` (path, label, finding, score, suggestion): edit it, then ``featx fit --exclude``
drops the listed label issues and leaks from the training part (:func:`featx.split.exclude_rows`).
The rows are :func:`featx.split.split_rows`' (the store's corrections applied, ``exclude``-d
images left out), as for every command.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from featx.errors import FeatxError
from featx.files import check_output, write_error, write_text
from featx.heads import check_clf, make_head
from featx.near_duplicates import DEFAULT_THRESHOLD, MAX_PAIRS, cross_pairs
from featx.index import EXACT_BELOW, Index, split_groups
from featx.neighbors import normalize
from featx.split import (  # noqa: F401  read_path_list, exclude_rows lived here before
    DEFAULT_FRACTIONS, PARTS, check_vectors, exclude_rows, read_path_list, split_rows)
from featx.store import Features, load_features

Progress = Callable[[str, int, int], None]  # (stage, done, total)

DEFAULT_FOLDS = 5
DEFAULT_TOP = 50
DEFAULT_NEIGHBORS = 10
# Outliers: a modified z-score above 3.5 (Iglewicz and Hoaglin's rule). On clean pets-dev
# vectors it lists 1 of 80, 4 of 300 and 14 of 2,000 images, where a fixed 50 was 62% of 80
# (BENCHMARKS.md, "Audit outliers").
OUTLIER_Z = 3.5
# The head's C when none is given. Label noise pulls a weakly regularised head towards the wrong
# labels: on VGG16 block5_pool vectors C=0.01 gave the best or near-best out-of-fold log-loss
# (pets-dev, clean and with 2% planted errors; flowers5-200), where the fit default C=1 gave
# overconfident probabilities and twice the estimated wrong labels (BENCHMARKS.md).
DEFAULT_C = {"logreg": 0.01}
BLOCK_ROWS = 2048  # outliers: similarities are computed BLOCK_ROWS x BLOCK_ROWS at a time
LEAK_PARTS = (("test", "train"), ("val", "train"), ("test", "val"))  # (held-out, twin) parts
CSV_FIELDS = ("path", "label", "finding", "score", "suggestion")


def default_output(store: str | os.PathLike) -> Path:
    """reports/<store>_audit/"""
    return Path("reports") / f"{Path(store).stem}_audit"


# --- findings -------------------------------------------------------------------------------------


@dataclass
class LabelIssue:
    row: int
    path: str
    label: str  # the given label
    suggested: str  # the most likely other class, out of fold
    quality: float  # cleanlab's label-quality score: out-of-fold probability of the given label
    p_suggested: float


@dataclass
class Leak:
    held: int  # the row in the held-out part (test, or val)
    twin: int  # its near-twin in the other part (train, or val)
    held_part: str
    twin_part: str
    similarity: float
    kind: str  # "near", or "exact" (same content hash)
    cross_label: bool


@dataclass
class Outlier:
    row: int
    path: str
    label: str
    distance: float  # mean cosine distance to the k nearest images of the same class
    predicted: str  # the out-of-fold prediction
    z: float = 0.0  # the distance's modified z-score within the class


@dataclass
class AuditReport:
    store: Path
    data_dir: str | None
    paths: list[str]
    class_names: list[str]  # the classes with images
    labels: np.ndarray  # (N,) index into class_names
    part_of: np.ndarray  # (N,) part name per row
    proba: np.ndarray  # (N, C) out-of-fold probabilities
    settings: dict[str, Any]
    split: dict[str, Any]
    label_issues: list[LabelIssue]
    leaks: list[Leak]
    outliers: list[Outlier]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def leak_dict(self, leak: Leak) -> dict[str, Any]:
        def side(i: int, part: str) -> dict[str, Any]:
            return {"path": self.paths[i], "label": self.class_names[self.labels[i]], "part": part}
        return {"held": side(leak.held, leak.held_part), "twin": side(leak.twin, leak.twin_part),
                "similarity": leak.similarity, "kind": leak.kind, "cross_label": leak.cross_label}

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of ``featx audit --json`` (every list in full)."""
        def row_free(items) -> list[dict[str, Any]]:
            return [{k: v for k, v in asdict(x).items() if k != "row"} for x in items]
        return {"store": str(self.store), "data_dir": self.data_dir, "n": len(self.paths),
                "class_names": self.class_names, **self.settings, "split": self.split,
                "summary": self.summary, "notes": self.notes,
                "label_issues": row_free(self.label_issues),
                "leaks": [self.leak_dict(x) for x in self.leaks],
                "outliers": row_free(self.outliers),
                "seconds": self.seconds, "files": self.files}

    def suspects(self) -> list[dict[str, Any]]:
        """The rows of ``suspects.csv``: every label issue, the twin of every leak (dropping it from
        training removes the leak) and the outliers."""
        rows = [{"path": x.path, "label": x.label, "finding": "label", "score": round(x.quality, 6),
                 "suggestion": x.suggested} for x in self.label_issues]
        rows += [{"path": self.paths[x.twin], "label": self.class_names[self.labels[x.twin]],
                  "finding": "leak", "score": round(x.similarity, 6),
                  "suggestion": f"near-twin of {x.held_part} image {self.paths[x.held]}"}
                 for x in self.leaks]
        rows += [{"path": x.path, "label": x.label, "finding": "outlier",
                  "score": round(x.distance, 6),
                  "suggestion": x.predicted if x.predicted != x.label else ""}
                 for x in self.outliers]
        return rows


# --- the steps ------------------------------------------------------------------------------------


def fold_ids(hashes, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of every row: scikit-learn's StratifiedKFold (shuffled, seeded) over the distinct
    content hashes, so exact duplicates always share a fold."""
    from sklearn.model_selection import StratifiedKFold

    _, first, inverse = np.unique(np.asarray(hashes, dtype=str), return_index=True,
                                  return_inverse=True)
    group_fold = np.empty(len(first), dtype=np.int64)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(cv.split(np.zeros(len(first)), labels[first])):
        group_fold[held] = k
    return group_fold[inverse.reshape(-1)]


def usable_folds(hashes, labels: np.ndarray, class_names: list[str], folds: int) -> tuple[int, str | None]:
    """``folds``, or fewer when a class has fewer distinct images (with a note saying so)."""
    if folds < 2:
        raise FeatxError(f"`folds` must be at least 2, got {folds}")
    _, first = np.unique(np.asarray(hashes, dtype=str), return_index=True)
    counts = np.bincount(labels[first], minlength=len(class_names))
    smallest = int(np.argmin(counts))
    if counts[smallest] < 2:
        raise FeatxError(f"class {class_names[smallest]!r} has {counts[smallest]} distinct image; "
                         f"an audit needs at least 2 a class (out-of-fold predictions)")
    if counts[smallest] >= folds:
        return folds, None
    return int(counts[smallest]), (f"class {class_names[smallest]!r} has only {counts[smallest]} "
                                   f"distinct images: {counts[smallest]} folds instead of {folds}")


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, fold: np.ndarray, n_classes: int,
                      clf: str = "logreg", progress: Progress | None = None,
                      blas_threads: int | None = 1, **params: Any) -> np.ndarray:
    """(N, n_classes) probabilities, each row's from a head fitted on the other folds (no
    validation part: the softmax head runs its ``epochs``).

    BLAS runs on one thread here: the solvers make many small matrix products, for which
    OpenBLAS' thread hand-offs cost more than they save (on a shared 2-core machine, 75 times
    more; see BENCHMARKS.md)."""
    from threadpoolctl import threadpool_limits

    proba = np.zeros((len(y), n_classes))
    k = int(fold.max()) + 1
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        for f in range(k):
            held = fold == f
            head = make_head(clf, **params)
            head.fit(X[~held], y[~held], n_classes=n_classes)
            proba[held] = head.predict_proba(X[held])
            if progress:
                progress("folds", f + 1, k)
    return proba / proba.sum(axis=1, keepdims=True)  # float32 heads: rows sum to 1 +- 1e-7


def find_label_issues(y: np.ndarray, proba: np.ndarray, paths: list[str],
                      class_names: list[str]) -> list[LabelIssue]:
    """cleanlab's label issues, worst (lowest label quality) first."""
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    ranked = cl_find(y, proba, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(y, proba, method="self_confidence")
    other = proba.copy()
    other[np.arange(len(y)), y] = -1.0
    suggested = other.argmax(axis=1)
    return [LabelIssue(int(i), paths[i], class_names[y[i]], class_names[suggested[i]],
                       round(float(quality[i]), 6), round(float(proba[i, suggested[i]]), 6))
            for i in ranked]


def find_leaks(x: np.ndarray | None, hashes, labels: np.ndarray, rows: dict[str, np.ndarray],
               threshold: float = DEFAULT_THRESHOLD, max_pairs: int = MAX_PAIRS,
               index: Index | None = None) -> list[Leak]:
    """Near-duplicate pairs of unit vectors ``x`` across parts: test-train, val-train, test-val;
    each group by similarity, highest first. ``index``: the pairs from the store's index instead
    (its rows being the rows here)."""
    leaks: list[Leak] = []
    pairs = index.range_pairs(threshold, max_pairs) if index is not None else None
    for held_part, twin_part in LEAK_PARTS:
        held, twin = rows[held_part], rows[twin_part]
        found = (cross_pairs(x[held], x[twin], threshold, max_pairs) if pairs is None
                 else _pairs_across(pairs, held, twin))
        for i, j, s in sorted(found, key=lambda t: (-t[2], t[0], t[1])):
            a, b = int(held[i]), int(twin[j])
            leaks.append(Leak(a, b, held_part, twin_part, round(s, 6),
                              "exact" if hashes[a] == hashes[b] else "near",
                              bool(labels[a] != labels[b])))
    return leaks


def _pairs_across(pairs: list[tuple[int, int, float]], held: np.ndarray, twin: np.ndarray
                  ) -> list[tuple[int, int, float]]:
    """(i, j, similarity): position i in ``held`` and j in ``twin`` of each pair between them."""
    at_held, at_twin = {int(r): i for i, r in enumerate(held)}, {int(r): j for j, r in enumerate(twin)}
    found = []
    for a, b, s in pairs:
        for u, v in ((a, b), (b, a)):
            if u in at_held and v in at_twin:
                found.append((at_held[u], at_twin[v], s))
    return found


def knn_distance(x: np.ndarray | None, labels: np.ndarray, k: int = DEFAULT_NEIGHBORS,
                 progress: Progress | None = None, index: Index | None = None) -> np.ndarray:
    """Mean cosine distance of every row of unit vectors ``x`` to its ``k`` nearest rows of the
    same class (itself excluded; fewer in a class of ``k`` rows or less). Exact, or by the
    store's ``index`` (its rows being the rows here)."""
    if k < 1:
        raise FeatxError(f"`neighbors` must be at least 1, got {k}")
    distance = np.zeros(len(labels))
    classes = np.unique(labels)
    for done, c in enumerate(classes, 1):
        members = np.flatnonzero(labels == c)
        if index is not None:
            best = index.self_join(min(k, len(members) - 1), among=labels == c)[1]
        else:
            best = top_similarities(x[members], min(k, len(members) - 1))
        distance[members] = 1.0 - best.mean(axis=1)
        if progress:
            progress("outliers", done, len(classes))
    return distance


def top_similarities(x: np.ndarray, k: int, block: int = BLOCK_ROWS) -> np.ndarray:
    """(N, k): the ``k`` highest dot products of each row of ``x`` with the other rows.

    One product per pair of row blocks (the upper triangle, so half of ``x @ x.T``), each giving
    candidates to both blocks' rows; values only (np.partition). Memory: ``block`` squared."""
    n = len(x)
    best = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(0, n, block):
        for j in range(i, n, block):
            sims = x[i:i + block] @ x[j:j + block].T
            if i == j:
                np.fill_diagonal(sims, -np.inf)  # not its own neighbour
            _keep_top(best, i, sims, k)
            if j > i:
                _keep_top(best, j, np.ascontiguousarray(sims.T), k)
    return best


def _keep_top(best: np.ndarray, start: int, sims: np.ndarray, k: int) -> None:
    """Merge candidate similarities (a row per row of ``best`` from ``start``) into ``best``."""
    rows = slice(start, start + len(sims))
    if sims.shape[1] > k:
        sims = np.partition(sims, -k, axis=1)[:, -k:]
    both = np.concatenate([best[rows], sims], axis=1)
    best[rows] = np.partition(both, -k, axis=1)[:, -k:]


def outlier_scores(distance: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the modified z-score of its distance within its class: 0.6745 (d - median) / MAD
    (0 where a class's distances do not spread)."""
    z = np.zeros(len(distance))
    for c in np.unique(labels):
        members = labels == c
        d = distance[members]
        median = np.median(d)
        mad = np.median(np.abs(d - median))
        if mad > 0:
            z[members] = 0.6745 * (d - median) / mad
    return z


def summarize(y: np.ndarray, proba: np.ndarray, class_names: list[str],
              issues: list[LabelIssue], outliers: list[Outlier], leaks: list[Leak]) -> dict[str, Any]:
    """Per-class counts, cleanlab's estimate of the share of wrong labels, the most confused pairs."""
    from cleanlab.count import estimate_joint, num_label_issues

    n = len(y)
    pred = proba.argmax(axis=1)
    joint = estimate_joint(y, proba)  # p(given label = row, true label = column)
    flagged: dict[tuple[str, str], int] = {}
    for x in issues:
        flagged[(x.label, x.suggested)] = flagged.get((x.label, x.suggested), 0) + 1
    pairs = sorted(((joint[i, j], i, j) for i in range(len(class_names))
                    for j in range(len(class_names)) if i != j), reverse=True)
    confused = [{"given": class_names[i], "likely": class_names[j],
                 "estimated": int(round(p * n)),
                 "flagged": flagged.get((class_names[i], class_names[j]), 0)}
                for p, i, j in pairs[:10] if round(p * n) >= 1]
    estimated = int(num_label_issues(y, proba))
    per_class = []
    for c, name in enumerate(class_names):
        mine = y == c
        per_class.append({
            "class": name, "images": int(mine.sum()),
            "label_issues": sum(x.label == name for x in issues),
            "outliers": sum(x.label == name for x in outliers),
            "oof_recall": round(float(np.mean(pred[mine] == c)), 4)})
    return {"oof_accuracy": round(float(np.mean(pred == y)), 4),
            "n_label_issues": len(issues), "estimated_wrong_labels": estimated,
            "estimated_wrong_share": round(estimated / n, 4),
            "n_leaks": len(leaks),
            "test_with_twin_in_train": len({x.held for x in leaks if x.held_part == "test"
                                            and x.twin_part == "train"}),
            "val_with_twin_in_train": len({x.held for x in leaks if x.held_part == "val"}),
            "n_outliers": len(outliers), "per_class": per_class, "confused": confused}


# --- the whole audit ------------------------------------------------------------------------------


def audit_store(store: str | os.PathLike, clf: str = "logreg", folds: int = DEFAULT_FOLDS,
                top: int = DEFAULT_TOP, *, seed: int = 0, fractions=DEFAULT_FRACTIONS,
                split_seed: int = 0, threshold: float = DEFAULT_THRESHOLD,
                neighbors: int = DEFAULT_NEIGHBORS, out: str | os.PathLike | None = None,
                progress: Progress | None = None, corrections: bool = True,
                outlier_z: float = OUTLIER_Z, group: str = "hash", exact: bool | None = None,
                exact_below: int = EXACT_BELOW, **params: Any) -> AuditReport:
    """Audit a store: label issues, leaks across the split, the outliers (modified z-score
    above ``outlier_z``), a summary; with ``out``, write the sheets (the first ``top`` of each
    finding), the page, ``audit.json`` and ``suspects.csv`` there. ``group``: what the split
    keeps in one part (:func:`featx.index.split_groups`); ``exact``, ``exact_below``: how leaks
    and outliers are searched (:meth:`featx.index.Index.for_store`)."""
    check_clf(clf)
    if params.get("C") is None and clf in DEFAULT_C:
        params["C"] = DEFAULT_C[clf]
    make_head(clf, seed=seed, **params)  # validate the parameters before loading any data
    if top < 1:
        raise FeatxError(f"`top` must be at least 1, got {top}")
    if not 0.0 < threshold <= 1.0:
        raise FeatxError(f"`threshold` must be in (0, 1], got {threshold}")
    if out is not None:
        check_output(out, "the audit", folder=True)
    groups, group_name = split_groups(store, group, threshold, exact, exact_below)
    t0 = time.perf_counter()
    feats, y, names, rows, split = load_labelled(store, fractions, split_seed, corrections,
                                                 groups, group_name)
    k, note = usable_folds(feats.hashes, y, names, folds)
    seconds: dict[str, float] = {"load": time.perf_counter() - t0}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - start
        return value

    fold = fold_ids(feats.hashes, y, k, seed)
    proba = timed("out_of_fold", lambda: out_of_fold_proba(
        feats.features, y, fold, len(names), clf, progress, seed=seed, **params))
    issues = timed("label_issues", lambda: find_label_issues(y, proba, feats.paths, names))
    index = Index.for_store(store, exact, exact_below)
    if index.kind == "exact" or index.n != feats.n:  # the index's rows are the store's
        x, index = normalize(feats.features), None
    else:
        x = None
    leaks = timed("leaks", lambda: find_leaks(x, feats.hashes, y, rows, threshold, index=index))
    distance = timed("outliers", lambda: knn_distance(x, y, neighbors, progress, index=index))
    pred = proba.argmax(axis=1)
    z = outlier_scores(distance, y)
    worst = [i for i in np.argsort(-z, kind="stable") if z[i] > outlier_z]
    outliers = [Outlier(int(i), feats.paths[i], names[y[i]], round(float(distance[i]), 6),
                        names[pred[i]], round(float(z[i]), 3)) for i in worst]
    part_of = np.empty(len(y), dtype=object)
    for part in PARTS:
        part_of[rows[part]] = part
    report = AuditReport(
        store=Path(store), data_dir=feats.meta.get("data_dir"), paths=feats.paths,
        class_names=names, labels=y, part_of=part_of, proba=proba,
        settings={"clf": clf, "params": make_head(clf, seed=seed, **params).get_params(),
                  "folds": k, "seed": seed, "threshold": threshold, "neighbors": neighbors,
                  "top": top, "outlier_z": outlier_z},
        split=split, label_issues=issues, leaks=leaks,
        outliers=outliers, summary=summarize(y, proba, names, issues, outliers, leaks),
        notes=[note] if note else [])
    seconds["total"] = time.perf_counter() - t0
    report.seconds = {key: round(v, 3) for key, v in seconds.items()}
    if out is not None:
        write_audit(report, out)
    return report


def load_labelled(store: str | os.PathLike, fractions=DEFAULT_FRACTIONS, split_seed: int = 0,
                  corrections: bool = True, groups=None, group_name: str = "content hash"
                  ) -> tuple[Features, np.ndarray, list[str], dict[str, np.ndarray], dict]:
    """The store's rows in the split (:func:`featx.split.split_rows`: corrected, the excluded
    left out), their labels renumbered over the classes that have images, those classes, the
    parts (indices into the rows kept) and the split's record."""
    feats = load_features(store)
    check_vectors(feats.meta, store, "an audit")
    got = split_rows(feats.hashes, feats.labels, feats.paths, list(feats.class_names),
                     store=store, meta=feats.meta, fractions=fractions, seed=split_seed,
                     corrections=corrections, purpose="an audit", groups=groups,
                     group_name=group_name)
    keep = np.sort(np.concatenate([got.rows[p] for p in PARTS]))
    labels = got.labels
    if len(keep) < feats.n:
        position = np.full(feats.n, -1)
        position[keep] = np.arange(len(keep))
        feats = Features(feats.features[keep], labels[keep], [feats.paths[i] for i in keep],
                         feats.hashes[keep], feats.class_names, feats.meta, feats.skipped,
                         None if feats.flipped is None else feats.flipped[keep])
        labels = feats.labels
        rows = {p: position[got.rows[p]] for p in PARTS}
    else:
        rows = got.rows
    present = np.unique(labels)
    if len(present) < 2:
        name = feats.class_names[present[0]] if len(present) else "none"
        raise FeatxError(f"{store} holds one class ({name}); an audit needs at least two")
    info = {k: v for k, v in got.info.items() if k not in ("test_rows", "held_out_changes")}
    return (feats, np.searchsorted(present, labels), [feats.class_names[c] for c in present],
            rows, info)


# --- output ---------------------------------------------------------------------------------------


def write_audit(report: AuditReport, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write the sheets (label_issues.png, leaks.png, outliers.png), audit.html, audit.json and
    suspects.csv into ``out_dir``; returns (and records) the files."""
    out = check_output(out_dir, "the audit", folder=True)
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise write_error(e, out, "the audit") from None
    files = report.files
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(report.suspects())
    files["suspects"] = str(write_text(out / "suspects.csv", table.getvalue(), "the suspects list"))
    files.update(_draw_sheets(report, out))
    files["html"] = str(out / "audit.html")
    files["json"] = str(out / "audit.json")
    write_text(files["html"], _page(report), "the audit page")
    write_text(files["json"], json.dumps(report.as_dict(), indent=2, default=str) + "\n", "the audit")
    return files


def _draw_sheets(report: AuditReport, out: Path) -> dict[str, str]:
    from featx.figures import Cell, draw_cells
    from featx.thumbs import resolve, short

    top, store = report.settings["top"], report.store.name

    def cell(i: int, head: str, alert: bool = False) -> Cell:
        return Cell(resolve(report.paths[i], report.data_dir),
                    f"{head}\n{short(Path(report.paths[i]).name, 22)}", alert)

    files = {}
    issues = report.label_issues[:top]
    if issues:
        cells = [cell(x.row, f"#{n} {x.label} -> {x.suggested}? q {x.quality:.3f}", True)
                 for n, x in enumerate(issues, 1)]
        files["label_issues"] = str(draw_cells(cells, out / "label_issues.png", (
            f"{store}: {len(report.label_issues)} likely label errors (cleanlab, out-of-fold "
            f"{report.settings['clf']}): given -> suggested label, q = label quality; "
            f"first {len(issues)} shown")))
    leaks = report.leaks[:top]
    if leaks:
        cells = []
        for n, x in enumerate(leaks, 1):
            cells.append(cell(x.held, f"leak {n}: {x.held_part}, {x.similarity:.3f}\n"
                                      f"{report.class_names[report.labels[x.held]]}", True))
            cells.append(cell(x.twin, f"leak {n}: {x.twin_part}\n"
                                      f"{report.class_names[report.labels[x.twin]]}", x.cross_label))
        s = report.summary
        files["leaks"] = str(draw_cells(cells, out / "leaks.png", (
            f"{store}: {len(report.leaks)} near-duplicate pairs across the split (cosine >= "
            f"{report.settings['threshold']}); {s['test_with_twin_in_train']} test images have a "
            f"near-twin in train; first {len(leaks)} pairs shown"), cols=6))
    if report.outliers:
        cells = [cell(x.row, f"#{n} {x.label}, dist {x.distance:.3f}, z {x.z:.1f}"
                             + (f"\npredicted {x.predicted}" if x.predicted != x.label else ""))
                 for n, x in enumerate(report.outliers[:top], 1)]
        files["outliers"] = str(draw_cells(cells, out / "outliers.png", (
            f"{store}: {len(report.outliers)} images far from the rest of their class (mean "
            f"cosine distance to the {report.settings['neighbors']} nearest of the same class, "
            f"modified z-score above {report.settings['outlier_z']}); first {len(cells)} shown")))
    return files


SECTIONS = {
    "label_issues": "Likely label errors: confident learning (cleanlab) on out-of-fold "
                    "probabilities; the given label, the suggested one and the label quality "
                    "(out-of-fold probability of the given label).",
    "leaks": "Near-duplicate pairs whose images fall in different parts of the derived split: "
             "the held-out image (red) and its twin.",
    "outliers": "The images least like the rest of their class: mean cosine distance to their "
                "nearest neighbours of the same class.",
}


def _page(report: AuditReport) -> str:
    """One self-contained HTML page: the summary, then each finding's sheet and list."""
    from featx.figures import inline_png

    e = html.escape
    s, top = report.summary, report.settings["top"]

    def table(head: list[str], body: Iterable[list[Any]]) -> str:
        rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{rows}</table>"

    parts = [
        f"<p>{s['n_label_issues']} likely label errors; cleanlab estimates {s['estimated_wrong_labels']}"
        f" wrong labels ({s['estimated_wrong_share']:.1%}). Out-of-fold accuracy of "
        f"{e(report.settings['clf'])} over {report.settings['folds']} folds: {s['oof_accuracy']:.4f}. "
        f"{s['n_leaks']} near-duplicate pairs across the split; {s['test_with_twin_in_train']} test "
        f"images have a near-twin in train.</p>",
        table(["class", "images", "label issues", "outliers (top)", "out-of-fold recall"],
              ([c["class"], c["images"], c["label_issues"], c["outliers"], c["oof_recall"]]
               for c in s["per_class"])),
    ]
    if s["confused"]:
        parts += ["<h2>Confused classes</h2>", table(
            ["given label", "likely true label", "estimated (cleanlab)", "flagged"],
            ([c["given"], c["likely"], c["estimated"], c["flagged"]] for c in s["confused"]))]
    parts += [f"<p class=note>note: {e(n)}</p>" for n in report.notes]
    lists = {
        "label_issues": (["path", "given", "suggested", "quality"],
                         [[x.path, x.label, x.suggested, f"{x.quality:.4f}"]
                          for x in report.label_issues[:top]]),
        "leaks": (["held-out image", "part", "twin", "part", "similarity"],
                  [[report.paths[x.held], x.held_part, report.paths[x.twin], x.twin_part,
                    f"{x.similarity:.4f}"] for x in report.leaks[:top]]),
        "outliers": (["path", "class", "distance", "predicted"],
                     [[x.path, x.label, f"{x.distance:.4f}", x.predicted]
                      for x in report.outliers[:top]]),
    }
    for key, caption in SECTIONS.items():
        parts += [f"<h2>{e(key.replace('_', ' '))}</h2><p>{e(caption)}</p>"]
        if key in report.files:
            parts += [inline_png(report.files[key], key), table(*lists[key])]
        else:
            parts += ["<p>none found.</p>"]
    title = f"featx audit: {report.store.name}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:90%}}img{{max-width:100%}}.note{{color:#a40}}</style></head><body>
<h1>{e(title)}</h1><p>Data folder <code>{e(str(report.data_dir))}</code>;
suspects to review and edit: <code>suspects.csv</code>, then <code>featx fit --exclude</code>.</p>
{''.join(parts)}
</body></html>
"""
