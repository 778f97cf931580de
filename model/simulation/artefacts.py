"""MAYBE: image-level artefacts that mimic a rise in a nearby star's DIA light curve.

Their flux depends on the conditions of each frame, differently at each site, which is what
lets a model tell them from microlensing without images. The laws are phenomenological:

- ``bleed_trail``: a saturated long-period variable in the same CCD column. Once its
  brightness (raised by the sky, which fills the wells too) passes a site-specific saturation
  level, charge bleeds along the column; the part reaching the star's aperture grows with the
  PSF width (``fwhm**beta``, beta 0.7-1.5) and with airmass (``airmass**gamma``), with a
  site-specific strength (different CCDs and optics).
- ``diffraction_spike``: a spike of a bright variable crosses the star. The spike's light in
  the aperture scales with the neighbour's flux and ``fwhm**beta`` (beta 1-2), minus what the
  reference image (1.2" seeing) held; the spike pattern turns with hour angle; one site's optics
  put the spike on the star, the others only its faint wings.
- ``ghost``: a diluted copy of a nearby real microlensing event leaking through the PSF wings
  and the DIA kernel: ``fs_nb * (A - 1) * fwhm**beta`` (beta 0.5-1.5), site factor 0.6-1.4.

Amplitudes are set so that the peak excess in reference conditions (1.5", 1000 ADU sky,
airmass 1.2) is a log-uniform 8-60 typical errors of the star.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from model.simulation.behaviour import (
    REFERENCE_AIRMASS,
    REFERENCE_FWHM_ARCSEC,
    REFERENCE_IMAGE_FWHM_ARCSEC,
    REFERENCE_SKY_ADU,
    Behaviour,
    Conditions,
    SeasonWindow,
    flux_of_mag,
    log_uniform,
    lpv_flux_ratio,
    peak_excess,
    reference_conditions,
)
from model.simulation.events import draw_timing
from model.simulation.lens import pspl_flux_excess, pspl_magnification
from model.simulation.noise import typical_sigma

F64 = npt.NDArray[np.float64]


def _star(rng: np.random.Generator) -> tuple[float, float]:
    """(reference flux, amplitude in DIA units) of the ordinary star the artefact lands on."""
    ref_flux = flux_of_mag(rng.uniform(17.0, 20.0))
    return ref_flux, log_uniform(rng, 8.0, 60.0) * typical_sigma(ref_flux)


def _neighbour_variable(
    rng: np.random.Generator, window: SeasonWindow, amplitude_range: tuple[float, float]
) -> dict[str, float]:
    """A long-period variable that reaches its maximum in the season."""
    return {
        "nb_t_max": rng.uniform(window.start_hjd + 0.3 * window.days, window.end_hjd),
        "nb_period": rng.uniform(80.0, 400.0),
        "nb_amplitude_mag": rng.uniform(*amplitude_range),
    }


def _site_params(prefix: str, values: list[float]) -> dict[str, float]:
    return {f"{prefix}_{site}": float(v) for site, v in zip(SITES, values, strict=True)}


def draw_bleed_trail(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux, amplitude = _star(rng)
    params = _neighbour_variable(rng, window, (1.0, 3.0))
    # Saturation at this brightness ratio: reached only in the brighter part of the cycle.
    saturation = 10.0 ** (0.2 * params["nb_amplitude_mag"] * rng.uniform(0.0, 0.6))
    strength = [log_uniform(rng, 0.3, 1.5) for _ in SITES]
    well = [rng.uniform(0.9, 1.1) for _ in SITES]
    beta, gamma, eta = rng.uniform(0.7, 1.5), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2)
    t_max, period, amp = params["nb_t_max"], params["nb_period"], params["nb_amplitude_mag"]

    def unit(conditions: Conditions, site_index: int | None) -> F64:
        ratio = lpv_flux_ratio(conditions.hjd, t_max, period, amp)
        filled = ratio * (1.0 + eta * (conditions.sky / REFERENCE_SKY_ADU - 1.0))
        level = saturation * (1.0 if site_index is None else well[site_index])
        k = 1.0 if site_index is None else strength[site_index]
        return (
            k
            * np.clip(filled - level, 0.0, None)
            * (conditions.fwhm / REFERENCE_FWHM_ARCSEC) ** beta
            * (conditions.airmass / REFERENCE_AIRMASS) ** gamma
        )

    scale = amplitude / peak_excess(unit(reference_conditions(window), None))

    def signal(conditions: Conditions) -> F64:
        return scale * unit(conditions, SITES.index(conditions.site))

    params |= {"saturation_ratio": saturation, "beta": beta, "gamma": gamma, "eta": eta}
    params |= {"scale": scale, **_site_params("strength", strength), **_site_params("well", well)}
    return Behaviour("bleed_trail", params, ref_flux, signal, uses_conditions=True)


def draw_diffraction_spike(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux, amplitude = _star(rng)
    params = _neighbour_variable(rng, window, (0.5, 2.0))
    on_spike = int(rng.integers(len(SITES)))
    strength = [1.0 if i == on_spike else rng.uniform(0.05, 0.4) for i in range(len(SITES))]
    phase = [rng.uniform(0.0, 2.0 * np.pi) for _ in SITES]
    rotation, beta = rng.uniform(0.1, 0.4), rng.uniform(1.0, 2.0)
    t_max, period, amp = params["nb_t_max"], params["nb_period"], params["nb_amplitude_mag"]
    in_reference = (REFERENCE_IMAGE_FWHM_ARCSEC / REFERENCE_FWHM_ARCSEC) ** beta

    def unit(conditions: Conditions, site_index: int | None) -> F64:
        ratio = lpv_flux_ratio(conditions.hjd, t_max, period, amp)
        k, turn = (1.0, 0.0) if site_index is None else (strength[site_index], phase[site_index])
        pattern = 1.0 + rotation * np.sin(2.0 * np.pi * conditions.hour_angle / 12.0 + turn)
        seeing = (conditions.fwhm / REFERENCE_FWHM_ARCSEC) ** beta
        return k * (ratio * seeing * pattern - in_reference)

    scale = amplitude / peak_excess(unit(reference_conditions(window), None))

    def signal(conditions: Conditions) -> F64:
        return scale * unit(conditions, SITES.index(conditions.site))

    params |= {"on_spike_site": float(on_spike), "rotation": rotation, "beta": beta}
    params |= {"scale": scale, **_site_params("strength", strength)}
    return Behaviour("diffraction_spike", params, ref_flux, signal, uses_conditions=True)


def draw_ghost(rng: np.random.Generator, window: SeasonWindow) -> Behaviour:
    ref_flux, amplitude = _star(rng)
    t0, tE, u0 = draw_timing(rng, window)
    fs_nb = flux_of_mag(rng.uniform(15.0, 18.0))
    beta = rng.uniform(0.5, 1.5)
    strength = [rng.uniform(0.6, 1.4) for _ in SITES]
    # Leak fraction so that the echo's peak in reference conditions is `amplitude`.
    leak = amplitude / (fs_nb * (float(pspl_magnification(np.array([u0]))[0]) - 1.0))

    def signal(conditions: Conditions) -> F64:
        k = strength[SITES.index(conditions.site)]
        seeing = (conditions.fwhm / REFERENCE_FWHM_ARCSEC) ** beta
        return leak * k * seeing * pspl_flux_excess(conditions.hjd, t0, u0, tE, fs_nb)

    params = {"nb_t0": t0, "nb_tE": tE, "nb_u0": u0, "nb_fs": fs_nb, "leak": leak, "beta": beta}
    params |= _site_params("strength", strength)
    return Behaviour("ghost", params, ref_flux, signal, uses_conditions=True)
