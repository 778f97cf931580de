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
        (2/h, 1/h, 0.4/h, 0.2/h, 0.1/h ~ one point a night); stars of the 2/h tier are in an
        overlapping pair of fields (combined 4/h) with probability ``overlap_fraction``.
    overlap_fraction : see ``tier_weights``.
    site_start_days : per site, days after ``season_start_hjd`` before its first frame (sites
        open their seasons on different dates).
    site_closure_start_days, site_closure_days : per site, a block of nights with no frames at
        all (a dome or camera repair), starting that many days into the season; 0 days: none.
    site_coverage : probabilities that a star is seen by 3, 2 or 1 sites (a star outside the
        overlap of the sites' fields, or on a dead chip at one site).
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
        ("mira", 0.08),
        ("semiregular", 0.07),
        ("osarg", 0.06),
        ("rr_lyrae", 0.06),
        ("cepheid", 0.05),
        ("eclipsing_binary", 0.05),
        ("contact_binary", 0.05),
        ("ellipsoidal", 0.05),
        ("dwarf_nova", 0.08),
        ("flare", 0.06),
        ("irregular_variable", 0.06),
        ("slow_trend", 0.06),
        ("constant", 0.06),
        ("noise_run", 0.06),
        ("airmass_trend", 0.05),
        ("sky_trend", 0.05),
        ("single_site_drift", 0.05),
    )
    airmass_limit: float = 2.0
    sun_altitude_limit_deg: float = -12.0
    v_every: tuple[int, int, int] = (10, 10, 12)
    weather_loss: tuple[float, float, float] = (0.15, 0.30, 0.35)
    partial_night_fraction: tuple[float, float, float] = (0.15, 0.25, 0.25)
    tier_weights: tuple[float, float, float, float, float] = (0.15, 0.30, 0.25, 0.20, 0.10)
    overlap_fraction: float = 0.5
    site_start_days: tuple[float, float, float] = (0.0, 0.0, 0.0)
    site_closure_start_days: tuple[float, float, float] = (0.0, 0.0, 0.0)
    site_closure_days: tuple[float, float, float] = (0.0, 0.0, 0.0)
    site_coverage: tuple[float, float, float] = (0.85, 0.10, 0.05)
    bad_point_fraction: float = 0.01
    outlier_fraction: float = 0.002
    min_peak_snr: float = 8.0

    def __post_init__(self) -> None:
        if self.n_stars < 0 or self.n_stars >= 10**7:
            raise ConfigError(f"n_stars must be in [0, 1e7), got {self.n_stars}")
        if self.season_days <= 0:
            raise ConfigError(f"season_days must be positive, got {self.season_days}")
        if len(self.tier_weights) != 5:
            raise ConfigError(f"tier_weights needs 5 values, got {self.tier_weights}")
        for name in ("class_fractions", "tier_weights", "site_coverage"):
            values = getattr(self, name)
            if min(values) < 0 or sum(values) <= 0:
                raise ConfigError(f"{name} must be non-negative with a positive sum: {values}")

    @property
    def season_end_hjd(self) -> float:
        return self.season_start_hjd + self.season_days
