"""Settings of the season simulator: one frozen, hashable object passed to every stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consumer.exceptions import ConfigError

#: Class names, in the order of :attr:`SimulationConfig.class_fractions`.
CLASSES: Final = ("YES", "MAYBE", "NO")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Everything is deterministic given these values.

    Attributes
    ----------
    n_stars : stars in the season.
    seed : root of every random stream (schedules, weather and each star have their own).
    season_start_hjd : first night's date, full HJD (2461072.5 = 2026 Feb 1, 0h UT).
    season_days : season length, days (Feb-Sep/Oct: the bulge is up at night).
    class_fractions : probabilities of YES, MAYBE, NO (normalised).
    yes_subclasses, maybe_subclasses, no_subclasses : (name, probability) pairs per class.
    airmass_limit : frames are taken only below this airmass.
    sun_altitude_limit_deg : frames are taken only with the Sun below this altitude.
    v_every : per site (SITES order), one frame in this many is a V frame (nominal 1:9 I:V).
    weather_loss : per site, the long-run fraction of nights lost entirely to weather.
    partial_night_fraction : per site, the fraction of usable nights losing a 1-5 h block.
    tier_weights : probability that a star lies in a field of each cadence tier
        (2/h, 1/h, 0.4/h, 0.2/h); stars of the 2/h tier are in an overlapping pair of fields
        (combined 4/h) with probability ``overlap_fraction``.
    overlap_fraction : see ``tier_weights``.
    bad_point_fraction : observations given a defect that cleaning must remove (negative
        flux_err, PSF quality outside 0-100, negative FWHM, NaN).
    outlier_fraction : observations given a large, otherwise valid, flux outlier.
    min_peak_snr : YES events are redrawn until their peak excess is this many typical
        errors, so that they are plausible AlertFinder candidates.
    """

    n_stars: int = 2000
    seed: int = 1
    season_start_hjd: float = 2_461_072.5
    season_days: float = 240.0
    class_fractions: tuple[float, float, float] = (0.3, 0.2, 0.5)
    yes_subclasses: tuple[tuple[str, float], ...] = (
        ("pspl", 0.75),
        ("binary", 0.15),
        ("planetary", 0.10),
    )
    maybe_subclasses: tuple[tuple[str, float], ...] = (
        ("bleed_trail", 0.40),
        ("diffraction_spike", 0.35),
        ("ghost", 0.25),
    )
    no_subclasses: tuple[tuple[str, float], ...] = (
        ("noise_run", 0.20),
        ("long_period_variable", 0.15),
        ("irregular_variable", 0.15),
        ("cv_outburst", 0.10),
        ("flare", 0.10),
        ("airmass_trend", 0.10),
        ("sky_trend", 0.10),
        ("single_site_drift", 0.10),
    )
    airmass_limit: float = 2.0
    sun_altitude_limit_deg: float = -12.0
    v_every: tuple[int, int, int] = (10, 10, 12)
    weather_loss: tuple[float, float, float] = (0.15, 0.30, 0.35)
    partial_night_fraction: tuple[float, float, float] = (0.15, 0.25, 0.25)
    tier_weights: tuple[float, float, float, float] = (0.15, 0.30, 0.30, 0.25)
    overlap_fraction: float = 0.5
    bad_point_fraction: float = 0.01
    outlier_fraction: float = 0.002
    min_peak_snr: float = 8.0

    def __post_init__(self) -> None:
        if self.n_stars < 0 or self.n_stars >= 10**7:
            raise ConfigError(f"n_stars must be in [0, 1e7), got {self.n_stars}")
        if self.season_days <= 0:
            raise ConfigError(f"season_days must be positive, got {self.season_days}")
        for name in ("class_fractions", "tier_weights"):
            values = getattr(self, name)
            if min(values) < 0 or sum(values) <= 0:
                raise ConfigError(f"{name} must be non-negative with a positive sum: {values}")

    @property
    def season_end_hjd(self) -> float:
        return self.season_start_hjd + self.season_days
