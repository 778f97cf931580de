"""Vetting: clusters of candidates are rejected, caps keep the lowest star ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.vetting import vet
from consumer.settings import VettingSettings


def test_a_cluster_is_rejected_and_isolated_stars_kept() -> None:
    rng = np.random.default_rng(0)
    cluster_x = 1000 + rng.uniform(-5, 5, 8)
    cluster_y = 2000 + rng.uniform(-5, 5, 8)
    x = np.r_[cluster_x, 100.0, 5000.0]
    y = np.r_[cluster_y, 100.0, 5000.0]
    ids = np.arange(10)
    result = vet(ids, np.full(10, 2), np.full(10, 1), x, y, VettingSettings())
    assert result.reason.tolist() == ["cluster"] * 8 + ["", ""]
    assert result.neighbours[:8].tolist() == [7] * 8
    assert result.counts() == {"cluster": 8}


def test_clusters_need_the_same_chip() -> None:
    x = np.full(8, 500.0)
    y = np.full(8, 500.0)
    chips = np.arange(8) % 4  # 2 per chip: never 5 neighbours
    result = vet(np.arange(8), np.full(8, 2), chips, x, y, VettingSettings())
    assert result.keep.all()


def test_caps_keep_lowest_star_ids_per_field_and_chip() -> None:
    ids = np.array([50, 10, 40, 20, 30, 60])
    fields = np.array([1, 1, 1, 1, 2, 2])
    chips = np.array([0, 0, 0, 1, 0, 0])
    x = np.arange(6) * 1000.0
    caps = VettingSettings(max_per_field=3, max_per_chip=1)
    result = vet(ids, fields, chips, x, x, caps)
    # field 1: 10, 20, 40 kept by the field cap (50 dropped); chip 0 of field 1 keeps 10 only.
    assert dict(zip(ids.tolist(), result.reason.tolist(), strict=True)) == {
        10: "",
        20: "",
        40: "cap_chip",
        50: "cap_field",
        30: "",
        60: "cap_chip",
    }


@given(
    n=st.integers(0, 60),
    max_field=st.integers(1, 10),
    max_chip=st.integers(1, 10),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_caps_hold_and_every_drop_has_a_reason(
    n: int, max_field: int, max_chip: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n + 1)[:n]
    fields = rng.integers(1, 3, n)
    chips = rng.integers(-1, 4, n)
    x = rng.uniform(0, 300, n)
    y = rng.uniform(0, 300, n)
    caps = VettingSettings(max_per_field=max_field, max_per_chip=max_chip)
    result = vet(ids, fields, chips, x, y, caps)
    assert np.array_equal(result.keep, result.reason == "")
    for field in np.unique(fields):
        assert (result.keep & (fields == field)).sum() <= max_field
        for chip in np.unique(chips):
            assert (result.keep & (fields == field) & (chips == chip)).sum() <= max_chip
