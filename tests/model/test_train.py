"""Training instances, splits, the loss and a small end-to-end training + export run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.dataset import (
    MIN_HISTORY_DAYS,
    CropConfig,
    build_instances,
    class_weights,
    crop_window,
    split_indices,
)
from model.export import load_artifact, model_card, save
from model.lensnet import LensNet, LensNetConfig
from model.simulate import Label, SimulationConfig
from model.train import Loss, TrainConfig, predict, standardisation, to_tensors, train

SMALL = TrainConfig(
    n_stars=40,
    seed=3,
    epochs=2,
    crop=CropConfig(crops=2),
    model=LensNetConfig(hidden=8, dense=16),
    batch_size=16,
)


def test_split_is_by_star_disjoint_and_deterministic() -> None:
    splits = split_indices(1000, seed=5)
    sets = [set(v.tolist()) for v in splits.values()]
    assert sum(len(s) for s in sets) == 1000
    assert not sets[0] & sets[1]
    assert not sets[0] & sets[2]
    assert not sets[1] & sets[2]
    assert [len(s) for s in sets] == [700, 150, 150]
    again = split_indices(1000, seed=5)
    for key, value in splits.items():
        np.testing.assert_array_equal(value, again[key])
    assert not np.array_equal(split_indices(1000, seed=6)["test"], splits["test"])


def test_crops_fall_inside_the_rise_and_keep_history() -> None:
    label = Label(1, "YES", "pspl", {}, t_rise_start=100.0, t_peak=120.0)
    rng = np.random.default_rng(0)
    crop = CropConfig(min_fraction=0.2, left_crop_probability=1.0)
    for _ in range(200):
        start, as_of, fraction = crop_window(rng, label, 0.0, 240.0, crop)
        assert 104.0 <= as_of <= 120.0
        assert fraction == pytest.approx((as_of - 100.0) / 20.0)
        assert 0.0 <= start <= 100.0 - MIN_HISTORY_DAYS
    flat = Label(2, "NO", "noise_run", {}, t_rise_start=math.nan, t_peak=math.nan)
    start, as_of, fraction = crop_window(rng, flat, 0.0, 240.0, crop)
    assert MIN_HISTORY_DAYS <= as_of <= 240.0
    assert math.isnan(fraction)
    _, as_of, _ = crop_window(rng, label, 0.0, 240.0, crop, fraction=1.0, left_crop=False)
    assert as_of == 120.0


def test_class_weights_balance_the_classes() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2], dtype=np.int64)
    weights = class_weights(labels)
    counts = np.bincount(labels)
    np.testing.assert_allclose(weights * counts, [2.0, 2.0, 2.0])


def test_instances_round_trip_through_subset() -> None:
    config = SimulationConfig(n_stars=12, seed=2)
    instances = build_instances(config, range(12), CropConfig(crops=2), seed=2)
    assert len(instances) + instances.n_dropped == 24
    part = instances.subset([3, 1])
    for new, old in ((0, 3), (1, 1)):
        x_new, n_new = part.item(new)
        x_old, n_old = instances.item(old)
        np.testing.assert_array_equal(x_new, x_old)
        np.testing.assert_array_equal(n_new, n_old)
    assert set(instances.label.tolist()) <= {0, 1, 2}


def test_loss_decreases_when_fitting_a_small_batch() -> None:
    torch.set_num_threads(1)  # as training does; two threads on a busy 2-core box crawl
    torch.manual_seed(0)
    config = SimulationConfig(n_stars=16, seed=4)
    instances = build_instances(config, range(16), CropConfig(crops=1), seed=4, max_length=100)
    model = LensNet(LensNetConfig(hidden=8, dense=16, dropout=0.0))
    model.set_standardisation(*standardisation(instances))
    loss_fn = Loss(class_weights(instances.label), np.ones(2))
    x, lengths = to_tensors(instances, np.arange(len(instances)))
    label = torch.from_numpy(instances.label)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(*model.logits(x, lengths), label)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def test_small_training_run_exports_and_round_trips(tmp_path: Path) -> None:
    simulation = SMALL.simulation
    splits = split_indices(SMALL.n_stars, SMALL.seed)
    train_set, val_set = (
        build_instances(simulation, splits[name], SMALL.crop, seed=SMALL.seed, max_length=150)
        for name in ("train", "val")
    )
    model, history = train(
        SMALL, train_set=train_set, val_set=val_set, progress=False, verbose=False
    )
    assert len(history.train_loss) == 2
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert 0 <= history.best_epoch < 2
    card = model_card(SMALL, history, model)
    path = save(model, card, tmp_path)
    loaded, loaded_card = load_artifact(path)
    assert loaded_card["model_config"]["hidden"] == 8
    assert loaded_card["training"]["config"]["seed"] == 3
    instances = build_instances(
        simulation, splits["test"], CropConfig(crops=1), seed=3, max_length=150
    )
    eager = predict(model, instances)
    scripted = predict(loaded, instances)
    for a, b in zip(eager, scripted, strict=True):
        assert np.abs(a - b).max() <= 1e-5
