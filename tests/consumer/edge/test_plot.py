"""Alert plots that do not mislead (newcomer item 7), checked on the figure itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumer.constants import SITES
from consumer.edge.alert import Alert, AlertFinderSummary, LightCurve
from consumer.edge.plot import (
    bin_nightly,
    draw_alert,
    plot_alert,
    site_points,
    total_flux_baseline,
    zoom_window,
)
from tests.consumer.edge.test_alert import make_alert

plt = pytest.importorskip("matplotlib.pyplot")

T_BREAK = 2_461_200.0
TRIGGER = 2_461_210.0
SLOPE = 100.0
OFFSETS = {"CTIO": 450.0, "SAAO": -200.0, "SSO": 1200.0}  # each site's DIA baseline


def rising_alert(sites_in_fit: tuple[str, ...], *, total: float = 0.0, seed: int = 0) -> Alert:
    """A 120-day light curve at three sites with their own offsets, rising from T_BREAK; the
    fitted line as the AlertFinder reports it (rising where fitted, the offset elsewhere)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {"site": [], "hjd": [], "flux": [], "err": [], "fitted": []}
    for index, site in enumerate(SITES):
        hjd = np.sort(rng.uniform(TRIGGER - 120, TRIGGER, 300))
        signal = SLOPE * np.maximum(0.0, hjd - T_BREAK)
        noise = 30.0 * (1 + 3 * index)  # SSO the noisiest
        base = OFFSETS[site] + total
        flux = base + signal + rng.normal(0, noise, len(hjd))
        fitted = base + (signal if site in sites_in_fit else np.zeros_like(signal))
        for name, values in (
            ("site", np.full(len(hjd), index)),
            ("hjd", hjd),
            ("flux", flux),
            ("err", np.full(len(hjd), noise)),
            ("fitted", fitted),
        ):
            columns[name].append(values)
    c = {name: np.concatenate(values) for name, values in columns.items()}
    c["flux"][np.argmax(c["site"] == 2) + 10] += 30_000.0  # one wild SSO outlier
    order = np.argsort(c["hjd"])
    n = len(order)
    curve = LightCurve(
        site=c["site"][order].astype(np.uint8),
        field=np.full(n, 2, np.int16),
        hjd=c["hjd"][order],
        flux=c["flux"][order],
        flux_err=c["err"][order],
        sky=np.zeros(n, np.float32),
        fwhm=np.zeros(n, np.float32),
        airmass=np.ones(n, np.float32),
        psf_quality=np.zeros(n, np.float32),
        fitted=c["fitted"][order],
    )
    finder = AlertFinderSummary(
        sites=sites_in_fit,
        fields=(2,),
        t_break=T_BREAK,
        slope=SLOPE,
        dchi2=900.0,
        n_high=5,
        k=5,
        n=5,
    )
    return dataclasses.replace(
        make_alert(), trigger_hjd=TRIGGER, alertfinder=finder, light_curve=curve
    )


def legend_texts(axes: Any) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def test_site_baselines_are_removed_so_the_sites_line_up() -> None:
    points = {p.site: p for p in site_points(rising_alert(("CTIO",)))}
    assert points["CTIO"].baseline == pytest.approx(OFFSETS["CTIO"])
    # Outside the fit: the median before the break, not the flat "fitted" constant.
    assert points["SAAO"].baseline == pytest.approx(OFFSETS["SAAO"], abs=15)
    assert points["SSO"].baseline == pytest.approx(OFFSETS["SSO"], abs=25)
    for p in points.values():
        before = p.flux[p.hjd < T_BREAK]
        assert np.median(before) == pytest.approx(0.0, abs=25)


def test_a_single_site_fit_draws_one_line_and_names_the_other_sites() -> None:
    figure = draw_alert(rising_alert(("CTIO",)))
    try:
        _, zoom = figure.axes[:2]
        fits = [line for line in zoom.get_lines() if line.get_label().startswith("AlertFinder")]
        assert len(fits) == 1
        assert fits[0].get_label().startswith("AlertFinder fit (CTIO)")
        texts = legend_texts(zoom)
        assert any(t.startswith("SAAO") and t.endswith("not in the fit") for t in texts)
        assert any(t.startswith("CTIO") and "not in the fit" not in t for t in texts)
    finally:
        plt.close(figure)


def test_a_three_site_fit_is_one_line_not_three() -> None:
    figure = draw_alert(rising_alert(("CTIO", "SAAO", "SSO")))
    try:
        zoom = figure.axes[1]
        fits = [line for line in zoom.get_lines() if line.get_label().startswith("AlertFinder")]
        assert len(fits) == 1
        assert "CTIO+SAAO+SSO" in fits[0].get_label()
    finally:
        plt.close(figure)


def test_y_limits_ignore_outliers_but_keep_the_rise_and_a_baseline_is_in_view() -> None:
    alert = rising_alert(("CTIO", "SAAO"))
    figure = draw_alert(alert)
    try:
        zoom = figure.axes[1]
        low, high = zoom.get_ylim()
        peak = SLOPE * (TRIGGER - T_BREAK)
        assert high >= peak  # the rise and the latest points are inside
        assert high < 3 * peak  # the 30 000 outlier does not squash it
        assert low < 0
        assert any("off scale" in t for t in legend_texts(zoom))
        start, _ = zoom.get_xlim()
        assert start + 2_450_000 <= T_BREAK - 10  # baseline before the break, not just the rise
    finally:
        plt.close(figure)


def test_the_zoom_never_starts_before_the_data() -> None:
    alert = rising_alert(("CTIO",))
    early = dataclasses.replace(
        alert, alertfinder=dataclasses.replace(alert.alertfinder, t_break=TRIGGER - 100)
    )
    start, end = zoom_window(early)
    assert start >= float(alert.light_curve.hjd.min()) - 1.0
    assert end > TRIGGER


def test_a_magnitude_axis_only_when_the_baseline_is_known() -> None:
    dia = rising_alert(("CTIO",))
    assert total_flux_baseline(site_points(dia)) is None
    total = rising_alert(("CTIO",), total=10 ** (0.4 * (28 - 18.0)))
    base = total_flux_baseline(site_points(total))
    assert base == pytest.approx(10 ** (0.4 * 10) + OFFSETS["CTIO"])
    for alert, labels in ((dia, []), (total, ["I (mag)"])):
        figure = draw_alert(alert)
        try:
            assert [axes.get_ylabel() for axes in figure.axes[1].child_axes] == labels
        finally:
            plt.close(figure)


def test_nightly_bins_are_weighted_means_per_local_night() -> None:
    # CTIO (70.8 W): a night runs 16:43 UT to 16:43 UT; 23 h and 05 h UT are one night.
    hjd = np.array([2461200.45, 2461200.70, 2461200.90, 2461201.45])
    flux = np.array([10.0, 20.0, 30.0, 50.0])
    err = np.array([1.0, 1.0, 2.0, 1.0])
    t, f, e = bin_nightly(hjd, flux, err, -70.815)
    assert len(t) == 2
    assert f[0] == pytest.approx((10 + 20 + 30 / 4) / 2.25)
    assert e[0] == pytest.approx(1 / np.sqrt(2.25))
    assert f[1] == 50.0


def test_the_png_is_written_with_binning(tmp_path: Path) -> None:
    path = plot_alert(rising_alert(("SAAO",)), tmp_path / "a.png", nightly=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
