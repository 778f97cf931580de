"""The binary-lens flow: simulator against a reference magnification, inputs, the flow's
coordinates and learning, the artifact round trip, the posterior API and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from consumer.cli import app
from consumer.seasons.archive import Dataset, Star, write_star
from model.binary.export import content_version, load, save, shipped_artifact
from model.binary.flow import BinaryFlow, FlowConfig, zukos_nsf
from model.binary.inputs import MAX_POINTS, LightCurveInputError, flow_input, select_points
from model.binary.posterior import posterior, s_modes, summarise
from model.binary.simulate import (
    HIGH,
    LOW,
    EventArrays,
    magnification,
    make_vbm,
    reported,
    simulate_event,
    simulate_events,
)
from model.binary.train import train
from model.simulation.calendar import season_config
from model.simulation.lens import binary_magnification, source_position

TINY = FlowConfig(channels=8, downsamplings=1, dilations=(1,), embedding=8, transforms=2, hidden=16)


@pytest.fixture(scope="module")
def events() -> EventArrays:
    return simulate_events((4001,), 24, close_wide=True, progress=False)


def test_vbmicrolensing_agrees_with_our_point_source_solver_away_from_caustics() -> None:
    # A small source far from caustics magnifies like a point source; VBM's alpha is ours + pi.
    vbm = make_vbm()
    hjd = np.linspace(940.0, 1060.0, 400)
    rng = np.random.default_rng(5)
    for _ in range(5):
        theta = rng.uniform(LOW, HIGH)
        theta[6] = -3.5
        ours = binary_magnification(
            source_position(hjd, 1000.0, theta[1], 10 ** theta[2], theta[5] + math.pi),
            10 ** theta[3],
            10 ** theta[4],
        )
        theirs = magnification(vbm, theta, 1000.0, hjd)
        calm = ours < 5.0
        assert calm.sum() > 100
        assert np.median(np.abs(theirs[calm] / ours[calm] - 1.0)) < 1e-3


def test_simulated_events_are_deterministic_in_the_prior_and_detectable(
    events: EventArrays,
) -> None:
    config = season_config(4001, 1)
    again = simulate_event(make_vbm(), config, 3, close_wide=True)
    np.testing.assert_array_equal(again.theta, events.theta[3])
    np.testing.assert_array_equal(again.inputs.points, events.points[3, : events.lengths[3]])
    assert np.all((events.theta >= LOW) & (events.theta <= HIGH))
    assert np.all(events.lengths >= 20)
    assert np.all(events.lengths <= MAX_POINTS)
    # Every event rises above the noise: its largest scaled flux is several errors.
    peaks = [np.sinh(events.points[i, : events.lengths[i], 1]).max() for i in range(len(events))]
    assert min(peaks) > 3.0
    assert np.all(np.isfinite(events.dchi2_close_wide))
    assert np.all(events.dchi2_close_wide >= 0)
    # The last point is at time 0 and every other before it.
    for i in range(len(events)):
        times = events.points[i, : events.lengths[i], 0]
        assert times[-1] == 0.0
        assert np.all(np.diff(times) >= 0)


def test_reported_t0_is_relative_to_the_last_point() -> None:
    theta = np.array([[0.5, 0.1, 1.0, 0.0, -2.0, 1.0, -3.0, -0.5]])
    assert reported(theta)[0, 0] == pytest.approx(-5.0)
    np.testing.assert_array_equal(reported(theta)[0, 1:], theta[0, 1:])


def test_select_points_keeps_the_peak_and_spreads_the_rest() -> None:
    excess = np.zeros(1000)
    excess[500:510] = np.arange(10.0, 20.0)
    chosen = select_points(excess, max_points=40)
    assert len(chosen) == 40
    assert np.all(np.diff(chosen) > 0)
    assert set(range(500, 510)) <= set(chosen.tolist())
    assert chosen[0] == 0
    assert chosen[-1] == 999
    np.testing.assert_array_equal(select_points(excess[:30], 40), np.arange(30))


def _star(n: int, peak: float = 500.0) -> Star:
    hjd = np.linspace(2461100.0, 2461160.0, n)
    flux = peak * np.exp(-0.5 * ((hjd - 2461150.0) / 3.0) ** 2) + 20.0
    ones = np.ones(n, dtype=np.float32)
    dataset = Dataset(
        "SAAO",
        2,
        hjd,
        flux,
        np.full(n, 10.0),
        ones * 900,
        ones * 1.5,
        ones * 1.2,
        ones * 90,
        np.zeros(n, dtype=np.uint8),
    )
    return Star(7, "7", 270.0, -30.0, 0, 1.0, 1.0, (dataset,))


def test_flow_input_scales_by_the_median_error_and_marks_the_site() -> None:
    item = flow_input(_star(60))
    assert item.t_last == pytest.approx(2461160.0)
    assert item.log_flux_scale == pytest.approx(1.0)
    assert np.all(item.points[:, 4] == 1.0)
    assert np.all(item.points[:, [3, 5]] == 0.0)
    assert item.points[-1, 0] == 0.0
    assert item.points[0, 0] == pytest.approx(-0.6)
    assert np.sinh(item.points[:, 1]).max() == pytest.approx(50.0, abs=1.0)
    with pytest.raises(LightCurveInputError, match="star 7"):
        flow_input(_star(10))


def test_coordinates_round_trip_and_the_log_det_is_the_jacobian() -> None:
    model = BinaryFlow(TINY)
    theta = torch.tensor(np.random.default_rng(1).uniform(LOW, HIGH, (4, 8)), dtype=torch.float32)
    z, log_det = model.to_unbounded(theta)
    torch.testing.assert_close(model.to_bounded(z), theta, rtol=1e-4, atol=1e-4)
    jacobian = torch.autograd.functional.jacobian(lambda t: model.to_unbounded(t)[0], theta[0])
    assert float(log_det[0]) == pytest.approx(float(torch.logdet(jacobian)), rel=1e-4)


def test_our_spline_flow_is_zukos_nsf() -> None:
    """model.binary.flow builds zuko's NSF from faster parts: with the shipped weights, the
    same densities and draws (to float rounding) as zuko's own NSF, on contexts (B, E) and
    draws (n, B, 8)."""
    shipped = load(None)
    config = shipped.config
    zukos = zukos_nsf(config)
    zukos.load_state_dict(shipped.flow.state_dict())  # strict: the same modules and buffers
    torch.manual_seed(0)
    with torch.no_grad():
        context = torch.randn(3, config.embedding)
        torch.manual_seed(1)
        draws = shipped.flow(context).sample((1000,))
        torch.manual_seed(1)
        torch.testing.assert_close(draws, zukos(context).sample((1000,)), rtol=0, atol=1e-4)
        assert draws.shape == (1000, 3, 8)
        for theta in (draws, 2.0 * torch.randn(5, 3, 8)):
            torch.testing.assert_close(
                shipped.flow(context).log_prob(theta),
                zukos(context).log_prob(theta),
                rtol=1e-5,
                atol=2e-3,
            )


def test_training_lowers_the_validation_nll(events: EventArrays) -> None:
    torch.manual_seed(0)
    model, history = train(
        events,
        events,
        config=TINY,
        seed=0,
        epochs=4,
        batch_size=12,
        learning_rate=1e-2,
        patience=10,
        max_minutes=1.0,
        progress=False,
    )
    assert history[-1]["train_nll"] < history[0]["train_nll"]
    assert min(h["validation_nll"] for h in history) < history[0]["validation_nll"]
    # The returned model is the best epoch's.
    from model.binary.train import mean_nll

    assert mean_nll(model, events) == pytest.approx(
        min(h["validation_nll"] for h in history), rel=1e-4
    )


def test_artifact_round_trip_and_version(tmp_path: Path, events: EventArrays) -> None:
    torch.manual_seed(0)
    model = BinaryFlow(TINY).eval()
    path = save(model, {"name": "test"}, tmp_path)
    assert path.name == f"binary-flow-{content_version(model)}.pt"
    assert shipped_artifact(tmp_path) == path
    loaded = load(path)
    from model.binary.train import batch_tensors

    batch = batch_tensors(events, np.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(*batch), loaded.log_prob(*batch))
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    assert content_version(model) != content_version(loaded)


def test_summaries_and_modes() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(4000, 8))
    summary = summarise(samples)["log_s"]
    assert summary.median == pytest.approx(np.median(samples[:, 3]))
    assert summary.p16 == pytest.approx(np.percentile(samples[:, 3], 16))
    log_s = np.concatenate([np.full(700, -0.2), np.full(300, 0.2)])
    modes = s_modes(log_s)
    assert [m.label for m in modes] == ["close", "wide"]
    assert modes[0].weight == pytest.approx(0.7)
    assert modes[1].s == pytest.approx(10**0.2)
    assert [m.label for m in s_modes(np.full(100, 0.3))] == ["wide"]


def test_posterior_of_a_star_is_in_the_prior_with_t0_in_hjd() -> None:
    model = BinaryFlow(TINY).eval()
    result = posterior(_star(80), 300, model=model, seed=1)
    assert result.samples.shape == (300, 8)
    relative = result.samples[:, 0] - result.t_last
    tE = 10 ** result.samples[:, 2]
    tau = -relative / tE
    assert np.all((tau >= LOW[0] - 1e-4) & (tau <= HIGH[0] + 1e-4))
    assert np.all(
        (result.samples[:, 1:] >= LOW[1:] - 1e-4) & (result.samples[:, 1:] <= HIGH[1:] + 1e-4)
    )
    again = posterior(_star(80), 300, model=model, seed=1)
    np.testing.assert_array_equal(result.samples, again.samples)
    assert sum(m.weight for m in result.s_modes) == pytest.approx(1.0, abs=0.1)


def test_cli_prints_the_summaries(tmp_path: Path) -> None:
    torch.manual_seed(0)
    artifact = save(BinaryFlow(TINY).eval(), {"name": "test"}, tmp_path / "artifact")
    star_dir = write_star(_star(80), tmp_path / "season")
    result = CliRunner().invoke(
        app, ["posterior", str(star_dir), "--samples", "200", "--artifact", str(artifact)]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("star 7: last point HJD 2461160.00000, 200 samples")
    names = [line.split()[0] for line in lines[2:10]]
    assert names == ["t0", "u0", "log_tE", "log_s", "log_q", "alpha", "log_rho", "log_fs"]
    assert lines[-1].startswith("s modes: ")


def test_the_shipped_artifact_loads_and_its_name_is_its_content() -> None:
    path = shipped_artifact()
    model = load(path)
    assert path.name == f"binary-flow-{content_version(model)}.pt"
