"""Simulate featx suggest: does labelling the suggested photos beat labelling photos at random?

On a labelled store, the train part plays the unlabelled folder and the test part scores. Start
from ``--start`` labelled photos a class (seeded), then ``--rounds`` times: fit featx fit's head on
the labelled photos (its automatic choice of C and scale), score it on the test part, and label
``--step`` more photos picked by each strategy (featx.suggest.rank). Repeated ``--repeats`` times
with other seeds; every strategy starts from the same photos in a repeat.

    python3 scripts/sim_suggest.py /work/stores/pets-dev.h5 /work/stores/flowers5.h5 \
        --out docs/sim_suggest
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from featx.curve import class_orders, draw, pick_params
from featx.fit import evaluate, fit_split
from featx.split import load_split
from featx.suggest import STRATEGIES, rank


def simulate(store: Path, strategy: str, repeat: int, start: int, step: int, rounds: int,
             clf: str = "logreg") -> list[float]:
    """Test accuracy after each round (round 0: the starting photos only)."""
    split = load_split(store)
    train = split.rows["train"]
    labels, hashes = split.y("train"), split.pool("train")[2]  # labels in force, groups
    orders = [[train[g] for g in groups] for groups in class_orders(labels, hashes, 1000 + repeat)]
    labelled = draw(orders, start)
    pool = np.setdiff1d(train, labelled)
    X = split.feats.features
    accuracy = []
    for r in range(rounds + 1):
        sub = replace(split, rows={**split.rows, "train": labelled})
        params, _ = pick_params(sub, clf, {"C": None, "scale": None, "seed": 0})
        head, _ = fit_split(sub, clf, **params)
        accuracy.append(evaluate(head, sub, "test")["accuracy"])
        if r == rounds:
            break
        picked = pool[rank(head.predict_proba(X[pool]), X[pool], step, strategy,
                           seed=1000 * repeat + r)]
        labelled = np.sort(np.concatenate([labelled, picked]))
        pool = np.setdiff1d(pool, picked)
    return accuracy


def labels_to_reach(curve: np.ndarray, target: float, step: int) -> int | None:
    """Labels added when the mean curve first reaches ``target`` (None: never)."""
    hit = np.flatnonzero(curve >= target - 1e-12)
    return int(hit[0] * step) if len(hit) else None


def draw_figure(results: dict, step: int, out: Path) -> Path:
    from featx.figures import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.4), layout="constrained",
                             squeeze=False)
    colours = {"margin-diverse": "tab:orange", "margin": "tab:green", "entropy": "tab:purple",
               "random": "tab:blue"}
    for ax, (store, by) in zip(axes[0], results.items()):
        for strategy, runs in by.items():
            acc = 100 * np.array(runs)
            x = step * np.arange(acc.shape[1])
            mean, std = acc.mean(0), acc.std(0)
            ax.plot(x, mean, "-o", markersize=3, color=colours.get(strategy), label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=colours.get(strategy), alpha=0.15)
        final = 100 * np.mean(np.array(by["random"])[:, -1])
        ax.axhline(final, color="tab:blue", linestyle=":", linewidth=1)
        ax.set_title(f"{store}: {len(next(iter(by.values())))} repeats (band: ± 1 sd)", fontsize=10)
        ax.set_xlabel("labels added")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return save(fig, out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="+", type=Path)
    ap.add_argument("--strategies", default="margin-diverse,margin,random")
    ap.add_argument("--start", type=int, default=10)
    ap.add_argument("--step", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("reports/sim_suggest"))
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    assert all(s in STRATEGIES for s in strategies), strategies
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[list[float]]]] = {}
    t0 = time.perf_counter()
    for store in args.stores:
        by = results.setdefault(store.stem, {})
        for strategy in strategies:
            by[strategy] = [simulate(store, strategy, r, args.start, args.step, args.rounds)
                            for r in range(args.repeats)]
        final = float(np.mean(np.array(by["random"])[:, -1]))
        total = args.step * args.rounds
        print(f"{store.stem}: random's final accuracy {100 * final:.2f}% after {total} labels")
        for strategy, runs in by.items():
            mean = np.mean(runs, axis=0)
            reach = labels_to_reach(mean, final, args.step)
            print(f"  {strategy:>15}: " + " ".join(f"{100 * v:.1f}" for v in mean)
                  + f" | reaches random's final with {reach} labels"
                  + (f" ({reach / total:.0%})" if reach is not None else ""), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")
    (args.out / "sim_suggest.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1) + "\n")
    print(draw_figure(results, args.step, args.out / "sim_suggest.png"))


if __name__ == "__main__":
    main()
