"""Benchmark: what the novelty network and the second opinion add to LensNet's per-candidate
scoring time on CPU (issue 15's budget: at most +30 %).

Run by hand from the repository root::

    python bench/bench_opinions.py [--stars 300] [--repeat 5] [--threads 1]

Candidates are simulated stars prepared as the daemon prepares them (:func:`model.features.
prepare`, at the end of the season and 40 points in), plus the worst case of the 1500-point cap
(random features, every site full). Per batch of ``--batch`` candidates sorted by length (as
:func:`model.classify.score` and :func:`model.second_opinion.assess` chunk them), each figure
is the best of ``--repeat`` passes over every batch after one warm-up pass, one torch thread:

- ``lensnet``: the shipped LensNet artifact on the collated batch (collate included);
- ``opinions``: the shipped novelty artifact, the AlertFinder figures and the two LightGBM
  boosters on the same batch (collate included: :func:`model.second_opinion.assess`).

The ratio of the two is the added time. Figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from model.export import load_artifact
from model.features import Candidate, InsufficientDataError, collate, prepare
from model.second_opinion import OpinionModels, assess
from model.simulate import SimulationConfig, simulate_star


def candidates(n_stars: int, seed: int) -> list[Candidate]:
    config = SimulationConfig(n_stars=n_stars, seed=seed)
    out = []
    for index in range(n_stars):
        star, _ = simulate_star(config, index)
        for as_of in (star.datasets[0].hjd[40], np.inf):
            try:
                out.append(prepare(star, as_of=float(as_of)))
            except InsufficientDataError:
                continue
    return out


def best_seconds(call: Callable[[], Any], repeat: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def chunks(pool: Sequence[Any], lengths: Sequence[int], batch: int) -> list[list[Any]]:
    order = sorted(range(len(pool)), key=lambda i: lengths[i])
    return [[pool[i] for i in order[s : s + batch]] for s in range(0, len(order), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lensnet, card = load_artifact()
    opinions = OpinionModels()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
        f"{torch.get_num_threads()}, batch {args.batch}; LensNet {card.get('version')}, novelty "
        f"{opinions.novelty_version}, second opinion {opinions.booster.version}"
    )
    pool = candidates(args.stars, args.seed)
    rng = np.random.default_rng(0)
    full = [
        (rng.normal(size=(3, 1500, 8)).astype(np.float32), np.full(3, 1500, dtype=np.int64))
        for _ in range(args.batch)
    ]
    print("| candidates | n | median points | LensNet ms / candidate | + opinions ms / candidate "
          "| added |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, items, lengths in (
        ("simulated (daemon-prepared)", pool, [int(c.lengths.sum()) for c in pool]),
        ("worst case: 3 x 1500 points", full, [4500] * len(full)),
    ):
        batches = chunks(items, lengths, args.batch)

        def score_lensnet(batches: list[list[Any]] = batches) -> None:
            with torch.no_grad():
                for batch in batches:
                    x, n = collate(batch)
                    lensnet(torch.from_numpy(x), torch.from_numpy(n))

        def score_opinions(batches: list[list[Any]] = batches) -> None:
            for batch in batches:
                if isinstance(batch[0], Candidate):
                    assess(opinions.novelty, opinions.booster, opinions.components, batch, 10**6)
                else:  # the worst case has no Candidate objects: the same three steps
                    _opinions_of_pairs(opinions, batch)

        base = best_seconds(score_lensnet, args.repeat) / len(items)
        added = best_seconds(score_opinions, args.repeat) / len(items)
        print(
            f"| {name} | {len(items)} | {int(np.median(lengths))} | {1e3 * base:.3f} "
            f"| {1e3 * added:.3f} | +{100 * added / base:.0f} % |"
        )


def _opinions_of_pairs(opinions: OpinionModels, batch: list[Any]) -> None:
    from model.second_opinion import features, novelty_outputs

    x, n = collate(batch)
    energy, z, _ = novelty_outputs(opinions.novelty, x, n)
    opinions.booster.predict(features(energy, z, x, n))


if __name__ == "__main__":
    main()
