"""Benchmark: the daemon's binary-posterior stage per alert, against its point-lens fit.

Light curves: the events of an event-rich season (``event_rich(--seed, --stars)``, the LensNet
simulator's point-lens and planetary events) up to 5 days before their peak, cleaned and
cropped as LensNet's preprocessing does (:func:`model.features.select_sites`), i.e. the light
curve an alert carries. Timed, per alert, the product's code:

- ``BinaryPosteriors.posterior`` (:mod:`consumer.pipeline.binary_posterior`): the alert's
  light curve to flow input, ``--samples`` seeded draws, summaries, prior fractions, s modes;
- same-run baselines: the event model's fit and anomaly test of the same light curve
  (``EventModelStage._fit``: :func:`consumer.pointlens.fit.fit` and
  :func:`consumer.pointlens.anomaly.find_anomaly`), which every alert also gets; and the same
  stage with zuko's own ``NSF`` in place of :func:`model.binary.flow.spline_flow` (the same
  weights; what the daemon ran before 2026-12-02), with the seeds of the first row.

CPU time of the benchmarking thread, best of ``--repeat``, pinned to one core, one torch thread.

``python bench/bench_binary_stage.py [--seed 2001] [--stars 120] [--repeat 3] [--samples 1000]``
"""

from __future__ import annotations

import argparse
import copy
import os
from functools import partial

import numpy as np
import torch
from bench_binary_flow import best_of

from consumer.constants import SITES
from consumer.edge.alert import LightCurve
from consumer.pipeline.binary_posterior import BinaryPosteriors
from consumer.pipeline.event_model import EventModelStage, light_curve_datasets
from consumer.settings import BinarySettings, EventsSettings
from model.binary.flow import zukos_nsf
from model.evaluation.event_model import event_rich
from model.features import select_sites
from model.simulate import simulate_star


def alert_curves(seed: int, n_stars: int, lead: float = 5.0) -> list[LightCurve]:
    """The light curves alerts would carry, ``lead`` days before each event's peak."""
    config = event_rich(seed, n_stars)
    curves = []
    for index in range(n_stars):
        star, label = simulate_star(config, index)
        if label.label != "YES":
            continue
        series = [
            s
            for s in select_sites(star, as_of=float(label.params["t0"]) - lead)
            if s is not None and len(s)
        ]
        if not series:
            continue
        site = np.concatenate([np.full(len(s), SITES.index(s.site)) for s in series])
        hjd = np.concatenate([s.hjd for s in series])
        order = np.argsort(hjd, kind="stable")
        n = len(hjd)
        curves.append(
            LightCurve(
                site=site[order].astype(np.uint8),
                field=np.zeros(n, np.int16),
                hjd=hjd[order],
                flux=np.concatenate([s.flux for s in series])[order],
                flux_err=np.concatenate([s.flux_err for s in series])[order],
                sky=np.zeros(n, np.float32),
                fwhm=np.zeros(n, np.float32),
                airmass=np.zeros(n, np.float32),
                psf_quality=np.zeros(n, np.float32),
                fitted=np.zeros(n),
            )
        )
    return curves


def with_zukos_nsf(stage: BinaryPosteriors) -> BinaryPosteriors:
    """A copy of ``stage`` whose flow is zuko's ``NSF`` with the same weights."""
    config = stage.flow.config
    nsf = zukos_nsf(config)
    nsf.load_state_dict(stage.flow.flow.state_dict())
    other = copy.copy(stage)
    other.flow = copy.deepcopy(stage.flow)  # a module's copy.copy shares its submodules
    other.flow.flow = nsf
    return other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2001)
    parser.add_argument("--stars", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    stage = BinaryPosteriors(BinarySettings(samples=args.samples))
    stage.warm_up()
    zukos = with_zukos_nsf(stage)
    zukos.warm_up()
    assert type(stage.flow.flow) is not type(zukos.flow.flow)
    events = EventModelStage(EventsSettings())
    curves = alert_curves(args.seed, args.stars)
    flow_ms, zuko_ms, fit_ms, skipped = [], [], [], 0
    for i, curve in enumerate(curves):
        alert_id = f"bench-{i}"
        if stage.posterior(alert_id, curve) is None:
            skipped += 1
            continue
        flow_ms.append(1e3 * best_of(args.repeat, partial(stage.posterior, alert_id, curve)))
        zuko_ms.append(1e3 * best_of(args.repeat, partial(zukos.posterior, alert_id, curve)))
        data = light_curve_datasets(curve)
        fit_ms.append(1e3 * best_of(args.repeat, partial(events._fit, data, alert_id)))
    flow, zuko_nsf, fit = np.asarray(flow_ms), np.asarray(zuko_ms), np.asarray(fit_ms)
    points = np.median([len(c) for c in curves])
    print(
        f"flow {stage.model_version}, torch {torch.__version__}: {len(flow)} alert light curves "
        f"(median {points:.0f} points; {skipped} too short for the flow)"
    )
    rows = (
        ("binary posterior", flow),
        ("binary posterior, zuko's NSF", zuko_nsf),
        ("point-lens fit + anomaly", fit),
    )
    for name, ms in rows:
        print(
            f"{name} ms: mean {ms.mean():.1f}  median {np.median(ms):.1f}  "
            f"p95 {np.percentile(ms, 95):.1f}  max {ms.max():.1f}"
        )
    print(f"ratio of means (posterior / fit): {flow.mean() / fit.mean():.1f}")
    print(f"ratio of medians (zuko's NSF / ours): {np.median(zuko_nsf) / np.median(flow):.2f}")


if __name__ == "__main__":
    main()
