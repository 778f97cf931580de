"""The novelty network: binning against a slow reference, the energy against a reference
mixture, batch invariance, a smoke training run and the exported artifact's agreement."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.dataset import CropConfig, Instances, SeasonSet, build_instances
from model.export_novelty import content_version, load_novelty, novelty_card, save_novelty
from model.features import collate
from model.novelty import NoveltyConfig, NoveltyNet, batch_mixture
from model.simulate import SimulationConfig
from model.train_novelty import NoveltyTrainConfig, bin_rows, subset, train_novelty

SMALL = NoveltyTrainConfig(
    seed=3,
    train_seasons=SeasonSet("train", (41,), 40),
    validation_seasons=SeasonSet("validation", (42,), 20),
    crop=CropConfig(crops=2, untriggered_probability=1.0),
    model=NoveltyConfig(steps=8, hidden=8, embedding=4, estimation_hidden=4),
    epochs=2,
    batch_size=64,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_set(seed: int, n: int) -> Instances:
    return build_instances(
        SimulationConfig(n_stars=n, seed=seed), range(n), SMALL.crop, max_length=120
    )


@pytest.fixture(scope="module")
def trained() -> tuple[NoveltyNet, object, NoveltyTrainConfig, Instances]:
    train_set, val_set = small_set(41, 40), small_set(42, 20)
    model, history, config = train_novelty(
        SMALL, train_set=train_set, val_set=val_set, progress=False, verbose=False
    )
    return model, history, config, val_set


def reference_bins(x: np.ndarray, n: int, steps: int) -> np.ndarray:
    """Slow, obvious binning of one site's raw (n, F) series: means of consecutive runs."""
    m = min(n, steps)
    edges = [j * n // m for j in range(m + 1)]
    return np.stack([x[edges[j] : edges[j + 1]].mean(axis=0) for j in range(m)])


def test_bins_are_means_of_consecutive_points() -> None:
    rng = np.random.default_rng(0)
    model = NoveltyNet(NoveltyConfig(steps=7))
    lengths = np.array([[23, 7, 0], [5, 1, 40]])
    x = np.zeros((2, 3, 40, 8), dtype=np.float32)
    for b in range(2):
        for s in range(3):
            x[b, s, : lengths[b, s]] = rng.normal(size=(lengths[b, s], 8))
    bins, counts, _ = model.bin(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_array_equal(counts.numpy(), np.minimum(lengths, 7))
    for b in range(2):
        for s in range(3):
            n = int(lengths[b, s])
            if n == 0:
                assert float(bins[b, s].abs().sum()) == 0.0
                continue
            expected = reference_bins(x[b, s, :n].astype(np.float64), n, 7)
            # mean and std are 0 and 1: the bins are the raw means, clipped at +-10
            got = bins[b, s, : min(n, 7), :8].numpy()
            np.testing.assert_allclose(got, np.clip(expected, -10, 10), atol=1e-5)
            assert float(bins[b, s, min(n, 7) :].abs().sum()) == 0.0


def test_a_missing_column_bins_to_zero() -> None:
    model = NoveltyNet(NoveltyConfig(steps=4))
    x = torch.ones(1, 3, 10, 8)
    x[0, 0, :, 3] = math.nan  # sky missing at CTIO
    bins, _, _ = model.bin(x, torch.tensor([[10, 10, 10]]))
    assert torch.isfinite(bins).all()
    assert float(bins[0, 0, :, 3].abs().sum()) == 0.0
    assert float(bins[0, 1, :, 3].sum()) == 4.0


def test_energy_matches_a_reference_mixture() -> None:
    """The module's energy against -log sum_k phi_k N(z | mu_k, Sigma_k) with numpy."""
    rng = np.random.default_rng(1)
    config = NoveltyConfig(components=3, embedding=2, ridge=0.0)
    model = NoveltyNet(config)
    d = config.z_size
    phi = np.array([0.5, 0.3, 0.2])
    mu = rng.normal(size=(3, d))
    a = rng.normal(size=(3, d, d))
    sigma = a @ a.transpose(0, 2, 1) + np.eye(d)
    model.set_mixture(torch.tensor(np.log(phi)), torch.tensor(mu), torch.tensor(sigma))
    z = rng.normal(size=(5, d))
    got = model.energy(torch.tensor(z, dtype=torch.float32)).numpy()
    z32 = z.astype(np.float32).astype(np.float64)
    density = np.zeros(5)
    for k in range(3):
        diff = z32 - mu[k]
        maha = np.einsum("bd,de,be->b", diff, np.linalg.inv(sigma[k]), diff)
        norm = np.sqrt(np.linalg.det(2 * np.pi * sigma[k]))
        density += phi[k] * np.exp(-0.5 * maha) / norm
    np.testing.assert_allclose(got, -np.log(density), rtol=1e-9)


def test_batch_mixture_is_the_mixture_of_the_batch() -> None:
    """DAGMM's batch estimate with hard memberships = each component's own Gaussian."""
    rng = np.random.default_rng(2)
    z = torch.tensor(rng.normal(size=(40, 3)), dtype=torch.float32)
    gamma = torch.zeros(40, 2)
    gamma[:20, 0] = 1.0
    gamma[20:, 1] = 1.0
    energy = batch_mixture(z, gamma, ridge=0.0).numpy()
    z64 = z.double().numpy()
    density = np.zeros(40)
    for k, rows in enumerate((slice(0, 20), slice(20, 40))):
        mean = z64[rows].mean(axis=0)
        cov = np.cov(z64[rows].T, bias=True)
        diff = z64 - mean
        maha = np.einsum("bd,de,be->b", diff, np.linalg.inv(cov), diff)
        density += 0.5 * np.exp(-0.5 * maha) / np.sqrt(np.linalg.det(2 * np.pi * cov))
        assert k in (0, 1)
    np.testing.assert_allclose(energy, -np.log(density), rtol=1e-6)


def test_training_runs_and_the_artifact_agrees(
    trained: tuple[NoveltyNet, object, NoveltyTrainConfig, Instances], tmp_path: Path
) -> None:
    model, history, config, val_set = trained
    assert config.model.components == len(history.components)  # type: ignore[attr-defined]
    assert history.best_epoch >= 0  # type: ignore[attr-defined]
    assert all(math.isfinite(v) for v in history.energy_percentiles.values())  # type: ignore[attr-defined]
    model.energy_cut.fill_(history.energy_percentiles["95"])  # type: ignore[attr-defined]
    card = novelty_card(config, history, model, 95.0)
    path = save_novelty(model, card, tmp_path)
    assert path.name == f"novelty-{content_version(model)}.pt"
    module, loaded_card = load_novelty(tmp_path)
    assert loaded_card["version"] == content_version(model)
    assert float(module.energy_cut) == pytest.approx(history.energy_percentiles["95"])  # type: ignore[attr-defined]
    x, lengths = collate([val_set.item(i) for i in range(min(12, len(val_set)))])
    with torch.no_grad():
        eager = model(torch.from_numpy(x), torch.from_numpy(lengths))
        scripted = module(torch.from_numpy(x), torch.from_numpy(lengths))
    for a, b in zip(eager, scripted, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_star_scores_the_same_alone_and_in_a_batch(
    trained: tuple[NoveltyNet, object, NoveltyTrainConfig, Instances],
) -> None:
    model, _, _, val_set = trained
    items = [val_set.item(i) for i in range(min(10, len(val_set)))]
    x, lengths = collate(items)
    with torch.no_grad():
        energy, z, _ = model(torch.from_numpy(x), torch.from_numpy(lengths))
        for i, item in enumerate(items):
            xi, li = collate([item])
            alone, zi, _ = model(torch.from_numpy(xi), torch.from_numpy(li))
            assert float(alone[0]) == pytest.approx(float(energy[i]), rel=1e-5, abs=1e-5)
            torch.testing.assert_close(zi[0], z[i], rtol=1e-5, atol=1e-5)


def test_binned_rows_match_the_module(
    trained: tuple[NoveltyNet, object, NoveltyTrainConfig, Instances],
) -> None:
    """Training reads bins made once by bin_rows: the same as the module's own binning."""
    model, _, _, val_set = trained
    few = subset(val_set, np.arange(len(val_set)) < 6)
    data = bin_rows(model, few, chunk=4)
    x, lengths = collate([few.item(i) for i in range(len(few))])
    bins, counts, _ = model.bin(torch.from_numpy(x), torch.from_numpy(lengths))
    torch.testing.assert_close(data.bins, bins)
    torch.testing.assert_close(data.counts, counts)


def test_holdout_subclasses_are_left_out() -> None:
    train_set, val_set = small_set(41, 40), small_set(42, 20)
    name = str(train_set.subclass[0])
    config = NoveltyTrainConfig(**{**SMALL.__dict__, "holdout": (name,), "epochs": 1})
    _, history, _ = train_novelty(
        config, train_set=train_set, val_set=val_set, progress=False, verbose=False
    )
    assert name not in history.components
    assert len(history.components) == len(set(train_set.subclass.tolist())) - 1
