"""When each site observes each field, and in what conditions: the season's frame schedule.

Every star of a field shares its field's frames at a site (times, band, airmass, seeing, sky,
transparency), so a schedule is built once per (site, field) and cached. Conditions come from
per-site processes on a 5-minute grid shared by all fields of that site:

- Visibility: a frame is taken when the Sun is below ``sun_altitude_limit_deg`` and the field
  below ``airmass_limit``. The bulge (RA ~18h) is a pre-dawn target in February and an evening
  one in October, so the nightly windows shrink at the season's edges by themselves.
- Weather: whole nights lost as a two-state Markov chain (bad weather comes in spells) with the
  site's long-run loss fraction; some usable nights lose a 1-5 h block; thin cloud lowers the
  transparency, more so on partly lost nights.
- Seeing: a per-night log-normal level (correlated from night to night) times a smooth
  within-night variation (correlation time ~1 h), times ``airmass**0.6``; V frames ~8% wider.
- Sky (ADU/pixel): the site's dark level times an airmass term, plus twilight (rising steeply
  as the Sun nears the limit) and moonlight (phase, the Moon's altitude, its distance from the
  field; clouds scatter it). V frames see ~0.45 of the I-band sky.
- Cadence: a field with cadence c/h is visited every 1/c h (with jitter) while observable; one
  frame in ``v_every`` is a V frame, which takes an I frame's slot (a gap in the I series).
- Site calendar: each site starts its season ``site_start_days`` late and may close for a block
  of nights (``site_closure_*``), as the survey's sites do for maintenance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from model.simulation.config import SimulationConfig
from model.simulation.sites import (
    FIELD_BY_NUMBER,
    SITE_INFO,
    SiteInfo,
    altitude_deg,
    angular_distance_deg,
    hour_angle_deg,
    local_night,
    moon_radec,
    sun_radec,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]

GRID_STEP_DAYS: Final = 5.0 / 1440.0
SEEING_TIMESCALE_DAYS: Final = 1.0 / 24.0
#: Within-night scatter of ln(seeing) and the night-to-night correlation of its level.
SEEING_WITHIN_SIGMA: Final = 0.12
SEEING_NIGHT_CORRELATION: Final = 0.5
#: Probability that a lost night is followed by another, beyond the long-run fraction.
WEATHER_PERSISTENCE: Final = 0.6
V_SEEING_FACTOR: Final = 1.08
V_SKY_FACTOR: Final = 0.45
#: Stream tags of numpy SeedSequence entropy, so that every random stream is independent.
_SITE_STREAM: Final = 11
_FIELD_STREAM: Final = 12


@dataclass(frozen=True, eq=False)
class SiteConditions:
    """One site's processes on a regular grid (step :data:`GRID_STEP_DAYS`), shape (G,).

    ``is_open`` False where weather closes the dome; ``log_seeing`` ln(zenith seeing in arcsec);
    ``transparency`` 0-1.
    """

    site: SiteInfo
    t0: float
    is_open: Bool
    log_seeing: F64
    transparency: F64

    def index(self, hjd: F64) -> I64:
        """Grid index nearest to each time."""
        i = np.rint((hjd - self.t0) / GRID_STEP_DAYS).astype(np.int64)
        return np.clip(i, 0, len(self.is_open) - 1)


@dataclass(frozen=True, eq=False)
class FrameSeries:
    """Every frame one site takes of one field; arrays of shape (N,), time-sorted.

    ``hjd`` days; ``band`` 0 = I, 1 = V; ``airmass``; ``hour_angle`` hours; ``fwhm`` arcsec
    (the frame's seeing, before per-star PSF variations); ``sky`` ADU/pixel; ``transparency``
    0-1 (clouds); ``night`` local night number (``floor(hjd + longitude / 360)``).
    """

    site: str
    field: int
    hjd: F64
    band: U8
    airmass: F64
    hour_angle: F64
    fwhm: F64
    sky: F64
    transparency: F64
    night: I64

    def __len__(self) -> int:
        return len(self.hjd)


def _smooth_noise(rng: np.random.Generator, n: int, timescale_steps: float) -> F64:
    """Unit-variance noise with exponential correlation over ``timescale_steps`` grid steps."""
    length = max(int(5 * timescale_steps), 1)
    kernel = np.exp(-np.arange(length) / timescale_steps)
    kernel /= np.sqrt(np.sum(kernel**2))
    return np.convolve(rng.standard_normal(n + length - 1), kernel, mode="valid")


def _lost_nights(rng: np.random.Generator, n_nights: int, loss: float) -> Bool:
    """Two-state Markov chain of lost nights with stationary fraction ``loss``."""
    p_bad_after_bad = loss + WEATHER_PERSISTENCE * (1.0 - loss)
    p_bad_after_good = loss * (1.0 - WEATHER_PERSISTENCE)
    draws = rng.uniform(size=n_nights)
    lost = np.empty(n_nights, dtype=bool)
    state = bool(draws[0] < loss)
    for night in range(n_nights):  # a few hundred nights: a plain loop is clearest
        if night:
            state = bool(draws[night] < (p_bad_after_bad if state else p_bad_after_good))
        lost[night] = state
    return lost


@functools.lru_cache(maxsize=16)
def site_conditions(config: SimulationConfig, site_name: str) -> SiteConditions:
    """Weather, seeing and transparency of one site over the season (cached per config)."""
    site_index = SITES.index(site_name)
    site = SITE_INFO[site_name]
    rng = np.random.default_rng([config.seed, _SITE_STREAM, site_index])
    t0 = config.season_start_hjd - 1.0
    t = t0 + np.arange(0.0, config.season_days + 2.0, GRID_STEP_DAYS)
    night = local_night(t, site)
    night_index = night - night[0]
    n_nights = int(night_index[-1]) + 1
    lost = _lost_nights(rng, n_nights, config.weather_loss[site_index])
    partial = ~lost & (rng.uniform(size=n_nights) < config.partial_night_fraction[site_index])
    # Hours since local noon: the night runs from ~6 (18h) to ~18 (6h).
    local_hours = (t + site.longitude_deg / 360.0 - night) * 24.0
    block_centre = rng.uniform(7.0, 17.0, n_nights)[night_index]
    block_half = rng.uniform(0.5, 2.5, n_nights)[night_index]
    in_block = partial[night_index] & (np.abs(local_hours - block_centre) < block_half)
    is_open = ~lost[night_index] & ~in_block

    level = np.empty(n_nights)
    level[0] = rng.standard_normal()
    rho = SEEING_NIGHT_CORRELATION
    innovations = rng.standard_normal(n_nights) * np.sqrt(1.0 - rho * rho)
    for k in range(1, n_nights):
        level[k] = rho * level[k - 1] + innovations[k]
    timescale_steps = SEEING_TIMESCALE_DAYS / GRID_STEP_DAYS
    log_seeing = (
        np.log(site.seeing_median_arcsec)
        + site.seeing_night_sigma * level[night_index]
        + SEEING_WITHIN_SIGMA * _smooth_noise(rng, len(t), timescale_steps)
    )

    cloud_level = np.where(
        partial, rng.uniform(0.1, 0.4, n_nights), 0.03 * rng.exponential(1.0, n_nights)
    )
    cloud = cloud_level[night_index] * np.exp(0.5 * _smooth_noise(rng, len(t), timescale_steps))
    transparency = np.clip(1.0 - cloud, 0.3, 1.0)
    return SiteConditions(site, t0, is_open, log_seeing, transparency)


def sky_background(
    hjd: F64, airmass: F64, transparency: F64, ra_deg: float, dec_deg: float, site: SiteInfo
) -> F64:
    """I-band sky, ADU/pixel: dark sky x airmass term + twilight + scattered moonlight."""
    sun_ra, sun_dec = sun_radec(hjd)
    sun_alt = altitude_deg(hjd, sun_ra, sun_dec, site)
    dark = site.sky_dark_adu * (0.6 + 0.4 * airmass)
    # ~2.4 mag brighter at the -12 deg limit than at astronomical night (-18 deg).
    twilight = site.sky_dark_adu * (10.0 ** (0.16 * np.clip(sun_alt + 18.0, 0.0, None)) - 1.0)
    moon_ra, moon_dec = moon_radec(hjd)
    moon_alt = altitude_deg(hjd, moon_ra, moon_dec, site)
    elongation = angular_distance_deg(moon_ra, moon_dec, sun_ra, sun_dec)
    illuminated = 0.5 * (1.0 - np.cos(np.radians(elongation)))
    separation = angular_distance_deg(moon_ra, moon_dec, ra_deg, dec_deg)
    moon = (
        site.sky_dark_adu
        * 3.0
        * illuminated**2
        * np.sqrt(np.clip(np.sin(np.radians(moon_alt)), 0.0, None))
        * (1.0 + 3.0 * np.exp(-separation / 10.0))
        * (1.0 + 2.0 * (1.0 - transparency))
    )
    return dark + twilight + moon


@functools.lru_cache(maxsize=512)
def frame_series(config: SimulationConfig, site_name: str, field_number: int) -> FrameSeries:
    """Every frame ``site_name`` takes of field ``field_number`` in the season (cached)."""
    site_index = SITES.index(site_name)
    site = SITE_INFO[site_name]
    field = FIELD_BY_NUMBER[field_number]
    conditions = site_conditions(config, site_name)
    rng = np.random.default_rng([config.seed, _FIELD_STREAM, site_index, field_number])
    step = 1.0 / (24.0 * field.cadence_per_hour)
    k = np.arange(int(config.season_days / step) + 1)
    t = config.season_start_hjd + rng.uniform(0.0, step) + k * step
    t = t + rng.uniform(-0.15, 0.15, len(t)) * step  # queue order shifts a visit by minutes
    t = t[(t >= config.season_start_hjd) & (t < config.season_end_hjd)]
    sun_ra, sun_dec = sun_radec(t)
    sun_alt = altitude_deg(t, sun_ra, sun_dec, site)
    field_alt = altitude_deg(t, field.ra_deg, field.dec_deg, site)
    airmass = 1.0 / np.sin(np.radians(np.clip(field_alt, 1.0, None)))
    grid = conditions.index(t)
    day = t - config.season_start_hjd
    closure = config.site_closure_start_days[site_index]
    keep = (
        (sun_alt < config.sun_altitude_limit_deg)
        & (field_alt > 0.0)
        & (airmass < config.airmass_limit)
        & conditions.is_open[grid]
        & (day >= config.site_start_days[site_index])
        & ~((day >= closure) & (day < closure + config.site_closure_days[site_index]))
    )
    t, airmass, grid = t[keep], airmass[keep], grid[keep]
    v_every = config.v_every[site_index]
    band = (((np.arange(len(t)) + rng.integers(v_every)) % v_every) == 0).astype(np.uint8)
    is_v = band == 1
    transparency = conditions.transparency[grid]
    fwhm = np.exp(conditions.log_seeing[grid]) * airmass**0.6
    fwhm = np.where(is_v, fwhm * V_SEEING_FACTOR, fwhm)
    sky = sky_background(t, airmass, transparency, field.ra_deg, field.dec_deg, site)
    sky = np.where(is_v, sky * V_SKY_FACTOR, sky)
    return FrameSeries(
        site=site_name,
        field=field_number,
        hjd=t,
        band=band,
        airmass=airmass,
        hour_angle=hour_angle_deg(t, field.ra_deg, site.longitude_deg) / 15.0,
        fwhm=fwhm,
        sky=sky,
        transparency=transparency,
        night=local_night(t, site),
    )
