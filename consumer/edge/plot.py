"""Light-curve plots of alerts: what LensNet saw, the fitted broken line and the trigger.

One PNG per alert: the merged multi-site light curve (flux with error bars, one colour per
site), the AlertFinder's broken line (historic mean before ``t_break``, the rising line after),
the break and the trigger time marked, titled with the star, the alert id and the scores.
matplotlib is an optional extra (``pip install lensnet-broker[plot]``) so the daemon image
stays small; it is imported on first use, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Final

import numpy as np

from consumer.constants import SITES
from consumer.edge.alert import Alert
from consumer.exceptions import ConfigError

#: One colour per site (colour-blind safe: Okabe-Ito blue, vermillion, bluish green).
SITE_COLOURS: Final = {"CTIO": "#0072B2", "SAAO": "#D55E00", "SSO": "#009E73"}


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


def plot_alert(alert: Alert, path: Path, *, days_before: float = 60.0) -> Path:
    """Write the alert's light curve to ``path`` (PNG); returns it.

    ``days_before``: the plot starts this many days before the trigger (None of the curve is
    dropped from the alert; older points are only outside the axes).
    """
    plt = _pyplot()
    curve = alert.light_curve
    t0 = math.floor(alert.trigger_hjd) - 1
    figure, axes = plt.subplots(figsize=(9, 4.8), dpi=110)
    try:
        for index, site in enumerate(SITES):
            rows = curve.site == index
            if not rows.any():
                continue
            colour = SITE_COLOURS[site]
            axes.errorbar(
                curve.hjd[rows] - t0,
                curve.flux[rows],
                yerr=curve.flux_err[rows],
                fmt="o",
                ms=2.5,
                lw=0.6,
                color=colour,
                alpha=0.75,
                label=f"{site} ({int(rows.sum())})",
            )
            order = np.argsort(curve.hjd[rows])
            axes.plot(
                curve.hjd[rows][order] - t0,
                curve.fitted[rows][order],
                color=colour,
                lw=1.4,
            )
        finder = alert.alertfinder
        if math.isfinite(finder.t_break):
            axes.axvline(finder.t_break - t0, color="0.4", ls=":", lw=1, label="t_break")
        axes.axvline(alert.trigger_hjd - t0, color="k", ls="--", lw=1, label="trigger")
        axes.set_xlim(-days_before, alert.trigger_hjd - t0 + 2)
        visible = curve.hjd - t0 >= -days_before
        if visible.any():
            low = np.nanpercentile(curve.flux[visible] - curve.flux_err[visible], 0.5)
            high = np.nanmax(curve.flux[visible] + curve.flux_err[visible])
            pad = 0.05 * (high - low or 1.0)
            axes.set_ylim(low - pad, high + pad)
        axes.set_xlabel(f"HJD - {t0:.0f} (days)")
        axes.set_ylabel("DIA flux")
        lens = alert.lensnet
        axes.set_title(
            f"star {alert.star_id} (field {alert.field}, chip {alert.chip})  {lens.label}  "
            f"p_event={lens.p_event:.3f}  p(yes/maybe/no)={lens.p_yes:.2f}/{lens.p_maybe:.2f}/"
            f"{lens.p_no:.2f}\n{alert.alert_id}  Δχ²={finder.dchi2:,.0f}  "
            f"sites {'+'.join(dict.fromkeys(finder.sites))}",
            fontsize=9,
        )
        axes.legend(fontsize=8, loc="upper left")
        axes.grid(alpha=0.25)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
