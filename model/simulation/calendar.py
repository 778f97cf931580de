"""Seasons that differ the way real ones do: site calendars, weather, cadence mix and coverage.

One seed gives one season: the survey's three sites open on different dates, a site may close
for weeks, weather losses and the mix of cadence tiers change, and some stars are seen by only
one or two sites. Training, validation and test use disjoint seeds, so the test seasons share
no frames, nights, weather or schedule with anything the model was trained or selected on.
"""

from __future__ import annotations

import numpy as np

from model.simulation.config import SimulationConfig

#: Stream tag of a season's calendar draws (independent of the star and schedule streams).
_CALENDAR_STREAM = 17


def season_config(seed: int, n_stars: int) -> SimulationConfig:
    """A season with its own calendar, drawn from ``seed``.

    - Site start: the first site opens 0-10 days into the season, the others up to 35 days
      later (in random order).
    - Closure: with probability 1/2, one site closes for 7-40 nights, 20-200 days in.
    - Weather: each site's lost-night fraction is scaled by 0.6-1.5 (at most 0.6).
    - Cadence tiers (2, 1, 0.4, 0.2, 0.1 frames/h): weights drawn around the default mix.
    - Coverage: 70-95 % of stars are seen by three sites, the rest by two or one.
    """
    rng = np.random.default_rng([seed, _CALENDAR_STREAM])
    default = SimulationConfig()
    starts = np.sort(np.concatenate([[rng.uniform(0.0, 10.0)], rng.uniform(0.0, 35.0, 2)]))
    starts = starts[rng.permutation(3)]
    closure_start = np.zeros(3)
    closure_days = np.zeros(3)
    if rng.uniform() < 0.5:
        site = int(rng.integers(3))
        closure_start[site] = rng.uniform(20.0, 200.0)
        closure_days[site] = rng.uniform(7.0, 40.0)
    weather = np.minimum(np.asarray(default.weather_loss) * rng.uniform(0.6, 1.5, 3), 0.6)
    tiers = rng.dirichlet(8.0 * np.asarray(default.tier_weights) + 0.5)
    three = rng.uniform(0.70, 0.95)
    two = (1.0 - three) * rng.uniform(0.4, 0.8)
    return SimulationConfig(
        n_stars=n_stars,
        seed=seed,
        weather_loss=(float(weather[0]), float(weather[1]), float(weather[2])),
        tier_weights=tuple(float(w) for w in tiers),  # type: ignore[arg-type]
        site_start_days=(float(starts[0]), float(starts[1]), float(starts[2])),
        site_closure_start_days=(
            float(closure_start[0]),
            float(closure_start[1]),
            float(closure_start[2]),
        ),
        site_closure_days=(float(closure_days[0]), float(closure_days[1]), float(closure_days[2])),
        site_coverage=(float(three), float(two), float(1.0 - three - two)),
    )
