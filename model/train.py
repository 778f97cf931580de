"""Train LensNet on simulated seasons (paper §7): AdamW, BCE + weighted CE + site BCE, cosine.

Data: the instances of :data:`model.dataset.TRAIN_SEASONS` and
:data:`~model.dataset.VALIDATION_SEASONS` (whole seasons, disjoint seeds; see
:mod:`model.dataset`); the epoch kept is chosen on validation only.

Loss: binary cross-entropy on the binary head (No vs Yes + Maybe) plus cross-entropy on the
3-class head, both class-weighted (inverse frequency), plus ``site_loss_weight`` x a binary
cross-entropy of each site's score (the binary head on that branch alone) against the site
label (:func:`model.dataset.site_targets`), over the sites that have data.

Reproducible from a seed: weights are initialised after ``torch.manual_seed(seed)`` and batches
are shuffled by a numpy ``Generator`` seeded from it. ``torch.set_num_threads(threads)`` is set
explicitly because intra-op parallelism changes float summation order: the same seed and thread
count give the same weights on the same CPU. On a GPU (``device="cuda"``, or ``"auto"`` when
one is present) cuDNN's LSTM is not bit-reproducible, and runs agree only statistically.

Batches are bucketed by length (instances sorted by their longest site, with jitter, cut into
batches whose order is shuffled): the LSTM cost grows with the padded length ``L`` of a batch.
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

from model.dataset import (
    TRAIN_SEASONS,
    VALIDATION_SEASONS,
    CropConfig,
    Instances,
    Rows,
    SeasonSet,
    class_weights,
    load_set,
)
from model.lensnet import LensNet, LensNetConfig
from model.timeline import DEFAULT_CADENCE, Cadence

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the model card).

    Attributes
    ----------
    seed : initialisation and shuffling (the data are fixed by the seasons' seeds).
    train_seasons, validation_seasons : the simulated seasons of each split.
    crop : how instances are cut from each star.
    model : architecture.
    epochs : at most this many passes over the training instances.
    batch_size : instances per step.
    learning_rate : AdamW step size (peak of the cosine schedule).
    weight_decay : decoupled weight decay (AdamW); 0 is plain Adam.
    site_loss_weight : weight of the per-site score loss.
    cosine : anneal the learning rate to zero over ``epochs`` along a half cosine, per step.
    patience : stop after this many epochs without a better validation figure.
    select : keep the epoch of the lowest validation ``"loss"`` or of the highest validation
        binary ``"accuracy"`` (mean per class; ties to the lower loss).
    threads : ``torch.set_num_threads`` during training.
    device : ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available).
    workers : processes that build the instances (first run only; cached afterwards).
    max_minutes : time budget: the first epoch's duration decides how many of ``epochs`` fit,
        and the cosine schedule is set over those (None: no limit).
    init : an artifact to start from (fine-tuning: its weights and standardisation are kept;
        the architecture must match ``model``); None trains from scratch.
    cadence : the daemon's schedule and trigger rules the instances are cut at (recorded in
        the card: the daemon should trigger with the same rules, ``model.timeline.card_cadence``).
    """

    seed: int = 1
    train_seasons: SeasonSet = TRAIN_SEASONS
    validation_seasons: SeasonSet = VALIDATION_SEASONS
    crop: CropConfig = field(default_factory=CropConfig)
    model: LensNetConfig = field(default_factory=LensNetConfig)
    epochs: int = 40
    batch_size: int = 512
    learning_rate: float = 4e-3
    weight_decay: float = 0.01
    site_loss_weight: float = 0.5
    cosine: bool = True
    patience: int = 20
    select: Literal["loss", "accuracy"] = "accuracy"
    threads: int = 1
    device: str = "auto"
    workers: int = 1
    max_minutes: float | None = None
    init: str | None = None
    cadence: Cadence = DEFAULT_CADENCE


@dataclass
class History:
    """Per-epoch figures; accuracies are mean per-class (balanced) accuracies."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_binary_accuracy: list[float] = field(default_factory=list)
    val_class_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    epochs_planned: int = 0
    device: str = "cpu"
    n_train: int = 0
    n_val: int = 0


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when torch sees a GPU, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def standardisation(instances: Instances) -> tuple[Tensor, Tensor]:
    """(F,) mean and std of the real steps of the training instances (NaN ignored)."""
    x = instances.x.astype(np.float64)
    mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
    std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0) if len(x) else np.ones(x.shape[1])
    std = np.where(std > 0, std, 1.0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def batches(instances: Rows, batch_size: int, rng: np.random.Generator | None) -> Iterator[I64]:
    """Index arrays of length-bucketed batches; shuffled (with jitter) when ``rng`` is given."""
    longest = instances.lengths.max(axis=1).astype(np.float64)
    if rng is not None:
        longest = longest + rng.uniform(0.0, 100.0, len(longest))
    order = np.argsort(longest, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    yield from chunks


class Batcher:
    """Padded batches of a set of instances on one device. On a GPU the instances' rows live
    in device memory and a batch is one gather there (the CPU computes only index arrays)."""

    def __init__(self, instances: Rows, device: torch.device) -> None:
        self.instances = instances
        self.device = device
        self._x = torch.from_numpy(instances.x).to(device) if device.type != "cpu" else None

    def __call__(self, index: I64) -> tuple[Tensor, Tensor]:
        """(B, S, L, F) and (B, S) tensors of the instances ``index``."""
        if self._x is None:
            x, lengths = self.instances.batch(index)
            return torch.from_numpy(x), torch.from_numpy(lengths)
        lengths, source, slot, step = self.instances.gather_index(index)
        b, s = lengths.shape
        length = int(lengths.max()) if b else 0
        out = torch.zeros((b * s, length, self._x.shape[1]), device=self.device)
        where = [
            torch.from_numpy(a).to(self.device, non_blocking=True) for a in (source, slot, step)
        ]
        out[where[1], where[2]] = self._x[where[0]]
        return out.view(b, s, length, -1), torch.from_numpy(lengths).to(self.device)


def to_tensors(instances: Instances, index: I64) -> tuple[Tensor, Tensor]:
    """(B, S, L, F) and (B, S) CPU tensors of the instances ``index``."""
    x, lengths = instances.batch(index)
    return torch.from_numpy(x), torch.from_numpy(lengths)


class Loss(nn.Module):
    """Weighted BCE (No vs Yes + Maybe) + weighted CE (No / Maybe / Yes) + weighted site BCE."""

    def __init__(
        self, class_weight: F64, binary_weight: F64, site_weight: F64, site_loss_weight: float
    ) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=torch.tensor(class_weight, dtype=torch.float32))
        self.binary_weight: Tensor
        self.site_weight: Tensor
        self.register_buffer("binary_weight", torch.tensor(binary_weight, dtype=torch.float32))
        self.register_buffer("site_weight", torch.tensor(site_weight, dtype=torch.float32))
        self.site_loss_weight = site_loss_weight

    def forward(
        self,
        binary: Tensor,
        classes: Tensor,
        sites: Tensor,
        label: Tensor,
        site_target: Tensor,
        lengths: Tensor,
    ) -> Tensor:
        target = (label > 0).float()  # (B,)
        weight = self.binary_weight[(label > 0).long()]  # (B,)
        bce = nn.functional.binary_cross_entropy_with_logits(binary, target, weight=weight)
        loss = bce + self.ce(classes, label)
        if self.site_loss_weight > 0:
            present = (lengths > 0).float()  # (B, S)
            site_w = self.site_weight[site_target.long()] * present
            site_bce = nn.functional.binary_cross_entropy_with_logits(
                sites, site_target, weight=site_w, reduction="sum"
            ) / present.sum().clamp_min(1.0)
            loss = loss + self.site_loss_weight * site_bce
        return loss


def make_loss(train_set: Instances, site_loss_weight: float) -> Loss:
    """The loss with class weights from the training instances."""
    present = train_set.lengths > 0
    site_labels = train_set.site_target[present].astype(np.int64)
    return Loss(
        class_weights(train_set.label, 3),
        class_weights((train_set.label > 0).astype(np.int64), 2),
        class_weights(site_labels, 2),
        site_loss_weight,
    )


@torch.no_grad()
def predict(
    model: nn.Module, instances: Rows, batch_size: int = 128, device: str = "cpu"
) -> tuple[F64, F64, F64]:
    """``(p_event (N,), p_class (N, 3), site_scores (N, 3))`` in instance order."""
    was_training = model.training
    model.eval()
    batcher = Batcher(instances, torch.device(device))
    p_event = np.zeros(len(instances))
    p_class = np.zeros((len(instances), 3))
    site_scores = np.zeros((len(instances), 3))
    for index in batches(instances, batch_size, None):
        x, lengths = batcher(index)
        event, classes, sites = model(x, lengths)
        p_event[index] = event.cpu().numpy()
        p_class[index] = classes.cpu().numpy()
        site_scores[index] = sites.cpu().numpy()
    model.train(was_training)
    return p_event, p_class, site_scores


def balanced_accuracy(truth: I64, predicted: I64, n_classes: int) -> float:
    """Mean over present classes of the per-class accuracy (paper §8.2's "mean accuracy")."""
    values = [float(np.mean(predicted[truth == c] == c)) for c in range(n_classes)]
    present = [v for c, v in enumerate(values) if np.any(truth == c)]
    return float(np.mean(present)) if present else float("nan")


def _step_inputs(batcher: Batcher, index: I64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, lengths = batcher(index)
    instances, device = batcher.instances, batcher.device
    assert isinstance(instances, Instances)
    label = torch.from_numpy(instances.label[index]).to(device)
    site_target = torch.from_numpy(instances.site_target[index]).to(device)
    return x, lengths, label, site_target


@torch.no_grad()
def _validate(
    model: LensNet, loss_fn: Loss, batcher: Batcher, batch_size: int
) -> tuple[float, float, float]:
    model.eval()
    instances = batcher.instances
    assert isinstance(instances, Instances)
    total, count = 0.0, 0
    p_event = np.zeros(len(instances))
    p_class = np.zeros((len(instances), 3))
    for index in batches(instances, batch_size, None):
        x, lengths, label, site_target = _step_inputs(batcher, index)
        binary, classes, sites = model.logits(x, lengths)
        total += loss_fn(binary, classes, sites, label, site_target, lengths).item() * len(index)
        count += len(index)
        p_event[index] = torch.sigmoid(binary).cpu().numpy()
        p_class[index] = classes.cpu().numpy()
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
    """Train and return the model of the epoch chosen on validation, and the history.

    ``train_set`` / ``val_set`` default to the configured seasons built by
    :func:`model.dataset.load_set` (cached under ``cache`` when given). ``progress`` shows
    bars, ``verbose`` prints one line per epoch. The model is returned on the CPU.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    rng = np.random.default_rng([config.seed, 3])
    if train_set is None:
        train_set = load_set(
            config.train_seasons,
            config.crop,
            cadence=config.cadence,
            cache=cache,
            workers=config.workers,
            progress=progress,
        )
    if val_set is None:
        val_set = load_set(
            config.validation_seasons,
            config.crop,
            cadence=config.cadence,
            cache=cache,
            workers=config.workers,
            progress=progress,
        )
    model = LensNet(config.model)
    if config.init is None:
        model.set_standardisation(*standardisation(train_set))
    else:
        from model.export import load_artifact

        start, _ = load_artifact(Path(config.init))
        model.load_state_dict(start.state_dict())
    model.to(device)
    loss_fn = make_loss(train_set, config.site_loss_weight).to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    n_batches = math.ceil(len(train_set) / config.batch_size)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs * n_batches)
        if config.cosine
        else None
    )
    history = History(device=str(device), n_train=len(train_set), n_val=len(val_set))
    train_batches, val_batches = Batcher(train_set, device), Batcher(val_set, device)
    best_score: tuple[float, ...] = (math.inf, math.inf)
    best_state, stale = copy.deepcopy(model.state_dict()), 0
    started = time.monotonic()
    model.train()
    planned = config.epochs
    for epoch in range(config.epochs):
        if epoch >= planned:
            break
        bar = tqdm(
            batches(train_set, config.batch_size, rng),
            total=n_batches,
            desc=f"epoch {epoch + 1}/{planned}",
            disable=None if progress else True,
            leave=False,
        )
        running = torch.zeros((), device=device)  # summed on the device: no sync per step
        count = 0
        for index in bar:
            x, lengths, label, site_target = _step_inputs(train_batches, index)
            binary, classes, sites = model.logits(x, lengths)
            loss = loss_fn(binary, classes, sites, label, site_target, lengths)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            if schedule is not None:
                schedule.step()
            running += loss.detach() * len(index)
            count += len(index)
        total = float(running.item())
        val_loss, val_binary, val_class = _validate(
            model, loss_fn, val_batches, 2 * config.batch_size
        )
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
        if epoch == 0 and config.max_minutes is not None:
            # Fit the epochs to the time budget, measured on the first one, and anneal the
            # learning rate over the epochs that fit (not a schedule cut off half-way).
            fit = max(1, int(60 * config.max_minutes / history.seconds[0]))
            if fit < planned:
                planned = fit
                if config.cosine:
                    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                        optimiser, max(1, (planned - 1) * n_batches)
                    )
        history.epochs_planned = planned
        if stale >= config.patience:
            break
    model.load_state_dict(best_state)
    model.to("cpu")
    model.eval()
    return model, history
