"""HJD to UTC and sexagesimal coordinates for the alert table (newcomer item 6)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.edge.times import (
    AU_LIGHT_DAYS,
    UNIX_EPOCH_JD,
    jd_from_hjd,
    sexagesimal_dec,
    sexagesimal_ra,
    sun_direction,
    utc_from_hjd,
)

MINUTE = 1 / 1440


def jd_of(moment: datetime) -> float:
    return UNIX_EPOCH_JD + moment.timestamp() / 86400


def test_the_sun_is_at_the_vernal_equinox_in_march_2024() -> None:
    x, y, z, distance = sun_direction(jd_of(datetime(2024, 3, 20, 3, 6, tzinfo=UTC)))
    assert math.degrees(math.atan2(y, x)) == pytest.approx(0.0, abs=0.02)
    assert z == pytest.approx(0.0, abs=0.001)
    assert distance == pytest.approx(0.9960, abs=0.0005)  # Almanac: 0.99602 AU


def test_a_star_beside_the_sun_is_seen_later_on_earth_and_one_opposite_earlier() -> None:
    hjd = jd_of(datetime(2024, 3, 20, 3, 6, tzinfo=UTC))  # Sun at RA 0, Dec 0
    beside = jd_from_hjd(hjd, 0.0, 0.0)
    opposite = jd_from_hjd(hjd, 180.0, 0.0)
    assert (beside - hjd) == pytest.approx(AU_LIGHT_DAYS * 0.996, rel=1e-3)  # +8.28 min
    assert (opposite - hjd) == pytest.approx(-AU_LIGHT_DAYS * 0.996, rel=1e-3)
    assert jd_from_hjd(hjd, 90.0, 0.0) == pytest.approx(hjd, abs=0.02 * MINUTE)  # 90° away


@given(
    hjd=st.floats(2_458_000, 2_462_000),
    ra=st.floats(0, 360),
    dec=st.floats(-90, 90),
)
def test_the_correction_never_exceeds_the_light_time_across_the_orbit(
    hjd: float, ra: float, dec: float
) -> None:
    assert abs(jd_from_hjd(hjd, ra, dec) - hjd) <= 8.4 * MINUTE


def test_utc_of_an_hjd_without_position_is_the_hjd_itself() -> None:
    assert utc_from_hjd(2460000.5) == datetime(2023, 2, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ra", "text"),
    [(268.5, "17:54:00.0"), (0.0, "00:00:00.0"), (359.99999, "00:00:00.0"), (math.nan, "-")],
)
def test_sexagesimal_ra(ra: float, text: str) -> None:
    assert sexagesimal_ra(ra) == text


@pytest.mark.parametrize(
    ("dec", "text"), [(-29.9, "-29:54:00"), (5.5, "+05:30:00"), (-0.0001, "-00:00:00")]
)
def test_sexagesimal_dec(dec: float, text: str) -> None:
    assert sexagesimal_dec(dec) == text
