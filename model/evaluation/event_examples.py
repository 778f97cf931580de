"""Example plots for the event model's report: simulated events as `lensnet alerts plot` draws
them, the alert's light curve cut at a chosen time and fitted by the daemon's event-model stage
(:class:`consumer.pipeline.event_model.EventModelStage`).

``python -m model.evaluation.event_examples OUT_DIR --seed 2001 --stars 300`` writes, for the
first point-lens and the first planetary event of an event-rich season
(:func:`model.evaluation.event_model.event_rich`) whose planetary deviation lies after its peak,
one plot 6 days before the peak (rising) and, for the planetary one, one during the deviation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from consumer.constants import SITES
from consumer.edge.alert import (
    Alert,
    AlertFinderSummary,
    Classification,
    LightCurve,
    alert_id_for,
)
from consumer.edge.plot import plot_alert
from consumer.pipeline.event_model import EventModelStage
from consumer.pointlens.fit import Datasets, star_datasets
from consumer.settings import EventsSettings
from model.evaluation.event_model import DEVIATION_POINTS, _deviation, event_rich
from model.simulate import simulate_star_truth

PARTITION = 0


def alert_of(star_id: int, data: Datasets) -> Alert:
    """An alert carrying ``data`` (the light curve up to its newest point); the AlertFinder and
    LensNet parts are placeholders, the plot does not depend on them beyond the title."""
    site = np.repeat([SITES.index(s) for s in data.sites], np.diff(data.offsets))
    field = np.repeat(list(data.fields), np.diff(data.offsets))
    order = np.argsort(data.t, kind="stable")
    n = len(data)
    t_last = float(data.t.max())
    zeros = np.zeros(n, np.float32)
    return Alert(
        alert_id=alert_id_for(star_id, t_last),
        star_id=star_id,
        field=int(data.fields[0]),
        chip=0,
        ra=268.5,
        dec=-29.9,
        trigger_hjd=t_last,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
        alertfinder=AlertFinderSummary(
            tuple(data.sites), tuple(data.fields), t_last, 0, 0, 0, 0, 0
        ),
        lensnet=Classification("example", 1.0, 0.0, 0.0, 1.0, {}),
        light_curve=LightCurve(
            site=site[order].astype(np.uint8),
            field=field[order].astype(np.int16),
            hjd=data.t[order],
            flux=data.flux[order],
            flux_err=data.flux_err[order],
            sky=zeros,
            fwhm=zeros,
            airmass=zeros,
            psf_quality=zeros,
            fitted=np.zeros(n),
        ),
    )


def fitted_alert(stage: EventModelStage, star_id: int, data: Datasets) -> Alert:
    alert = alert_of(star_id, data)
    decided = stage.decide([alert], [], {}, {PARTITION: {}}, {alert.alert_id: PARTITION})
    return decided.alerts[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=2001)
    parser.add_argument("--stars", type=int, default=300)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = event_rich(args.seed, args.stars)
    stage = EventModelStage(EventsSettings())
    wanted = {"pspl", "planetary"}
    for index in range(args.stars):
        star, label, truth = simulate_star_truth(config, index)
        if label.label != "YES" or label.subclass not in wanted:
            continue
        t0, te = label.params["t0"], label.params["tE"]
        moments = [("rising", t0 - 6.0)]
        if label.subclass == "planetary":
            times = np.asarray(_deviation(star, label, truth)["deviation_times"])
            times = times[times > t0 + 1.0]
            if len(times) < 2 * DEVIATION_POINTS or times[0] > t0 + te:
                continue
            moments.append(("anomaly", float(times[DEVIATION_POINTS]) + 0.5))
        for moment, as_of in moments:
            data = star_datasets(star, as_of=as_of)
            if len(data) < 20:
                break
            alert = fitted_alert(stage, int(star.star_id), data)
            model = alert.event_model
            path = args.out / f"example_{label.subclass}_{moment}.png"
            plot_alert(alert, path, days_before=40.0)
            assert model is not None
            print(
                f"{path.name}: star {star.star_id} (index {index}), newest point "
                f"t0{as_of - t0:+.1f} d; predicted peak t0{model.peak_hjd - t0:+.2f} d, "
                f"1 sigma [{(model.peak_hjd_lower or np.nan) - t0:+.2f}, "
                f"{(model.peak_hjd_upper or np.nan) - t0:+.2f}]; anomaly: "
                f"{'none' if model.anomaly is None else model.anomaly}"
            )
        else:
            wanted.discard(label.subclass)
        if not wanted:
            break


if __name__ == "__main__":
    main()
