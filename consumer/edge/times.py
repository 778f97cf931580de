"""Times and positions for people: HJD to UTC, and RA/Dec in sexagesimal.

Observers scan an alert by its trigger time and point by its coordinates. HJD is the time the
light reached the Sun; a clock on Earth read it up to 8.3 minutes earlier or later, depending on
where the star is seen relative to the Sun: ``JD = HJD + (R / c) cos θ``, with ``R`` the
Earth-Sun distance and ``θ`` the angle between the star and the Sun. The Sun's position comes
from the low-precision formulae of the Astronomical Almanac (0.01°, good for 1950-2050), so
the UTC is right to a second or so (HJD is taken on the UTC scale, as KMTNet publishes it).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final

#: Julian date of the Unix epoch, 1970-01-01T00:00 UTC.
UNIX_EPOCH_JD: Final = 2440587.5
#: Light time for one astronomical unit, days (499.005 s).
AU_LIGHT_DAYS: Final = 499.004784 / 86400.0


def sun_direction(jd: float) -> tuple[float, float, float, float]:
    """Unit vector (x, y, z, equatorial J2000-ish) from the Earth to the Sun, and the distance
    in AU, at Julian date ``jd``."""
    n = jd - 2451545.0
    mean_longitude = math.radians((280.460 + 0.9856474 * n) % 360.0)
    anomaly = math.radians((357.528 + 0.9856003 * n) % 360.0)
    longitude = (
        mean_longitude
        + math.radians(1.915) * math.sin(anomaly)
        + math.radians(0.020) * math.sin(2 * anomaly)
    )
    distance = 1.00014 - 0.01671 * math.cos(anomaly) - 0.00014 * math.cos(2 * anomaly)
    obliquity = math.radians(23.439 - 0.0000004 * n)
    return (
        math.cos(longitude),
        math.cos(obliquity) * math.sin(longitude),
        math.sin(obliquity) * math.sin(longitude),
        distance,
    )


def jd_from_hjd(hjd: float, ra_deg: float, dec_deg: float) -> float:
    """Julian date on Earth of an event at heliocentric ``hjd`` of a star at (RA, Dec) in
    degrees. Without a position (NaN) the HJD itself (an error of at most 8.3 minutes)."""
    if not (math.isfinite(ra_deg) and math.isfinite(dec_deg)):
        return hjd
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    star = (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))
    x, y, z, distance = sun_direction(hjd)
    cos_angle = star[0] * x + star[1] * y + star[2] * z
    return hjd + AU_LIGHT_DAYS * distance * cos_angle


def utc_from_hjd(hjd: float, ra_deg: float = math.nan, dec_deg: float = math.nan) -> datetime:
    """The UTC moment of heliocentric ``hjd`` seen from Earth (see the module docstring)."""
    jd = jd_from_hjd(hjd, ra_deg, dec_deg)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=jd - UNIX_EPOCH_JD)


def sexagesimal_ra(ra_deg: float) -> str:
    """Right ascension as ``hh:mm:ss.s`` (``-`` when unknown)."""
    if not math.isfinite(ra_deg):
        return "-"
    tenths = round((ra_deg % 360.0) / 15.0 * 36000)
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    return f"{hours % 24:02d}:{minutes:02d}:{rest / 10:04.1f}"


def sexagesimal_dec(dec_deg: float) -> str:
    """Declination as ``±dd:mm:ss`` (``-`` when unknown)."""
    if not math.isfinite(dec_deg):
        return "-"
    sign = "-" if dec_deg < 0 else "+"
    seconds = round(abs(dec_deg) * 3600)
    degrees, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{degrees:02d}:{minutes:02d}:{seconds:02d}"
