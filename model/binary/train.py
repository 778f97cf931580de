"""Train the binary-lens flow on simulated events; the epoch is chosen on validation only.

Usage (CPU, one thread; the shipped model's exact command is in its model card)::

    nice -n 19 python -m model.binary.train --seed 1 --epochs 40 --max-minutes 15 \\
        --cache /tmp/flow-data --out /tmp/flow-run

Splits are by event and by season: training events come from :data:`TRAIN_SEASONS`,
validation events (epoch choice) from :data:`VALIDATION_SEASONS`, and the test events of the
report (:mod:`model.binary.evaluate`) from :data:`TEST_SEASONS`; no schedule, weather or event
is shared. Simulated arrays are cached as ``<cache>/<split>.npz`` (built if missing, with
:func:`model.binary.simulate.simulate_events`). The checkpoint keeps the model arguments beside
the weights, the training arguments and the per-epoch history.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from tqdm import tqdm

from model.binary.flow import BinaryFlow, FlowConfig
from model.binary.simulate import EventArrays, simulate_events

TRAIN_SEASONS: Final = tuple(range(3001, 3029))
#: Training seasons may grow up to here (3001-3100) and stay disjoint from the other splits.
MAX_TRAIN_SEASONS: Final = 100
VALIDATION_SEASONS: Final = (3101, 3102)
TEST_SEASONS: Final = (3201, 3202)
#: Events per season of each split (the shipped model's sizes).
SPLIT_SIZES: Final = {"train": 1000, "validation": 300, "test": 500}
SPLIT_SEASONS: Final = {
    "train": TRAIN_SEASONS,
    "validation": VALIDATION_SEASONS,
    "test": TEST_SEASONS,
}


def train_seasons(n: int) -> tuple[int, ...]:
    """The first ``n`` training seasons (``n`` <= :data:`MAX_TRAIN_SEASONS`)."""
    if not 1 <= n <= MAX_TRAIN_SEASONS:
        raise ValueError(f"train seasons must be 1..{MAX_TRAIN_SEASONS}, not {n}")
    return tuple(range(TRAIN_SEASONS[0], TRAIN_SEASONS[0] + n))


def load_split(
    cache: Path,
    split: str,
    events_per_season: int | None = None,
    seasons: tuple[int, ...] | None = None,
) -> EventArrays:
    """The cached arrays of ``split``, simulated first if the cache lacks them (``seasons``:
    instead of the split's own, for a larger training set; a cache holds one training set)."""
    path = cache / f"{split}.npz"
    if path.exists():
        arrays = EventArrays.load(str(path))
        if seasons is not None and set(np.unique(arrays.season).tolist()) != set(seasons):
            raise ValueError(f"{path} holds other seasons than {seasons[0]}..{seasons[-1]}")
        return arrays
    arrays = simulate_events(
        seasons or SPLIT_SEASONS[split],
        events_per_season or SPLIT_SIZES[split],
        close_wide=split != "train",
    )
    cache.mkdir(parents=True, exist_ok=True)
    arrays.save(str(path))
    return arrays


def batch_tensors(
    arrays: EventArrays, index: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(theta (B, 8), points (B, L, 6), mask (B, L), log flux scale (B, 1)) of events ``index``;
    L the longest of them."""
    lengths = arrays.lengths[index]
    length = int(lengths.max())
    points = torch.from_numpy(arrays.points[index, :length])
    mask = torch.arange(length)[None, :] < torch.from_numpy(lengths)[:, None]
    scale = torch.from_numpy(arrays.log_flux_scale[index])[:, None]
    theta = torch.from_numpy(arrays.theta[index]).float()
    return theta, points, mask, scale


def mean_nll(model: BinaryFlow, arrays: EventArrays, batch_size: int = 512) -> float:
    """Mean negative log posterior density of the true parameters (nats, theta units)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(arrays), batch_size):
            index = np.arange(start, min(start + batch_size, len(arrays)))
            theta, points, mask, scale = batch_tensors(arrays, index)
            total += float(-model.log_prob(theta, points, mask, scale).sum())
    return total / len(arrays)


def train(
    train_set: EventArrays,
    validation_set: EventArrays,
    *,
    config: FlowConfig,
    seed: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    max_minutes: float,
    progress: bool = True,
) -> tuple[BinaryFlow, list[dict[str, float]]]:
    """Adam with a cosine schedule; returns the model at the epoch of lowest validation NLL and
    the per-epoch history (train NLL, validation NLL, seconds of CPU)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BinaryFlow(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    best, best_nll, since_best = copy.deepcopy(model.state_dict()), float("inf"), 0
    history: list[dict[str, float]] = []
    started = time.monotonic()
    cpu_started = time.process_time()
    n_batches = max(len(train_set) // batch_size, 1)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train_set))
        losses = []
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}", disable=not progress, leave=False)
        for b in bar:
            theta, points, mask, scale = batch_tensors(
                train_set, order[b * batch_size : (b + 1) * batch_size]
            )
            loss = -model.log_prob(theta, points, mask, scale).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(nll=f"{np.mean(losses[-20:]):.3f}")
        schedule.step()
        validation_nll = mean_nll(model, validation_set)
        history.append(
            {
                "epoch": float(epoch),
                "train_nll": float(np.mean(losses)),
                "validation_nll": validation_nll,
                "cpu_seconds": time.process_time() - cpu_started,
            }
        )
        if progress:
            tqdm.write(
                f"epoch {epoch}: train {np.mean(losses):.3f} validation {validation_nll:.3f}"
            )
        if validation_nll < best_nll:
            best, best_nll, since_best = copy.deepcopy(model.state_dict()), validation_nll, 0
        else:
            since_best += 1
        if since_best >= patience or time.monotonic() - started > 60.0 * max_minutes:
            break
    model.load_state_dict(best)
    model.eval()
    return model, history


def checkpoint(
    model: BinaryFlow, history: list[dict[str, float]], args: dict[str, Any]
) -> dict[str, Any]:
    """What :func:`main` saves: model arguments beside the weights, training arguments, history."""
    return {
        "config": asdict(model.config),
        "state_dict": model.state_dict(),
        "training": args,
        "history": history,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flow-data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--train-seasons",
        type=int,
        default=len(TRAIN_SEASONS),
        help=f"seasons from {TRAIN_SEASONS[0]}, 1000 events each (at most {MAX_TRAIN_SEASONS})",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = load_split(args.cache, "train", seasons=train_seasons(args.train_seasons))
    validation_set = load_split(args.cache, "validation")
    model, history = train(
        train_set,
        validation_set,
        config=FlowConfig(),
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        max_minutes=args.max_minutes,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record |= {"n_train": len(train_set), "n_validation": len(validation_set)}
    torch.save(checkpoint(model, history, record), args.out / f"checkpoint-seed{args.seed}.pt")
    best = min(history, key=lambda h: h["validation_nll"])
    print(
        f"seed {args.seed}: best epoch {int(best['epoch'])} validation NLL "
        f"{best['validation_nll']:.3f}; {history[-1]['cpu_seconds']:.0f} s CPU"
    )


if __name__ == "__main__":
    main()
