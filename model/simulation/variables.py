"""NO: ordinary AlertFinder false positives - noise, variables, and trends that are not events.

Amplitudes are in units of the star's typical error ``sigma`` (see
:func:`model.simulation.noise.typical_sigma`) so that a good fraction would trigger the
AlertFinder somewhere in the season:

- ``noise_run``: a constant star whose photometry is offset by 3-7 sigma for whole nights, in
  2-6 runs of 1-3 consecutive nights per site (bad reference matching, clouds): correlated
  excursions, not a rise.
- ``long_period_variable``: Mira-like, sinusoidal in magnitude (0.5-2.5 mag, 100-500 d).
- ``irregular_variable``: red noise, a sum of 16 sinusoids (3-200 d, amplitude ~ P**0.7), rms
  2-6 sigma.
- ``cv_outburst``: dwarf-nova outbursts of a faint CV blended with a brighter star: linear rise
  over 0.3-1.5 d, 1-8 d plateau, exponential decline (1-4 d), 2.5-5 mag, every 20-120 d.
- ``flare``: M-dwarf flares, one per 5-20 d: rise 2-15 min, decay 20-240 min, 5-80 sigma.
- ``airmass_trend``: flux linear in airmass (colour-dependent extinction left by DIA), 6-20
  sigma per unit airmass, different per site; the bulge sets earlier late in the season, so the
  season's end looks like a rise.
- ``sky_trend``: flux linear in sky (background mis-subtraction), 2-8 sigma per 1000 ADU: rises
  with the Moon.
- ``single_site_drift``: one site's photometry drifts up (8-30 sigma by season's end, as a
  power 1-2 of time since the drift began); the others stay flat.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from model.simulation.behaviour import (
    REFERENCE_AIRMASS,
    REFERENCE_SKY_ADU,
    Behaviour,
    Conditions,
    SeasonWindow,
    flux_of_mag,
    log_uniform,
    lpv_flux_ratio,
    reference_conditions,
)
from model.simulation.noise import typical_sigma
from model.simulation.sites import SITE_INFO, local_night

F64 = npt.NDArray[np.float64]


def draw_noise_run(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(16.5, 20.0))
    sigma = typical_sigma(ref_flux)
    runs: dict[str, tuple[F64, F64]] = {}
    for site in SITES:
        first_night = np.floor(window.start_hjd + SITE_INFO[site].longitude_deg / 360.0)
        n_runs = int(rng.integers(2, 7))
        starts = first_night + rng.integers(0, max(int(window.days), 1), n_runs)
        lengths = rng.integers(1, 4, n_runs)  # consecutive nights
        offsets = rng.uniform(3.0, 7.0, n_runs) * sigma
        nights = np.concatenate([s + np.arange(n) for s, n in zip(starts, lengths, strict=True)])
        runs[site] = (nights, np.repeat(offsets, lengths))

    def signal(conditions: Conditions) -> F64:
        nights, offsets = runs[conditions.site]
        night = local_night(conditions.hjd, SITE_INFO[conditions.site])
        out = np.zeros(len(night))
        for run_night, offset in zip(nights, offsets, strict=True):
            out[night == run_night] += offset
        return out

    params = {"sigma": sigma, **{f"run_nights_{site}": float(len(runs[site][0])) for site in SITES}}
    return Behaviour("noise_run", params, ref_flux, signal)


def draw_long_period_variable(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(14.5, 17.5))
    t_max = rng.uniform(window.start_hjd + 0.2 * window.days, window.end_hjd + 0.2 * window.days)
    period, amplitude = rng.uniform(100.0, 500.0), rng.uniform(0.5, 2.5)

    def signal(conditions: Conditions) -> F64:
        return ref_flux * (lpv_flux_ratio(conditions.hjd, t_max, period, amplitude) - 1.0)

    params = {"t_max": t_max, "period": period, "amplitude_mag": amplitude}
    return Behaviour("long_period_variable", params, ref_flux, signal)


def draw_irregular_variable(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(14.5, 17.5))
    periods = np.exp(rng.uniform(np.log(3.0), np.log(200.0), 16))
    weights = periods**0.7 * rng.uniform(0.5, 1.5, 16)
    phases = rng.uniform(0.0, 2.0 * np.pi, 16)

    def shape(t: F64) -> F64:
        waves = np.sin(2.0 * np.pi * t[:, None] / periods + phases)  # (N, 16)
        return np.asarray(waves @ weights, dtype=np.float64)

    rms = rng.uniform(2.0, 6.0) * typical_sigma(ref_flux)
    scale = rms / float(np.std(shape(reference_conditions(window).hjd)))

    def signal(conditions: Conditions) -> F64:
        return scale * shape(conditions.hjd)

    return Behaviour("irregular_variable", {"rms": rms}, ref_flux, signal)


def draw_cv_outburst(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(17.0, 20.0))
    quiescent = flux_of_mag(rng.uniform(20.0, 22.5))
    recurrence = rng.uniform(20.0, 120.0)
    n_max = int(window.days / recurrence) + 2
    starts = (
        window.start_hjd
        + rng.uniform(0.0, recurrence)
        + np.cumsum(np.concatenate([[0.0], recurrence * rng.uniform(0.8, 1.2, n_max - 1)]))
    )
    starts = starts[starts < window.end_hjd]
    rise, plateau, decline = rng.uniform(0.3, 1.5), rng.uniform(1.0, 8.0), rng.uniform(1.0, 4.0)
    peaks = quiescent * (10.0 ** (0.4 * rng.uniform(2.5, 5.0, len(starts))) - 1.0)

    def signal(conditions: Conditions) -> F64:
        dt = conditions.hjd[:, None] - starts  # (N, outbursts)
        shape = np.where(
            dt < rise, dt / rise, np.exp(-np.clip(dt - rise - plateau, 0.0, None) / decline)
        )
        return np.asarray(np.where(dt >= 0.0, shape, 0.0) @ peaks, dtype=np.float64)

    params = {"quiescent_flux": quiescent, "recurrence": recurrence, "rise": rise}
    params |= {"plateau": plateau, "decline": decline, "n_outbursts": float(len(starts))}
    return Behaviour("cv_outburst", params, ref_flux, signal)


def draw_flare(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(17.0, 20.0))
    sigma = typical_sigma(ref_flux)
    n_flares = max(int(rng.poisson(window.days / rng.uniform(5.0, 20.0))), 1)
    times = rng.uniform(window.start_hjd, window.end_hjd, n_flares)
    rise = rng.uniform(2.0, 15.0, n_flares) / 1440.0
    decay = rng.uniform(20.0, 240.0, n_flares) / 1440.0
    peaks = np.exp(rng.uniform(np.log(5.0), np.log(80.0), n_flares)) * sigma

    def signal(conditions: Conditions) -> F64:
        dt = conditions.hjd[:, None] - times  # (N, flares)
        shape = np.where(
            dt < 0.0,
            np.clip(1.0 + dt / rise, 0.0, None),
            np.exp(-np.clip(dt, 0.0, None) / decay),
        )
        return np.asarray(shape @ peaks, dtype=np.float64)

    params = {"n_flares": float(n_flares), "largest_peak": float(peaks.max()), "sigma": sigma}
    return Behaviour("flare", params, ref_flux, signal)


def draw_airmass_trend(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(16.0, 19.5))
    sigma = typical_sigma(ref_flux)
    slopes = [rng.uniform(6.0, 20.0) * sigma for _ in SITES]

    def signal(conditions: Conditions) -> F64:
        slope = slopes[SITES.index(conditions.site)]
        return slope * (conditions.airmass - REFERENCE_AIRMASS)

    params = {f"slope_{site}": s for site, s in zip(SITES, slopes, strict=True)}
    return Behaviour("airmass_trend", params, ref_flux, signal, uses_conditions=True)


def draw_sky_trend(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(16.0, 19.5))
    sigma = typical_sigma(ref_flux)
    slopes = [rng.uniform(2.0, 8.0) * sigma / 1000.0 for _ in SITES]  # per ADU of sky

    def signal(conditions: Conditions) -> F64:
        slope = slopes[SITES.index(conditions.site)]
        return slope * (conditions.sky - REFERENCE_SKY_ADU)

    params = {f"slope_{site}": s for site, s in zip(SITES, slopes, strict=True)}
    return Behaviour("sky_trend", params, ref_flux, signal, uses_conditions=True)


def draw_single_site_drift(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(16.5, 20.0))
    drifting = SITES[int(rng.integers(len(SITES)))]
    t_start = rng.uniform(window.start_hjd + 0.3 * window.days, window.end_hjd - 0.1 * window.days)
    final = log_uniform(rng, 8.0, 30.0) * typical_sigma(ref_flux)
    power = rng.uniform(1.0, 2.0)

    def signal(conditions: Conditions) -> F64:
        if conditions.site != drifting:
            return np.zeros(len(conditions.hjd))
        progress = np.clip((conditions.hjd - t_start) / (window.end_hjd - t_start), 0.0, None)
        return np.asarray(final * progress**power, dtype=np.float64)

    params = {"drift_site": float(SITES.index(drifting)), "t_start": t_start, "final": final}
    params |= {"power": power}
    return Behaviour("single_site_drift", params, ref_flux, signal)
