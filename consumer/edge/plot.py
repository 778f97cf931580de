"""Light-curve plots of alerts: what LensNet saw, the AlertFinder's fit and the trigger.

One PNG per alert, drawn as an astronomer reads a microlensing candidate:

- **two panels**: the whole light curve the alert carries, faint, with the zoomed span shaded;
  below, larger, a zoom on the rise: from well before the break (baseline) to the trigger;
- **site baselines removed**: DIA fluxes of the three sites sit on different offsets, so each
  site's points are drawn relative to its own baseline and the sites line up: the AlertFinder's
  intercept for the sites of the triggering combination (the fit has one per dataset), the
  median before the break for the others;
- **the fit where it was fitted**: the broken line is common to the sites of the triggering
  combination once their intercepts are removed, so it is drawn once, in black, and named by
  those sites; sites outside the combination get no line (their "fit" would only be a flat
  intercept, which misleads when their own points rise);
- **robust y-limits** from percentiles of the points in view, the latest points and the line
  always inside; points beyond are counted in the legend, not allowed to squash the rise;
- a **magnitude axis** on the right when the fluxes are total fluxes with a known zero point
  (every point positive, every site's baseline far above its errors, as in seasons read from
  magnitude files: ``I = 28 - 2.5 log10(flux)``); DIA difference fluxes have no known baseline,
  so they get none;
- optional **nightly binning** (``nightly=True``): per site and night (local noon to noon),
  the inverse-variance weighted mean;
- the title names the star, field and chip, RA/Dec, trigger HJD and UTC, the scores;
- with the **event model** (alert schema 1.1): each site's point-lens curve, the predicted peak
  and its 1-sigma interval on both panels, any anomaly, and an inset magnifying the latest
  days (:mod:`consumer.edge.plot_model`).

matplotlib is an optional extra (``pip install lensnet-broker[plot]``) so the daemon image stays
small; it is imported on first use, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.alert import Alert
from consumer.edge.plot_model import describe, draw_event_model, zoom_end
from consumer.edge.times import sexagesimal_dec, sexagesimal_ra, utc_from_hjd
from consumer.exceptions import ConfigError

F64 = npt.NDArray[np.float64]

#: One colour per site (colour-blind safe: Okabe-Ito blue, vermillion, bluish green).
SITE_COLOURS: Final = {"CTIO": "#0072B2", "SAAO": "#D55E00", "SSO": "#009E73"}
#: East longitude of each site, degrees: a site's night runs from local noon to local noon.
SITE_LONGITUDE_DEG: Final = {"CTIO": -70.815, "SAAO": 20.811, "SSO": 149.066}
#: Zero point of total fluxes read from magnitude files (consumer.seasons.archive).
MAG_ZERO_POINT: Final = 28.0
#: A site's baseline this many median errors above zero marks fluxes as total, not DIA.
TOTAL_FLUX_MIN_SNR: Final = 20.0
#: The zoom starts this many times the rise's duration before the break, and at least
#: MIN_BASELINE_DAYS before it.
BASELINE_FACTOR: Final = 1.5
MIN_BASELINE_DAYS: Final = 20.0
#: Percentiles of the points in view that bound the y-axis (the latest points and the fitted
#: line are always inside, so a rise is never cut).
Y_PERCENTILES: Final = (2.0, 98.0)
#: Points before the break that give a site outside the fit its baseline (else its intercept).
MIN_BASELINE_POINTS: Final = 5


def to_rgba(colour: str, alpha: float) -> tuple[float, float, float, float]:
    """``#RRGGBB`` with an alpha, as matplotlib takes a colour."""
    red, green, blue = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return red, green, blue, alpha


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ConfigError(
            "plotting needs matplotlib: pip install 'lensnet-broker[plot]'"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_name(alert: Alert) -> str:
    """A safe PNG name for the alert: its id with anything unusual replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", alert.alert_id) + ".png"


@dataclass(frozen=True)
class SitePoints:
    """One site's points as drawn: relative to the site's fitted baseline, optionally binned."""

    site: str
    hjd: F64
    flux: F64  # flux minus the site's baseline
    flux_err: F64
    baseline: float  # the site's AlertFinder intercept, flux units
    in_fit: bool  # the site is in the triggering combination


def site_points(alert: Alert, *, nightly: bool = False) -> list[SitePoints]:
    """Per site with data (``SITES`` order), its points relative to its own baseline.

    For a site of the triggering combination the baseline is the AlertFinder intercept of its
    dataset, recovered from the fitted line the alert carries: ``fitted - slope * max(0, t -
    t_break)``. For the others (their fitted line is a constant that says nothing of their
    level before the break), the median flux before the break, when it has
    :data:`MIN_BASELINE_POINTS` points there; else the constant.
    """
    curve = alert.light_curve
    finder = alert.alertfinder
    out = []
    for index, site in enumerate(SITES):
        rows = curve.site == index
        if not rows.any():
            continue
        order = np.argsort(curve.hjd[rows], kind="stable")
        hjd = curve.hjd[rows][order]
        flux = curve.flux[rows][order]
        flux_err = curve.flux_err[rows][order]
        fitted = curve.fitted[rows][order]
        in_fit = site in finder.sites
        rise = np.zeros_like(hjd)
        if in_fit and math.isfinite(finder.t_break):
            rise = finder.slope * np.maximum(0.0, hjd - finder.t_break)
        intercepts = (fitted - rise)[np.isfinite(fitted)]
        baseline = float(np.median(intercepts)) if len(intercepts) else float(np.median(flux))
        before = flux[hjd < finder.t_break] if math.isfinite(finder.t_break) else flux[:0]
        if not in_fit and len(before) >= MIN_BASELINE_POINTS:
            baseline = float(np.median(before))
        if nightly:
            hjd, flux, flux_err = bin_nightly(hjd, flux, flux_err, SITE_LONGITUDE_DEG[site])
        out.append(SitePoints(site, hjd, flux - baseline, flux_err, baseline, in_fit))
    return out


def bin_nightly(hjd: F64, flux: F64, flux_err: F64, longitude_deg: float) -> tuple[F64, F64, F64]:
    """Inverse-variance weighted means per night of one site; each array has shape (N,), the
    result (M,) with M the nights. A night runs from local noon to local noon (``longitude_deg``
    east), so one night's observations never straddle two bins."""
    if len(hjd) == 0:
        return hjd, flux, flux_err
    night = np.floor(hjd + longitude_deg / 360.0).astype(np.int64)
    nights, index = np.unique(night, return_inverse=True)
    weight = 1.0 / np.square(np.where(flux_err > 0, flux_err, np.inf))
    total = np.bincount(index, weight, len(nights))
    safe = np.where(total > 0, total, 1.0)
    mean_t = np.bincount(index, weight * hjd, len(nights)) / safe
    mean_f = np.bincount(index, weight * flux, len(nights)) / safe
    err = np.where(total > 0, 1.0 / np.sqrt(safe), np.nan)
    return mean_t, mean_f, err


def total_flux_baseline(points: list[SitePoints]) -> float | None:
    """The reference baseline (flux units) when fluxes are total fluxes (see the module
    docstring); None for DIA difference fluxes."""
    if not points:
        return None
    for p in points:
        absolute = p.flux + p.baseline
        noise = float(np.median(p.flux_err)) if len(p.flux_err) else math.inf
        if not (np.all(absolute > 0) and p.baseline > TOTAL_FLUX_MIN_SNR * noise):
            return None
    reference = next((p for p in points if p.in_fit), points[0])
    return reference.baseline


def zoom_window(alert: Alert) -> tuple[float, float]:
    """(start, end) full HJD of the zoom: baseline before the break, the rise, the trigger;
    never starting before the first point."""
    trigger = alert.trigger_hjd
    t_break = alert.alertfinder.t_break
    if not math.isfinite(t_break) or t_break > trigger:
        start = trigger - 2 * MIN_BASELINE_DAYS
    else:
        start = t_break - max(MIN_BASELINE_DAYS, BASELINE_FACTOR * (trigger - t_break))
    hjd = alert.light_curve.hjd
    if len(hjd):
        start = max(start, float(np.nanmin(hjd)) - 1.0)
    return start, trigger + max(1.0, 0.04 * (trigger - start))


def y_limits(points: list[SitePoints], start: float, end: float, line: F64) -> tuple[float, float]:
    """Percentile bounds of the points in [start, end], widened to hold the last points of
    each site and the fitted line, with a margin."""
    inside = [p.flux[(p.hjd >= start) & (p.hjd <= end)] for p in points]
    values = np.concatenate([v for v in inside if len(v)] or [np.zeros(1)])
    low, high = np.nanpercentile(values, Y_PERCENTILES)
    latest = np.concatenate([p.flux[-3:] for p in points if len(p.flux)] or [np.zeros(1)])
    finite_line = line[np.isfinite(line)]
    extra = np.concatenate([latest, finite_line]) if len(finite_line) else latest
    low = min(float(low), float(np.nanmin(extra)))
    high = max(float(high), float(np.nanmax(extra)))
    pad = 0.08 * ((high - low) or 1.0)
    return low - pad, high + pad


def plot_alert(
    alert: Alert,
    path: Path,
    *,
    days_before: float | None = None,
    nightly: bool = False,
) -> Path:
    """Write the alert's light curve to ``path`` (PNG); returns it.

    ``days_before``: the zoom starts this many days before the trigger (default: from the
    break, see :func:`zoom_window`); ``nightly``: bin each site's points per night.
    """
    plt = _pyplot()
    figure = draw_alert(alert, days_before=days_before, nightly=nightly)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


def draw_alert(alert: Alert, *, days_before: float | None = None, nightly: bool = False) -> Any:
    """The matplotlib figure of :func:`plot_alert` (the caller closes it); its axes are the
    whole curve and the zoom, in that order; a magnitude axis is a child of the zoom."""
    plt = _pyplot()
    points = site_points(alert, nightly=nightly)
    start, end = zoom_window(alert)
    if days_before is not None:
        start = alert.trigger_hjd - days_before
    end = zoom_end(alert, end)  # the predicted peak, when the alert carries the event model
    figure, (whole, zoom) = plt.subplots(
        2, 1, figsize=(10, 7.2), dpi=110, gridspec_kw={"height_ratios": [1, 2.4]}
    )
    try:
        _draw_zoom(alert, zoom, points, start, end, nightly)
        _draw_whole(alert, whole, points, start, end, nightly)
        draw_event_model(alert, whole, zoom, points, start, end)
        model = alert.event_model
        figure.suptitle(
            _title(alert) + ("" if model is None else f"\n{describe(model)}"), fontsize=9
        )
        figure.tight_layout()
    except BaseException:
        plt.close(figure)
        raise
    return figure


def _draw_zoom(
    alert: Alert, zoom: Any, points: list[SitePoints], start: float, end: float, nightly: bool
) -> None:
    """The rise: site baselines removed, the fit once, robust limits, magnitudes if known."""
    finder = alert.alertfinder
    t_line = np.linspace(start, alert.trigger_hjd, 400)
    rises = math.isfinite(finder.t_break)
    line = finder.slope * np.maximum(0.0, t_line - finder.t_break) if rises else 0 * t_line
    low, high = y_limits(points, start, end, line)
    off_scale = 0
    for p in points:
        view = (p.hjd >= start) & (p.hjd <= end)
        shown = view & (p.flux >= low) & (p.flux <= high)
        off_scale += int((view & ~shown).sum())
        label = f"{p.site} ({int(view.sum())}{' nights' if nightly else ''})"
        if not p.in_fit:
            label += ", not in the fit"
        strength = 0.85 if p.in_fit else 0.45
        zoom.errorbar(
            p.hjd[shown] - HJD_OFFSET,
            p.flux[shown],
            yerr=p.flux_err[shown],
            fmt="o",
            ms=3.2 if nightly else 2.4,
            elinewidth=0.6,
            color=to_rgba(SITE_COLOURS[p.site], strength),
            ecolor=to_rgba(SITE_COLOURS[p.site], 0.35 * strength),  # bars behind the points
            label=label,
        )
    fitted_sites = "+".join(dict.fromkeys(finder.sites))
    zoom.plot(
        t_line - HJD_OFFSET,
        line,
        color="k",
        lw=1.6,
        label=f"AlertFinder fit ({fitted_sites}): slope {finder.slope:,.1f}/d",
    )
    zoom.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    if rises:
        zoom.axvline(finder.t_break - HJD_OFFSET, color="0.4", ls=":", lw=1, label="t_break")
    zoom.axvline(alert.trigger_hjd - HJD_OFFSET, color="k", ls="--", lw=1, label="trigger")
    if off_scale:
        noun = "point" if off_scale == 1 else "points"
        zoom.plot([], [], " ", label=f"{off_scale} {noun} off scale")
    zoom.set_xlim(start - HJD_OFFSET, end - HJD_OFFSET)
    zoom.set_ylim(low, high)
    zoom.set_xlabel(f"HJD - {HJD_OFFSET:.0f} (days)")
    base = total_flux_baseline(points)
    if base is None:
        zoom.set_ylabel("Δflux from each site's baseline (DIA flux units)")
    else:
        zoom.set_ylabel(f"flux - site baseline (I = {MAG_ZERO_POINT:g} - 2.5 log10 flux)")
        _magnitude_axis(zoom, base)
    zoom.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4)
    zoom.grid(alpha=0.25)


def _draw_whole(
    alert: Alert, whole: Any, points: list[SitePoints], start: float, end: float, nightly: bool
) -> None:
    """Every point the alert carries, faint, with the zoomed span shaded."""
    everything = np.concatenate([p.flux for p in points])
    w_low, w_high = np.nanpercentile(everything, (0.5, 99.5))
    w_high = max(float(w_high), float(np.nanmax(np.concatenate([p.flux[-3:] for p in points]))))
    for p in points:
        whole.plot(p.hjd - HJD_OFFSET, p.flux, ".", ms=2, color=SITE_COLOURS[p.site], alpha=0.35)
    first = min(float(p.hjd[0]) for p in points if len(p.hjd))
    if start > first:  # shade the zoom only when it is a part
        whole.axvspan(start - HJD_OFFSET, end - HJD_OFFSET, color="0.88", zorder=0)
    whole.axvline(alert.trigger_hjd - HJD_OFFSET, color="k", ls="--", lw=0.8)
    pad = 0.08 * ((w_high - w_low) or 1.0)
    whole.set_ylim(w_low - pad, w_high + pad)
    whole.set_xlim(first - HJD_OFFSET - 2, end - HJD_OFFSET)
    whole.set_ylabel("Δflux", fontsize=8)
    whole.tick_params(labelsize=7)
    whole.set_title(
        f"whole light curve LensNet saw ({len(alert.light_curve)} points"
        + (", binned per night" if nightly else "")
        + ("), zoom shaded" if start > first else ")"),
        fontsize=8,
        loc="left",
    )
    whole.grid(alpha=0.2)


def _title(alert: Alert) -> str:
    """Star, field and chip, position, trigger time, scores, alert id."""
    finder = alert.alertfinder
    lens = alert.lensnet
    utc = utc_from_hjd(alert.trigger_hjd, alert.ra, alert.dec)
    field_name = f"BLG{alert.field:02d}" if alert.field >= 0 else "field ?"
    return (
        f"star {alert.star_id}  {field_name} chip {alert.chip}  "
        f"RA {sexagesimal_ra(alert.ra)}  Dec {sexagesimal_dec(alert.dec)}\n"
        f"trigger HJD {alert.trigger_hjd:.4f} ({utc:%Y-%m-%d %H:%M} UTC)  "
        f"{lens.label}  p_event {lens.p_event:.3f}  "
        f"p(yes/maybe/no) {lens.p_yes:.2f}/{lens.p_maybe:.2f}/{lens.p_no:.2f}  "
        f"Δχ² {finder.dchi2:,.0f}\n{alert.alert_id}"
    )


def _magnitude_axis(axes: Any, base: float) -> None:
    """A right-hand I-magnitude axis for fluxes relative to the total baseline ``base``."""
    tiny = 1e-3 * base

    def to_mag(delta: Any) -> Any:
        return MAG_ZERO_POINT - 2.5 * np.log10(np.maximum(base + np.asarray(delta), tiny))

    def to_delta(mag: Any) -> Any:
        return 10.0 ** (0.4 * (MAG_ZERO_POINT - np.asarray(mag))) - base

    magnitude = axes.secondary_yaxis("right", functions=(to_mag, to_delta))
    magnitude.set_ylabel("I (mag)")
