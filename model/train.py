"""Train LensNet on simulated instances (paper §7): Adam, BCE + weighted CE, early stopping.

Reproducible from a seed: the simulator, the crops and the split follow ``seed``
(:mod:`model.dataset`); weights are initialised after ``torch.manual_seed(seed)`` and batches
are shuffled by a numpy ``Generator`` seeded from it. ``torch.set_num_threads(threads)`` is set
explicitly because intra-op parallelism changes float summation order: the same seed and the
same thread count give the same weights on the same machine. The shipped artifact used one
thread: on a shared 2-core machine, two intra-op threads competing with other processes were
several times slower (spinning OpenMP workers), and one thread is the most reproducible.

Batches are bucketed by length (instances sorted by their longest site, with jitter, cut into
batches whose order is shuffled): the LSTM cost grows with the padded length ``L`` of a batch,
and bucketing cuts padding several-fold on cropped light curves.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from tqdm import tqdm

from model.dataset import CropConfig, Instances, class_weights, load_split
from model.features import collate
from model.lensnet import LensNet, LensNetConfig
from model.simulate import SimulationConfig

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the model card).

    Attributes
    ----------
    n_stars : simulated stars (70 % train, 15 % validation, 15 % test, by star).
    seed : simulator seed, split, crops, initialisation and shuffling.
    crop : instances per star and how they are cut.
    model : architecture.
    epochs : at most this many passes over the training instances.
    batch_size : instances per step.
    learning_rate : Adam step size.
    patience : stop after this many epochs without a better validation loss.
    lr_decay : halve the learning rate after an epoch without a better validation loss.
    cosine : anneal the learning rate to zero over ``epochs`` along a half cosine, per step.
    weight_decay : decoupled weight decay (AdamW); 0 is plain Adam.
    select : keep the epoch of the lowest validation ``"loss"`` or of the highest validation
        binary ``"accuracy"`` (mean per class; ties to the lower loss); patience counts
        epochs without a better one.
    threads : ``torch.set_num_threads`` during training.
    max_minutes : stop after the epoch that passes this wall time (None: no limit).
    """

    n_stars: int = 16000
    seed: int = 1
    crop: CropConfig = field(default_factory=CropConfig)
    model: LensNetConfig = field(default_factory=LensNetConfig)
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 3e-3
    patience: int = 12
    lr_decay: bool = False
    cosine: bool = True
    weight_decay: float = 0.01
    select: Literal["loss", "accuracy"] = "accuracy"
    threads: int = 1
    max_minutes: float | None = None

    @property
    def simulation(self) -> SimulationConfig:
        return SimulationConfig(n_stars=self.n_stars, seed=self.seed)


@dataclass
class History:
    """Per-epoch figures; accuracies are mean per-class (balanced) accuracies."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_binary_accuracy: list[float] = field(default_factory=list)
    val_class_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1


def standardisation(instances: Instances) -> tuple[Tensor, Tensor]:
    """(F,) mean and std of the real steps of the training instances (NaN ignored)."""
    x = instances.x.astype(np.float64)
    mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
    std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0) if len(x) else np.ones(x.shape[1])
    std = np.where(std > 0, std, 1.0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def batches(
    instances: Instances, batch_size: int, rng: np.random.Generator | None
) -> Iterator[I64]:
    """Index arrays of length-bucketed batches; shuffled (with jitter) when ``rng`` is given."""
    longest = instances.lengths.max(axis=1).astype(np.float64)
    if rng is not None:
        longest = longest + rng.uniform(0.0, 100.0, len(longest))
    order = np.argsort(longest, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    yield from chunks


def to_tensors(instances: Instances, index: I64) -> tuple[Tensor, Tensor]:
    """(B, S, L, F) and (B, S) tensors of the instances ``index``."""
    x, lengths = collate([instances.item(int(i)) for i in index])
    return torch.from_numpy(x), torch.from_numpy(lengths)


class Loss(nn.Module):
    """Weighted BCE (No vs Yes + Maybe) plus weighted CE (No / Maybe / Yes), summed."""

    def __init__(self, class_weight: F64, binary_weight: F64) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=torch.tensor(class_weight, dtype=torch.float32))
        self.binary_weight = torch.tensor(binary_weight, dtype=torch.float32)

    def forward(self, binary: Tensor, classes: Tensor, label: Tensor) -> Tensor:
        target = (label > 0).float()  # (B,)
        weight = self.binary_weight[(label > 0).long()]  # (B,)
        bce = nn.functional.binary_cross_entropy_with_logits(binary, target, weight=weight)
        return bce + self.ce(classes, label)


@torch.no_grad()
def predict(model: nn.Module, instances: Instances, batch_size: int = 128) -> tuple[F64, F64, F64]:
    """``(p_event (N,), p_class (N, 3), site_scores (N, 3))`` in instance order."""
    was_training = model.training
    model.eval()
    p_event = np.zeros(len(instances))
    p_class = np.zeros((len(instances), 3))
    site_scores = np.zeros((len(instances), 3))
    for index in batches(instances, batch_size, None):
        x, lengths = to_tensors(instances, index)
        event, classes, sites = model(x, lengths)
        p_event[index] = event.numpy()
        p_class[index] = classes.numpy()
        site_scores[index] = sites.numpy()
    model.train(was_training)
    return p_event, p_class, site_scores


def balanced_accuracy(truth: I64, predicted: I64, n_classes: int) -> float:
    """Mean over present classes of the per-class accuracy (paper §8.2's "mean accuracy")."""
    values = [float(np.mean(predicted[truth == c] == c)) for c in range(n_classes)]
    present = [v for c, v in enumerate(values) if np.any(truth == c)]
    return float(np.mean(present)) if present else float("nan")


@torch.no_grad()
def _validate(
    model: LensNet, loss_fn: Loss, instances: Instances, batch_size: int
) -> tuple[float, float, float]:
    model.eval()
    total, count = 0.0, 0
    p_event = np.zeros(len(instances))
    p_class = np.zeros((len(instances), 3))
    for index in batches(instances, batch_size, None):
        x, lengths = to_tensors(instances, index)
        label = torch.from_numpy(instances.label[index])
        binary, classes = model.logits(x, lengths)
        total += loss_fn(binary, classes, label).item() * len(index)
        count += len(index)
        p_event[index] = torch.sigmoid(binary).numpy()
        p_class[index] = classes.numpy()
    model.train()
    truth = instances.label
    binary_acc = balanced_accuracy(
        (truth > 0).astype(np.int64), (p_event >= 0.5).astype(np.int64), 2
    )
    class_acc = balanced_accuracy(truth, p_class.argmax(axis=1), 3)
    return total / max(count, 1), binary_acc, class_acc


def train(
    config: TrainConfig,
    *,
    train_set: Instances | None = None,
    val_set: Instances | None = None,
    cache: Path | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> tuple[LensNet, History]:
    """Train and return the model of the best validation loss and the history.

    ``train_set`` / ``val_set`` default to the splits of ``config.simulation`` built by
    :func:`model.dataset.load_split` (cached under ``cache`` when given). ``progress`` shows
    bars, ``verbose`` prints one line per epoch.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 3])
    if train_set is None:
        train_set = load_split(
            config.simulation, "train", config.crop, cache=cache, progress=progress
        )
    if val_set is None:
        val_set = load_split(config.simulation, "val", config.crop, cache=cache, progress=progress)
    model = LensNet(config.model)
    model.set_standardisation(*standardisation(train_set))
    loss_fn = Loss(
        class_weights(train_set.label, 3),
        class_weights((train_set.label > 0).astype(np.int64), 2),
    )
    optimiser: torch.optim.Optimizer
    if config.weight_decay > 0:
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    n_batches = math.ceil(len(train_set) / config.batch_size)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs * n_batches)
        if config.cosine
        else None
    )
    history = History()
    best_score: tuple[float, ...] = (math.inf, math.inf)
    best_state, stale = copy.deepcopy(model.state_dict()), 0
    started = time.monotonic()
    model.train()
    for epoch in range(config.epochs):
        bar = tqdm(
            batches(train_set, config.batch_size, rng),
            total=n_batches,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        total, correct, count = 0.0, 0, 0
        for index in bar:
            x, lengths = to_tensors(train_set, index)
            label = torch.from_numpy(train_set.label[index])
            binary, classes = model.logits(x, lengths)
            loss = loss_fn(binary, classes, label)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(index)
            correct += int(((binary > 0) == (label > 0)).sum())
            count += len(index)
            bar.set_postfix(loss=f"{total / count:.3f}", acc=f"{correct / count:.3f}")
        val_loss, val_binary, val_class = _validate(model, loss_fn, val_set, 2 * config.batch_size)
        history.train_loss.append(total / max(count, 1))
        history.val_loss.append(val_loss)
        history.val_binary_accuracy.append(val_binary)
        history.val_class_accuracy.append(val_class)
        history.seconds.append(time.monotonic() - started)
        if verbose:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {total / max(count, 1):.4f}, val loss "
                f"{val_loss:.4f}, val binary {val_binary:.4f}, val 3-class {val_class:.4f}, "
                f"{history.seconds[-1]:.0f} s"
            )
        score = (val_loss,) if config.select == "loss" else (-val_binary, val_loss)
        if score < best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if config.lr_decay:
                for group in optimiser.param_groups:
                    group["lr"] *= 0.5
        out_of_time = (
            config.max_minutes is not None and history.seconds[-1] > 60 * config.max_minutes
        )
        if stale >= config.patience or out_of_time:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history
