"""The loss, training on a small simulated season, and export with a content version."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from model.dataset import CropConfig, Instances, SeasonSet, build_instances, class_weights
from model.export import content_version, load_artifact, model_card, save, training_command
from model.lensnet import LensNet, LensNetConfig
from model.simulate import SimulationConfig
from model.timeline import card_cadence
from model.train import Batcher, TrainConfig, make_loss, predict, standardisation, train

SMALL = TrainConfig(
    seed=3,
    train_seasons=SeasonSet("train", (41,), 30),
    validation_seasons=SeasonSet("validation", (42,), 20),
    epochs=2,
    crop=CropConfig(crops=2, untriggered_probability=1.0),
    model=LensNetConfig(hidden=8, dense=16),
    batch_size=16,
    device="cpu",
)


def small_set(seed: int, n: int) -> Instances:
    config = SimulationConfig(n_stars=n, seed=seed)
    return build_instances(config, range(n), SMALL.crop, max_length=150)


def test_class_weights_balance_the_classes() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2], dtype=np.int64)
    weights = class_weights(labels)
    counts = np.bincount(labels)
    np.testing.assert_allclose(weights * counts, [2.0, 2.0, 2.0])


def test_loss_decreases_when_fitting_a_small_batch() -> None:
    torch.set_num_threads(1)  # as training does; two threads on a busy 2-core box crawl
    torch.manual_seed(0)
    config = SimulationConfig(n_stars=30, seed=4)
    instances = build_instances(
        config, range(30), CropConfig(crops=1, untriggered_probability=1.0), max_length=100
    )
    assert len(instances) >= 10
    model = LensNet(LensNetConfig(hidden=8, dense=16, dropout=0.0))
    model.set_standardisation(*standardisation(instances))
    loss_fn = make_loss(instances, site_loss_weight=0.5)
    x, lengths = Batcher(instances, torch.device("cpu"))(np.arange(len(instances)))
    label = torch.from_numpy(instances.label)
    site_target = torch.from_numpy(instances.site_target)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(*model.logits(x, lengths), label, site_target, lengths)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def test_site_loss_ignores_sites_without_data() -> None:
    instances = build_instances(
        SimulationConfig(n_stars=10, seed=4),
        range(10),
        CropConfig(crops=1, untriggered_probability=1.0),
        max_length=50,
    )
    loss_fn = make_loss(instances, site_loss_weight=1.0)
    n = len(instances)
    lengths = torch.tensor([[5, 0, 0]] * n)
    label = torch.zeros(n, dtype=torch.long)
    target = torch.zeros(n, 3)
    zero = torch.zeros(n)
    classes = torch.zeros(n, 3)
    sites = torch.zeros(n, 3)
    base = loss_fn(zero, classes, sites, label, target, lengths)
    sites[:, 1:] = 50.0  # wild logits on the empty sites change nothing
    assert loss_fn(zero, classes, sites, label, target, lengths).item() == base.item()
    sites[:, 0] = 50.0  # but on the site with data they do
    assert loss_fn(zero, classes, sites, label, target, lengths).item() > base.item()


def test_small_training_run_exports_and_round_trips(tmp_path: Path) -> None:
    train_set, val_set = small_set(41, 30), small_set(42, 20)
    model, history = train(
        SMALL, train_set=train_set, val_set=val_set, progress=False, verbose=False
    )
    assert len(history.train_loss) == 2
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert 0 <= history.best_epoch < 2
    card = model_card(SMALL, history, model)
    path = save(model, card, tmp_path)
    version = content_version(model)
    assert path.name == f"lensnet-{version}.pt"
    loaded, loaded_card = load_artifact(path)
    assert loaded_card["version"] == version
    assert loaded_card["artifact"] == path.name
    assert loaded_card["model_config"]["hidden"] == 8
    assert loaded_card["training"]["config"]["seed"] == 3
    assert "--train-seasons 41" in training_command(SMALL)
    # The card records the trigger the instances were cut at; serving reads it back.
    assert card_cadence(loaded_card) == SMALL.cadence
    assert "--high-cadence-rule 5/5@3:250 --low-cadence-rule 10/10@3:400" in training_command(SMALL)
    test_set = small_set(43, 20)
    eager = predict(model, test_set)
    scripted = predict(loaded, test_set)
    for a, b in zip(eager, scripted, strict=True):
        assert np.abs(a - b).max() <= 1e-5
    # Another model gets another name, and the folder keeps one artifact and its card.
    with torch.no_grad():
        model.binary_head.bias.add_(1.0)
    second = save(model, card, tmp_path)
    assert second != path
    assert sorted(p.name for p in tmp_path.glob("lensnet-*.pt")) == [second.name]
