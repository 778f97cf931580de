"""Train the novelty network (:mod:`model.novelty`) jointly, as Tsang & Schultz (2019) do.

Loss (paper eq. 7, with the VAE's KL term): ``L_AE + kl_weight * KL + gmm_weight * L_GMM +
L_CE`` where ``L_AE`` is the reconstruction error of each bin's flux weighted by ``1 / sigma``
(eq. 1; normalised by the weights' sum), ``L_GMM`` the mean sample energy of the batch under
the mixture fitted to the batch with the estimation network's memberships (eq. 5-6; Zong et al.
2018), and ``L_CE`` the cross-entropy of the memberships against the instance's subclass (one
component per training subclass). ``gmm_weight`` 1e-3 is the paper's fiducial lambda.

Data: the instances of the Generalise seasons (:func:`model.dataset.load_set`, the same cached
arrays LensNet trains on); ``holdout`` subclasses are removed from training and validation
(novelty experiments), ``max_instances`` keeps a random subset of the training instances (CPU
budgets). The binning is fixed (no weights), so every instance is binned once with the
model's own :meth:`~model.novelty.NoveltyNet.bin` before training: one preprocessing path,
and each epoch reads small (N, 3, C, 9) arrays.

After training, the mixture is fitted on the whole (kept) training set with the chosen epoch's
weights and fixed in the module; the training set's energy percentiles are returned for the
cut (:mod:`model.evaluation.novelty` chooses it on validation).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    load_set,
)
from model.export import shipped_cadence
from model.novelty import NoveltyConfig, NoveltyNet, batch_mixture
from model.train import standardisation

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Training-energy percentiles recorded in the card (the paper's two cuts and a finer grid).
PERCENTILES = (80.0, 90.0, 95.0, 97.5, 99.0)


@dataclass(frozen=True)
class NoveltyTrainConfig:
    """Everything a novelty training run depends on (recorded in the model card).

    Attributes
    ----------
    seed : initialisation, subset and shuffling.
    train_seasons, validation_seasons, crop : the instances (as LensNet's).
    model : architecture; ``model.components`` is set from the training subclasses.
    holdout : subclasses removed from training and validation (novelty experiments).
    max_instances : at most this many training instances (random subset); None: all.
    epochs, batch_size, learning_rate : Adam with a cosine schedule over ``epochs``.
    kl_weight : weight of the VAE's KL divergence.
    gmm_weight : lambda of the energy term (paper: 1e-3).
    threads, workers : torch threads; processes building instances (first run only).
    max_minutes : time budget: the first epoch's duration decides how many epochs fit.
    """

    seed: int = 1
    train_seasons: SeasonSet = TRAIN_SEASONS
    validation_seasons: SeasonSet = VALIDATION_SEASONS
    crop: CropConfig = field(default_factory=CropConfig)
    model: NoveltyConfig = field(default_factory=NoveltyConfig)
    holdout: tuple[str, ...] = ()
    max_instances: int | None = None
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 3e-3
    kl_weight: float = 1e-3
    gmm_weight: float = 1e-3
    threads: int = 1
    workers: int = 1
    max_minutes: float | None = None


@dataclass
class NoveltyHistory:
    """Per-epoch figures on the training and validation instances."""

    train_loss: list[float] = field(default_factory=list)
    val_reconstruction: list[float] = field(default_factory=list)
    val_component_accuracy: list[float] = field(default_factory=list)
    val_energy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    epochs_planned: int = 0
    n_train: int = 0
    n_val: int = 0
    components: list[str] = field(default_factory=list)
    energy_percentiles: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False)
class Binned:
    """Instances binned once by :meth:`~model.novelty.NoveltyNet.bin`."""

    bins: Tensor  # (N, S, C, F + 1)
    counts: Tensor  # (N, S)
    sigma: Tensor  # (N, S, C)

    def __len__(self) -> int:
        return len(self.counts)

    def take(self, index: I64) -> tuple[Tensor, Tensor, Tensor]:
        i = torch.from_numpy(index)
        return self.bins[i], self.counts[i], self.sigma[i]


@torch.no_grad()
def bin_rows(model: NoveltyNet, rows: Rows, chunk: int = 256) -> Binned:
    """Bin every instance of ``rows`` (in chunks, instances of similar length together)."""
    n = len(rows)
    c, f = model.steps, model.config.n_features + 1
    bins = torch.zeros(n, model.n_sites, c, f)
    counts = torch.zeros(n, model.n_sites, dtype=torch.int64)
    sigma = torch.zeros(n, model.n_sites, c)
    order = np.argsort(rows.lengths.max(axis=1), kind="stable")
    for start in range(0, n, chunk):
        index = order[start : start + chunk]
        x, lengths = rows.batch(index)
        b, k, s = model.bin(torch.from_numpy(x), torch.from_numpy(lengths))
        where = torch.from_numpy(index)
        bins[where], counts[where], sigma[where] = b, k, s
    return Binned(bins, counts, sigma)


def subset(instances: Instances, keep: npt.NDArray[np.bool_]) -> Instances:
    """The instances where ``keep`` (rows of ``x`` are shared, offsets kept)."""
    index = np.flatnonzero(keep)
    return Instances(
        x=instances.x,
        offsets=instances.offsets[index],
        lengths=instances.lengths[index],
        label=instances.label[index],
        site_target=instances.site_target[index],
        season=instances.season[index],
        star_index=instances.star_index[index],
        as_of=instances.as_of[index],
        t_peak=instances.t_peak[index],
        fraction=instances.fraction[index],
        subclass=instances.subclass[index],
        aux_missing=instances.aux_missing[index],
        n_dropped=0,
    )


def _every_tenth_step(instances: Instances) -> Instances:
    return Instances(**{**instances.__dict__, "x": instances.x[::10]})


def reconstruction_loss(bins: Tensor, counts: Tensor, sigma: Tensor, rebuilt: Tensor) -> Tensor:
    """Weighted MSE of the binned flux, weights ``1 / sigma`` over real bins (paper eq. 1)."""
    c = bins.shape[2]
    mask = torch.arange(c).view(1, 1, c) < counts.unsqueeze(-1)
    weight = torch.where(mask, 1.0 / sigma.clamp(min=0.05), torch.zeros_like(sigma))
    error = (bins[..., 1] - rebuilt).square()
    return (weight * error).sum() / weight.sum().clamp(min=1e-6)


def kl_divergence(mu: Tensor, log_var: Tensor) -> Tensor:
    return -0.5 * torch.mean(torch.sum(1 + log_var - mu.square() - log_var.exp(), dim=1))


@torch.no_grad()
def embed(model: NoveltyNet, data: Binned, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """``(z (N, D), gamma (N, K))`` in eval mode."""
    was = model.training
    model.eval()
    zs, gammas = [], []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        bins, counts, _ = data.take(index)
        z, logits, _, _, _ = model.parts(bins, counts)
        zs.append(z)
        gammas.append(torch.softmax(logits, dim=-1))
    model.train(was)
    return torch.cat(zs), torch.cat(gammas)


def fit_mixture(model: NoveltyNet, data: Binned) -> Tensor:
    """Fix the mixture from the whole set (paper §3.2); returns the set's energies (N,)."""
    z, gamma = embed(model, data)
    z64, g = z.double(), gamma.double()
    weight = g.sum(dim=0) + 1e-9
    mu = (g.t() @ z64) / weight.unsqueeze(1)
    diff = z64.unsqueeze(1) - mu.unsqueeze(0)
    sigma = torch.einsum("bk,bkd,bke->kde", g, diff, diff) / weight.view(-1, 1, 1)
    model.set_mixture(torch.log(weight / len(z64)), mu, sigma)
    with torch.no_grad():
        return model.energy(z)


@torch.no_grad()
def _validate(
    model: NoveltyNet, data: Binned, target: Tensor, config: NoveltyTrainConfig
) -> tuple[float, float, float]:
    """Validation reconstruction loss, component accuracy and mean batch energy."""
    model.eval()
    total, correct, energy, count = 0.0, 0, 0.0, 0
    for start in range(0, len(data), config.batch_size):
        index = np.arange(start, min(start + config.batch_size, len(data)))
        bins, counts, sigma = data.take(index)
        z, logits, rebuilt, _, _ = model.parts(bins, counts)
        total += reconstruction_loss(bins, counts, sigma, rebuilt).item() * len(index)
        correct += int((logits.argmax(dim=1) == target[index]).sum())
        if len(index) > 2 * config.model.z_size:
            gamma = torch.softmax(logits, dim=-1)
            energy += batch_mixture(z, gamma, config.model.ridge).mean().item() * len(index)
        count += len(index)
    model.train()
    return total / max(count, 1), correct / max(count, 1), energy / max(count, 1)


def load_sets(
    config: NoveltyTrainConfig, cache: Path | None, progress: bool
) -> tuple[Instances, Instances]:
    """The training and validation instances, holdout subclasses removed, training subset
    drawn."""
    load = functools.partial(
        load_set,
        crop=config.crop,
        cadence=shipped_cadence(),
        cache=cache,
        workers=config.workers,
        progress=progress,
    )
    train_set, val_set = load(config.train_seasons), load(config.validation_seasons)
    train_keep = ~np.isin(train_set.subclass, config.holdout)
    if config.max_instances is not None and train_keep.sum() > config.max_instances:
        rng = np.random.default_rng([config.seed, 11])
        chosen = rng.choice(np.flatnonzero(train_keep), config.max_instances, replace=False)
        train_keep = np.zeros(len(train_set), dtype=bool)
        train_keep[chosen] = True
    val_keep = ~np.isin(val_set.subclass, config.holdout)
    return subset(train_set, train_keep), subset(val_set, val_keep)


def train_novelty(
    config: NoveltyTrainConfig,
    *,
    train_set: Instances | None = None,
    val_set: Instances | None = None,
    cache: Path | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> tuple[NoveltyNet, NoveltyHistory, NoveltyTrainConfig]:
    """Train; returns the model of the best validation epoch with its mixture fitted, the
    history, and the config with ``model.components`` set to the training subclasses."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 5])
    if train_set is None or val_set is None:
        train_set, val_set = load_sets(config, cache, progress)
    train_set = subset(train_set, ~np.isin(train_set.subclass, config.holdout))
    val_set = subset(val_set, ~np.isin(val_set.subclass, config.holdout))
    names = sorted(set(train_set.subclass.tolist()))
    config = NoveltyTrainConfig(
        **{
            **config.__dict__,
            "model": NoveltyConfig(**{**config.model.__dict__, "components": len(names)}),
        }
    )
    component = {name: i for i, name in enumerate(names)}
    model = NoveltyNet(config.model)
    # Every 10th step of the training instances: LensNet's statistics, in a tenth of the memory.
    model.set_standardisation(*standardisation(_every_tenth_step(train_set)))
    train_data, val_data = bin_rows(model, train_set), bin_rows(model, val_set)
    train_target = torch.tensor([component[s] for s in train_set.subclass.tolist()])
    val_target = torch.tensor([component.get(s, -100) for s in val_set.subclass.tolist()])
    n_train, n_val = len(train_set), len(val_set)
    del train_set, val_set  # the binned arrays are all training reads: free the rows
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    n_batches = math.ceil(len(train_data) / config.batch_size)
    history = NoveltyHistory(n_train=n_train, n_val=n_val, components=names)
    planned = config.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, planned * n_batches)
    ce = nn.CrossEntropyLoss()
    best, best_state = math.inf, copy.deepcopy(model.state_dict())
    started = time.monotonic()
    model.train()
    for epoch in range(config.epochs):
        if epoch >= planned:
            break
        order = rng.permutation(len(train_data))
        running, count = 0.0, 0
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"epoch {epoch + 1}/{planned}",
            disable=None if progress else True,
            leave=False,
        )
        for start in bar:
            index = order[start : start + config.batch_size]
            if len(index) < 2:
                continue
            bins, counts, sigma = train_data.take(index)
            z, logits, rebuilt, mu, log_var = model.parts(bins, counts, sample=True)
            loss = reconstruction_loss(bins, counts, sigma, rebuilt)
            loss = loss + config.kl_weight * kl_divergence(mu, log_var)
            loss = loss + ce(logits, train_target[index])
            if len(index) > 2 * config.model.z_size:
                energy = batch_mixture(z, torch.softmax(logits, dim=-1), config.model.ridge)
                loss = loss + config.gmm_weight * energy.mean().float()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            running += loss.item() * len(index)
            count += len(index)
        reconstruction, accuracy, energy_mean = _validate(model, val_data, val_target, config)
        history.train_loss.append(running / max(count, 1))
        history.val_reconstruction.append(reconstruction)
        history.val_component_accuracy.append(accuracy)
        history.val_energy.append(energy_mean)
        history.seconds.append(time.monotonic() - started)
        # Chosen on validation: reconstruction plus the classification error (the two tasks
        # whose sum the paper trains; the energy's scale moves with the mixture).
        score = reconstruction + (1.0 - accuracy)
        if score < best:
            best, best_state, history.best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        if epoch == 0 and config.max_minutes is not None:
            per_epoch = history.seconds[0]
            planned = max(1, min(config.epochs, int(config.max_minutes * 60 // per_epoch)))
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimiser, max(1, (planned - 1) * n_batches)
            )
        elif config.max_minutes is not None and history.seconds[-1] > config.max_minutes * 60:
            # A shared machine slows later epochs: the budget holds even so (the cosine
            # schedule is then cut short; the card records the epochs run).
            planned = epoch + 1
        if verbose:
            print(
                f"epoch {epoch + 1}/{planned}: train {history.train_loss[-1]:.4f} "
                f"val reconstruction {reconstruction:.4f} components {accuracy:.4f} "
                f"energy {energy_mean:.2f} ({history.seconds[-1]:.0f} s)",
                flush=True,
            )
    history.epochs_planned = planned
    model.load_state_dict(best_state)
    model.eval()
    energies = fit_mixture(model, train_data).numpy()
    history.energy_percentiles = {f"{p:g}": float(np.percentile(energies, p)) for p in PERCENTILES}
    return model, history, config
