"""review: the logic behind ``featx review``: a store's suspects, their corrections and a refit.

A :class:`Review` holds one store in memory (its vectors, L2-normalised once) and answers what the
page asks (:mod:`featx.web.review` only calls it):

=============  ==================================================================================
overview       counts per class and part (labels in force), the head's val/test accuracy beside
               chance, how many corrections the head has not seen yet ("pending")
suspects       a page of one ranking, each with its neighbours: ``label`` (cleanlab's label
               issues, worst first), ``leak`` (near-twins across the split), ``outlier`` (every
               photo by its distance to its class) and ``all`` (every photo by label quality)
decide         relabel as a class, ``exclude`` or ``keep``: written to the corrections file
               (:mod:`featx.corrections`) under a lock, atomically, before it returns
refit          featx fit's head again on the labels in force (the parameters it picked first),
               then a fresh label ranking: old and new accuracy, the photos whose prediction moved
map            the 2-D map of :mod:`featx.maps`, computed once and kept beside the store
=============  ==================================================================================

The audit reuses :mod:`featx.audit`'s steps (out-of-fold probabilities, cleanlab, leaks, outlier
distances) and is kept, with the map and the head's parameters, in ``FILE.h5.review/``; a cache is
used only for the very store (a digest of its hashes and labels) and settings it was made from.
:func:`write_folders` writes a corrected copy of the data folder as links.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featx import corrections as corr
from featx.audit import (DEFAULT_C, DEFAULT_FOLDS, DEFAULT_NEIGHBORS, Leak, find_label_issues,
                         find_leaks, fold_ids, knn_distance, out_of_fold_proba, usable_folds)
from featx.errors import FeatxError
from featx.files import atomic_folder, atomic_path, check_output, write_text
from featx.heads import make_head
from featx.index import Index
from featx.maps import DEFAULT_MAX_POINTS, METHODS
from featx.near_duplicates import DEFAULT_THRESHOLD
from featx.neighbors import normalize
from featx.split import DEFAULT_FRACTIONS, PARTS, split_indices
from featx.store import Features, load_features

Progress = Callable[[str, int, int], None]  # (stage, done, total)

KINDS = ("label", "leak", "outlier", "all")
KEEP = "keep"  # the action: the stored label stays (recorded as a correction to itself)
PAGE = 24  # suspects a page, by default
MAX_PAGE = 200
SHOWN_NEIGHBORS = 6
MARKER = ".featx-review.json"  # in a folder written by write_folders


def cache_dir(store: str | os.PathLike) -> Path:
    """``FILE.h5.review/`` beside the store: the audit, the map and the head's parameters."""
    store = Path(store)
    return store.with_name(store.name + ".review")


@dataclass(frozen=True)
class Settings:
    """How a review audits and fits (the audit's and fit's defaults)."""

    clf: str = "logreg"
    C: float | None = None  # the head's; None (with ``scale``): featx fit's automatic choice
    scale: str | None = None
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    split_seed: int = 0
    threshold: float = DEFAULT_THRESHOLD
    outlier_k: int = DEFAULT_NEIGHBORS
    map_method: str = "tsne"
    max_points: int = DEFAULT_MAX_POINTS

    def check(self) -> "Settings":
        """FeatxError for a setting no review can use; else the settings."""
        if self.map_method not in METHODS:
            raise FeatxError(f"unknown `map_method` {self.map_method!r}; choose tsne or pca")
        if self.scale is not None and self.scale not in ("none", "l2"):
            raise FeatxError(f"`scale` must be none or l2, got {self.scale!r}")
        make_head(self.clf, **{k: v for k, v in (("C", self.C), ("scale", self.scale)) if v is not None})
        return self

    def audit_key(self) -> dict[str, Any]:
        return {"clf": self.clf, "folds": self.folds, "seed": self.seed,
                "fractions": list(self.fractions), "split_seed": self.split_seed,
                "threshold": self.threshold, "outlier_k": self.outlier_k}


# --- the rankings ---------------------------------------------------------------------------------


@dataclass
class Ranking:
    """One audit of the labels in force: per row (NaN / -1 for excluded rows) and the lists."""

    labels: np.ndarray  # (N,) the labels it was made on, -1 for excluded rows
    proba: np.ndarray  # (N, C) out-of-fold probabilities
    quality: np.ndarray  # (N,) out-of-fold probability of the label (cleanlab's self-confidence)
    suggested: np.ndarray  # (N,) the most likely other class
    issues: np.ndarray  # rows cleanlab flags, worst first
    distance: np.ndarray  # (N,) mean cosine distance to the k nearest of the same class
    seconds: dict[str, float] = field(default_factory=dict)
    _orders: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def order(self, kind: str) -> np.ndarray:
        """The rows of a ranking, worst first (``leak`` is kept by the :class:`Review`)."""
        if kind == "label":
            return self.issues
        if kind not in self._orders:
            active = np.flatnonzero(self.labels >= 0)
            score = -self.distance[active] if kind == "outlier" else self.quality[active]
            self._orders[kind] = active[np.argsort(score, kind="stable")]
        return self._orders[kind]

    def save(self, path: Path, key: dict[str, Any]) -> None:
        arrays = {name: getattr(self, name) for name in
                  ("labels", "proba", "quality", "suggested", "issues", "distance")}
        with atomic_path(path, "the review's audit cache") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=json.dumps(key, sort_keys=True), **arrays)

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> "Ranking | None":
        """The cached ranking when it was made with ``key``, else None."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != json.dumps(key, sort_keys=True):
                    return None
                return cls(*(z[name] for name in
                             ("labels", "proba", "quality", "suggested", "issues", "distance")))
        except (OSError, KeyError, ValueError):
            return None


def rank_labels(feats: Features, labels: np.ndarray, excluded: np.ndarray, settings: Settings,
                previous: Ranking | None = None, progress: Progress | None = None) -> Ranking:
    """Audit the labels in force: out-of-fold probabilities and cleanlab's label issues on the rows
    not excluded, and each row's outlier distance within its class.

    With ``previous`` (a ranking of mostly the same labels), only the rows whose label or
    exclusion changed get a new outlier distance (the others keep theirs: one photo more or less
    in a class barely moves its neighbours' mean distance)."""
    t0 = time.perf_counter()
    active = np.flatnonzero(~excluded)
    present = np.unique(labels[active])
    y = np.searchsorted(present, labels[active])
    names = [feats.class_names[c] for c in present]
    hashes = np.asarray(feats.hashes)[active]
    k, _ = usable_folds(hashes, y, names, settings.folds)
    fold = fold_ids(hashes, y, k, settings.seed)
    params = {"C": DEFAULT_C[settings.clf]} if settings.clf in DEFAULT_C else {}
    p = out_of_fold_proba(feats.features[active], y, fold, len(names), settings.clf, progress,
                          seed=settings.seed, **params)
    t1 = time.perf_counter()
    found = find_label_issues(y, p, [feats.paths[i] for i in active], names)
    n, n_classes = feats.n, len(feats.class_names)
    proba = np.full((n, n_classes), np.nan, dtype=np.float32)
    proba[np.ix_(active, present)] = p
    quality = np.full(n, np.nan)
    quality[active] = p[np.arange(len(y)), y]
    other = p.copy()
    other[np.arange(len(y)), y] = -1.0
    suggested = np.full(n, -1, dtype=np.int64)
    suggested[active] = present[other.argmax(axis=1)]
    in_force = np.where(excluded, -1, labels)
    t2 = time.perf_counter()
    distance = _distances(feats, in_force, settings.outlier_k, previous)
    seconds = {"out_of_fold": t1 - t0, "label_issues": t2 - t1,
               "outliers": time.perf_counter() - t2}
    return Ranking(in_force, proba, quality, suggested,
                   np.array([active[x.row] for x in found], dtype=np.int64), distance,
                   {key: round(v, 3) for key, v in seconds.items()})


def _distances(feats: Features, labels: np.ndarray, k: int, previous: Ranking | None) -> np.ndarray:
    """Outlier distances of the rows with a label (>= 0); see :func:`rank_labels`."""
    x = unit_vectors(feats)
    distance = np.full(len(labels), np.nan)
    active = np.flatnonzero(labels >= 0)
    if previous is None or len(previous.labels) != len(labels):
        distance[active] = knn_distance(x[active], labels[active], k)
        return distance
    distance[active] = previous.distance[active]
    for i in np.flatnonzero((labels != previous.labels) & (labels >= 0)):
        members = np.flatnonzero(labels == labels[i])
        sims = x[members] @ x[i]
        sims = np.sort(sims[members != i])[::-1][:k]
        distance[i] = 1.0 - float(sims.mean()) if len(sims) else 0.0
    return distance


_UNIT: tuple = (None, None)  # (the vectors, their unit copy): the array itself, not its id


def unit_vectors(feats: Features) -> np.ndarray:
    """The store's vectors L2-normalised (computed once for the last store asked about)."""
    global _UNIT
    cached = _UNIT
    if cached[0] is not feats.features:
        cached = _UNIT = (feats.features, normalize(feats.features))
    return cached[1]


def store_digest(feats: Features) -> str:
    """What a cache is made from: the rows' hashes, stored labels, the class names and the
    extractor's settings (a store made again with other settings has other vectors)."""
    from featx.store import FINGERPRINT_KEYS

    h = hashlib.sha256("\n".join(map(str, feats.hashes)).encode())
    h.update(np.asarray(feats.labels, dtype=np.int64).tobytes())
    settings = {k: feats.meta.get(k) for k in (*FINGERPRINT_KEYS, "created", "dim", "augment")}
    h.update(json.dumps([list(feats.class_names), settings], sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def labels_digest(labels: np.ndarray, excluded: np.ndarray) -> str:
    return hashlib.sha256(np.where(excluded, -1, labels).astype(np.int64).tobytes()).hexdigest()[:24]


# --- the head -------------------------------------------------------------------------------------


@dataclass
class HeadState:
    """The head fitted on some labels, its accuracy and its prediction for every row."""

    val: float | None
    test: float | None
    pred: np.ndarray  # (N,) class index predicted for every row
    labels: np.ndarray  # (N,) labels in force when it was fitted, -1 excluded
    params: dict[str, Any]
    seconds: float
    n_val: int
    n_test: int

    def accuracy(self) -> dict[str, Any]:
        return {"val": self.val, "test": self.test, "n_val": self.n_val, "n_test": self.n_test}


# --- the review -----------------------------------------------------------------------------------


class Review:
    """One store under review. Thread-safe: decisions are serialised by a lock (two tabs keep
    both), the audit, fit and map run under another and are swapped in whole."""

    def __init__(self, store: str | os.PathLike, settings: Settings = Settings()) -> None:
        self.store = Path(store)
        self.settings = settings.check()
        if not self.store.is_file():
            raise FeatxError(f"feature store not found: {self.store}")
        self.cache = check_output(cache_dir(self.store), "the review's cache", folder=True)
        check_output(corr.corrections_path(self.store), "the corrections file")
        self.feats = load_features(self.store)
        self.index = Index.for_store(self.store)  # the one neighbour search, kept beside the store
        if len(self.feats.class_names) < 2 or len(np.unique(self.feats.labels)) < 2:
            raise FeatxError(f"{self.store} holds one class; a review needs at least two")
        self.cache.mkdir(exist_ok=True)
        self.digest = store_digest(self.feats)
        self.parts = split_indices(self.feats.hashes, self.feats.labels, settings.fractions,
                                   settings.split_seed)
        self.part_of = np.empty(self.feats.n, dtype=object)
        for part in PARTS:
            self.part_of[self.parts[part]] = part
        self._write_lock = threading.Lock()  # decisions
        self._compute_lock = threading.Lock()  # the first fit and audit, refits
        self._rank_lock = threading.Lock()  # a refit's audit
        self._map_lock = threading.Lock()
        self._refits = self._ranked = 0
        self._apply(corr.load(self.store))  # refuses a file of another store
        self.ranking: Ranking | None = None
        self.head: HeadState | None = None
        self.previous_head: HeadState | None = None
        self.last_refit: dict[str, Any] | None = None
        self.map: dict[str, Any] | None = None
        self.status = {"audit": "waiting", "fit": "waiting", "map": "waiting"}
        self._leaks: list[Leak] | None = None
        self._row_of_hash = {h: i for i, h in enumerate(map(str, self.feats.hashes))}

    # --- labels in force ---------------------------------------------------------------------

    def _apply(self, found: corr.Corrections) -> None:
        labels, excluded = found.apply(self.feats)
        latest = found.latest
        self.decisions = {h: latest[h] for h in latest}  # hash -> the last row
        self.labels, self.excluded = labels, excluded
        self._seen = _stamp(found.file)

    def sync(self) -> None:
        """Read the corrections file again if something else wrote it (another server, an editor)."""
        if _stamp(corr.corrections_path(self.store)) != self._seen:
            with self._write_lock:
                self._apply(corr.load(self.store))

    @property
    def in_force(self) -> np.ndarray:
        """(N,) the label of every row now, -1 for an excluded row."""
        return np.where(self.excluded, -1, self.labels)

    def decide(self, row: int, action: str) -> dict[str, Any]:
        """Record a decision on a row: a class name, ``exclude`` or ``keep``; the file is rewritten
        (atomically) before this returns. Returns the row's state and the pending count."""
        row = self._check_row(row)
        names = self.feats.class_names
        stored = names[self.feats.labels[row]]
        new = stored if action == KEEP else action
        if new not in names and new != corr.EXCLUDE:
            raise FeatxError(f"`action` must be a class ({', '.join(names)}), exclude or keep; "
                             f"got {action!r}")
        with self._write_lock:
            found = corr.record(self.store, str(self.feats.hashes[row]), self.feats.paths[row],
                                stored, new)
            self._apply(found)
        return {"row": row, **self.row_state(row), "pending": self.pending()}

    def row_state(self, row: int) -> dict[str, Any]:
        """The stored label, the label in force (or ``exclude``) and the decision recorded."""
        names = self.feats.class_names
        decision = self.decisions.get(str(self.feats.hashes[row]))
        return {"label": names[self.feats.labels[row]],
                "current": corr.EXCLUDE if self.excluded[row] else names[self.labels[row]],
                "decision": None if decision is None else
                {"new_label": decision["new_label"], "time": decision["time"],
                 "kind": _decision_kind(decision)}}

    def pending(self) -> int:
        """Rows whose label in force differs from what the head was fitted on."""
        if self.head is None:
            return self.n_corrected()
        return int(np.sum(self.in_force != self.head.labels))

    def n_corrected(self) -> int:
        """Rows the corrections change (relabelled or excluded)."""
        return int(np.sum(self.excluded | (self.labels != self.feats.labels)))

    def _check_row(self, row: int) -> int:
        if not 0 <= int(row) < self.feats.n:
            raise FeatxError(f"`row` must be a row of the store (0 to {self.feats.n - 1}), got {row}")
        return int(row)

    # --- computing -----------------------------------------------------------------------------

    def prepare(self, progress: Progress | None = None) -> None:
        """Fit the head and audit the labels in force (or read them from the cache)."""
        with self._compute_lock:
            labels, excluded = self.labels.copy(), self.excluded.copy()
            self._run("fit", self._fit)
            self._run("audit", lambda: (self._rank(labels, excluded, progress), self.leaks()))

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        self.status[what] = "running"
        try:
            value = fn()
        except Exception as e:  # shown on the page; the server keeps serving
            self.status[what] = f"failed: {e}"
            raise
        self.status[what] = "ready"
        return value

    def _rank(self, labels: np.ndarray, excluded: np.ndarray, progress: Progress | None = None,
              previous: Ranking | None = None) -> Ranking:
        key = {"store": self.digest, "labels": labels_digest(labels, excluded),
               **self.settings.audit_key()}
        path = self.cache / "audit.npz"
        ranking = Ranking.load(path, key) if previous is None else None
        if ranking is None:
            ranking = rank_labels(self.feats, labels, excluded, self.settings, previous, progress)
            ranking.save(path, key)
        self.ranking = ranking
        return ranking

    def _fit(self) -> HeadState:
        """featx fit's head on the rows the split gives (the corrections file applied, as in every
        command), with the parameters of :meth:`_head_params`."""
        from featx.fit import fit_store
        from featx.selection import predict_labels
        from featx.split import split_features

        from threadpoolctl import threadpool_limits

        s = self.settings
        split = split_features(self.feats, self.store, s.fractions, s.split_seed)
        params = self._head_params(split)
        with threadpool_limits(limits=1, user_api="blas"):  # as the audit's fits: see BENCHMARKS
            result = fit_store(self.store, s.clf, split=split, **params)
        flip = self.feats.flipped if split.flips.tta else None
        in_force = np.full(self.feats.n, -1, dtype=np.int64)
        for rows in split.rows.values():
            in_force[rows] = split.labels[rows]
        state = HeadState(
            val=result.val["accuracy"] if result.val else None,
            test=result.test["accuracy"] if result.test else None,
            pred=predict_labels(result.head, self.feats.features, flip), labels=in_force,
            params=result.params, seconds=round(result.fit_seconds, 3), n_val=split.n("val"),
            n_test=split.n("test"))
        self.previous_head, self.head = self.head, state
        return state

    def _head_params(self, split) -> dict[str, Any]:
        """C and scale: the settings', else featx fit's automatic choice, made once per store and
        kept in the cache."""
        from featx.selection import choose_params

        s = self.settings
        if s.C is not None and s.scale is not None:
            return {"C": s.C, "scale": s.scale}
        path = self.cache / "head.json"
        key = {"store": self.digest, "clf": s.clf, "C": s.C, "scale": s.scale}
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached["params"]
        except (OSError, ValueError):
            pass
        fixed = {k: v for k, v in (("C", s.C), ("scale", s.scale)) if v is not None}
        free = [k for k in ("C", "scale") if k not in fixed]
        picked = choose_params(split, s.clf, fixed, free, seed=s.seed).get("picked") or {}
        params = {**fixed, **picked}
        write_text(path, json.dumps({"key": key, "params": params}) + "\n", "the review's cache")
        return params

    def refit(self, wait: bool = True) -> dict[str, Any]:
        """Refit the head on the labels in force, then audit them afresh in another thread; old
        and new accuracy, the photos whose prediction changed and, once the audit is done (at
        once with ``wait``, else ``ranking`` says "running" until it is), the fresh ranking's
        head."""
        if self.head is None or self.ranking is None:
            raise FeatxError("the first fit and audit are still running; refit when they are done")
        with self._compute_lock:
            labels, excluded = self.labels.copy(), self.excluded.copy()
            old = self.head
            self._refits += 1
            result: dict[str, Any] = {"refit": self._refits, "ranking": "running", "seconds": {},
                                      "label_issues": {"before": int(len(self.ranking.issues)),
                                                       "after": None}, "top": []}
            auditor = threading.Thread(target=self._fresh_ranking,
                                       args=(self._refits, labels, excluded, result),
                                       name="featx-review-audit", daemon=True)
            t0 = time.perf_counter()
            new = self._fit()
            result["seconds"]["fit"] = round(time.perf_counter() - t0, 3)
            auditor.start()  # after the fit, so that the answer does not wait on its CPU
        changed = np.flatnonzero((old.pred != new.pred) & ~excluded)
        names = self.feats.class_names
        result.update({
            "old": old.accuracy(), "new": new.accuracy(),
            "corrections_applied": int(np.sum(new.labels != old.labels)),
            "n_changed": int(len(changed)),
            "changed": [{**self.item(int(i)), "old_prediction": names[old.pred[i]],
                         "new_prediction": names[new.pred[i]]} for i in changed[:MAX_PAGE]],
            "params": new.params})
        self.last_refit = result
        if wait:
            auditor.join()
        return result

    def _fresh_ranking(self, n: int, labels: np.ndarray, excluded: np.ndarray,
                       result: dict[str, Any]) -> None:
        """The audit of a refit (in its own thread): swapped in unless a later one was already."""
        t0 = time.perf_counter()
        with self._rank_lock:
            try:
                if n < self._ranked:
                    result["ranking"] = "superseded"
                    return
                ranking = self._rank(labels, excluded, previous=self.ranking)
                self._ranked = n
            except Exception as e:  # shown on the page; the server keeps serving
                result["ranking"] = f"failed: {e}"
                return
        result["label_issues"]["after"] = int(len(ranking.issues))
        result["top"] = [self.item(int(i), "label") for i in ranking.issues[:12]]
        result["seconds"]["audit"] = round(time.perf_counter() - t0, 3)
        result["ranking"] = "ready"

    # --- what the page shows -------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        self.sync()
        names = self.feats.class_names
        in_force = self.in_force
        counts = {p: np.bincount(in_force[r][in_force[r] >= 0], minlength=len(names)).tolist()
                  for p, r in self.parts.items()}
        head = self.head
        return {
            "store": str(self.store), "n": self.feats.n, "class_names": names,
            "counts": [{"class": c, **{p: counts[p][k] for p in PARTS},
                        "total": sum(counts[p][k] for p in PARTS)} for k, c in enumerate(names)],
            "excluded": int(self.excluded.sum()), "relabelled": int(np.sum(
                ~self.excluded & (self.labels != self.feats.labels))),
            "decisions": len(self.decisions), "pending": self.pending(),
            "chance": 1.0 / len(names),
            "head": None if head is None else {**head.accuracy(), "params": head.params,
                                               "fit_seconds": head.seconds},
            "label_issues": None if self.ranking is None else int(len(self.ranking.issues)),
            "status": dict(self.status), "corrections_file": str(corr.corrections_path(self.store)),
            "kinds": {k: self.count(k) for k in KINDS},
        }

    def count(self, kind: str) -> int | None:
        if kind == "leak":
            return len(self.leaks()) if self._leaks is not None else None
        return None if self.ranking is None else int(len(self.ranking.order(kind)))

    def leaks(self) -> list[Leak]:
        """Near-twins across the split: they depend on the vectors and the parts only, so they
        are found once per store (and kept in the cache)."""
        if self._leaks is None:
            path = self.cache / "leaks.npz"
            key = json.dumps({"store": self.digest, **self.settings.audit_key()}, sort_keys=True)
            self._leaks = _load_leaks(path, key)
            if self._leaks is None:
                self._leaks = find_leaks(unit_vectors(self.feats), self.feats.hashes,
                                         self.feats.labels, self.parts, self.settings.threshold)
                _save_leaks(path, key, self._leaks)
        return self._leaks

    def suspects(self, kind: str = "label", offset: int = 0, limit: int = PAGE,
                 k: int = SHOWN_NEIGHBORS) -> dict[str, Any]:
        """One page of a ranking, worst first, with each photo's neighbours."""
        self.sync()
        if kind not in KINDS:
            raise FeatxError(f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise FeatxError(f"`limit` must be 1 to {MAX_PAGE} and `offset` at least 0")
        if kind == "leak":
            leaks = self.leaks()
            page = leaks[offset:offset + limit]
            rows = [x.twin for x in page]
            total = len(leaks)
        else:
            if self.ranking is None:
                return {"kind": kind, "total": None, "offset": offset, "items": [],
                        "status": self.status["audit"]}
            order = self.ranking.order(kind)
            rows, total = [int(i) for i in order[offset:offset + limit]], int(len(order))
        items = [self.item(r, kind) for r in rows]
        for item, near in zip(items, self.neighbors_of(rows, k)):
            item["neighbors"] = near
        if kind == "leak":
            for item, x in zip(items, page):
                item["score"] = x.similarity
                item["pair"] = {**self.item(x.held), "similarity": x.similarity,
                                "kind": x.kind, "part": x.held_part}
        return {"kind": kind, "total": total, "offset": offset, "items": items,
                "status": self.status["audit"]}

    def item(self, row: int, kind: str | None = None) -> dict[str, Any]:
        """What the page shows of one photo."""
        names, r = self.feats.class_names, self.ranking
        out = {"row": row, "path": self.feats.paths[row], "part": self.part_of[row],
               **self.row_state(row)}
        if r is not None and r.labels[row] >= 0:
            out.update(suggested=names[r.suggested[row]],
                       p_suggested=round(float(np.nan_to_num(r.proba[row, r.suggested[row]])), 4),
                       quality=round(float(r.quality[row]), 4),
                       distance=round(float(r.distance[row]), 4))
            out["score"] = out["distance"] if kind == "outlier" else out["quality"]
        if self.head is not None:
            out["predicted"] = names[self.head.pred[row]]
        return out

    def neighbors_of(self, rows: list[int], k: int = SHOWN_NEIGHBORS) -> list[list[dict[str, Any]]]:
        """The ``k`` most similar other photos of each row (cosine), with their labels in force."""
        if not rows:
            return []
        top, sims = self.index.row_neighbors(rows, min(k, self.feats.n - 1))
        names, in_force = self.feats.class_names, self.in_force
        out = []
        for cand, sim in zip(top, sims):
            out.append([{"row": int(j), "path": self.feats.paths[j],
                         "label": corr.EXCLUDE if in_force[j] < 0 else names[in_force[j]],
                         "similarity": round(float(s), 4)} for j, s in zip(cand, sim)])
        return out

    def neighbors(self, row: int, k: int = 12) -> dict[str, Any]:
        row = self._check_row(row)
        if not 1 <= k <= MAX_PAGE:
            raise FeatxError(f"`k` must be 1 to {MAX_PAGE}, got {k}")
        return {**self.item(row), "neighbors": self.neighbors_of([row], k)[0]}

    # --- the map -------------------------------------------------------------------------------

    def map_points(self) -> dict[str, Any]:
        """The map's points (row, x, y, label in force), or its status while it is computed."""
        m = self.map
        if m is None:
            return {"status": self.status["map"], "method": self.settings.map_method,
                    "points": None}
        in_force = self.in_force
        return {"status": "ready", "method": m["method"], "n_total": m["n_total"],
                "class_names": self.feats.class_names,
                "points": [[r, x, y, int(in_force[r])] for r, x, y in m["points"]]}

    def compute_map(self, progress: Progress | None = None) -> None:
        """The 2-D map of :func:`featx.maps.make_map`, from the cache when it was made of this store
        (its own lock: a t-SNE of minutes never holds up a refit)."""
        with self._map_lock:
            self._run("map", lambda: self._map(progress))

    def _map(self, progress: Progress | None) -> None:
        from featx.maps import make_map, save_coords

        s = self.settings
        path = self.cache / f"map-{s.map_method}-{s.max_points}.json"
        cached = _read_json(path)
        if not (cached and cached.get("n_total") == self.feats.n and all(
                0 <= p["row"] < self.feats.n and self.feats.paths[p["row"]] == p["path"]
                for p in cached["points"])):
            m = make_map(self.store, s.map_method, s.max_points, seed=s.seed, progress=progress)
            save_coords(m, path)
            cached = _read_json(path)
        self.map = {"method": cached["method"], "n_total": cached["n_total"],
                    "points": [(p["row"], p["x"], p["y"]) for p in cached["points"]]}

    def data_dir(self) -> str | None:
        return self.feats.meta.get("data_dir")


LEAK_FIELDS = ("held", "twin", "held_part", "twin_part", "similarity", "kind", "cross_label")


def _save_leaks(path: Path, key: str, leaks: list[Leak]) -> None:
    columns = {f: np.array([getattr(x, f) for x in leaks]) for f in LEAK_FIELDS}
    with atomic_path(path, "the review's audit cache") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=key, **columns)


def _load_leaks(path: Path, key: str) -> list[Leak] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            columns = [z[f].tolist() for f in LEAK_FIELDS]
    except (OSError, KeyError, ValueError):
        return None
    return [Leak(*values) for values in zip(*columns)]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _decision_kind(row: dict[str, str]) -> str:
    if row["new_label"] == corr.EXCLUDE:
        return "exclude"
    return KEEP if row["new_label"] == row["old_label"] else "relabel"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- a corrected copy of the folder tree ----------------------------------------------------------


@dataclass
class FolderCopy:
    dest: Path
    linked: int
    relabelled: int
    excluded: int
    missing: int  # links to files no longer in the data folder
    renamed: int  # names that clashed in their new class folder and got a suffix

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def write_folders(store: str | os.PathLike, dest: str | os.PathLike) -> FolderCopy:
    """Write ``dest``: one folder per class holding a link to each photo under its label in force
    (corrections applied, excluded photos left out). The data folder is never written; ``dest``
    must not hold anything but an earlier copy."""
    feats = load_features(store)
    data_dir = feats.meta.get("data_dir")
    if not data_dir or not Path(data_dir).is_dir():
        raise FeatxError(f"the data folder of {store} ({data_dir}) is not there; the links need it")
    dest, src = Path(os.path.abspath(dest)), Path(os.path.abspath(data_dir))
    if dest == src or dest.is_relative_to(src) or src.is_relative_to(dest):
        raise FeatxError(f"`write_folders` {dest} must lie outside the data folder {src}")
    if dest.exists() and dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise FeatxError(f"`write_folders` {dest} is a folder with other files in it; give a new "
                         f"or empty folder (or one written by featx review)")
    check_output(dest, "the corrected folders", folder=True)
    labels, excluded = corr.load(store).apply(feats)
    names = feats.class_names
    seen: set[str] = set()
    linked = missing = renamed = 0
    with atomic_folder(dest, "the corrected folders") as tmp:
        for i, path in enumerate(feats.paths):
            if excluded[i]:
                continue
            parts = path.split("/")
            rest = "/".join(parts[1:]) if len(parts) > 1 else path
            target = f"{names[labels[i]]}/{rest}"
            if target in seen:
                target, renamed = _free_name(target, seen), renamed + 1
            seen.add(target)
            (tmp / target).parent.mkdir(parents=True, exist_ok=True)
            source = src / path
            missing += not source.exists()
            os.symlink(source, tmp / target)
            linked += 1
        result = FolderCopy(dest, linked, int(np.sum(~excluded & (labels != feats.labels))),
                            int(excluded.sum()), missing, renamed)
        (tmp / MARKER).write_text(json.dumps({"store": str(Path(store).resolve()),
                                              **result.as_dict()}, indent=1) + "\n")
    return result


def _free_name(target: str, seen: set[str]) -> str:
    stem, dot, ext = target.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = target, ""
    n = 2
    while (name := f"{stem}~{n}{'.' + ext if ext else ''}") in seen:
        n += 1
    return name
