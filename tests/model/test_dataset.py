"""Instances cut where the daemon scores, per-site labels, missing columns, compact batches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model.dataset import (
    TEST_SEASONS,
    TRAIN_SEASONS,
    VALIDATION_SEASONS,
    CropConfig,
    Instances,
    Rows,
    SeasonSet,
    build_instances,
    call_times,
    code_version,
    load_set,
    site_targets,
    without_aux,
)
from model.features import collate, prepare
from model.simulate import Label, SimulationConfig, SiteTruth, simulate_star, simulate_star_truth
from model.timeline import timelines

CONFIG = SimulationConfig(n_stars=60, seed=8)


@pytest.fixture(scope="module")
def instances() -> Instances:
    return build_instances(CONFIG, range(60), CropConfig(untriggered_probability=1.0))


def test_splits_are_whole_seasons_with_disjoint_seeds() -> None:
    seeds = [set(s.seeds) for s in (TRAIN_SEASONS, VALIDATION_SEASONS, TEST_SEASONS)]
    assert not seeds[0] & seeds[1]
    assert not seeds[0] & seeds[2]
    assert not seeds[1] & seeds[2]
    assert not {1, 7} & set().union(*seeds)  # the demo seasons
    configs = TEST_SEASONS.configs()
    assert len({c.site_start_days for c in configs}) == len(configs)  # different calendars


def test_events_are_cut_at_calls_during_their_rise_or_after_the_peak(instances: Instances) -> None:
    lines = {}
    for index in set(instances.star_index.tolist()):
        star, label = simulate_star(CONFIG, index)
        lines[index] = (label, timelines([star])[0])
    assert (instances.label == 2).any()
    for i in range(len(instances)):
        label, line = lines[int(instances.star_index[i])]
        if len(line.scored):
            assert instances.as_of[i] in line.scored  # cut exactly where the daemon scores
        if label.label == "YES":
            assert label.t_rise_start <= instances.as_of[i] <= label.t_peak + 25.0
        else:
            assert label.label in ("NO", "MAYBE")


def test_call_times_exclude_noise_before_an_event() -> None:
    label = Label(1, "YES", "pspl", {}, t_rise_start=100.0, t_peak=120.0)
    line = timelines([simulate_star(CONFIG, 0)[0]])[0]
    line = type(line)(line.star_id, line.rule, line.window_end, line.t_last, line.passed,
                      np.array([90.0, 101.0, 130.0, 150.0]))  # fmt: skip
    np.testing.assert_array_equal(call_times(label, line, CropConfig()), [101.0, 130.0])
    no = Label(2, "NO", "mira", {}, t_rise_start=math.nan, t_peak=math.nan)
    assert len(call_times(no, line, CropConfig())) == 4


def test_site_targets_follow_each_sites_own_signal() -> None:
    hjd = np.linspace(0.0, 50.0, 200)
    rising = SiteTruth(0, hjd, np.where(hjd > 40.0, 30.0 * (hjd - 40.0), 0.0), sigma=1.0)
    flat = SiteTruth(2, hjd, np.zeros_like(hjd), sigma=1.0)
    event = Label(1, "YES", "pspl", {}, 40.0, 50.0)
    crop = CropConfig()
    np.testing.assert_array_equal(
        site_targets(event, [rising, flat], -math.inf, 50.0, crop), [1, 0, 0]
    )
    np.testing.assert_array_equal(
        site_targets(event, [rising, flat], -math.inf, 39.0, crop), [0, 0, 0]
    )
    variable = Label(2, "NO", "mira", {}, 40.0, 50.0)
    assert not site_targets(variable, [rising], -math.inf, 50.0, crop).any()


def test_site_targets_of_simulated_events(instances: Instances) -> None:
    events = instances.label == 2
    assert instances.site_target[events].mean() > 0.5
    assert not instances.site_target[instances.label == 0].any()
    assert not instances.site_target[instances.lengths == 0].any()


def test_auxiliary_columns_are_removed_like_a_magnitude_file() -> None:
    star, _, _ = simulate_star_truth(CONFIG, 3)
    bare = without_aux(star)
    for dataset in bare.datasets:
        assert np.isnan(dataset.sky).all()
        assert np.isnan(dataset.psf_quality).all()
    candidate = prepare(bare)
    for s, n in enumerate(candidate.lengths.tolist()):
        assert np.isnan(candidate.x[s, :n, 3:7]).all()  # missing, not dropped points
    one = without_aux(star, [0])
    assert np.isnan(one.datasets[0].fwhm).all()
    assert len(star.datasets) > 1
    assert np.isfinite(one.datasets[-1].fwhm).any()


def test_some_instances_lose_their_auxiliary_columns(instances: Instances) -> None:
    assert 0 < instances.aux_missing.mean() < 0.6


def test_compact_rows_batch_like_collate(instances: Instances) -> None:
    index = np.arange(0, len(instances), 3)
    for cap in (1500, 40):
        x, lengths = instances.batch(index, max_length=cap)
        expected, expected_lengths = collate([instances.item(int(i)) for i in index], cap)
        np.testing.assert_array_equal(lengths, expected_lengths)
        np.testing.assert_array_equal(np.nan_to_num(x, nan=-7), np.nan_to_num(expected, nan=-7))
    rows = Rows.of([instances.item(int(i)) for i in index])
    np.testing.assert_array_equal(rows.lengths, instances.lengths[index])
    for k, i in enumerate(index[:10]):
        a, b = rows.item(k), instances.item(int(i))
        np.testing.assert_array_equal(np.nan_to_num(a[0], nan=-7), np.nan_to_num(b[0], nan=-7))


def test_concatenation_keeps_every_instance(instances: Instances) -> None:
    both = Instances.concatenate([instances, instances])
    assert len(both) == 2 * len(instances)
    x, n = both.item(len(instances) + 5)
    y, m = instances.item(5)
    np.testing.assert_array_equal(n, m)
    np.testing.assert_array_equal(np.nan_to_num(x, nan=0), np.nan_to_num(y, nan=0))


def test_sets_are_cached_under_a_key_with_the_code_version(tmp_path: Path) -> None:
    seasons = SeasonSet("tiny", (51,), 8)
    crop = CropConfig(untriggered_probability=1.0)
    built = load_set(seasons, crop, cache=tmp_path, max_length=60)
    files = list(tmp_path.glob("instances-tiny-*.npz"))
    assert len(files) == 1
    again = load_set(seasons, crop, cache=tmp_path, max_length=60)
    np.testing.assert_array_equal(built.x, again.x)
    np.testing.assert_array_equal(built.subclass, again.subclass)
    assert len(code_version()) == 12
