"""The photometric noise model shared by the light-curve classes and the measurements.

Flux is in DIA flux units = ADU per frame, gain 1. PSF photometry has an effective noise area
``4 pi sigma_psf**2`` pixels (0.4"/pixel); the error is the photon noise of the star (reference
flux plus the current difference flux) and of the sky in that area, divided by the transparency
(fluxes are scaled back to the reference image's), plus a floor of 0.3% of the star's flux.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from model.simulation.sites import PIXEL_SCALE_ARCSEC

F64 = npt.NDArray[np.float64]

FLOOR_FRACTION: Final = 0.003
#: Conditions that define a star's "typical" error, which class amplitudes are scaled to.
TYPICAL_SKY_ADU: Final = 1000.0
TYPICAL_FWHM_ARCSEC: Final = 1.5


def noise_area_pixels(fwhm: F64 | float) -> F64:
    """Effective number of pixels of PSF-fit photometry for seeing ``fwhm`` (arcsec)."""
    sigma_pixels = np.asarray(fwhm) / (2.3548 * PIXEL_SCALE_ARCSEC)
    return np.asarray(4.0 * np.pi * sigma_pixels**2, dtype=np.float64)


def flux_sigma(total_flux: F64, sky: F64, fwhm: F64, transparency: F64) -> F64:
    """One-sigma flux error (DIA units) of a star of ``total_flux`` on ``sky`` (ADU/pixel)."""
    counts = np.clip(total_flux, 0.0, None) * transparency + sky * noise_area_pixels(fwhm)
    photon = np.sqrt(counts) / transparency
    return np.hypot(photon, FLOOR_FRACTION * np.abs(total_flux))


def typical_sigma(ref_flux: float) -> float:
    """Error of a star of ``ref_flux`` in typical conditions (dark sky, 1.5" seeing, clear)."""
    one = np.ones(1)
    return float(
        flux_sigma(ref_flux * one, TYPICAL_SKY_ADU * one, TYPICAL_FWHM_ARCSEC * one, one)[0]
    )


def psf_quality(rng: np.random.Generator, fwhm: F64) -> F64:
    """PSF fit quality 0-100 (3 points of noise): ~100 in 1" seeing, ~70 at 2", ~27 at 3"."""
    quality = 100.0 * np.exp(-0.3 * np.clip(fwhm - 0.9, 0.0, None) ** 2)
    return np.clip(quality + rng.normal(0.0, 3.0, len(fwhm)), 0.0, 100.0)
