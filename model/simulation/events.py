"""YES: microlensing events caught while rising (point lens with blending, binary, planetary).

Parameters (times as full HJD):

- ``t0`` uniform from 5 days before the season to 10 days after it, so events peak anywhere,
  including the first weeks (short baselines, some sites not yet open) and beyond the season's
  end (still rising when it closes); ``tE`` log-normal, median 20 d (0.3 dex, clipped to
  1.5-250 d); ``u0 = U(0, 1)**1.5`` (AlertFinder favours bright peaks).
- Baseline ``I`` (source plus blend, what the reference image holds) uniform in 14-21; the
  source's share ``fs / (fs + fb)`` log-uniform in 0.03-1, from heavy blending to none.
- Detectability: when the peak excess ``fs * (A(u0) - 1)`` is below ``min_peak_snr`` typical
  errors, ``u0`` is lowered to the value that reaches it, so every event is a plausible
  AlertFinder candidate at some point of the season.
- Binary: ``s`` log-uniform 0.4-2.5, ``q`` log-uniform 0.05-1, ``alpha`` uniform.
- Planetary: ``s`` log-uniform 0.6-1.7, ``q`` log-uniform 1e-4 to 1e-2; in 70% of events the
  trajectory is aimed within 0.02 Einstein radii of the planetary caustic (on the binary axis
  at ``s - 1/s`` from the host), otherwise ``alpha`` is uniform (central caustic or none).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from model.simulation.behaviour import Behaviour, Conditions, SeasonWindow, flux_of_mag, log_uniform
from model.simulation.lens import (
    binary_magnification,
    pspl_flux_excess,
    source_position,
)
from model.simulation.noise import typical_sigma

F64 = npt.NDArray[np.float64]


def u_for_magnification(magnification: float) -> float:
    """Impact parameter at which a point lens magnifies by ``magnification`` (> 1)."""
    return math.sqrt(2.0 * (magnification / math.sqrt(magnification**2 - 1.0) - 1.0))


def draw_timing(rng: np.random.Generator, window: SeasonWindow) -> tuple[float, float, float]:
    """(t0, tE, u0) of an event peaking in the season (before the detectability bar)."""
    t0 = rng.uniform(window.start_hjd - 5.0, window.end_hjd + 10.0)
    tE = 10.0 ** np.clip(rng.normal(1.3, 0.3), math.log10(1.5), math.log10(250.0))
    u0 = rng.uniform() ** 1.5
    return float(t0), float(tE), float(u0)


def _draw_source(rng: np.random.Generator, window: SeasonWindow) -> tuple[dict[str, float], float]:
    """Timing, source and blend, with u0 lowered to reach the detectability bar."""
    t0, tE, u0 = draw_timing(rng, window)
    baseline = flux_of_mag(rng.uniform(14.0, 21.0))
    blend_fraction = log_uniform(rng, 0.03, 1.0)
    fs = baseline * blend_fraction
    fb = baseline - fs
    needed = 1.0 + window.min_peak_snr * typical_sigma(fs + fb) / fs
    u0 = max(min(u0, u_for_magnification(needed)), 1e-3)
    params = {"t0": t0, "tE": tE, "u0": u0, "fs": fs, "fb": fb, "blend_fraction": blend_fraction}
    return params, fs + fb


def draw_pspl(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    params, ref_flux = _draw_source(rng, window)
    t0, u0, tE, fs = params["t0"], params["u0"], params["tE"], params["fs"]

    def signal(conditions: Conditions) -> F64:
        return pspl_flux_excess(conditions.hjd, t0, u0, tE, fs)

    return Behaviour("pspl", params, ref_flux, signal)


def _binary_behaviour(subclass: str, params: dict[str, float], ref_flux: float) -> Behaviour:
    t0, u0, tE, fs = params["t0"], params["u0"], params["tE"], params["fs"]
    s, q, alpha = params["s"], params["q"], params["alpha"]

    def signal(conditions: Conditions) -> F64:
        zeta = source_position(conditions.hjd, t0, u0, tE, alpha)
        return fs * (binary_magnification(zeta, s, q) - 1.0)

    return Behaviour(subclass, params, ref_flux, signal)


def draw_binary(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    params, ref_flux = _draw_source(rng, window)
    params |= {
        "s": log_uniform(rng, 0.4, 2.5),
        "q": log_uniform(rng, 0.05, 1.0),
        "alpha": rng.uniform(0.0, 2.0 * math.pi),
    }
    return _binary_behaviour("binary", params, ref_flux)


def draw_planetary(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    params, ref_flux = _draw_source(rng, window)
    s, q = log_uniform(rng, 0.6, 1.7), log_uniform(rng, 1e-4, 1e-2)
    # Planetary caustic on the axis, s - 1/s from the host (host at -s q / (1 + q)).
    caustic_x = -s * q / (1.0 + q) + (s - 1.0 / s)
    miss = rng.uniform(-0.02, 0.02)
    aimed = rng.uniform() < 0.7 and abs(params["u0"] + miss) < abs(caustic_x)
    if aimed:
        alpha = math.asin(-(params["u0"] + miss) / caustic_x)
        alpha = alpha if rng.uniform() < 0.5 else math.pi - alpha
    else:
        alpha = rng.uniform(0.0, 2.0 * math.pi)
    params |= {"s": s, "q": q, "alpha": alpha, "aimed_at_caustic": float(aimed)}
    return _binary_behaviour("planetary", params, ref_flux)
