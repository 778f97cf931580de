"""The binary-posterior stage without Kafka: every alert gets the flow's summaries, seeded by
its id, the same alone or in any batch."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from consumer.constants import SITES
from consumer.edge.alert import Alert
from consumer.edge.binary_posterior import PARAMETERS
from consumer.pipeline.binary_posterior import BinaryPosteriors, alert_seed, light_curve_input
from consumer.settings import BinarySettings
from model.binary.inputs import MIN_POINTS, flow_input
from model.evaluation.event_model import event_rich
from model.features import select_sites
from model.simulate import simulate_star
from tests.consumer.pipeline.test_event_model import alert_of, cut, season
from tests.consumer.pointlens.test_fit import T0


@pytest.fixture(scope="module")
def stage() -> BinaryPosteriors:
    torch.set_num_threads(1)
    return BinaryPosteriors(BinarySettings(samples=400))


def alert_at(as_of: float) -> Alert:
    return alert_of(cut(season(), as_of))


def test_an_alert_gets_every_parameter_in_order(stage: BinaryPosteriors) -> None:
    alert = alert_at(T0 - 5.0)
    ((key, annotated),) = stage.attach([("k", alert)])
    assert key == "k"
    posterior = annotated.binary_posterior
    assert posterior is not None
    assert [p.name for p in posterior.parameters] == list(PARAMETERS)
    assert posterior.n_samples == 400
    assert posterior.model_version == stage.model_version
    assert posterior.fitted_to_hjd == pytest.approx(alert.light_curve.hjd.max())
    for p in posterior.parameters:
        assert p.p16 <= p.median <= p.p84, p
        assert 0.0 < p.prior_fraction < 2.0, p
    # the rise fixes the time scale of the peak far better than the prior's +-20 days
    assert posterior.constrained("t0")
    assert abs(posterior.parameter("t0").median - T0) < 10.0
    assert 1 <= len(posterior.s_modes) <= 2
    assert sum(m.weight for m in posterior.s_modes) <= 1.0 + 1e-12
    assert replace(annotated, binary_posterior=None) == alert


def test_the_same_alert_gets_the_same_posterior_alone_or_in_a_batch(
    stage: BinaryPosteriors,
) -> None:
    first, second = alert_at(T0 - 5.0), alert_at(T0 + 3.0)
    alone = stage.attach([(0, second)])[0][1].binary_posterior
    batch = stage.attach([(0, first), (1, second), (2, first)])
    assert batch[1][1].binary_posterior == alone
    assert batch[0][1].binary_posterior == batch[2][1].binary_posterior
    assert batch[0][1].binary_posterior != alone


def test_the_draws_leave_torch_s_random_state_alone(stage: BinaryPosteriors) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stage.attach([(0, alert_at(T0))])
    assert torch.equal(torch.rand(3), expected)


def test_modules_built_in_another_thread_do_not_move_the_draws(stage: BinaryPosteriors) -> None:
    """Building a module draws its initial weights from torch's global generator, e.g. a
    daemon starting beside others in one process (a rebalance storm's in-process daemons)."""
    alert = alert_at(T0 - 5.0)
    expected = stage.attach([(0, alert)])[0][1].binary_posterior
    stop = threading.Event()

    def build() -> None:
        while not stop.is_set():
            torch.nn.Linear(64, 64)

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    try:
        for _ in range(5):
            assert stage.attach([(0, alert)])[0][1].binary_posterior == expected
    finally:
        stop.set()
        builder.join()


def test_a_light_curve_too_short_for_the_flow_gets_none(stage: BinaryPosteriors) -> None:
    short = alert_of(cut(season(), T0 - 59.2))
    assert len(short.light_curve) < MIN_POINTS
    ((_, annotated),) = stage.attach([(0, short), (1, alert_at(T0))])[:1]
    assert annotated.binary_posterior is None
    assert stage.skipped == 1


def test_seeds_are_stable_and_differ_by_alert() -> None:
    assert alert_seed("KMT-1-2461150.00000") == alert_seed("KMT-1-2461150.00000")
    assert alert_seed("KMT-1-2461150.00000") != alert_seed("KMT-1-2461150.00001")
    assert 0 <= alert_seed("x") < 2**63


def test_an_alert_s_light_curve_is_read_as_the_offline_path_reads_the_star() -> None:
    """The daemon's input (the alert's light curve) and `lensnet posterior`'s (the star) agree
    when the light curve holds what the star's cleaning keeps."""
    config = event_rich(2001, 20)
    star = next(
        s for s, label in (simulate_star(config, i) for i in range(20)) if label.label == "YES"
    )
    offline = flow_input(star)
    series = [s for s in select_sites(star) if s is not None and len(s)]
    site = np.concatenate([np.full(len(s), SITES.index(s.site)) for s in series])
    hjd = np.concatenate([s.hjd for s in series])
    flux = np.concatenate([s.flux for s in series])
    flux_err = np.concatenate([s.flux_err for s in series])
    order = np.argsort(hjd, kind="stable")
    base = alert_at(T0).light_curve
    n = len(hjd)
    curve = replace(
        base,
        site=site[order].astype(np.uint8),
        field=np.zeros(n, np.int16),
        hjd=hjd[order],
        flux=flux[order],
        flux_err=flux_err[order],
        sky=np.zeros(n, np.float32),
        fwhm=np.zeros(n, np.float32),
        airmass=np.zeros(n, np.float32),
        psf_quality=np.zeros(n, np.float32),
        fitted=np.zeros(n),
    )
    daemon = light_curve_input(curve)
    assert daemon.t_last == offline.t_last
    assert daemon.log_flux_scale == offline.log_flux_scale
    np.testing.assert_array_equal(daemon.points, offline.points)
