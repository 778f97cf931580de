"""From a star's noiseless signal and its field's frames to a measured light curve.

The reported ``flux_err`` is :func:`model.simulation.noise.flux_sigma` of the star's current
total flux in the frame's conditions; the actual scatter is ``error_scale`` times larger
(KMTNet errors are underestimated, differently per site). V-band points use the same model
with every flux multiplied by the star's V/I flux ratio.

Per-star measurement details: the PSF width at the star is the frame's seeing times a factor
for its place on the chip; the measured FWHM and sky carry 2% / 1% noise; PSF quality (0-100)
falls with seeing. A ``bad_point_fraction`` of the points get one defect that LensNet's
cleaning (§5.2) must remove: negative flux_err, PSF quality outside 0-100, negative FWHM, or
NaN flux / sky; an ``outlier_fraction`` get a large but valid-looking flux excursion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.seasons.archive import Dataset, quantize
from model.simulation.behaviour import Behaviour, Conditions
from model.simulation.noise import flux_sigma, psf_quality
from model.simulation.schedule import FrameSeries

F64 = npt.NDArray[np.float64]

#: Defect kinds given to bad points, in the order their codes are drawn.
DEFECTS: Final = (
    "negative_flux_err",
    "psf_quality_out_of_range",
    "negative_fwhm",
    "nan_flux",
    "nan_sky",
)


@dataclass(frozen=True)
class StarOptics:
    """How one star is measured: PSF width factor (chip position), extra background from
    unresolved neighbours (ADU/pixel), V/I flux ratio, and per-site flux offsets (DIA reference
    mismatch, DIA units) and error underestimation factors, in SITES order."""

    psf_factor: float
    crowding_adu: float
    v_ratio: float
    offsets: tuple[float, float, float]
    error_scales: tuple[float, float, float]


def observe(
    rng: np.random.Generator,
    frames: FrameSeries,
    site_index: int,
    behaviour: Behaviour,
    optics: StarOptics,
    *,
    bad_point_fraction: float,
    outlier_fraction: float,
) -> tuple[Dataset, F64, dict[str, int]]:
    """Measure one star on every frame of ``frames``.

    Returns
    -------
    dataset : the measured light curve, rounded as the native format keeps it.
    signal : noiseless I-band difference flux at each frame, shape (N,) (for the rise window).
    counts : number of points given each defect (``DEFECTS``) and ``outliers``.
    """
    n = len(frames)
    fwhm = frames.fwhm * optics.psf_factor
    sky = frames.sky + optics.crowding_adu
    conditions = Conditions(
        site=frames.site,
        hjd=frames.hjd,
        fwhm=fwhm,
        sky=sky,
        airmass=frames.airmass,
        hour_angle=frames.hour_angle,
    )
    signal = behaviour.signal(conditions)
    band_scale = np.where(frames.band == 1, optics.v_ratio, 1.0)
    difference = (signal + optics.offsets[site_index]) * band_scale
    sigma = flux_sigma((behaviour.ref_flux + signal) * band_scale, sky, fwhm, frames.transparency)
    scatter = sigma * optics.error_scales[site_index]
    flux = difference + rng.normal(0.0, 1.0, n) * scatter
    outliers = rng.uniform(size=n) < outlier_fraction
    flux[outliers] += rng.normal(0.0, 8.0, int(outliers.sum())) * scatter[outliers]

    flux_err = sigma.copy()
    fwhm_measured = fwhm * (1.0 + 0.02 * rng.standard_normal(n))
    sky_measured = sky * (1.0 + 0.01 * rng.standard_normal(n))
    quality = psf_quality(rng, fwhm_measured)
    defect = np.where(
        rng.uniform(size=n) < bad_point_fraction, rng.integers(0, len(DEFECTS), n), -1
    )
    flux_err[defect == 0] *= -1.0
    quality[defect == 1] = np.where(rng.uniform(size=int(np.sum(defect == 1))) < 0.5, -1.0, 999.0)
    fwhm_measured[defect == 2] = -1.0
    flux[defect == 3] = np.nan
    sky_measured[defect == 4] = np.nan
    counts = {name: int(np.sum(defect == code)) for code, name in enumerate(DEFECTS)}
    counts["outliers"] = int(outliers.sum())

    dataset = Dataset(
        site=frames.site,
        field=frames.field,
        hjd=frames.hjd,
        flux=flux,
        flux_err=flux_err,
        sky=sky_measured.astype(np.float32),
        fwhm=fwhm_measured.astype(np.float32),
        airmass=frames.airmass.astype(np.float32),
        psf_quality=quality.astype(np.float32),
        band=frames.band,
    )
    return quantize(dataset), signal, counts
