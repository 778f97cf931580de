"""Train the second opinion (:mod:`model.second_opinion`): LightGBM on the novelty encoder's
features and the AlertFinder's figures, a binary (No vs Yes + Maybe) and a 3-class booster.

Data: LensNet's training and validation instances (:func:`model.dataset.load_set`), each run
through the novelty artifact (the shipped one by default) exactly as the daemon runs a
candidate; the labels are the instances' classes, class-weighted by inverse frequency as
LensNet's losses are. The boosting rounds stop early on the validation seasons' loss.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from model.dataset import (
    TRAIN_SEASONS,
    VALIDATION_SEASONS,
    CropConfig,
    Rows,
    SeasonSet,
    class_weights,
    load_set,
)
from model.export import shipped_cadence
from model.second_opinion import LIBRARY_DECISION, features, novelty_outputs
from model.train_novelty import subset

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SecondOpinionConfig:
    """Everything a second-opinion training run depends on (recorded in the card).

    Attributes
    ----------
    seed : subset and LightGBM's bagging.
    novelty : the novelty artifact whose features are used (None: the shipped one).
    max_instances : at most this many training instances (random subset); None: all.
    num_leaves, learning_rate, min_data_in_leaf, feature_fraction : LightGBM's.
    rounds : at most this many boosting rounds; ``early_stopping`` rounds without a better
        validation loss end training.
    """

    seed: int = 1
    train_seasons: SeasonSet = TRAIN_SEASONS
    validation_seasons: SeasonSet = VALIDATION_SEASONS
    crop: CropConfig = field(default_factory=CropConfig)
    novelty: str | None = None
    max_instances: int | None = None
    num_leaves: int = 31
    learning_rate: float = 0.05
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    rounds: int = 2000
    early_stopping: int = 50
    workers: int = 1


@torch.no_grad()
def feature_table(novelty: Any, rows: Rows, batch_size: int = 128, progress: bool = False) -> F64:
    """(N, P) boosting input of every instance, in instance order (batches of similar
    length, as the daemon's :func:`model.second_opinion.assess`)."""
    order = np.argsort(rows.lengths.max(axis=1), kind="stable")
    table: F64 | None = None
    chunks = range(0, len(order), batch_size)
    for start in tqdm(chunks, desc="features", disable=None if progress else True, leave=False):
        index = order[start : start + batch_size]
        x, lengths = rows.batch(index)
        energy, z, _ = novelty_outputs(novelty, x, lengths)
        part = features(energy, z, x, lengths)
        if table is None:
            table = np.zeros((len(rows), part.shape[1]))
        table[index] = part
    return np.zeros((0, 0)) if table is None else table


def _params(config: SecondOpinionConfig, **extra: Any) -> dict[str, Any]:
    return {
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": 1,
        "verbosity": -1,
        **extra,
    }


def train_second_opinion(
    config: SecondOpinionConfig,
    *,
    novelty: Any,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train; returns ``(binary booster, 3-class booster, history)``."""
    import lightgbm

    started = time.monotonic()
    load = functools.partial(
        load_set,
        crop=config.crop,
        cadence=shipped_cadence(),
        cache=cache,
        workers=config.workers,
        progress=progress,
    )
    train_set, val_set = load(config.train_seasons), load(config.validation_seasons)
    if config.max_instances is not None and len(train_set) > config.max_instances:
        rng = np.random.default_rng([config.seed, 13])
        keep = np.zeros(len(train_set), dtype=bool)
        keep[rng.choice(len(train_set), config.max_instances, replace=False)] = True
        train_set = subset(train_set, keep)
    train_table = feature_table(novelty, train_set, progress=progress)
    val_table = feature_table(novelty, val_set, progress=progress)
    encoded = time.monotonic() - started
    boosters = []
    history: dict[str, Any] = {
        "n_train": len(train_set),
        "n_val": len(val_set),
        "encode_seconds": encoded,
    }
    for name, target_train, target_val, n_classes in (
        ("binary", (train_set.label > 0).astype(np.int64), (val_set.label > 0).astype(np.int64), 2),
        ("classes", train_set.label, val_set.label, 3),
    ):
        weight = class_weights(target_train, n_classes)[target_train]
        val_weight = class_weights(target_val, n_classes)[target_val]
        objective = (
            {"objective": "binary"}
            if n_classes == 2
            else {"objective": "multiclass", "num_class": 3}
        )
        evals: dict[str, Any] = {}
        booster = lightgbm.train(
            _params(config, **objective),
            lightgbm.Dataset(train_table, label=target_train, weight=weight),
            num_boost_round=config.rounds,
            valid_sets=[lightgbm.Dataset(val_table, label=target_val, weight=val_weight)],
            valid_names=["validation"],
            callbacks=[
                lightgbm.early_stopping(config.early_stopping, verbose=False),
                lightgbm.record_evaluation(evals),
            ],
        )
        boosters.append(booster)
        metric = next(iter(evals["validation"]))
        history[name] = {
            "best_iteration": int(booster.best_iteration),
            "validation_metric": metric,
            "validation_best": float(min(evals["validation"][metric])),
        }
    history["seconds"] = time.monotonic() - started
    return boosters[0], boosters[1], history


def second_opinion_card(
    config: SecondOpinionConfig,
    history: dict[str, Any],
    names: list[str],
    novelty_card: dict[str, Any],
) -> dict[str, Any]:
    """The card of a freshly trained second opinion; the save adds version and file name."""
    import lightgbm

    from model.dataset import code_version

    seeds = ",".join(str(seed) for seed in config.train_seasons.seeds)
    command = (
        f"lensnet second-opinion train --seed {config.seed} --train-seasons {seeds} "
        f"--stars-per-season {config.train_seasons.n_stars} "
        f"--num-leaves {config.num_leaves} --learning-rate {config.learning_rate:g}"
        + (f" --max-instances {config.max_instances}" if config.max_instances else "")
        + (f" --novelty {config.novelty}" if config.novelty else "")
    )
    return {
        "name": "LensNet second opinion (gradient boosting on the novelty encoder's features)",
        "format": "lightgbm-text in JSON",
        "lightgbm_version": lightgbm.__version__,
        "paper": "Yang, RNN-VAE + gradient boosting (shared/papers/"
        "rnn-vae-gradient-boosting-transients.txt)",
        "library_decision": LIBRARY_DECISION,
        "novelty_version": novelty_card.get("version"),
        "inputs": {
            "features": names,
            "preprocessing": "model.features.prepare + collate, then the novelty artifact and "
            "model.second_opinion.trigger_figures (model.second_opinion.features)",
        },
        "outputs": {
            "p_event": "(B,) P(Yes or Maybe), binary booster",
            "p_class": "(B, 3) P(No), P(Maybe), P(Yes), 3-class booster",
        },
        "thresholds": {"balanced": 0.45, "high_purity": 0.955},
        "training": {
            "command": command,
            "config": asdict(config),
            "code_version": code_version(),
            "history": history,
        },
    }
