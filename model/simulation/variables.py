"""NO: ordinary AlertFinder false positives - variable stars, noise and trends that are not events.

Astrophysical variables follow the period and amplitude distributions of the bulge surveys'
variable-star catalogues (OGLE-III/IV: Soszynski et al. 2011-2013 for long-period variables,
RR Lyrae and Cepheids; Soszynski et al. 2016 for eclipsing and ellipsoidal binaries; Mroz et
al. 2015 for dwarf novae), in I-band magnitudes of the catalogue star itself (``ref_flux`` is
its mean flux, which sets the photon noise). Instrumental false positives are in units of the
star's typical error ``sigma`` (:func:`model.simulation.noise.typical_sigma`).

- ``mira``: P log-normal around 300 d (100-1000 d), I amplitude 0.8-4 mag peak to peak, a rise
  faster than the decline, cycle-to-cycle amplitude changes and a slow drift of the mean; I 11.5-16.
- ``semiregular``: one or two periods 25-400 d (plus, in a third of them, a long secondary period
  of 5-10 P), 0.1-0.8 mag, amplitudes modulated over a few cycles; I 12-16.
- ``osarg``: small-amplitude red giants, two or three periods 10-100 d of 0.005-0.06 mag each;
  I 13-16.5.
- ``rr_lyrae``: RRab (70 %, P 0.35-0.9 d around 0.56 d, 0.25-0.75 mag, sawtooth) or RRc (P
  0.25-0.42 d, 0.1-0.3 mag, near-sinusoidal); I 15-18.5.
- ``cepheid``: classical and type II, P 1-60 d (log-uniform), 0.15-0.8 mag, asymmetric; I 13-17.5.
- ``eclipsing_binary``: detached, P 0.5-60 d, primary eclipse 0.05-1 mag deep, secondary 0-0.9 of
  it, eclipses 2-10 % of the orbit (dips: it reaches the trigger only through noise or a bright
  phase after a gap); I 14-19.
- ``contact_binary``: W UMa, P 0.22-0.7 d, 0.1-0.7 mag, unequal minima; I 15-19.
- ``ellipsoidal``: P 2-300 d, 0.01-0.15 mag at half the orbital period; I 13-17.
- ``dwarf_nova``: a faint CV (I 20-23 in quiescence) blended with a brighter star (I 17-20):
  outbursts of 2-5 mag every 10-200 d (rise 0.3-1.5 d, plateau 1-6 d, decline 0.7-3 d), every
  3-6th a superoutburst (plateau 8-18 d, 0.7 mag brighter).
- ``flare``: M-dwarf flares, one per 5-20 d: rise 2-15 min, decay 20-240 min, 5-80 sigma.
- ``irregular_variable``: red noise, a sum of 16 sinusoids (3-200 d, amplitude ~ P**0.7), rms
  2-6 sigma.
- ``slow_trend``: a steady brightening at every site (a blend's proper motion, a young star, a
  long-period variable seen over a fraction of its cycle), 8-60 sigma from a random start to
  the season's end, as a power 1-3 of time.
- ``constant``: nothing but noise (I 14-21): what LensNet sees when a noise fluctuation passes
  the trigger, and what its site scores must call flat.
- ``noise_run``: a constant star whose photometry is offset by 3-7 sigma for whole nights, in
  2-6 runs of 1-3 consecutive nights per site (bad reference matching, clouds).
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


# ------------------------------------------------------------------ catalogued variable stars


def _flux_change(ref_flux: float, delta_mag: F64) -> F64:
    """Difference flux of a star of mean flux ``ref_flux`` that is ``delta_mag`` brighter
    (negative) or fainter (positive) than its mean-magnitude level."""
    return np.asarray(ref_flux * (10.0 ** (-0.4 * delta_mag) - 1.0), dtype=np.float64)


def _pulsation(phase: F64, rise_fraction: float) -> F64:
    """Brightness in [-0.5, 0.5] of a pulsator at ``phase`` (cycles, maximum at 0): a cosine
    whose rising branch lasts ``rise_fraction`` of the cycle (sawtooth-like when small)."""
    phi = np.mod(phase, 1.0)
    decline = 1.0 - rise_fraction
    warped = np.where(
        phi < decline, 0.5 * phi / decline, 0.5 + 0.5 * (phi - decline) / rise_fraction
    )
    return np.asarray(0.5 * np.cos(2.0 * np.pi * warped), dtype=np.float64)


def draw_mira(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(11.5, 16.0))
    period = float(10.0 ** np.clip(rng.normal(2.45, 0.17), 2.0, 3.0))
    amplitude = log_uniform(rng, 0.8, 4.0)
    rise = rng.uniform(0.35, 0.5)
    t_max = window.start_hjd + rng.uniform(0.0, period)
    modulation = (rng.uniform(0.05, 0.2), rng.uniform(3.0, 8.0) * period, rng.uniform(0, 2 * np.pi))
    drift = (rng.uniform(0.05, 0.3), rng.uniform(5.0, 20.0) * period, rng.uniform(0, 2 * np.pi))

    def signal(conditions: Conditions) -> F64:
        t = conditions.hjd
        depth = amplitude * (
            1.0 + modulation[0] * np.sin(2 * np.pi * t / modulation[1] + modulation[2])
        )
        mean = drift[0] * np.sin(2.0 * np.pi * t / drift[1] + drift[2])
        return _flux_change(ref_flux, mean - depth * _pulsation((t - t_max) / period, rise))

    params = {"period": period, "amplitude_mag": amplitude, "t_max": t_max, "rise": rise}
    return Behaviour("mira", params, ref_flux, signal)


def draw_semiregular(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(12.0, 16.0))
    n_modes = int(rng.integers(1, 3))
    periods = [log_uniform(rng, 25.0, 400.0) for _ in range(n_modes)]
    amplitudes = [log_uniform(rng, 0.1, 0.8) / (1 + k) for k in range(n_modes)]
    if rng.uniform() < 1.0 / 3.0:  # long secondary period
        periods.append(periods[0] * rng.uniform(5.0, 10.0))
        amplitudes.append(log_uniform(rng, 0.1, 0.5))
    phases = rng.uniform(0.0, 2.0 * np.pi, len(periods))
    cycles = rng.uniform(2.0, 6.0, len(periods))  # amplitude modulation time, in periods

    def signal(conditions: Conditions) -> F64:
        t = conditions.hjd
        delta = np.zeros(len(t))
        for p, a, ph, c in zip(periods, amplitudes, phases, cycles, strict=True):
            envelope = 1.0 + 0.4 * np.sin(2.0 * np.pi * t / (c * p) + ph)
            delta += 0.5 * a * envelope * np.cos(2.0 * np.pi * t / p + ph)
        return _flux_change(ref_flux, delta)

    params = {
        "period": periods[0],
        "amplitude_mag": amplitudes[0],
        "n_periods": float(len(periods)),
    }
    return Behaviour("semiregular", params, ref_flux, signal)


def draw_osarg(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(13.0, 16.5))
    n_modes = int(rng.integers(2, 4))
    periods = np.exp(rng.uniform(np.log(10.0), np.log(100.0), n_modes))
    amplitudes = np.exp(rng.uniform(np.log(0.005), np.log(0.06), n_modes))
    phases = rng.uniform(0.0, 2.0 * np.pi, n_modes)

    def signal(conditions: Conditions) -> F64:
        waves = np.cos(2.0 * np.pi * conditions.hjd[:, None] / periods + phases)  # (N, modes)
        return _flux_change(ref_flux, np.asarray(waves @ amplitudes, dtype=np.float64))

    params = {"period": float(periods[0]), "amplitude_mag": float(2.0 * amplitudes.sum())}
    return Behaviour("osarg", params, ref_flux, signal)


def draw_rr_lyrae(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(15.0, 18.5))
    if rng.uniform() < 0.7:  # RRab
        period = float(np.clip(rng.normal(0.56, 0.08), 0.35, 0.9))
        amplitude, rise = rng.uniform(0.25, 0.75), rng.uniform(0.12, 0.2)
    else:  # RRc
        period = rng.uniform(0.25, 0.42)
        amplitude, rise = rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.5)
    t_max = window.start_hjd + rng.uniform(0.0, period)

    def signal(conditions: Conditions) -> F64:
        phase = (conditions.hjd - t_max) / period
        return _flux_change(ref_flux, -amplitude * _pulsation(phase, rise))

    params = {"period": period, "amplitude_mag": amplitude, "rise": rise, "t_max": t_max}
    return Behaviour("rr_lyrae", params, ref_flux, signal)


def draw_cepheid(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(13.0, 17.5))
    period, amplitude = log_uniform(rng, 1.0, 60.0), rng.uniform(0.15, 0.8)
    rise = rng.uniform(0.25, 0.4)
    t_max = window.start_hjd + rng.uniform(0.0, period)

    def signal(conditions: Conditions) -> F64:
        phase = (conditions.hjd - t_max) / period
        return _flux_change(ref_flux, -amplitude * _pulsation(phase, rise))

    params = {"period": period, "amplitude_mag": amplitude, "rise": rise, "t_max": t_max}
    return Behaviour("cepheid", params, ref_flux, signal)


def draw_eclipsing_binary(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(14.0, 19.0))
    period = log_uniform(rng, 0.5, 60.0)
    primary = 1.0 - 10.0 ** (-0.4 * rng.uniform(0.05, 1.0))  # flux fraction lost
    secondary = primary * rng.uniform(0.0, 0.9)
    width = rng.uniform(0.02, 0.1)  # eclipse duration, fraction of the orbit
    offset = rng.uniform(-0.05, 0.05)  # eccentric orbits move the secondary
    t_min = window.start_hjd + rng.uniform(0.0, period)

    def signal(conditions: Conditions) -> F64:
        phi = np.mod((conditions.hjd - t_min) / period + 0.5, 1.0) - 0.5  # primary at 0
        phi2 = np.mod(phi - offset, 1.0) - 0.5  # secondary at 0.5 + offset
        dip = primary * np.exp(-0.5 * (phi / (0.4 * width)) ** 2)  # FWHM ~ width
        dip += secondary * np.exp(-0.5 * (phi2 / (0.4 * width)) ** 2)
        return np.asarray(-ref_flux * dip, dtype=np.float64)

    params = {"period": period, "primary_depth": primary, "secondary_depth": secondary}
    params |= {"width": width}
    return Behaviour("eclipsing_binary", params, ref_flux, signal)


def draw_contact_binary(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(15.0, 19.0))
    period = float(np.clip(np.exp(rng.normal(np.log(0.37), 0.25)), 0.22, 0.7))
    amplitude = rng.uniform(0.1, 0.7)
    unequal = rng.uniform(0.0, 0.15)
    t_min = window.start_hjd + rng.uniform(0.0, period)

    def signal(conditions: Conditions) -> F64:
        phase = 2.0 * np.pi * (conditions.hjd - t_min) / period
        delta = 0.5 * amplitude * np.cos(2.0 * phase) + 0.5 * unequal * amplitude * np.cos(phase)
        return _flux_change(ref_flux, delta)

    params = {"period": period, "amplitude_mag": amplitude}
    return Behaviour("contact_binary", params, ref_flux, signal)


def draw_ellipsoidal(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(13.0, 17.0))
    period = log_uniform(rng, 2.0, 300.0)
    amplitude = log_uniform(rng, 0.01, 0.15)
    unequal = rng.uniform(0.0, 0.2)
    t_min = window.start_hjd + rng.uniform(0.0, period)

    def signal(conditions: Conditions) -> F64:
        phase = 2.0 * np.pi * (conditions.hjd - t_min) / period
        delta = 0.5 * amplitude * np.cos(2.0 * phase) + 0.5 * unequal * amplitude * np.cos(phase)
        return _flux_change(ref_flux, delta)

    params = {"period": period, "amplitude_mag": amplitude}
    return Behaviour("ellipsoidal", params, ref_flux, signal)


def draw_dwarf_nova(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(17.0, 20.0))
    quiescent = flux_of_mag(rng.uniform(20.0, 23.0))
    recurrence = log_uniform(rng, 10.0, 200.0)
    n_max = int(window.days / recurrence) + 3
    gaps = recurrence * rng.uniform(0.7, 1.3, n_max)
    starts = window.start_hjd - rng.uniform(0.0, recurrence) + np.cumsum(gaps)
    starts = starts[starts < window.end_hjd]
    every = int(rng.integers(3, 7))
    is_super = (np.arange(len(starts)) + int(rng.integers(every))) % every == 0
    rise = rng.uniform(0.3, 1.5)
    plateau = np.where(is_super, rng.uniform(8.0, 18.0), rng.uniform(1.0, 6.0, len(starts)))
    decline = rng.uniform(0.7, 3.0)
    magnitudes = rng.uniform(2.0, 5.0, len(starts)) + np.where(is_super, 0.7, 0.0)
    peaks = quiescent * (10.0 ** (0.4 * magnitudes) - 1.0)

    def signal(conditions: Conditions) -> F64:
        dt = conditions.hjd[:, None] - starts  # (N, outbursts)
        shape = np.where(
            dt < rise, dt / rise, np.exp(-np.clip(dt - rise - plateau, 0.0, None) / decline)
        )
        return np.asarray(np.where(dt >= 0.0, shape, 0.0) @ peaks, dtype=np.float64)

    params = {"quiescent_flux": quiescent, "recurrence": recurrence, "rise": rise}
    params |= {"decline": decline, "n_outbursts": float(len(starts))}
    params |= {"n_superoutbursts": float(is_super.sum())}
    return Behaviour("dwarf_nova", params, ref_flux, signal)


def draw_slow_trend(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(15.0, 20.0))
    t_start = rng.uniform(window.start_hjd - 0.3 * window.days, window.end_hjd - 0.3 * window.days)
    final = log_uniform(rng, 8.0, 60.0) * typical_sigma(ref_flux)
    power = rng.uniform(1.0, 3.0)

    def signal(conditions: Conditions) -> F64:
        progress = np.clip((conditions.hjd - t_start) / (window.end_hjd - t_start), 0.0, None)
        return np.asarray(final * progress**power, dtype=np.float64)

    params = {"t_start": t_start, "final": final, "power": power}
    return Behaviour("slow_trend", params, ref_flux, signal)


def draw_constant(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux = flux_of_mag(rng.uniform(14.0, 21.0))

    def signal(conditions: Conditions) -> F64:
        return np.zeros(len(conditions.hjd))

    return Behaviour("constant", {}, ref_flux, signal)
