"""The event model stage without Kafka: the fit on an alert, updates as the event unfolds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from consumer.constants import SITES
from consumer.edge.alert import Alert, LightCurve, alert_id_for
from consumer.pipeline.event_model import EventModelStage, Snapshot, fit_inputs, star_from_store
from consumer.pointlens.fit import CAPACITY_PER_SITE, Datasets, make_datasets, star_datasets
from consumer.seasons.archive import to_observations
from consumer.settings import EventsSettings
from consumer.state.events import FollowedEvent
from consumer.state.store import StarStore, StoreConfig
from model.simulate import SimulationConfig, simulate_star
from tests.consumer.edge.test_alert import make_alert
from tests.consumer.pointlens.test_fit import T0, event

STAR = 123456789
PARTITION = 1


def season() -> Datasets:
    """A point-lens event seen by three sites, 60 days before its peak to 80 after."""
    data, _ = event(np.random.default_rng(7), days=(-60.0, 80.0), n=1200, noise=1.0)
    return data


def cut(data: Datasets, as_of: float) -> Datasets:
    parts = []
    for d in range(len(data.sites)):
        a, b = int(data.offsets[d]), int(data.offsets[d + 1])
        keep = data.t[a:b] <= as_of
        parts.append(
            (
                data.sites[d],
                data.fields[d],
                data.t[a:b][keep],
                data.flux[a:b][keep],
                data.flux_err[a:b][keep],
            )
        )
    return make_datasets(parts)


def alert_of(data: Datasets) -> Alert:
    """An alert carrying ``data`` as its light curve."""
    site = np.repeat([SITES.index(s) for s in data.sites], np.diff(data.offsets))
    field = np.repeat(list(data.fields), np.diff(data.offsets))
    order = np.argsort(data.t, kind="stable")
    n = len(data)
    curve = LightCurve(
        site=site[order].astype(np.uint8),
        field=field[order].astype(np.int16),
        hjd=data.t[order],
        flux=data.flux[order],
        flux_err=data.flux_err[order],
        sky=np.zeros(n, np.float32),
        fwhm=np.zeros(n, np.float32),
        airmass=np.zeros(n, np.float32),
        psf_quality=np.zeros(n, np.float32),
        fitted=np.zeros(n),
    )
    t_last = float(data.t.max())
    return replace(
        make_alert(),
        star_id=STAR,
        alert_id=alert_id_for(STAR, t_last),
        trigger_hjd=t_last,
        light_curve=curve,
    )


def test_an_event_followed_from_its_alert_to_its_end() -> None:
    data = season()
    stage = EventModelStage(EventsSettings())
    ledger: dict[int, FollowedEvent] = {}
    alert = alert_of(cut(data, T0 - 8.0))
    first = stage.decide([alert], [], {}, {PARTITION: ledger}, {alert.alert_id: PARTITION})
    (published,) = first.alerts
    assert published.event_model is not None
    assert published.event_model.fitted_to_hjd == alert.trigger_hjd
    (initial,) = first.updates
    assert (initial.sequence, initial.kind, initial.event_id) == (0, "INITIAL", alert.alert_id)
    assert ledger[STAR].last.sequence == 0

    updates = []
    for as_of in np.arange(T0 - 7.75, T0 + 80.0, 0.25):
        snapshot = Snapshot(PARTITION, STAR, float(as_of), cut(data, as_of), 2, 268.5, -29.9)
        decided = stage.decide(
            [], [snapshot], {PARTITION: {STAR: alert.trigger_hjd}}, {PARTITION: ledger}, {}
        )
        updates += decided.updates
    kinds = [u.kind for u in updates]
    assert [u.sequence for u in updates] == list(range(1, len(updates) + 1))
    assert kinds[-1] == "FINAL"
    assert "ANOMALY" not in kinds  # a plain point lens
    # At most one update a day unless the prediction moved: far fewer than the 350 windows.
    assert 20 <= len(updates) <= 150
    # The predicted peak closes in on the truth.
    assert abs(updates[-1].event_model.peak_hjd - T0) < 0.2
    # Nothing after the final update.
    late = Snapshot(PARTITION, STAR, T0 + 90.0, data, 2, 268.5, -29.9)
    assert (
        stage.decide(
            [], [late], {PARTITION: {STAR: alert.trigger_hjd}}, {PARTITION: ledger}, {}
        ).updates
        == []
    )


def test_snapshots_of_stars_without_an_alert_or_older_than_it_are_dropped() -> None:
    data = season()
    stage = EventModelStage(EventsSettings())
    ledger: dict[int, FollowedEvent] = {}
    early = Snapshot(PARTITION, STAR, T0 - 20.0, cut(data, T0 - 20.0), 2, 268.5, -29.9)
    # not alerted (a candidate LensNet rejected)
    assert stage.decide([], [early], {PARTITION: {}}, {PARTITION: ledger}, {}).updates == []
    # alerted after the snapshot's data
    alerted = {PARTITION: {STAR: T0 - 10.0}}
    assert stage.decide([], [early], alerted, {PARTITION: ledger}, {}).updates == []
    # a partition no longer owned
    assert stage.decide([], [early], {2: {STAR: T0 - 30.0}}, {PARTITION: ledger}, {}).updates == []


def test_an_anomaly_is_published_at_once() -> None:
    data = season()
    stage = EventModelStage(EventsSettings())
    ledger: dict[int, FollowedEvent] = {}
    alert = alert_of(cut(data, T0 - 8.0))
    stage.decide([alert], [], {}, {PARTITION: ledger}, {alert.alert_id: PARTITION})
    as_of = T0 - 2.0
    now = cut(data, as_of)
    bump = now.t > as_of - 0.4
    bumped = replace(now, flux=now.flux + np.where(bump, 10.0 * now.flux_err, 0.0))
    snapshot = Snapshot(PARTITION, STAR, as_of, bumped, 2, 268.5, -29.9)
    decided = stage.decide(
        [], [snapshot], {PARTITION: {STAR: alert.trigger_hjd}}, {PARTITION: ledger}, {}
    )
    (update,) = decided.updates
    assert update.kind == "ANOMALY"
    assert update.event_model.anomaly is not None
    assert "anomaly" in update.reason


@pytest.mark.parametrize("capacity", [300, 4000])
def test_fit_inputs_equal_the_star_by_star_path(capacity: int) -> None:
    """Buffers that wrap (300 per site) and buffers beyond the fit's own cap of 1500 per site
    (4000: the star-by-star path), stars in two fields, bad points: the same fit input."""
    config = SimulationConfig(n_stars=30, seed=9, overlap_fraction=0.8, bad_point_fraction=0.03)
    store = StarStore(StoreConfig(capacity_per_site=capacity))
    for index in range(30):
        star, _ = simulate_star(config, index)
        for site, observations in to_observations(star).items():
            store.append(site, observations)
    ids = store.star_ids[::-1].copy()
    got = fit_inputs(store, ids)
    beyond_cap = 0
    for star_id, data in zip(ids.tolist(), got, strict=True):
        expected = star_datasets(star_from_store(store, star_id))
        beyond_cap += any(n > CAPACITY_PER_SITE for n in store.counts(star_id))
        assert data.sites == expected.sites
        assert data.fields == expected.fields
        for name in ("t", "flux", "flux_err", "offsets"):
            a, b = getattr(data, name), getattr(expected, name)
            assert a.dtype == b.dtype, (star_id, name)
            assert a.tobytes() == b.tobytes(), (star_id, name)
    assert len({data.fields for data in got}) > 1  # some stars in two fields
    assert (beyond_cap > 0) == (capacity > CAPACITY_PER_SITE)
