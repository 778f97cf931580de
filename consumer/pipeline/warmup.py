"""Start-up: every compiled kernel of the pipeline run once on a small synthetic star (the
novelty network and second opinion, the binary-lens flow, and the point-lens fit of the event
model too, when enabled).

Numba loads a kernel's cached machine code (or compiles it) on its first call, and TorchScript
optimises the model over its first passes: together about a second that would otherwise fall
in the first batch and delay its alerts. :func:`warm_up` runs the stages on a store of its
own, so the daemon's state is untouched.
"""

from __future__ import annotations

import numpy as np

from consumer.constants import SITES
from consumer.edge.photometry import Observations
from consumer.pipeline.event_model import EventModelStage, star_from_store
from consumer.pipeline.ingest import max_hjd, row_reasons
from consumer.pipeline.scoring import Scorer, dataset_table
from consumer.pipeline.trigger import TriggerStage
from consumer.pointlens.anomaly import find_anomaly
from consumer.pointlens.fit import FitInputError, fit, star_datasets
from consumer.settings import Settings
from consumer.state.store import StarStore, StoreConfig
from model.batch_features import prepare_batch
from model.classify import score
from model.features import Candidate
from model.second_opinion import assess


def synthetic_star(points: int = 80, start_hjd: float = 2_461_100.0) -> Observations:
    """One star seen ``points`` times by a site, flat, then rising over its last tenth."""
    rng = np.random.default_rng(0)
    rise = np.clip(np.arange(points) - 0.9 * points, 0, None) * 50.0
    return Observations.from_columns(
        star_id=np.full(points, 101_000_001),
        field=np.full(points, 1),
        chip=np.zeros(points),
        ra=np.full(points, 270.0),
        dec=np.full(points, -30.0),
        x=np.full(points, 100.0),
        y=np.full(points, 100.0),
        hjd=start_hjd + np.arange(points) * 0.05,
        band=np.zeros(points),
        flux=1000.0 + rng.normal(0.0, 5.0, points) + rise,
        flux_err=np.full(points, 5.0),
        sky=np.full(points, 800.0),
        fwhm=np.full(points, 1.2),
        airmass=np.full(points, 1.1),
        psf_quality=np.full(points, 90.0),
    )


def warm_up(settings: Settings, scorer: Scorer) -> None:
    """Ingest checks, buffer, rising test, fit and candidate preparation once each, LensNet
    (and the novelty network and second opinion, when enabled) a few times, the binary-lens
    flow once (when enabled; its first draw costs seconds), and the event
    model's point-lens fit and anomaly test (when enabled), on :func:`synthetic_star`."""
    observations = synthetic_star()
    row_reasons(observations, 0, 1, max_hjd())
    store = StarStore(StoreConfig(capacity_per_site=settings.state.capacity_per_site))
    for site in SITES:
        store.append(site, observations)
    trigger = TriggerStage(settings.trigger)
    ids = store.star_ids
    trigger.rising(store, ids)
    trigger.refresh(store, ids)
    fitted = trigger.evaluate(store, ids)
    store.newest_hjd(ids)
    prepared = prepare_batch(dataset_table(store, ids), list(fitted.rules))
    candidates = [c for c in prepared if isinstance(c, Candidate)]
    opinions = scorer.opinions
    for _ in range(3):
        score(scorer.module, candidates, scorer.settings.batch_size)
        if opinions is not None and candidates:
            assess(
                opinions.novelty,
                opinions.booster,
                opinions.components,
                candidates,
                opinions.batch_size,
            )
    if scorer.binary is not None:
        scorer.binary.warm_up()
    if settings.events.enabled:
        data = star_datasets(star_from_store(store, int(ids[0])))
        try:
            lens = fit(data, name="warm-up")
        except FitInputError:
            return
        find_anomaly(data, lens, EventModelStage(settings.events).anomaly_rule)
