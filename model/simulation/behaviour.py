"""What every light-curve class produces, and the helpers the class modules share.

A class draw returns a :class:`Behaviour`: the true parameters, the reference flux of the
catalogue star (which sets its photon noise), and a noiseless signal function. The signal is
the difference flux in I-band DIA units that the star shows under given observing conditions;
artefacts read the conditions (seeing, sky, airmass, hour angle, site), astrophysical signals
only the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.seasons.archive import MAG_ZERO_POINT

F64 = npt.NDArray[np.float64]

#: Conditions at which artefact amplitudes are normalised (median-ish seeing, sky, airmass).
REFERENCE_FWHM_ARCSEC: Final = 1.5
REFERENCE_SKY_ADU: Final = 1000.0
REFERENCE_AIRMASS: Final = 1.2
#: Seeing of the DIA reference image (built from the best frames).
REFERENCE_IMAGE_FWHM_ARCSEC: Final = 1.2


@dataclass(frozen=True, eq=False)
class Conditions:
    """Observing conditions at each observation of one dataset; arrays of shape (N,).

    ``hjd`` days; ``fwhm`` arcsec (seeing at the star); ``sky`` ADU/pixel; ``airmass``;
    ``hour_angle`` hours.
    """

    site: str
    hjd: F64
    fwhm: F64
    sky: F64
    airmass: F64
    hour_angle: F64


SignalFunction = Callable[[Conditions], F64]


@dataclass(frozen=True, eq=False)
class Behaviour:
    """One star's drawn behaviour.

    Attributes
    ----------
    subclass : e.g. "pspl", "bleed_trail", "flare".
    params : true parameters (floats; times as full HJD, fluxes in DIA units).
    ref_flux : flux of the catalogue star in the reference image (DIA units, > 0).
    signal : noiseless difference flux (I band, DIA units) under given conditions, shape (N,).
    uses_conditions : the signal reads seeing, sky, airmass or hour angle (artefacts, trends),
        not only the time and site.
    """

    subclass: str
    params: dict[str, float]
    ref_flux: float
    signal: SignalFunction
    uses_conditions: bool = False


@dataclass(frozen=True)
class SeasonWindow:
    """The season a class draws its times in, and the detectability bar for YES events."""

    start_hjd: float
    end_hjd: float
    min_peak_snr: float

    @property
    def days(self) -> float:
        return self.end_hjd - self.start_hjd


def flux_of_mag(mag: float) -> float:
    """DIA flux of an I-band magnitude, with the archive's zero point (I = 19 -> 6310)."""
    return float(10.0 ** (0.4 * (MAG_ZERO_POINT - mag)))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def reference_conditions(window: SeasonWindow, site: str = "CTIO", n: int = 4000) -> Conditions:
    """A dense, evenly sampled season in constant reference conditions (for normalising)."""
    return conditions_at(np.linspace(window.start_hjd, window.end_hjd, n), site)


def conditions_at(hjd: F64, site: str) -> Conditions:
    """Constant reference conditions at the times ``hjd``: what drives an artefact, without
    the seeing, sky and airmass that modulate it."""
    n = len(hjd)
    return Conditions(
        site=site,
        hjd=hjd,
        fwhm=np.full(n, REFERENCE_FWHM_ARCSEC),
        sky=np.full(n, REFERENCE_SKY_ADU),
        airmass=np.full(n, REFERENCE_AIRMASS),
        hour_angle=np.zeros(n),
    )


def peak_excess(values: F64) -> float:
    """Height of the highest value above the median (0 for an empty or flat array)."""
    if len(values) == 0:
        return 0.0
    return float(np.max(values) - np.median(values))


def lpv_flux_ratio(t: F64, t_max: float, period: float, amplitude_mag: float) -> F64:
    """Brightness of a long-period variable relative to its mean-magnitude level, shape of t.

    Sinusoidal in magnitude, brightest at ``t_max`` (``amplitude_mag`` peak to peak).
    """
    delta_mag = -0.5 * amplitude_mag * np.cos(2.0 * np.pi * (t - t_max) / period)
    return np.asarray(10.0 ** (-0.4 * delta_mag), dtype=np.float64)
