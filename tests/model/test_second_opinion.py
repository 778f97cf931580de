"""The second opinion: the AlertFinder figures against a slow reference, the booster artifact's
round trip, and batch scoring independent of the chunking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from consumer.exceptions import LensNetError
from model.export_novelty import save_second_opinion, script
from model.features import Candidate, InsufficientDataError, collate, prepare
from model.novelty import NoveltyConfig, NoveltyNet
from model.second_opinion import (
    FIGURE_NAMES,
    Booster,
    assess,
    booster_document,
    feature_names,
    load_booster,
    trigger_figures,
)
from model.simulate import SimulationConfig, simulate_star


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pool() -> list[Candidate]:
    """Simulated stars prepared as the daemon prepares candidates, of many lengths."""
    config = SimulationConfig(n_stars=16, seed=12)
    candidates = []
    for index in range(16):
        star, _ = simulate_star(config, index)
        for as_of in (star.datasets[0].hjd[40], np.inf):
            try:
                candidates.append(prepare(star, as_of=float(as_of)))
            except InsufficientDataError:
                continue
    return candidates


def reference_figures(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One candidate's figures, written out the slow way from the module docstring."""
    dchi2, in_fit, present, points = 0.0, 0, 0, 0
    best: tuple[float, float, float] | None = None  # (rise, slope, days) of the highest fit
    top = -np.inf
    newest: list[tuple[float, bool]] = []
    for site in range(3):
        n = int(lengths[site])
        if n == 0:
            continue
        present += 1
        points += n
        t = x[site, :n, 0].astype(np.float64)
        flux = np.sinh(x[site, :n, 1].astype(np.float64))
        error = np.maximum(x[site, :n, 2].astype(np.float64), 1e-9)
        line = np.sinh(x[site, :n, 7].astype(np.float64))
        w = 1 / error**2
        mean = np.sum(w * flux) / np.sum(w)
        dchi2 += np.sum(w * (flux - mean) ** 2) - np.sum(w * (flux - line) ** 2)
        flat = line[0]
        moved = np.flatnonzero(np.abs(line - flat) > 1e-3 * max(1.0, abs(flat)))
        last = float(x[site, n - 1, 7])
        top = max(top, last)
        if len(moved):
            in_fit += 1
            days = max(t[-1] - t[max(moved[0] - 1, 0)], 1e-3)
            if best is None or last > best[0]:
                best = (last, (np.sinh(last) - flat) / days, days)
        newest += [(t[k], flux[k] >= 3 * error[k]) for k in range(max(0, n - 10), n)]
    newest.sort(key=lambda pair: -pair[0])
    rise, slope, days = best if best is not None else (top, 0.0, 0.0)
    return np.array(
        [
            np.log10(1 + max(dchi2, 0.0)),
            rise,
            np.arcsinh(slope),
            np.log10(1 + days),
            np.mean([high for _, high in newest[:10]]),
            present,
            in_fit,
            np.log10(points),
        ]
    )


def test_figures_match_the_slow_reference(pool: list[Candidate]) -> None:
    x, lengths = collate(pool)
    got = trigger_figures(x, lengths)
    assert got.shape == (len(pool), len(FIGURE_NAMES))
    for i in range(len(pool)):
        np.testing.assert_allclose(
            got[i], reference_figures(x[i], lengths[i]), rtol=1e-5, atol=1e-6
        )
    assert (got[:, 6] > 0).any()  # some candidates have a fitted rise


def tiny_booster(n_features: int, novelty_version: str = "abc") -> str:
    import lightgbm

    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, n_features))
    label = (table[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int) + (table[:, 1] > 1)
    common = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5, "seed": 1}
    binary = lightgbm.train(
        {**common, "objective": "binary"}, lightgbm.Dataset(table, label > 0), 5
    )
    classes = lightgbm.train(
        {**common, "objective": "multiclass", "num_class": 3}, lightgbm.Dataset(table, label), 5
    )
    names = [f"f{i}" for i in range(n_features)]
    return booster_document(binary, classes, names, novelty_version)


def test_the_booster_artifact_round_trips(tmp_path: Path) -> None:
    document = tiny_booster(6)
    path = save_second_opinion(document, {"name": "test"}, tmp_path)
    booster = load_booster(path)
    assert path.name == f"second-opinion-{booster.version}.json"
    assert booster.novelty_version == "abc"
    table = np.random.default_rng(1).normal(size=(9, 6))
    p_event, p_class = booster.predict(table)
    assert p_event.shape == (9,)
    np.testing.assert_allclose(p_class.sum(axis=1), 1.0, rtol=1e-9)
    again = load_booster(path).predict(table)
    np.testing.assert_array_equal(again[0], p_event)
    path.write_text(path.read_text()[:100])
    with pytest.raises(LensNetError, match="not a second-opinion artifact"):
        load_booster(path)


def test_assess_is_independent_of_the_chunking(pool: list[Candidate], tmp_path: Path) -> None:
    config = NoveltyConfig(steps=8, hidden=8, embedding=4, estimation_hidden=4, components=2)
    model = NoveltyNet(config)
    d = config.z_size
    model.set_mixture(
        torch.log(torch.tensor([0.5, 0.5])), torch.zeros(2, d), torch.eye(d).expand(2, d, d)
    )
    model.energy_cut.fill_(50.0)
    module = script(model)
    names = feature_names(config.embedding)
    booster: Booster = load_booster(save_second_opinion(tiny_booster(len(names)), {}, tmp_path))
    whole = assess(module, booster, ["a", "b"], pool, batch_size=64)
    chunked = assess(module, booster, ["a", "b"], pool, batch_size=3)
    assert len(whole) == len(pool)
    for a, b in zip(whole, chunked, strict=True):
        assert a.energy == pytest.approx(b.energy, rel=1e-5, abs=1e-5)
        assert a.p_event == pytest.approx(b.p_event, abs=1e-6)
        assert a.unusual == (a.energy > 50.0)
        assert a.nearest in ("a", "b")


def test_a_smoke_training_run_exports_a_working_artifact(
    pool: list[Candidate], tmp_path: Path
) -> None:
    """``lensnet second-opinion train``'s path on two tiny simulated seasons: both boosters
    train, the artifact loads and scores candidates."""
    from model.dataset import CropConfig, SeasonSet
    from model.train_second_opinion import SecondOpinionConfig, train_second_opinion

    config = NoveltyConfig(steps=8, hidden=8, embedding=4, estimation_hidden=4, components=2)
    model = NoveltyNet(config)
    d = config.z_size
    model.set_mixture(
        torch.log(torch.tensor([0.5, 0.5])), torch.zeros(2, d), torch.eye(d).expand(2, d, d)
    )
    module = script(model)
    smoke = SecondOpinionConfig(
        train_seasons=SeasonSet("train", (43,), 40),
        validation_seasons=SeasonSet("validation", (44,), 20),
        crop=CropConfig(crops=2, untriggered_probability=1.0),
        min_data_in_leaf=5,
        rounds=20,
        early_stopping=5,
    )
    binary, classes, history = train_second_opinion(smoke, novelty=module, progress=False)
    assert history["n_train"] > 0
    assert history["binary"]["best_iteration"] >= 1
    names = feature_names(config.embedding)
    path = save_second_opinion(booster_document(binary, classes, names, "v"), {}, tmp_path)
    opinions = assess(module, load_booster(path), ["a", "b"], pool[:8])
    assert all(0.0 <= o.p_event <= 1.0 for o in opinions)
    assert all(sum(o.p_class) == pytest.approx(1.0) for o in opinions)
