"""The hot tier of a two-tier store: what the rising test needs, in RAM, beside the full
buffers on disk.

A two-tier :class:`~consumer.state.store.StarStore` (``StoreConfig.directory`` set and
``hot_points_per_site > 0``) keeps

- **cold**: the full bounded buffers (``capacity_per_site`` per star and site) in the store's
  :class:`~consumer.state.arena.Arena`, memory-mapped files on local disk;
- **hot** (this module): per star and site the latest ``h = hot_points_per_site`` records in a
  second arena in RAM (the rising test's tails; the newest observation), the number of records
  the full buffer holds (``held``), and the *pending* rows: appended since the cold arena was
  last brought up to date.

What the hot arena holds of a record: its trigger columns only
(:data:`~consumer.state.arena.TRIGGER_COLUMNS`: time, flux, flux error; 10 of the 14 bytes).
Its readers are the insert kernel (compares times), ``latest``/``newest_hjd`` (the newest
time), the compaction and the rebuild after a restore (copy what it holds), and the rising
test's tails (time, flux, flux error) of the stars with **one** field tag. The field bit in
``psf`` is not needed: every record of a star with one tag has field slot 0, and a star with
two tags is read from the cold arena (below), so the hot arena never has to tell its fields
apart. Sky, FWHM, airmass and PSF quality are read only from the cold arena (features,
snapshots, checkpoints). At the defaults that makes the tails 3 x 10 x 10 = 300 B a star
(:meth:`HotTier.nbytes`).

The rules that make the two tiers decide exactly as one
-------------------------------------------------------
The full buffer holds the latest ``capacity`` distinct times ever offered (first arrival wins a
time); the hot arena, an arena of capacity ``h`` fed the same rows, holds the latest ``h`` of
those, i.e. the tail of the full buffer. So for every row the hot kernel's verdict is the full
buffer's, except one: a row older than everything in a full hot ring (``DROPPED`` there) may be
a new point, a duplicate or too old for the full buffer. Only those rows (late by more than
``h`` points at their site) are decided against the cold arena, after their stars' pending
rows are merged into it, with the same kernel. Appended rows are distinct in time per star and
site and never older than the full buffer's oldest, so merging them later, many batches at
once, in time order, gives the buffer that appending them one batch at a time gives (every one
is appended, the oldest evicted past capacity); stars are independent, so some stars' rows may
be merged before others' (only those a read needs).

Medians: the cached baselines stay exact. A star whose cache is stale (the one-tier rule, read
from the hot tier's counts) gets its medians from the full buffer in the cold arena; the
others are tested on the hot tails alone. A star with two field tags is tested on the cold
arena (its latest ``n`` points of one field may lie beyond the site's latest ``h``, and the hot
arena keeps no field bits).

Why the cold tier is the arena on disk, written by batched merges, and what that costs
(``bench/bench_state_scale.py``; BENCHMARKS.md, "Scale: two-tier state (issue 21)"): a
star's full buffer is read whenever its cached median goes stale (a large share of the stars
every night at the default ``baseline_refresh_fraction``), not only for candidates; in the
arena that is one contiguous ring per site (a candidate's whole light curve in ~0.02 ms p50
from the page cache), in a log-structured file one random read per appended run, and the
arena reuses the one-tier kernels, which is what makes the decisions provably the same. The
price is on the write side: a merge rewrites every 4 KiB page of the seven column files it
touches, so the bytes written per star and night are many times the 14 bytes per new point
(measured at 10^7 stars on a 2-core, 23 GB machine: ~5-11 KB written per star and night for
~0.7 KB of records, against 432 bytes for the same night appended to a log). Fewer, larger
merges (:data:`PENDING_ROWS_PER_STAR`) trade RAM for writes; a row-major record layout or a
log with periodic compaction are the next steps if the survey's write volume demands them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.exceptions import LensNetError
from consumer.state.arena import RECORD_BYTES, SEGMENT_BYTES_PER_ROW, Arena

IntArray = npt.NDArray[np.int64]

N_SITES: Final = len(SITES)

#: An append merges every pending row into the cold arena once there are more than
#: ``max(PENDING_ROWS_MIN, PENDING_ROWS_PER_STAR x stars)`` (24 bytes each in RAM): the more
#: rows a star brings to one merge, the fewer times its pages on disk are rewritten.
PENDING_ROWS_MIN: Final = 1 << 22
PENDING_ROWS_PER_STAR: Final = 4

#: Bytes per star of the hot tier beside its records: hot segment tables 51, ``held`` 12,
#: ``pending_of`` 4.
HOT_OVERHEAD_BYTES_PER_STAR: Final = SEGMENT_BYTES_PER_ROW + 4 * N_SITES + 4

#: Bytes of a pending row in RAM: its star slot (8), the whole record (14: the cold arena
#: needs every column) and its field tag (2).
PENDING_ROW_BYTES: Final = 8 + RECORD_BYTES + 2


class TierError(LensNetError):
    """The hot and cold tiers disagree about a row (a bug: they must decide as one tier)."""


@dataclass(frozen=True)
class Rows:
    """Encoded rows of one site grouped by star slot (time order within a slot), as the
    insert kernel takes them: ``t`` seconds, ``psf`` without the field bit, ``field`` tags."""

    t: npt.NDArray[np.uint32]
    flux: npt.NDArray[np.float32]
    ferr: npt.NDArray[np.uint16]
    sky: npt.NDArray[np.uint8]
    fwhm: npt.NDArray[np.uint8]
    airmass: npt.NDArray[np.uint8]
    psf: npt.NDArray[np.uint8]
    field: npt.NDArray[np.int16]

    def take(self, index: IntArray) -> Rows:
        return Rows(*(getattr(self, name)[index] for name in _ROW_FIELDS))

    @staticmethod
    def concatenate(parts: list[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, name) for p in parts]) for name in _ROW_FIELDS))


_ROW_FIELDS: Final = ("t", "flux", "ferr", "sky", "fwhm", "airmass", "psf", "field")


class SiteQueue:
    """Pending rows of one site, kept so that a partial take costs O(rows taken + wanted x log
    rows), not O(rows pending):
    a *block* sorted by (slot, time) with rows of equal keys in arrival order (what the stable
    sort of the arrival-ordered queue gives), plus the parts appended since, in order.

    A take first folds new parts into the block (sort the parts, then merge two sorted runs:
    O(block + parts log parts), once per batch of appends, not once per take), finds the
    wanted slots' groups by binary search and gathers them. Taken rows stay in the block as
    tombstones (``live`` False) until more than half of it is dead, then it is compacted;
    every take takes whole groups, so a group is all live or all dead.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        #: (n,) star slot of each row of the block, non-decreasing.
        self.slots = np.zeros(0, dtype=np.int64)
        self.rows: Rows | None = None
        #: (n,) whether a block row is still pending (False: taken, a tombstone).
        self.live = np.zeros(0, dtype=np.bool_)
        self.dead = 0
        #: Parts appended since the last fold: (star slot per row, rows), in arrival order.
        self.parts: list[tuple[IntArray, Rows]] = []
        self.part_rows = 0

    @property
    def rows_pending(self) -> int:
        """Rows not yet taken."""
        return len(self.slots) - self.dead + self.part_rows

    @property
    def rows_stored(self) -> int:
        """Rows held in RAM, tombstones included."""
        return len(self.slots) + self.part_rows

    def append(self, slots: IntArray, rows: Rows) -> None:
        self.parts.append((slots, rows))
        self.part_rows += len(slots)

    def queued_slots(self) -> IntArray:
        """(rows_pending,) the star slot of every pending row (any order)."""
        return np.concatenate([self.slots[self.live], *(s for s, _ in self.parts)])

    def take(self, wanted: IntArray | None) -> tuple[IntArray, Rows] | None:
        """The pending rows of the sorted unique star slots ``wanted`` (default all), sorted
        by slot then time (equal keys in arrival order), taken out of the queue."""
        if self.rows_pending == 0:
            return None
        if self.parts or wanted is None:  # a full take drops the tombstones too
            self._fold()
        rows = self.rows
        assert rows is not None
        if wanted is None:
            slots = self.slots
            self._clear()
            return slots, rows
        block = self.slots
        first = np.searchsorted(block, wanted, side="left")
        end = np.searchsorted(block, wanted, side="right")
        found = end > first
        first, end = first[found], end[found]
        first, end = first[self.live[first]], end[self.live[first]]
        if len(first) == 0:  # the stars wanted have rows pending at other sites only
            return None
        sizes = end - first
        before = np.cumsum(sizes) - sizes  # rows of the groups before each, in the output
        index = np.repeat(first - before, sizes) + np.arange(int(before[-1] + sizes[-1]))
        taken = block[index], rows.take(index)
        self.live[index] = False
        self.dead += len(index)
        if 2 * self.dead > len(block):
            self._fold()
        return taken

    def _fold(self) -> None:
        """Sort the new parts into the block and drop its tombstones."""
        if not self.parts and self.dead == 0:
            return
        block_slots, block_rows = self.slots, self.rows
        if self.dead:
            assert block_rows is not None
            alive = np.flatnonzero(self.live)
            block_slots, block_rows = block_slots[alive], block_rows.take(alive)
        if self.parts:
            new_slots = np.concatenate([s for s, _ in self.parts])
            new_rows = Rows.concatenate([r for _, r in self.parts])
            order = np.argsort(_sort_key(new_slots, new_rows.t), kind="stable")
            new_slots, new_rows = new_slots[order], new_rows.take(order)
            if block_rows is None or len(block_slots) == 0:
                block_slots, block_rows = new_slots, new_rows
            else:
                # A new row goes after every block row of a key <= its own: arrival order.
                at = np.searchsorted(
                    _sort_key(block_slots, block_rows.t),
                    _sort_key(new_slots, new_rows.t),
                    side="right",
                ) + np.arange(len(new_slots))
                is_old = np.ones(len(block_slots) + len(new_slots), dtype=np.bool_)
                is_old[at] = False
                old_at = np.flatnonzero(is_old)
                block_slots = _interleave(block_slots, old_at, new_slots, at)
                block_rows = Rows(
                    *(
                        _interleave(getattr(block_rows, name), old_at, getattr(new_rows, name), at)
                        for name in _ROW_FIELDS
                    )
                )
        self._clear()
        self.slots, self.rows = block_slots, block_rows
        self.live = np.ones(len(block_slots), dtype=np.bool_)


def _sort_key(slots: IntArray, t: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    """(rows,) one key ordered as (slot, time): slot in the high 32 bits (star slots stay
    below 2^32), seconds in the low."""
    return (slots.astype(np.uint64) << np.uint64(32)) | t.astype(np.uint64)


def _interleave(
    old: npt.NDArray[Any], old_at: IntArray, new: npt.NDArray[Any], new_at: IntArray
) -> npt.NDArray[Any]:
    """(len(old) + len(new),) ``old`` at positions ``old_at`` and ``new`` at ``new_at``."""
    out = np.empty(len(old) + len(new), dtype=old.dtype)
    out[old_at] = old
    out[new_at] = new
    return out


class HotTier:
    """Hot arena, full-buffer counts and pending rows of a two-tier store (module docstring)."""

    def __init__(self, points_per_site: int) -> None:
        self.points_per_site = points_per_site
        #: The tails: trigger columns only (module docstring), in RAM.
        self.arena = Arena(points_per_site, None, full_records=False)
        #: (rows, sites) records the full buffer holds (the cold arena once merged).
        self.held = np.zeros((0, N_SITES), dtype=np.int32)
        #: (rows,) pending rows of each star, all sites: a read of stars with none merges
        #: nothing and scans no queue.
        self.pending_of = np.zeros(0, dtype=np.int32)
        #: Per site, rows appended since the last merge (:class:`SiteQueue`).
        self.pending = [SiteQueue() for _ in SITES]
        self.pending_rows = 0

    def grow_rows(self, rows: int) -> None:
        """Room for at least ``rows`` star rows in the hot arena, ``held`` and ``pending_of``."""
        self.arena.grow_rows(rows)
        if rows > len(self.held):
            size = max(rows, 2 * len(self.held))
            held = np.zeros((size, N_SITES), dtype=np.int32)
            held[: len(self.held)] = self.held
            self.held = held
            pending_of = np.zeros(size, dtype=np.int32)
            pending_of[: len(self.pending_of)] = self.pending_of
            self.pending_of = pending_of

    def add_pending(self, site: int, slots: IntArray, rows: Rows) -> None:
        """Rows of ``site`` appended to the full buffers of ``slots`` (one slot per row, the
        rows of a slot together, as a grouped batch has them)."""
        if len(slots):
            self.pending[site].append(slots, rows)
            self.pending_rows += len(slots)
            unique, offsets = group(slots)  # each slot once: the rows of a star are together
            self.pending_of[unique] += np.diff(offsets).astype(np.int32)

    def has_pending(self, slots: IntArray) -> IntArray:
        """The ``slots`` that have pending rows (at any site)."""
        return slots[self.pending_of[slots] > 0]

    def take_pending(
        self, site: int, wanted: IntArray | None = None
    ) -> tuple[IntArray, Rows] | None:
        """The pending rows of one site (of the sorted unique star slots ``wanted``, default
        all), sorted by slot then time, taken out of the queue: O(rows taken + wanted x log
        rows) once the site's queue is folded (:class:`SiteQueue`; issue 17: the daemon reads
        a few stars' buffers many times a batch)."""
        taken = self.pending[site].take(wanted)
        if taken is None:
            return None
        slots = taken[0]
        self.pending_rows -= len(slots)
        unique, offsets = group(slots)
        self.pending_of[unique] -= np.diff(offsets).astype(np.int32)
        return taken

    def nbytes(self, n_stars: int) -> int:
        """Bytes of the hot tier in RAM for ``n_stars`` stars: the tails' records handed out
        (10 bytes each, held or on a free list) and free lists, the per-star tables
        (:data:`HOT_OVERHEAD_BYTES_PER_STAR`) and the pending rows (:data:`PENDING_ROW_BYTES`
        each, taken ones not yet compacted away included, plus a byte of tombstone flag; at
        most ``PENDING_ROWS_PER_STAR`` a star past ``PENDING_ROWS_MIN``, and at most as many
        taken as pending in a site's sorted block)."""
        pending = sum(
            queue.rows_stored * PENDING_ROW_BYTES + queue.live.nbytes for queue in self.pending
        )
        return int(
            self.arena.bump[0] * self.arena.record_bytes
            + n_stars * HOT_OVERHEAD_BYTES_PER_STAR
            + self.arena.free_list.nbytes
            + pending
        )


def group(slots: IntArray) -> tuple[IntArray, IntArray]:
    """Unique slots of rows sorted by slot, and the (G + 1,) offsets of their groups."""
    if len(slots) == 0:
        return np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    first = np.flatnonzero(np.diff(slots, prepend=slots[:1] - 1))
    return slots[first], np.r_[first, len(slots)].astype(np.int64)
