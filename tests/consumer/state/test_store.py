"""The star store against a slow obvious reference, plus its edge cases and checkpoints.

The reference (:class:`Reference`) keeps, per star and site, a dict from quantised time to the
first record that arrived with it, and cuts it to the ``capacity`` latest times: the rule the
module docstring states, written without rings, size classes or kernels.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.alertfinder.api import HIGH_CADENCE, evaluate, evaluate_batch, rising_batch
from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.photometry import Observations
from consumer.exceptions import ConfigError, LensNetError
from consumer.state.arena import RECORD_BYTES
from consumer.state.checkpoint import CHECKPOINT_NAME, CheckpointError
from consumer.state.encoding import encode, quantise
from consumer.state.stars import UnknownStarError
from consumer.state.store import (
    OVERHEAD_BYTES_PER_STAR,
    StarStore,
    StoreConfig,
    store_differences,
    stores_equal,
)

T0 = 2_460_000.0  # a 2023 HJD


def make_obs(
    star_id: npt.ArrayLike,
    hjd: npt.ArrayLike,
    flux: npt.ArrayLike | None = None,
    *,
    flux_err: npt.ArrayLike | float = 10.0,
    field: npt.ArrayLike | int = 1,
    band: npt.ArrayLike | int = 0,
    sky: npt.ArrayLike | float = 1000.0,
) -> Observations:
    star = np.atleast_1d(np.asarray(star_id, dtype=np.int64))
    n = len(star)
    hjd_ = np.broadcast_to(np.asarray(hjd, dtype=np.float64), (n,))
    flux_ = np.arange(n, dtype=np.float64) + 1000.0 if flux is None else flux
    full = {
        "star_id": star,
        "field": np.broadcast_to(field, (n,)),
        "chip": np.zeros(n),
        "ra": np.zeros(n),
        "dec": np.zeros(n),
        "x": np.zeros(n),
        "y": np.zeros(n),
        "hjd": hjd_,
        "band": np.broadcast_to(band, (n,)),
        "flux": np.broadcast_to(flux_, (n,)),
        "flux_err": np.broadcast_to(flux_err, (n,)),
        "sky": np.broadcast_to(sky, (n,)),
        "fwhm": np.full(n, 1.5),
        "airmass": np.full(n, 1.2),
        "psf_quality": np.full(n, 90.0),
    }
    return Observations.from_columns(**full)


# -- the reference -----------------------------------------------------------------------------


@dataclass
class Reference:
    """Per star and site: quantised time (s) -> (flux as float32, flux_err code, field)."""

    capacity: int
    max_stars: int
    buffers: dict[tuple[int, int], dict[int, tuple[float, int, int]]] = field(default_factory=dict)
    fields: dict[int, list[int]] = field(default_factory=dict)

    def append(self, site: int, obs: Observations) -> dict[str, Any]:
        counts: dict[str, Any] = {"appended": 0, "duplicates": 0, "too_old": 0, "evicted": 0}
        rejected: list[int] = []
        refused: list[int] = []
        seconds = np.rint((obs.hjd - HJD_OFFSET) * 86_400.0)
        flux_err_codes = encode(obs).flux_err
        usable = []
        for i in range(len(obs)):
            if not (
                np.isfinite(obs.flux[i])
                and np.isfinite(obs.flux_err[i])
                and obs.flux_err[i] > 0
                and obs.band[i] == 0
                and 0 <= seconds[i] < 2**32
            ):
                rejected.append(i)
            else:
                usable.append(i)
        new = sorted({int(obs.star_id[i]) for i in usable} - set(self.fields))
        room = max(self.max_stars - len(self.fields), 0)
        for star in new[:room]:
            self.fields[star] = []
        order = sorted(
            (int(obs.star_id[i]), int(seconds[i]), i)
            for i in usable
            if int(obs.star_id[i]) in self.fields
        )
        refused = [i for i in usable if int(obs.star_id[i]) not in self.fields]
        for star, t, i in order:
            tags = self.fields[star]
            tag = int(obs.field[i])
            if tag not in tags:
                if len(tags) == 2:
                    rejected.append(i)
                    continue
                tags.append(tag)
            buffer = self.buffers.setdefault((star, site), {})
            if t in buffer:
                counts["duplicates"] += 1
                continue
            if len(buffer) == self.capacity and t < min(buffer):
                counts["too_old"] += 1
                continue
            code = int(flux_err_codes[i])
            buffer[t] = (float(np.float32(obs.flux[i])), code, tag)
            counts["appended"] += 1
            if len(buffer) > self.capacity:
                del buffer[min(buffer)]
                counts["evicted"] += 1
        counts["rejected_rows"] = sorted(rejected)
        counts["refused_rows"] = sorted(refused)
        return counts

    def records(self, star: int, site: int) -> list[tuple[int, float, int, int]]:
        buffer = self.buffers.get((star, site), {})
        return [(t, *buffer[t]) for t in sorted(buffer)]


def store_records(store: StarStore, star: int, site: int) -> list[tuple[int, float, int, int]]:
    records = store.snapshot(star)[site]
    return [(int(r["t"]), float(r["flux"]), int(r["flux_err"]), int(r["field"])) for r in records]


batch_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),  # site
        st.booleans(),  # compact the arena after this batch
        st.lists(
            st.tuples(
                st.integers(0, 5),  # star
                st.integers(0, 30),  # time step (duplicates likely)
                st.sampled_from([1, 1, 1, 2, 3]),  # field tag (a third one is rejected)
                st.sampled_from([5.0, 5.0, 5.0, 0.0, np.nan]),  # flux_err (bad ones rejected)
                st.sampled_from([0, 0, 0, 0, 1]),  # band
            ),
            max_size=40,
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.sampled_from([1, 3, 5, 17]),
    max_stars=st.sampled_from([2, 4, 100]),
    batches=batch_strategy,
)
def test_matches_reference(
    capacity: int, max_stars: int, batches: list[tuple[int, bool, list[tuple[int, ...]]]]
) -> None:
    store = StarStore(StoreConfig(capacity_per_site=capacity, max_stars=max_stars))
    reference = Reference(capacity, max_stars)
    for batch_number, (site, compact, rows) in enumerate(batches):
        obs = make_obs(
            [r[0] for r in rows],
            [T0 + r[1] * 0.01 for r in rows],
            [100.0 * batch_number + i for i in range(len(rows))],
            field=[r[2] for r in rows],
            flux_err=[r[3] for r in rows],
            band=[r[4] for r in rows],
        )
        result = store.append(site, obs)
        expected = reference.append(site, obs)
        assert result.appended == expected["appended"]
        assert result.duplicates == expected["duplicates"]
        assert result.too_old == expected["too_old"]
        assert result.evicted == expected["evicted"]
        assert result.rejected_rows.tolist() == expected["rejected_rows"]
        assert result.refused_rows.tolist() == expected["refused_rows"]
        assert np.all(np.diff(result.changed) > 0)
        if compact:
            store.compact()
            assert store.free_records() == 0
    assert sorted(store.star_ids.tolist()) == sorted(reference.fields)
    for star in reference.fields:
        for site in range(len(SITES)):
            assert store_records(store, star, site) == reference.records(star, site)


# -- rules -------------------------------------------------------------------------------------


def test_out_of_order_arrivals_are_held_in_time_order() -> None:
    store = StarStore(StoreConfig(capacity_per_site=100))
    store.append(0, make_obs([7] * 5, T0 + np.array([0.0, 0.4, 0.1, 0.3, 0.2])))
    store.append(0, make_obs([7, 7], T0 + np.array([0.05, 0.5])))
    hjd = store.features(7)[0].hjd
    np.testing.assert_allclose(hjd - T0, [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-5)
    assert store.counts(7) == (7, 0, 0)


def test_full_buffer_evicts_the_oldest_and_drops_older_arrivals() -> None:
    store = StarStore(StoreConfig(capacity_per_site=3))
    first = store.append("SSO", make_obs([1] * 5, T0 + np.arange(5.0)))
    assert (first.appended, first.evicted, first.too_old) == (5, 2, 0)
    late = store.append("SSO", make_obs([1, 1], T0 + np.array([0.5, 2.5])))
    assert (late.appended, late.evicted, late.too_old, late.dropped_oldest) == (1, 1, 1, 2)
    np.testing.assert_allclose(store.features(1)[2].hjd - T0, [2.5, 3.0, 4.0], atol=1e-5)


def test_duplicates_on_quantised_time_keep_the_first_arrival() -> None:
    store = StarStore(StoreConfig())
    store.append(1, make_obs([3], T0, [10.0]))
    again = store.append(1, make_obs([3, 3], [T0 + 0.2 / 86_400, T0], [20.0, 30.0]))
    assert (again.appended, again.duplicates) == (0, 2)
    assert again.changed.size == 0
    assert store.features(3)[1].flux.tolist() == [10.0]


def test_unusable_rows_are_rejected_and_missing_auxiliaries_kept_as_nan() -> None:
    store = StarStore(StoreConfig())
    obs = make_obs(
        [1, 1, 1, 1, 1, 1],
        [T0, np.nan, T0 + 2, T0 + 3, T0 + 4, 2_449_999.0],
        [1.0, 1.0, np.inf, 1.0, 1.0, 1.0],
        flux_err=[1.0, 1.0, 1.0, -1.0, 1.0, 1.0],
        band=[0, 0, 0, 0, 1, 0],
        sky=[np.nan, 1, 1, 1, 1, 1],
    )
    result = store.append(0, obs)
    assert result.appended == 1
    assert result.rejected_rows.tolist() == [1, 2, 3, 4, 5]
    series = store.features(1)[0]
    assert np.isnan(series.sky[0])
    assert series.fwhm[0] == pytest.approx(1.5)
    assert series.airmass[0] == pytest.approx(1.2)
    assert series.psf_quality[0] == 90.0


def test_new_stars_past_max_stars_are_refused_and_reported() -> None:
    store = StarStore(StoreConfig(max_stars=2))
    result = store.append(0, make_obs([30, 10, 20, 10], T0 + np.arange(4.0)))
    assert sorted(store.star_ids.tolist()) == [10, 20]
    assert result.refused == 1
    assert result.refused_rows.tolist() == [0]
    assert result.changed.tolist() == [10, 20]
    later = store.append(1, make_obs([10, 40], [T0, T0]))
    assert (later.appended, later.refused_rows.tolist()) == (1, [1])


def test_empty_batch() -> None:
    store = StarStore(StoreConfig())
    result = store.append(0, make_obs(np.empty(0, dtype=np.int64), np.empty(0)))
    assert (result.appended, result.rejected, result.refused, result.changed.size) == (0, 0, 0, 0)
    assert len(store) == 0
    trigger = store.to_trigger_arrays([])
    assert trigger.star_offsets.tolist() == [0]
    assert trigger.dataset_offsets.tolist() == [0]


def test_bad_site_config_and_unknown_star() -> None:
    store = StarStore(StoreConfig())
    with pytest.raises(ValueError, match="site"):
        store.append(3, make_obs([1], T0))
    with pytest.raises(ValueError, match="site"):
        store.append("LCO", make_obs([1], T0))
    with pytest.raises(UnknownStarError):
        store.snapshot(99)
    with pytest.raises(ConfigError, match="capacity_per_site"):
        StoreConfig(capacity_per_site=0)
    with pytest.raises(ConfigError, match="max_stars"):
        StoreConfig(max_stars=-1)
    with pytest.raises(ConfigError, match="compact_free_fraction"):
        StoreConfig(compact_free_fraction=0.0)
    assert StoreConfig(directory=Path("/s")).for_partition(7).directory == Path("/s/partition-7")
    assert StoreConfig().for_partition(7).directory is None


def test_nbytes_at_full_capacity_is_under_64_kib_per_star() -> None:
    store = StarStore(StoreConfig())
    for site in range(3):
        store.append(site, make_obs(np.full(1600, 5), T0 + np.arange(1600) * 0.01))
    assert store.counts(5) == (1500, 1500, 1500)
    per_star = store.nbytes() - store.arena.free_list.nbytes  # one batch: straight to 1500 records
    assert per_star == 3 * 1500 * RECORD_BYTES + OVERHEAD_BYTES_PER_STAR
    assert per_star <= 64 * 1024


def test_quantised_features_are_within_the_documented_resolution() -> None:
    rng = np.random.default_rng(1)
    n = 500
    obs = make_obs(np.full(n, 2), T0 + np.sort(rng.uniform(0, 100, n)), rng.normal(5e3, 1e3, n))
    obs = Observations.from_columns(
        **{
            **{name: getattr(obs, name) for name in obs.__dataclass_fields__},
            "flux_err": rng.uniform(1, 500, n),
            "sky": rng.uniform(100, 5e4, n),
            "fwhm": rng.uniform(0.8, 5, n),
            "airmass": rng.uniform(1, 2.5, n),
            "psf_quality": rng.uniform(0, 100, n),
        }
    )
    store = StarStore(StoreConfig())
    store.append(0, obs)
    series = store.features(2)[0]
    np.testing.assert_allclose(series.hjd, obs.hjd, rtol=0, atol=0.51 / 86_400)
    np.testing.assert_allclose(series.flux, obs.flux, rtol=6e-8)
    np.testing.assert_allclose(series.flux_err, obs.flux_err, rtol=2.2e-4)
    np.testing.assert_allclose(series.sky, obs.sky, rtol=0.024)
    np.testing.assert_allclose(series.fwhm, obs.fwhm, atol=0.0251)
    np.testing.assert_allclose(series.airmass, obs.airmass, atol=0.0051)
    np.testing.assert_allclose(series.psf_quality, obs.psf_quality, atol=0.51)
    q = quantise(obs)
    np.testing.assert_allclose(series.flux_err, q.flux_err, rtol=1e-12)
    np.testing.assert_allclose(series.hjd, q.hjd, rtol=0, atol=1e-9)


# -- trigger input -----------------------------------------------------------------------------


def _light_curves(rng: np.random.Generator, n_stars: int) -> list[tuple[int, Observations]]:
    """Batches per site for stars in one or two fields, a rise in half of them."""
    batches = []
    for site in range(3):
        star_ids, hjd, flux, fields = [], [], [], []
        for star in range(n_stars):
            for tag in (10, 11) if star % 3 == 0 else (10,):
                t = T0 + np.sort(rng.choice(2000, 120, replace=False)) * 0.05 + 0.01 * site
                signal = 2e3 * np.clip(t - T0 - 80, 0, None) * (star % 2)
                star_ids += [star] * len(t)
                hjd += list(t)
                flux += list(1e4 + signal + rng.normal(0, 10, len(t)))
                fields += [tag] * len(t)
        order = rng.permutation(len(star_ids))
        obs = make_obs(
            np.array(star_ids)[order],
            np.array(hjd)[order],
            np.array(flux)[order],
            flux_err=10.0,
            field=np.array(fields)[order],
        )
        batches.append((site, obs))
    return batches


def test_trigger_arrays_give_the_same_result_as_evaluate_per_star() -> None:
    rng = np.random.default_rng(3)
    store = StarStore(StoreConfig(capacity_per_site=200))
    for site, obs in _light_curves(rng, 12):
        store.append(site, obs)
    ids = np.array([5, 0, 99, 3, 1])  # 99 is unknown: no datasets
    trigger = store.to_trigger_arrays(ids)
    rule = HIGH_CADENCE
    batch = evaluate_batch(
        trigger.t,
        trigger.flux,
        trigger.flux_err,
        trigger.dataset_offsets,
        trigger.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        dchi2_min=rule.dchi2_min,
    )
    rising = rising_batch(
        trigger.t,
        trigger.flux,
        trigger.flux_err,
        trigger.dataset_offsets,
        trigger.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
    )
    np.testing.assert_array_equal(rising.passed, batch.passed_rising)
    assert np.diff(trigger.star_offsets).tolist() == [3, 6, 0, 6, 3]
    assert batch.triggered.tolist() == [True, False, False, True, True]  # odd stars rise
    for position, star in enumerate(ids.tolist()):
        by_hand = []
        if star in store:
            for site, series in enumerate(store.features(star)):
                for tag in (10, 11):
                    keep = series.field == tag
                    if keep.any():
                        by_hand.append((series.hjd[keep], series.flux[keep], series.flux_err[keep]))
                        sites = trigger.dataset_site[trigger.star_offsets[position] :]
                        assert site in sites.tolist()
        single = evaluate(
            by_hand, k=rule.k, n=rule.n, n_sigma=rule.n_sigma, dchi2_min=rule.dchi2_min
        )
        got = batch.star(position)
        assert got.triggered == single.triggered
        assert got.dchi2 == pytest.approx(single.dchi2, rel=1e-12, abs=1e-9)
        assert got.datasets == single.datasets


# -- checkpoints -------------------------------------------------------------------------------


def _filled_store(config: StoreConfig, seed: int = 0) -> StarStore:
    store = StarStore(config)
    for site, obs in _light_curves(np.random.default_rng(seed), 20):
        store.append(site, obs)
    return store


@pytest.mark.parametrize("memmap", [False, True])
def test_checkpoint_round_trip(tmp_path: Path, memmap: bool) -> None:
    config = StoreConfig(capacity_per_site=64, directory=tmp_path / "arena" if memmap else None)
    store = _filled_store(config)
    path = store.checkpoint(tmp_path / "ckpt", {"photometry[3]": 1234})
    assert path == tmp_path / "ckpt" / CHECKPOINT_NAME
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT_NAME]
    restored = StarStore.restore(
        tmp_path / "ckpt", StoreConfig(capacity_per_site=64, directory=tmp_path / "arena2")
    )
    assert restored is not None
    copy, offsets = restored
    assert offsets == {"photometry[3]": 1234}
    assert stores_equal(store, copy)
    assert copy.nbytes() == store.nbytes()
    # both go on identically after the restore
    more = make_obs([0, 1, 500], [T0 + 200, T0 + 0.001, T0], [1.0, 2.0, 3.0], field=10)
    a, b = store.append(2, more), copy.append(2, more)
    assert (a.appended, a.too_old, a.evicted) == (b.appended, b.too_old, b.evicted)
    assert a.changed.tolist() == b.changed.tolist()
    assert stores_equal(store, copy)


def test_restore_without_checkpoint_returns_none(tmp_path: Path) -> None:
    assert StarStore.restore(tmp_path / "nothing", StoreConfig()) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "footer"])
def test_damaged_checkpoint_is_reported_not_loaded(tmp_path: Path, damage: str) -> None:
    store = _filled_store(StoreConfig(capacity_per_site=64))
    path = store.checkpoint(tmp_path, {"p": 1})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 3] ^= 0xFF
    else:
        data[-30] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as error:
        StarStore.restore(tmp_path, StoreConfig(capacity_per_site=64))
    assert isinstance(error.value, LensNetError)
    assert str(path) in str(error.value)


def test_restore_with_another_capacity_is_refused(tmp_path: Path) -> None:
    _filled_store(StoreConfig(capacity_per_site=64)).checkpoint(tmp_path, {})
    with pytest.raises(CheckpointError, match="capacity_per_site"):
        StarStore.restore(tmp_path, StoreConfig(capacity_per_site=65))


def test_checkpoint_replaces_the_previous_one(tmp_path: Path) -> None:
    store = StarStore(StoreConfig())
    store.append(0, make_obs([1], T0))
    store.checkpoint(tmp_path, {"p": 1})
    store.append(0, make_obs([2], T0))
    store.checkpoint(tmp_path, {"p": 2})
    restored = StarStore.restore(tmp_path, StoreConfig())
    assert restored is not None
    assert restored[1] == {"p": 2}
    assert len(restored[0]) == 2


def test_rebalance_gives_the_uninterrupted_buffers(tmp_path: Path) -> None:
    """A consumer that checkpoints, stops, and whose successor replays from an earlier offset
    ends with the same buffers as one that read the stream once."""
    rng = np.random.default_rng(5)
    batches = _light_curves(rng, 15)
    # cut each site's batch in 4 messages: a stream of 12, in site-interleaved order
    stream = [
        (site, obs.take(slice(i * len(obs) // 4, (i + 1) * len(obs) // 4)))
        for i in range(4)
        for site, obs in batches
    ]
    config = StoreConfig(capacity_per_site=100)
    uninterrupted = StarStore(config)
    for site, obs in stream:
        uninterrupted.append(site, obs)
    first = StarStore(config)
    for site, obs in stream[:7]:
        first.append(site, obs)
    first.checkpoint(tmp_path, {"photometry[0]": 7})
    for site, obs in stream[7:9]:  # processed but not checkpointed before the rebalance
        first.append(site, obs)
    restored = StarStore.restore(tmp_path, StoreConfig(capacity_per_site=100, directory=tmp_path))
    assert restored is not None
    second, offsets = restored
    for site, obs in stream[offsets["photometry[0]"] - 2 :]:  # at-least-once: some again
        second.append(site, obs)
    assert store_differences(uninterrupted, second) == []
    assert not stores_equal(first, second)


@pytest.mark.parametrize("hot_points", [0, 10])
def test_memmap_arena_grows_and_matches_ram(tmp_path: Path, hot_points: int) -> None:
    ram = StarStore(StoreConfig())
    disk = StarStore(StoreConfig(directory=tmp_path, hot_points_per_site=hot_points))
    stars = np.repeat(np.arange(60), 1500)
    hjd = T0 + np.tile(np.arange(1500) * 0.02, 60)
    obs = make_obs(stars, hjd)
    for store in (ram, disk):
        store.append(0, obs)
        store.append(1, obs.take(slice(0, 1000)))
    disk.flush()  # with two tiers, the appended rows reach the arena when merged
    assert disk.arena.records > 1 << 16
    assert disk.arena.path("t").stat().st_size == disk.arena.records * 4
    assert stores_equal(ram, disk)


def test_arenas_sharing_a_directory_keep_their_own_files(tmp_path: Path) -> None:
    """A partition moving between processes on one state directory: a second store there
    leaves the first one's files alone while it lives, and removes them once it is dropped."""
    ram = StarStore(StoreConfig())
    first = StarStore(StoreConfig(directory=tmp_path))
    obs = make_obs(np.repeat(np.arange(50), 40), T0 + np.tile(np.arange(40) * 0.02, 50))
    first.append(0, obs)
    ram.append(0, obs)
    second = StarStore(StoreConfig(directory=tmp_path))
    second.append(1, obs)
    more = make_obs(np.repeat(np.arange(50, 3000), 30), T0 + np.tile(np.arange(30) * 0.1, 2950))
    first.append(2, more)  # grows (remaps) the first store's files
    ram.append(2, more)
    assert stores_equal(ram, first)
    own = {p.name for p in tmp_path.glob(f"arena-{first.arena.owner}-*.bin")}
    assert own
    del first
    gc.collect()
    StarStore(StoreConfig(directory=tmp_path))
    assert not any((tmp_path / name).exists() for name in own)
    assert list(tmp_path.glob(f"arena-{second.arena.owner}-*.bin"))
    assert second.counts(0) == (0, 40, 0)


def test_growing_together_leaves_free_segments_that_compaction_returns() -> None:
    """Stars outgrowing their size class in step leave their old segments unused; the store
    compacts itself past ``compact_free_fraction`` and keeps every record."""
    store = StarStore(StoreConfig(capacity_per_site=1500))
    reference = StarStore(StoreConfig(capacity_per_site=1500))
    for step in range(55):  # 400 stars x 30 points a step, to 1650 points
        obs = make_obs(
            np.repeat(np.arange(400), 30), T0 + step + np.tile(np.arange(30), 400) * 0.01
        )
        store.append(0, obs)
        reference.append(0, obs)
    assert store.arena.generation > 0  # compacted at least once on its own
    fraction = store.config.compact_free_fraction
    assert store.free_records() <= fraction * store.arena.bump[0]
    per_star = (store.nbytes() - store.arena.free_list.nbytes) / len(store)
    assert store.counts(0) == (1500, 0, 0)
    assert per_star <= (1 + fraction) * 1500 * RECORD_BYTES + OVERHEAD_BYTES_PER_STAR
    assert stores_equal(store, reference)


def test_trigger_arrays_cut_to_the_latest_points() -> None:
    rng = np.random.default_rng(4)
    store = StarStore(StoreConfig(capacity_per_site=200))
    for site, obs in _light_curves(rng, 9):
        store.append(site, obs)
    ids = np.arange(9)
    full = store.to_trigger_arrays(ids)
    cut = store.to_trigger_arrays(ids, last=7)
    np.testing.assert_array_equal(cut.star_offsets, full.star_offsets)
    np.testing.assert_array_equal(cut.dataset_field, full.dataset_field)
    for star in range(len(ids)):
        for (t, flux, err), (t_full, flux_full, err_full) in zip(
            cut.datasets(star), full.datasets(star), strict=True
        ):
            np.testing.assert_array_equal(t, t_full[-7:])
            np.testing.assert_array_equal(flux, flux_full[-7:])
            np.testing.assert_array_equal(err, err_full[-7:])
    rule = HIGH_CADENCE
    whole = evaluate_batch(
        full.t,
        full.flux,
        full.flux_err,
        full.dataset_offsets,
        full.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        dchi2_min=rule.dchi2_min,
    )
    rising = rising_batch(
        cut.t,
        cut.flux,
        cut.flux_err,
        cut.dataset_offsets,
        cut.star_offsets,
        k=rule.k,
        n=rule.n,
        n_sigma=rule.n_sigma,
        baseline=whole.baseline,
    )
    np.testing.assert_array_equal(rising.passed, whole.passed_rising)
    with pytest.raises(ValueError, match="last"):
        store.to_trigger_arrays(ids, last=-1)


def test_checkpoint_with_inconsistent_tables_is_refused(tmp_path: Path) -> None:
    store = _filled_store(StoreConfig(capacity_per_site=64))
    store.arena.seg_offset[3, 1] = 10**9  # valid CRCs, wrong content
    store.checkpoint(tmp_path, {})
    with pytest.raises(CheckpointError, match="inconsistent"):
        StarStore.restore(tmp_path, StoreConfig(capacity_per_site=64))


def test_membership_and_counts() -> None:
    store = StarStore(StoreConfig())
    store.append("SAAO", make_obs([4, 4, 9], [T0, T0 + 1, T0]))
    assert 4 in store
    assert np.int64(9) in store
    assert 5 not in store
    assert "4" not in store
    assert store.counts(4) == (0, 2, 0)
    assert len(store) == 2


# -- annotations -------------------------------------------------------------------------------


def test_annotations_hold_latest_position_and_survive_checkpoint(tmp_path: Path) -> None:
    store = StarStore(StoreConfig())
    obs = make_obs([7, 7, 9], [T0 + 2, T0 + 1, T0])
    xs = Observations.from_columns(
        **{
            **{name: getattr(obs, name) for name in obs.__dataclass_fields__},
            "x": [10.0, 20.0, 30.0],
            "chip": [1, 2, 3],
        }
    )
    store.append("CTIO", xs)
    # Star 7's latest row is the first one (T0 + 2).
    stars = store.stars
    assert stars.x[stars.rows([7, 9])].tolist() == [10.0, 30.0]
    assert stars.chip[stars.rows([7, 9])].tolist() == [1, 3]
    assert stars.fresh_points[stars.rows([7, 9])].tolist() == [2, 1]
    assert np.isnan(stars.alerted_hjd[stars.rows([7])]).all()
    stars.alerted_hjd[stars.rows([9])] = T0
    stars.baseline[stars.rows([7])] = np.arange(6, dtype=np.float32).reshape(3, 2)
    store.checkpoint(tmp_path, {"t": 1})
    restored = StarStore.restore(tmp_path, StoreConfig())
    assert restored is not None
    back = restored[0]
    assert back.stars.alerted_hjd[back.stars.rows([9])].tolist() == [T0]
    assert back.stars.baseline[back.stars.rows([7])].tolist() == [[[0, 1], [2, 3], [4, 5]]]
    with pytest.raises(UnknownStarError):
        back.stars.x[back.stars.rows([8])]
    # The segment tables are the arena's, not annotations a caller can reach on the table.
    assert not hasattr(back.stars, "seg_offset")
