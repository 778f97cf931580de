"""KMTNet sites and bulge fields, and the low-precision ephemerides the schedule needs.

Angles in degrees, times as JD (HJD is treated as JD: the difference, below 8.3 min, does not
matter for when a field is up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PIXEL_SCALE_ARCSEC: Final = 0.4
CHIP_PIXELS: Final = 9216
CHIP_DEG: Final = CHIP_PIXELS * PIXEL_SCALE_ARCSEC / 3600.0


@dataclass(frozen=True)
class SiteInfo:
    """A KMTNet site: location (deg, east positive) and its typical conditions."""

    name: str
    longitude_deg: float
    latitude_deg: float
    seeing_median_arcsec: float  # at zenith
    seeing_night_sigma: float  # night-to-night scatter of ln(seeing)
    sky_dark_adu: float  # I-band dark sky at zenith, ADU per pixel per frame


SITE_INFO: Final = {
    "CTIO": SiteInfo("CTIO", -70.815, -30.165, 1.15, 0.22, 700.0),
    "SAAO": SiteInfo("SAAO", 20.811, -32.379, 1.45, 0.25, 850.0),
    "SSO": SiteInfo("SSO", 149.066, -31.277, 1.75, 0.28, 1000.0),
}


@dataclass(frozen=True)
class FieldInfo:
    """A bulge field: number, centre (deg) and cadence per site (frames per hour)."""

    number: int
    ra_deg: float
    dec_deg: float
    cadence_per_hour: float
    partner: int  # the field overlapping this one (combined cadence doubles); -1 if none


def galactic_to_equatorial(l_deg: float, b_deg: float) -> tuple[float, float]:
    """(RA, Dec) in degrees (J2000) of galactic (l, b) in degrees."""
    ra_ngp, dec_ngp, l_ncp = np.radians([192.85948, 27.12825, 122.93192])
    lr, br = np.radians(l_deg), np.radians(b_deg)
    sin_dec = np.sin(dec_ngp) * np.sin(br) + np.cos(dec_ngp) * np.cos(br) * np.cos(l_ncp - lr)
    y = np.cos(br) * np.sin(l_ncp - lr)
    x = np.cos(dec_ngp) * np.sin(br) - np.sin(dec_ngp) * np.cos(br) * np.cos(l_ncp - lr)
    ra = np.degrees(ra_ngp + np.arctan2(y, x)) % 360.0
    return float(ra), float(np.degrees(np.arcsin(sin_dec)))


#: Approximate KMTNet bulge fields as (number, galactic l, galactic b, frames per hour per
#: site, overlapping partner or -1): tiers 2/h (overlapping pairs 01/41, 02/42, 03/43 give a
#: combined 4/h), 1/h, 0.4/h, 0.2/h and 0.1/h (about one point a night, like the survey's
#: outer fields and other surveys' nightly photometry). Not the survey's exact footprint, but
#: its structure.
_FIELD_TABLE: Final = (
    (1, -2.0, -3.0, 2.0, 41),
    (41, -1.6, -2.7, 2.0, 1),
    (2, 0.0, -3.0, 2.0, 42),
    (42, 0.4, -2.7, 2.0, 2),
    (3, 2.0, -3.0, 2.0, 43),
    (43, 2.4, -2.7, 2.0, 3),
    (4, 4.0, -3.0, 1.0, -1),
    (14, 4.0, -1.0, 1.0, -1),
    (15, 2.0, -1.0, 1.0, -1),
    (16, 0.0, -1.0, 1.0, -1),
    (17, -2.0, -1.0, 1.0, -1),
    (18, -4.0, -1.0, 1.0, -1),
    (19, -4.0, -3.0, 1.0, -1),
    (22, 0.0, -5.0, 1.0, -1),
    (11, 6.0, -3.0, 0.4, -1),
    (12, 6.0, -1.0, 0.4, -1),
    (13, -6.0, -3.0, 0.4, -1),
    (20, -2.0, -5.0, 0.4, -1),
    (21, 2.0, -5.0, 0.4, -1),
    (31, 4.0, 1.5, 0.4, -1),
    (32, 0.0, 1.5, 0.4, -1),
    (33, -4.0, 1.5, 0.4, -1),
    (5, 8.0, -3.0, 0.2, -1),
    (6, 8.0, -5.0, 0.2, -1),
    (7, 6.0, -5.0, 0.2, -1),
    (8, 4.0, -5.0, 0.2, -1),
    (9, -4.0, -5.0, 0.2, -1),
    (10, -6.0, -5.0, 0.2, -1),
    (34, 8.0, 1.5, 0.2, -1),
    (35, -8.0, 1.5, 0.2, -1),
    (36, -8.0, -3.0, 0.2, -1),
    (37, 6.0, -7.0, 0.2, -1),
    (38, -6.0, -7.0, 0.2, -1),
    (24, 10.0, -3.0, 0.1, -1),
    (25, -10.0, -3.0, 0.1, -1),
    (26, 10.0, -5.0, 0.1, -1),
    (27, -10.0, -5.0, 0.1, -1),
)
FIELDS: Final = tuple(
    FieldInfo(number, *galactic_to_equatorial(lon, lat), cadence, partner)
    for number, lon, lat, cadence, partner in _FIELD_TABLE
)
FIELD_BY_NUMBER: Final = {f.number: f for f in FIELDS}
#: Cadence of each tier of :attr:`SimulationConfig.tier_weights`, frames per hour.
TIER_CADENCES: Final = (2.0, 1.0, 0.4, 0.2, 0.1)


# ------------------------------------------------------------------------------- ephemerides


def _days_since_j2000(jd: F64) -> F64:
    return jd - 2_451_545.0


def sun_radec(jd: F64) -> tuple[F64, F64]:
    """Sun's (RA, Dec) in degrees, ~1 arcmin (Astronomical Almanac low-precision formulae)."""
    n = _days_since_j2000(jd)
    g = np.radians(357.528 + 0.9856003 * n)
    lam = np.radians(280.460 + 0.9856474 * n + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    eps = np.radians(23.439 - 4e-7 * n)
    ra = np.degrees(np.arctan2(np.cos(eps) * np.sin(lam), np.cos(lam)))
    return ra, np.degrees(np.arcsin(np.sin(eps) * np.sin(lam)))


def moon_radec(jd: F64) -> tuple[F64, F64]:
    """Moon's (RA, Dec) in degrees, ~1 degree (main terms only; enough for sky brightness)."""
    n = _days_since_j2000(jd)
    lam = np.radians(218.316 + 13.176396 * n + 6.289 * np.sin(np.radians(134.963 + 13.064993 * n)))
    beta = np.radians(5.128 * np.sin(np.radians(93.272 + 13.229350 * n)))
    eps = np.radians(23.439)
    ra = np.arctan2(np.sin(lam) * np.cos(eps) - np.tan(beta) * np.sin(eps), np.cos(lam))
    dec = np.arcsin(np.sin(beta) * np.cos(eps) + np.cos(beta) * np.sin(eps) * np.sin(lam))
    return np.degrees(ra), np.degrees(dec)


def hour_angle_deg(jd: F64, ra_deg: F64 | float, longitude_deg: float) -> F64:
    """Local hour angle in degrees, wrapped to [-180, 180)."""
    gmst = 280.46061837 + 360.98564736629 * _days_since_j2000(jd)
    return (gmst + longitude_deg - ra_deg + 180.0) % 360.0 - 180.0


def altitude_deg(jd: F64, ra_deg: F64 | float, dec_deg: F64 | float, site: SiteInfo) -> F64:
    """Altitude in degrees of a target at (RA, Dec) seen from ``site``."""
    ha = np.radians(hour_angle_deg(jd, ra_deg, site.longitude_deg))
    lat, dec = np.radians(site.latitude_deg), np.radians(dec_deg)
    sin_alt = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha)
    return np.degrees(np.arcsin(np.clip(sin_alt, -1.0, 1.0)))


def angular_distance_deg(ra1: F64, dec1: F64, ra2: F64 | float, dec2: F64 | float) -> F64:
    """Great-circle distance in degrees."""
    r1, d1, r2, d2 = np.radians(ra1), np.radians(dec1), np.radians(ra2), np.radians(dec2)
    cos_d = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0)))


def local_night(hjd: F64, site: SiteInfo) -> I64:
    """Local night number: constant from one local noon to the next."""
    return np.floor(hjd + site.longitude_deg / 360.0).astype(np.int64)
