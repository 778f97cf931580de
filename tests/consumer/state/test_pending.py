"""The sorted pending queue (:class:`~consumer.state.tiers.SiteQueue`) takes exactly what the
queue it replaced took (kept below as the reference: join the parts, split with a mask, sort
stably by slot then time), and a two-tier store fed through it holds the same bytes (arena
columns and segment tables) as one fed through the reference, and the same buffers as a
one-tier store, through appends, late rows, rows of a star in several parts, partial merges of
random star subsets and full merges (seeded random streams)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumer.state.arena import Arena
from consumer.state.store import StarStore, StoreConfig, store_differences
from consumer.state.tiers import Rows, SiteQueue
from tests.consumer.state.test_store import T0, make_obs

IntArray = np.ndarray


class ReferenceQueue:
    """The pending queue before the sorted block: parts in arrival order; a partial take
    joins them, splits them with a mask and re-queues what it kept as one part."""

    def __init__(self) -> None:
        self.parts: list[tuple[IntArray, Rows]] = []
        self.live = np.zeros(0, dtype=np.bool_)

    @property
    def rows_stored(self) -> int:
        return sum(len(s) for s, _ in self.parts)

    def append(self, slots: IntArray, rows: Rows) -> None:
        self.parts.append((slots, rows))

    def queued_slots(self) -> IntArray:
        return np.concatenate([np.zeros(0, dtype=np.int64), *(s for s, _ in self.parts)])

    def take(self, wanted: IntArray | None) -> tuple[IntArray, Rows] | None:
        if not self.parts:
            return None
        slots = np.concatenate([s for s, _ in self.parts])
        rows = Rows.concatenate([r for _, r in self.parts])
        self.parts = []
        if wanted is not None:
            mine = np.isin(slots, wanted)
            if not mine.any():
                self.parts = [(slots, rows)]
                return None
            kept = np.flatnonzero(~mine)
            if len(kept):
                self.parts = [(slots[kept], rows.take(kept))]
            taken = np.flatnonzero(mine)
            slots, rows = slots[taken], rows.take(taken)
        order = np.lexsort((rows.t, slots))
        return slots[order], rows.take(order)


def _random_rows(rng: np.random.Generator, slots: IntArray) -> Rows:
    n = len(slots)
    return Rows(
        rng.integers(0, 20, n).astype(np.uint32),  # few times: equal (slot, time) keys too
        np.arange(n, dtype=np.float32) + rng.random(),  # a row's identity, to check the order
        rng.integers(0, 100, n).astype(np.uint16),
        rng.integers(0, 9, n).astype(np.uint8),
        rng.integers(0, 9, n).astype(np.uint8),
        rng.integers(0, 9, n).astype(np.uint8),
        rng.integers(0, 9, n).astype(np.uint8),
        rng.integers(0, 3, n).astype(np.int16),
    )


def _same_take(a: tuple[IntArray, Rows] | None, b: tuple[IntArray, Rows] | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert np.array_equal(a[0], b[0])
    for name in ("t", "flux", "ferr", "sky", "fwhm", "airmass", "psf", "field"):
        assert getattr(a[1], name).tobytes() == getattr(b[1], name).tobytes(), name


@pytest.mark.parametrize("seed", range(40))
def test_site_queue_takes_what_the_reference_took(seed: int) -> None:
    """Any interleaving of parts (a slot in several parts, equal times of a slot) and partial
    or full takes: the same rows in the same order, and the same rows left pending."""
    rng = np.random.default_rng(seed)
    n_stars = int(rng.integers(1, 60))
    queue, reference = SiteQueue(), ReferenceQueue()
    for _ in range(int(rng.integers(1, 60))):
        action = rng.random()
        if action < 0.45:
            slots = np.sort(rng.integers(0, n_stars, int(rng.integers(0, 40))))
            rows = _random_rows(rng, slots)
            queue.append(slots, rows)
            reference.append(slots, rows)
        elif action < 0.95:
            wanted = np.unique(rng.integers(0, n_stars, int(rng.integers(1, n_stars + 1))))
            _same_take(queue.take(wanted), reference.take(wanted))
        else:
            _same_take(queue.take(None), reference.take(None))
        assert queue.rows_pending == reference.rows_stored
        assert np.array_equal(np.sort(queue.queued_slots()), np.sort(reference.queued_slots()))
        assert queue.rows_stored <= 2 * reference.rows_stored + queue.part_rows + 1
    _same_take(queue.take(None), reference.take(None))
    assert queue.rows_stored == 0


def _same_arena(a: Arena, b: Arena, n: int) -> None:
    """Byte-equal segment tables of the first ``n`` star rows and column contents."""
    for name in ("seg_offset", "seg_class", "seg_head", "seg_count"):
        assert getattr(a, name)[:n].tobytes() == getattr(b, name)[:n].tobytes(), name
    assert int(a.bump[0]) == int(b.bump[0])
    used = int(a.bump[0])
    for name, column in a.columns.items():
        assert column[:used].tobytes() == b.columns[name][:used].tobytes(), name


@pytest.mark.parametrize("seed", range(12))
def test_two_tier_store_holds_the_reference_bytes(tmp_path: Path, seed: int) -> None:
    """Windows of rows for many stars (late rows, a star at a site in several batches of one
    window), each followed by partial merges of random subsets, sometimes a full merge."""
    rng = np.random.default_rng(seed)
    n_stars = int(rng.integers(5, 80))
    star_ids = np.arange(n_stars) + 1000
    one = StarStore(StoreConfig(capacity_per_site=16))
    stores = [
        StarStore(
            StoreConfig(capacity_per_site=16, directory=tmp_path / name, hot_points_per_site=3)
        )
        for name in ("sorted", "reference")
    ]
    reference_hot = stores[1].hot
    assert reference_hot is not None
    reference_hot.pending = [ReferenceQueue() for _ in reference_hot.pending]  # type: ignore[misc]
    step = 0
    for _ in range(int(rng.integers(3, 12))):
        for _ in range(int(rng.integers(1, 4))):  # batches of one window
            step += 1
            site = int(rng.integers(0, 3))
            stars = star_ids[rng.random(n_stars) < 0.7]
            hjd = T0 + step * 0.1 + rng.normal(0, 0.001, len(stars))
            late = rng.random(len(stars)) < 0.1
            hjd = np.where(late, hjd - rng.integers(1, 8, len(stars)) * 0.1, hjd)
            obs = make_obs(stars, hjd, rng.normal(1000.0, 20.0, len(stars)))
            one.append(site, obs)
            for store in stores:
                store.append(site, obs)
        for _ in range(int(rng.integers(0, 6))):  # the daemon's reads: a few stars each
            known = len(stores[0].stars)
            chosen = rng.choice(known, int(rng.integers(1, max(2, known // 10))))
            for store in stores:
                store.merge_pending(chosen.astype(np.int64))
        if rng.random() < 0.2:
            for store in stores:
                store.merge_pending()
        a, b = stores
        assert a.hot is not None
        assert b.hot is not None
        assert a.hot.pending_rows == b.hot.pending_rows
        assert np.array_equal(a.hot.pending_of, b.hot.pending_of)
        _same_arena(a.arena, b.arena, len(a.stars))
    for store in stores:
        store.merge_pending()
        assert store_differences(one, store) == []
    _same_arena(stores[0].arena, stores[1].arena, len(stores[0].stars))
