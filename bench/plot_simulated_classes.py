"""Plot example simulated light curves of every class and subclass, to check them by eye.

Run by hand: ``python bench/plot_simulated_classes.py [OUT_DIR] [--stars N] [--seed S]
[--per-subclass K]``. Simulates a small season in memory and writes one PNG per example star
to OUT_DIR (default ``simulated-classes/``): I-band flux against HJD coloured by site (V-band
points and points that LensNet's cleaning drops are left out), a zoom on the rise window, and
the FWHM and sky of each observation.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.seasons.archive import Dataset, Star
from model.simulate import Label, SimulationConfig, simulate_star

SITE_COLOURS = {"CTIO": "tab:blue", "SAAO": "tab:orange", "SSO": "tab:green"}


def clean(dataset: Dataset) -> npt.NDArray[np.bool_]:
    """I-band points that survive LensNet's cleaning (section 5.2), shape (N,)."""
    finite = (
        np.isfinite(dataset.flux)
        & np.isfinite(dataset.flux_err)
        & np.isfinite(dataset.sky)
        & np.isfinite(dataset.fwhm)
        & np.isfinite(dataset.psf_quality)
    )
    return (
        finite
        & (dataset.band == 0)
        & (dataset.flux_err >= 0)
        & (dataset.fwhm >= 0)
        & (dataset.psf_quality >= 0)
        & (dataset.psf_quality <= 100)
    )


def plot_star(star: Star, label: Label, path: Path) -> None:
    figure, axes = plt.subplots(
        4, 1, figsize=(11, 11), sharex=False, gridspec_kw={"height_ratios": [3, 2, 1.2, 1.2]}
    )
    flux_axis, zoom_axis, fwhm_axis, sky_axis = axes
    has_window = math.isfinite(label.t_peak)
    half_width = max(3.0, 2.5 * (label.t_peak - label.t_rise_start)) if has_window else 0.0
    for site in SITES:
        for dataset in (d for d in star.datasets if d.site == site):
            keep = clean(dataset)
            colour = SITE_COLOURS[site]
            name = f"{site} BLG{dataset.field:02d}"
            flux_axis.errorbar(
                dataset.hjd[keep],
                dataset.flux[keep],
                dataset.flux_err[keep],
                fmt=".",
                ms=2,
                lw=0.3,
                color=colour,
                alpha=0.6,
                label=name,
            )
            if has_window:
                near = keep & (np.abs(dataset.hjd - label.t_peak) < half_width)
                zoom_axis.errorbar(
                    dataset.hjd[near],
                    dataset.flux[near],
                    dataset.flux_err[near],
                    fmt=".",
                    ms=3,
                    lw=0.4,
                    color=colour,
                    alpha=0.7,
                )
            fwhm_axis.plot(dataset.hjd[keep], dataset.fwhm[keep], ".", ms=1.5, color=colour)
            sky_axis.plot(dataset.hjd[keep], dataset.sky[keep], ".", ms=1.5, color=colour)
    for axis in (flux_axis, zoom_axis):
        if has_window:
            axis.axvline(label.t_rise_start, color="k", ls=":", lw=0.8)
            axis.axvline(label.t_peak, color="r", ls=":", lw=0.8)
        axis.set_ylabel("flux [DIA]")
    if has_window:
        zoom_axis.set_xlim(label.t_peak - half_width, label.t_peak + half_width)
    zoom_axis.set_title("rise window (dotted: t_rise_start, t_peak)", fontsize=9)
    fwhm_axis.set_ylabel('FWHM ["]')
    sky_axis.set_ylabel("sky [ADU]")
    sky_axis.set_xlabel("HJD")
    flux_axis.legend(fontsize=7, markerscale=3, loc="upper left")
    shown = {k: v for k, v in label.params.items() if k in PARAMS_SHOWN}
    flux_axis.set_title(
        f"{label.label} / {label.subclass}  star {star.star_id}  "
        f"peak_snr={label.params.get('peak_snr', math.nan):.1f}\n"
        + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()),
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


PARAMS_SHOWN = (
    "t0",
    "u0",
    "tE",
    "fs",
    "fb",
    "s",
    "q",
    "beta",
    "nb_period",
    "period",
    "amplitude_mag",
    "recurrence",
    "n_flares",
    "drift_site",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("simulated-classes"))
    parser.add_argument("--stars", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-subclass", type=int, default=2)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(n_stars=args.stars, seed=args.seed)
    shown: dict[str, int] = {}
    for index in range(config.n_stars):
        star, label = simulate_star(config, index)
        if shown.get(label.subclass, 0) >= args.per_subclass:
            continue
        shown[label.subclass] = shown.get(label.subclass, 0) + 1
        path = args.out_dir / f"{label.label}_{label.subclass}_{star.star_id}.png"
        plot_star(star, label, path)
        print(path)


if __name__ == "__main__":
    main()
