"""The event model on an alert's plot (alert schema 1.1): each site's point-lens curve over its
points, the predicted peak and its 1-sigma interval, any anomaly, and a magnified view of the
latest days.

Called by :func:`consumer.edge.plot.draw_alert` when the alert carries an ``event_model``. The
plot draws each site relative to its own baseline (:class:`~consumer.edge.plot.SitePoints`), so
the model of a site's dataset is drawn minus the same baseline; times are HJD - 2450000 as the
plot's axes. The zoom is widened to show the predicted peak (at most :data:`MAX_AHEAD_DAYS`
after the trigger) and its y-axis to show the peak's flux (at most four times the data's range).
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from consumer.constants import HJD_OFFSET
from consumer.edge.alert import Alert
from consumer.edge.event_model import EventModel

#: Days of the latest data the magnified view shows.
LATEST_DAYS: Final = 3.0
#: The zoom reaches the predicted peak's interval, but no further than this after the trigger.
MAX_AHEAD_DAYS: Final = 60.0


def peak_range(model: EventModel) -> tuple[float, float]:
    """The predicted peak's 1-sigma interval (HJD); the peak alone on a side not bounded."""
    low, high = model.peak_hjd_lower, model.peak_hjd_upper
    return (
        model.peak_hjd if low is None or not math.isfinite(low) else low,
        model.peak_hjd if high is None or not math.isfinite(high) else high,
    )


def zoom_end(alert: Alert, end: float) -> float:
    """The zoom's end, widened to hold the predicted peak and its interval."""
    model = alert.event_model
    if model is None:
        return end
    ahead = min(peak_range(model)[1] + 2.0, alert.trigger_hjd + MAX_AHEAD_DAYS)
    return max(end, ahead)


def _site_curves(model: EventModel, points: list[Any], hjd: np.ndarray) -> list[tuple[str, Any]]:
    """(site, model flux minus the site's baseline) for each site drawn, from its first
    dataset (the reference dataset where it is the site's)."""
    out = []
    for p in points:
        indices = [i for i, d in enumerate(model.datasets) if d.site == p.site]
        if not indices:
            continue
        index = model.reference_dataset if model.reference_dataset in indices else indices[0]
        out.append((p.site, model.model_flux(hjd, index) - p.baseline))
    return out


def draw_event_model(
    alert: Alert, whole: Any, zoom: Any, points: list[Any], start: float, end: float
) -> None:
    """The model on both panels and the magnified latest days as an inset of the zoom."""
    from consumer.edge.plot import SITE_COLOURS

    model = alert.event_model
    if model is None:
        return
    hjd = np.linspace(start, end, 800)
    low, high = zoom.get_ylim()
    top = high
    for site, flux in _site_curves(model, points, hjd):
        zoom.plot(hjd - HJD_OFFSET, flux, color=SITE_COLOURS[site], ls="-.", lw=1.1)
        top = max(top, float(np.nanmax(flux)))
    zoom.plot([], [], "-.", color="0.3", label="point-lens model")
    zoom.set_ylim(low, min(top * 1.05, high + 3.0 * (high - low)))
    first, last = peak_range(model)
    err = "" if model.peak_hjd_err is None else f" ± {model.peak_hjd_err:.2f} d"
    for axes in (whole, zoom):
        if last > first:
            axes.axvspan(first - HJD_OFFSET, last - HJD_OFFSET, color="purple", alpha=0.12, lw=0)
        axes.axvline(model.peak_hjd - HJD_OFFSET, color="purple", lw=1.0)
    zoom.plot([], [], color="purple", lw=1.0, label=f"predicted peak{err}")
    if model.anomaly is not None:
        for axes in (whole, zoom):
            axes.axvspan(
                model.anomaly.start_hjd - HJD_OFFSET,
                model.anomaly.end_hjd - HJD_OFFSET,
                color="red",
                alpha=0.25,
                lw=0,
            )
        zoom.plot([], [], "s", color="red", alpha=0.4, label="anomaly")
    zoom.set_xlim(start - HJD_OFFSET, end - HJD_OFFSET)
    zoom.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4)
    _draw_latest(zoom.inset_axes((0.02, 0.5, 0.3, 0.46)), alert, model, points)


def _draw_latest(axes: Any, alert: Alert, model: EventModel, points: list[Any]) -> None:
    """The latest :data:`LATEST_DAYS` of data with the model (inset)."""
    from consumer.edge.plot import SITE_COLOURS

    newest = max((float(p.hjd[-1]) for p in points if len(p.hjd)), default=alert.trigger_hjd)
    start, end = newest - LATEST_DAYS, newest + 0.3
    values = []
    for p in points:
        view = p.hjd >= start
        if view.any():
            axes.errorbar(
                p.hjd[view] - HJD_OFFSET,
                p.flux[view],
                yerr=p.flux_err[view],
                fmt="o",
                ms=2,
                elinewidth=0.5,
                color=SITE_COLOURS[p.site],
            )
            values.append(p.flux[view])
    hjd = np.linspace(start, end, 200)
    for site, flux in _site_curves(model, points, hjd):
        axes.plot(hjd - HJD_OFFSET, flux, color=SITE_COLOURS[site], ls="-.", lw=1.0)
    if values:
        data = np.concatenate(values)
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
        pad = 0.15 * ((high - low) or 1.0)
        axes.set_ylim(low - pad, high + pad)
    axes.set_xlim(start - HJD_OFFSET, end - HJD_OFFSET)
    axes.set_title(f"latest {LATEST_DAYS:g} days", fontsize=7)
    axes.tick_params(labelsize=6)
    axes.patch.set_alpha(0.9)


def describe(model: EventModel) -> str:
    """One title line: predicted peak and interval, peak magnitude, tE, u0, anomaly."""
    first, last = peak_range(model)
    interval = f" [{first:.2f}, {last:.2f}]" if last > first else ""
    mag = "" if model.peak_mag is None else f"  I_peak(source) {model.peak_mag:.2f}"
    anomaly = "  ANOMALY" if model.anomaly is not None else ""
    return (
        f"point lens: peak HJD {model.peak_hjd:.2f}{interval}{mag}  tE {model.tE:.1f} d  "
        f"u0 {model.u0:.3f}  A_peak {model.peak_magnification:.1f}{anomaly}"
    )
