"""The per-partition star store: bounded, time-ordered, compact per-star per-site buffers.

One :class:`StarStore` holds the recent photometry of the stars of one input partition, so the
state moves with the partition on a rebalance (checkpoint on revoke, restore on assign). It is
three parts behind one face: the observation records (:mod:`consumer.state.arena`, 14 bytes
each as :mod:`consumer.state.encoding` quantises them), the per-star table with its typed
annotations (:mod:`consumer.state.stars`: position, trigger cache, alert bookkeeping) and the
checkpoint file (:mod:`consumer.state.checkpoint`).

Rules
-----
- Every star has one buffer per site (:data:`consumer.constants.SITES` order) of at most
  ``capacity_per_site`` observations, kept in time order whatever the arrival order.
- Duplicates (same star, site and *quantised* time, i.e. HJD to the second) are ignored; the
  first arrival is kept.
- A full buffer keeps the ``capacity`` latest observations: a later one evicts the oldest
  (``AppendResult.evicted``), one older than everything held is dropped (``too_old``). The
  content is therefore the latest ``capacity`` distinct times ever offered, independent of the
  arrival order and of replays, which is what makes a restored-and-replayed store equal to an
  uninterrupted one (the exceptions: which of two rows with the same time but different values
  is kept, and which field tags win for a star offered three, follow the arrival order).
- A star carries at most two field tags (overlapping fields); observations keep theirs, and
  :meth:`StarStore.to_trigger_arrays` emits one dataset per site and field. A row with a third
  field tag for a star is rejected.
- Rows the trigger cannot use are rejected (``AppendResult.rejected_rows``) rather than stored:
  non-finite ``hjd``, ``flux`` or ``flux_err``, ``flux_err <= 0``, an HJD outside
  [2450000, 2450000 + 2**32 s), or the V band (``band != 0``; the trigger and LensNet read I).
  Non-finite auxiliary columns (sky, fwhm, airmass, psf_quality) are stored as *missing* and
  read back as NaN.
- At most ``max_stars`` stars: rows of a new star past the limit are *refused*
  (``AppendResult.refused_rows``) so the caller can route them to the dead-letter topic; when a
  batch brings more new stars than there is room for, the lowest star ids are admitted.

Memory
------
Bytes per star (:meth:`StarStore.nbytes`): 14 x the sizes of its segments (size classes, see
:mod:`consumer.state.arena`), plus :data:`OVERHEAD_BYTES_PER_STAR` = 152 (segment tables 51,
the table's columns 85 of which annotations 73, the sorted ``star_id -> row`` index 16); plus up
to ``compact_free_fraction`` of free segments. At the defaults a full star takes
3 x 1500 x 14 + 152 = 63 152 bytes (< 64 KiB), a star with ~900 points per site
3 x 1024 x 14 + 152 = 43 160 bytes. With ``StoreConfig.directory`` set (one directory per
partition, see :meth:`StoreConfig.for_partition`) the records are memory-mapped files and the
per-star table (152 bytes a star) stays in RAM; with ``hot_points_per_site`` > 0 as well (the
default) the store has two tiers (:mod:`consumer.state.tiers`): the rising test reads the
latest points of each buffer kept in RAM (:meth:`StarStore.hot_nbytes`: their time, flux and
flux error, 10 bytes a point, plus 67 a star and the rows not yet merged into the files), and
the files are read for stale medians, stars with two field tags, candidates and checkpoints.
Either way the store decides, reads and checkpoints exactly as with one tier in RAM; the
checkpoint format is the same.

API
---
``StarStore(StoreConfig(...))``; ``append(site, observations) -> AppendResult`` once per decoded
batch; ``to_trigger_arrays(star_ids, last=None) -> TriggerInput`` (CSR input of
:func:`consumer.alertfinder.api.evaluate_batch` / ``rising_batch``); ``features(star_id)``
(decoded per-site buffers for LensNet); ``stars`` (the per-star table); ``snapshot(star_id)`` and
:func:`stores_equal` / :func:`store_differences` for equality tests;
``checkpoint(directory, offsets)`` and ``StarStore.restore(directory, config)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.photometry import Observations
from consumer.exceptions import ConfigError
from consumer.state import kernels
from consumer.state.arena import RECORD_BYTES, SEGMENT_BYTES_PER_ROW, Arena
from consumer.state.checkpoint import CheckpointError, CheckpointFile, write_checkpoint
from consumer.state.encoding import (
    AIRMASS_TABLE,
    FLUX_ERR_TABLE,
    FWHM_TABLE,
    PSF_TABLE,
    SKY_TABLE,
    SNAPSHOT_DTYPE,
    SiteBuffer,
    decode_records,
    encode,
)
from consumer.state.stars import COLUMN_BYTES_PER_STAR, INDEX_BYTES_PER_STAR, StarTable
from consumer.state.stars import COLUMNS as STAR_COLUMNS
from consumer.state.tiers import (
    PENDING_ROWS_MIN,
    PENDING_ROWS_PER_STAR,
    HotTier,
    Rows,
    TierError,
    group,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

N_SITES: Final = len(SITES)

#: Bytes per star beside its observations: segment tables 51, table columns 85, index 16: 152.
OVERHEAD_BYTES_PER_STAR: Final = (
    SEGMENT_BYTES_PER_ROW + COLUMN_BYTES_PER_STAR + INDEX_BYTES_PER_STAR
)

#: Compact only when the free segments hold at least this many bytes.
_COMPACT_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class StoreConfig:
    """Settings of one store.

    Parameters
    ----------
    capacity_per_site : observations kept per star and site (rolling window).
    max_stars : stars admitted; rows of further new stars are refused.
    directory : folder for the memory-mapped arena (one per partition); None keeps it in RAM.
    compact_free_fraction : compact the arena when more than this fraction of it is segments
        outgrown by their stars (each compaction copies every held record once; 1 = never).
    hot_points_per_site : with ``directory`` set, the latest points per star and site also
        kept in RAM, the hot tier of :mod:`consumer.state.tiers` (at least the rising test's
        ``n``, or it reads the cold arena); 0: one tier.
    """

    capacity_per_site: int = 1500
    max_stars: int = 2_000_000
    directory: Path | None = None
    compact_free_fraction: float = 0.1
    hot_points_per_site: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.capacity_per_site <= 2**31 - 1:
            raise ConfigError(f"capacity_per_site: {self.capacity_per_site}, expected >= 1")
        if self.max_stars < 0:
            raise ConfigError(f"max_stars: {self.max_stars}, expected >= 0")
        if self.hot_points_per_site < 0:
            raise ConfigError(f"hot_points_per_site: {self.hot_points_per_site}, expected >= 0")
        if not 0 < self.compact_free_fraction <= 1:
            raise ConfigError(
                f"compact_free_fraction: {self.compact_free_fraction}, expected in (0, 1]"
            )

    @property
    def two_tier(self) -> bool:
        """Whether the store keeps a hot tier in RAM beside the arena on disk."""
        return self.directory is not None and self.hot_points_per_site > 0

    def for_partition(self, partition: int) -> StoreConfig:
        """The config of one partition's store: the arena in ``directory/partition-<n>``."""
        if self.directory is None:
            return self
        return dataclasses.replace(self, directory=self.directory / f"partition-{partition}")


@dataclass(frozen=True)
class AppendResult:
    """Outcome of one :meth:`StarStore.append`.

    Every row is exactly one of appended, duplicate, too_old, rejected or refused.
    ``evicted`` counts stored records pushed out of full buffers by later ones.
    """

    changed: IntArray  # (C,) sorted unique star ids that gained an observation
    appended: int
    duplicates: int
    too_old: int
    evicted: int
    rejected_rows: IntArray  # (R,) row indices: unusable values, V band or a third field tag
    refused_rows: IntArray  # (F,) row indices of new stars past max_stars

    @property
    def rejected(self) -> int:
        return len(self.rejected_rows)

    @property
    def refused(self) -> int:
        return len(self.refused_rows)

    @property
    def dropped_oldest(self) -> int:
        """Observations lost to the rolling window: evicted plus offered too old."""
        return self.evicted + self.too_old


@dataclass(frozen=True)
class TriggerInput:
    """CSR arrays for :func:`consumer.alertfinder.api.evaluate_batch` / ``rising_batch``.

    Star s (``star_ids[s]``) is datasets ``star_offsets[s]:star_offsets[s + 1]``, dataset d is
    points ``dataset_offsets[d]:dataset_offsets[d + 1]``, one per non-empty site and field,
    site-major. ``t`` in days (full HJD), ``flux``/``flux_err`` in DIA flux units.
    """

    star_ids: IntArray  # (S,)
    t: FloatArray  # (N,)
    flux: FloatArray  # (N,)
    flux_err: FloatArray  # (N,)
    dataset_offsets: IntArray  # (D + 1,)
    star_offsets: IntArray  # (S + 1,)
    dataset_site: npt.NDArray[np.int8]  # (D,) index into SITES
    dataset_field: npt.NDArray[np.int16]  # (D,) field tag

    def datasets(self, index: int) -> list[tuple[FloatArray, FloatArray, FloatArray]]:
        """The ``(t, flux, flux_err)`` datasets of the star at position ``index``."""
        out = []
        for d in range(self.star_offsets[index], self.star_offsets[index + 1]):
            points = slice(self.dataset_offsets[d], self.dataset_offsets[d + 1])
            out.append((self.t[points], self.flux[points], self.flux_err[points]))
        return out


@dataclass(frozen=True)
class StarDatasets:
    """Decoded buffers of S stars as CSR, one dataset per site and field tag.

    Star s (``star_ids[s]``) is datasets ``star_offsets[s]:star_offsets[s + 1]``, site-major
    then by ascending field tag; dataset d is points ``dataset_offsets[d]:dataset_offsets[d + 1]``,
    time-ordered. ``hjd`` full HJD, ``flux``/``flux_err`` DIA flux units (float64); ``sky``,
    ``fwhm``, ``airmass``, ``psf_quality`` float32, NaN where missing: the values and dtypes of
    :meth:`StarStore.features`' buffers as an archive ``Dataset`` holds them.
    """

    star_ids: IntArray  # (S,)
    star_offsets: IntArray  # (S + 1,)
    dataset_site: IntArray  # (D,) index into SITES
    dataset_field: IntArray  # (D,) field tag
    dataset_offsets: IntArray  # (D + 1,)
    hjd: FloatArray  # (N,)
    flux: FloatArray
    flux_err: FloatArray
    sky: npt.NDArray[np.float32]
    fwhm: npt.NDArray[np.float32]
    airmass: npt.NDArray[np.float32]
    psf_quality: npt.NDArray[np.float32]


class StarStore:
    """Rolling per-star, per-site buffers of one partition (see the module docstring).

    ``arena`` holds the observation records (the full buffers) and where each buffer lies in
    it, ``stars`` the per-star table (rows shared with the arena's segment tables), ``hot``
    the hot tier of a two-tier store (:mod:`consumer.state.tiers`; None with one tier). With
    two tiers, ``arena`` may lag the appends (pending rows): every method that reads it merges
    them first.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.stars = StarTable()
        self.arena = Arena(config.capacity_per_site, config.directory)
        self.hot = HotTier(config.hot_points_per_site) if config.two_tier else None

    # -- size and introspection -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.stars)

    def __contains__(self, star_id: object) -> bool:
        if not isinstance(star_id, int | np.integer):
            return False
        return bool(self.stars.lookup(np.array([star_id], dtype=np.int64))[0] >= 0)

    @property
    def star_ids(self) -> IntArray:
        """(S,) ids of the stars held, in order of admission."""
        return self.stars.star_ids[: len(self.stars)].copy()

    def latest(self) -> npt.NDArray[np.float64]:
        """(S,) HJD of each held star's newest observation (any site), in ``star_ids`` order."""
        # The newest records are in the hot tails, when there are any.
        arena = self.arena if self.hot is None else self.hot.arena
        seconds, held = arena.newest_t(len(self.stars))  # (S, sites)
        newest = np.where(held, HJD_OFFSET + seconds / 86400.0, -np.inf).max(
            axis=1, initial=-np.inf
        )
        return np.asarray(newest, dtype=np.float64)

    def newest_hjd(self, star_ids: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(S,) HJD of the newest observation of each of ``star_ids`` (held stars), any site,
        decoded as :meth:`features` decodes it; NaN for a star holding none."""
        arena = self.arena if self.hot is None else self.hot.arena
        seconds, held = arena.newest_of(self.stars.rows(star_ids))
        newest = np.where(held, seconds, -1).max(axis=1, initial=-1)
        hjd = HJD_OFFSET + newest.astype(np.float64) / 86400.0
        return np.where(newest >= 0, hjd, np.nan)

    def nbytes(self) -> int:
        """Bytes of the state: arena segments handed out (held or on a free list), per-star
        tables and index (:data:`OVERHEAD_BYTES_PER_STAR` each) and the free lists; the same
        with one tier or two (the hot tier is extra, :meth:`hot_nbytes`)."""
        return int(
            self.arena.bump[0] * RECORD_BYTES
            + len(self.stars) * OVERHEAD_BYTES_PER_STAR
            + self.arena.free_list.nbytes
        )

    def hot_nbytes(self) -> int:
        """Bytes of the hot tier in RAM beside the per-star table and the arena's segment
        tables (0 with one tier; :meth:`~consumer.state.tiers.HotTier.nbytes`): with two
        tiers, RAM holds these, the per-star table and the segment tables; the arena's records
        are on disk. At the defaults a star with 10 or more points per site takes 367 bytes
        (tails 3 x 10 x 10, tables 67), plus its share of the free lists and of the pending
        rows (24 bytes each; up to 4 a star in a store of more than 10^6 stars, where merges
        come every ``PENDING_ROWS_PER_STAR`` rows a star)."""
        return 0 if self.hot is None else self.hot.nbytes(len(self.stars))

    def free_records(self) -> int:
        """Records in segments on the free lists (handed out once, not holding data now)."""
        return self.arena.free_records()

    def compact(self) -> None:
        """Rewrite the arena with only the held segments, back to back (O(records held)).

        :meth:`append` calls it when more than ``config.compact_free_fraction`` of the arena is on
        free lists (stars outgrowing their size class leave their old segments there, and when
        every star grows together nobody reuses them).
        """
        self.merge_pending()
        self.arena.compact(len(self.stars))
        if self.hot is not None:
            self.hot.arena.compact(len(self.stars))

    def records(self) -> int:
        """Observations held, every star and site (what a checkpoint writes)."""
        counts = self.arena.seg_count if self.hot is None else self.hot.held
        return int(counts[: len(self.stars)].sum(dtype=np.int64))

    def counts(self, star_id: int) -> tuple[int, ...]:
        """Observations held per site."""
        counts = self.arena.seg_count if self.hot is None else self.hot.held
        return tuple(int(c) for c in counts[self.stars.row(star_id)])

    # -- ingest ------------------------------------------------------------------------------

    def append(self, site: int | str, obs: Observations) -> AppendResult:
        """Buffer one decoded batch of one site's observations (any stars, any order).

        Parameters
        ----------
        site : index into SITES, or the site name.
        obs : (N,) observations.

        Returns
        -------
        AppendResult
        """
        site_index = _site_index(site)
        codes = encode(obs)
        rows = np.flatnonzero(codes.t >= 0)
        star_of_row = obs.star_id[rows]
        order = np.lexsort((codes.t[rows], star_of_row))  # by star, then time, then row
        rows = rows[order]
        star_of_row = star_of_row[order]
        first = np.flatnonzero(np.diff(star_of_row, prepend=star_of_row[:1] - 1))
        unique_ids = star_of_row[first]
        unique_slots = self.stars.admit(unique_ids, self.config.max_stars)
        self.arena.grow_rows(len(self.stars))
        if self.hot is not None:
            self.hot.grow_rows(len(self.stars))
        admitted = unique_slots >= 0
        group_sizes = np.diff(np.r_[first, len(rows)])
        admitted_rows = np.repeat(admitted, group_sizes)
        refused_rows = np.sort(rows[~admitted_rows])
        rows = rows[admitted_rows]
        slots = unique_slots[admitted]
        group_offsets = np.zeros(len(slots) + 1, dtype=np.int64)
        np.cumsum(group_sizes[admitted], out=group_offsets[1:])
        self.stars.observe(slots, obs, rows[group_offsets[1:] - 1], np.diff(group_offsets))
        batch = Rows(
            t=codes.t[rows].astype(np.uint32),
            flux=obs.flux[rows].astype(np.float32),
            ferr=codes.flux_err[rows],
            sky=codes.sky[rows],
            fwhm=codes.fwhm[rows],
            airmass=codes.airmass[rows],
            psf=codes.psf_quality[rows],
            field=obs.field[rows].astype(np.int16),
        )
        status = np.zeros(len(rows), dtype=np.int8)
        changed = np.zeros(len(slots), dtype=np.bool_)
        if self.hot is None:
            self.arena.make_room(site_index, slots, np.diff(group_offsets))
            evicted = self._insert(
                self.arena, site_index, slots, group_offsets, batch, status, changed
            )
            self._compact_if_sparse(self.arena)
        else:
            evicted = self._append_two_tier(
                site_index, slots, group_offsets, batch, status, changed
            )
        rejected = codes.t < 0
        rejected[rows[status == kernels.REJECTED]] = True
        counts = np.bincount(status, minlength=4)
        return AppendResult(
            changed=unique_ids[admitted][changed],
            appended=int(counts[kernels.APPENDED]),
            duplicates=int(counts[kernels.DUPLICATE]),
            too_old=int(counts[kernels.DROPPED]),
            evicted=int(evicted),
            rejected_rows=np.flatnonzero(rejected).astype(np.int64),
            refused_rows=refused_rows.astype(np.int64),
        )

    def _insert(
        self,
        arena: Arena,
        site: int,
        slots: IntArray,
        group_offsets: IntArray,
        rows: Rows,
        status: npt.NDArray[np.int8],
        changed: npt.NDArray[np.bool_],
    ) -> int:
        """:func:`~consumer.state.kernels.insert_rows` of ``rows`` (grouped by ``slots``) into
        one arena, which has room for them (:meth:`Arena.make_room`); returns the evictions."""
        columns = arena.columns
        return int(
            kernels.insert_rows(
                site,
                slots,
                group_offsets,
                rows.t,
                rows.flux,
                rows.ferr,
                rows.sky,
                rows.fwhm,
                rows.airmass,
                rows.psf,
                rows.field,
                self.stars.fields,
                arena.seg_offset,
                arena.seg_class,
                arena.seg_head,
                arena.seg_count,
                arena.class_sizes,
                columns["t"],
                columns["flux"],
                columns["ferr"],
                columns["sky"],
                columns["fwhm"],
                columns["airmass"],
                columns["psf"],
                arena.bump,
                arena.free_list,
                arena.free_count,
                status,
                changed,
            )
        )

    def _compact_if_sparse(self, arena: Arena) -> None:
        """Compact ``arena`` when more than ``compact_free_fraction`` of it is free segments."""
        free = arena.free_records()
        if (
            free * arena.record_bytes > _COMPACT_MIN_BYTES
            and free > self.config.compact_free_fraction * arena.bump[0]
        ):
            arena.compact(len(self.stars))

    def _append_two_tier(
        self,
        site: int,
        slots: IntArray,
        group_offsets: IntArray,
        batch: Rows,
        status: npt.NDArray[np.int8],
        changed: npt.NDArray[np.bool_],
    ) -> int:
        """Append a grouped batch with two tiers (:mod:`consumer.state.tiers`): the hot kernel
        decides every row but those older than a full hot ring, which the cold arena decides;
        returns the full buffers' evictions. ``status`` and ``changed`` as one tier gives them."""
        hot = self.hot
        assert hot is not None
        sizes = np.diff(group_offsets)
        hot.arena.make_room(site, slots, sizes)
        self._insert(hot.arena, site, slots, group_offsets, batch, status, changed)
        self._compact_if_sparse(hot.arena)
        group_of_row = np.repeat(np.arange(len(slots)), sizes)
        fresh = np.flatnonzero(status == kernels.APPENDED)
        late = np.flatnonzero(status == kernels.DROPPED)
        evicted = 0
        if len(late):
            # In time order the late rows of a star come before its fresh ones: decide them
            # against the full buffer as it stood before this batch.
            self.merge_pending(slots[group_of_row[late]])
            late_slots, late_offsets = group(slots[group_of_row[late]])
            late_status = np.zeros(len(late), dtype=np.int8)
            late_changed = np.zeros(len(late_slots), dtype=np.bool_)
            self.arena.make_room(site, late_slots, np.diff(late_offsets))
            evicted += self._insert(
                self.arena,
                site,
                late_slots,
                late_offsets,
                batch.take(late),
                late_status,
                late_changed,
            )
            status[late] = late_status
            hot.held[late_slots, site] = self.arena.seg_count[late_slots, site]
            changed[group_of_row[late[late_offsets[:-1]]][late_changed]] = True
        added = np.bincount(group_of_row[fresh], minlength=len(slots))
        total = hot.held[slots, site].astype(np.int64) + added
        capacity = self.config.capacity_per_site
        evicted += int(np.maximum(total - capacity, 0).sum())
        hot.held[slots, site] = np.minimum(total, capacity)
        hot.add_pending(site, slots[group_of_row[fresh]], batch.take(fresh))
        if hot.pending_rows > max(PENDING_ROWS_MIN, PENDING_ROWS_PER_STAR * len(self.stars)):
            self.merge_pending()
        return evicted

    def merge_pending(self, slots: IntArray | None = None) -> None:
        """Bring the cold arena up to date for star ``slots`` (default: all): insert their
        pending rows of a two-tier store, all sites, sorted by star and time (one kernel call
        per site); a no-op with one tier. Stars are independent, so merging some stars' rows
        before others' gives the same buffers."""
        hot = self.hot
        if hot is None or hot.pending_rows == 0:
            return
        wanted: IntArray | None = None
        if slots is not None:
            wanted = np.unique(hot.has_pending(slots))
            if len(wanted) == 0:
                return
        for site in range(N_SITES):
            taken = hot.take_pending(site, wanted)
            if taken is None:
                continue
            slot_of_row, rows = taken
            slots, offsets = group(slot_of_row)
            self.arena.make_room(site, slots, np.diff(offsets))
            status = np.zeros(len(slot_of_row), dtype=np.int8)
            changed = np.zeros(len(slots), dtype=np.bool_)
            self._insert(self.arena, site, slots, offsets, rows, status, changed)
            if np.any(status != kernels.APPENDED):
                raise TierError(
                    f"site {SITES[site]}: {int(np.sum(status != kernels.APPENDED))} pending rows "
                    "not appended to the cold arena (the tiers disagree)"
                )
        self._compact_if_sparse(self.arena)

    def _rebuild_hot(self) -> None:
        """The hot tier of the full buffers in the arena (after a restore, into an empty hot
        tier): each buffer's latest ``hot_points_per_site`` records, and its count."""
        hot = self.hot
        assert hot is not None
        n = len(self.stars)
        hot.grow_rows(n)
        arena, tails = self.arena, hot.arena
        count = arena.seg_count[:n].astype(np.int64)
        hot.held[:n] = count
        kept = np.minimum(count, hot.points_per_site)
        classes = np.searchsorted(tails.class_sizes, kept[kept > 0])
        tails.reserve(int(tails.class_sizes[classes].sum()))
        source, target = arena.columns, tails.columns
        top = kernels.copy_tails(
            n,
            hot.points_per_site,
            arena.seg_offset,
            arena.seg_class,
            arena.seg_head,
            arena.seg_count,
            arena.class_sizes,
            source["t"],
            source["flux"],
            source["ferr"],
            source["sky"],
            source["fwhm"],
            source["airmass"],
            source["psf"],
            tails.seg_offset,
            tails.seg_class,
            tails.seg_head,
            tails.seg_count,
            tails.class_sizes,
            target["t"],
            target["flux"],
            target["ferr"],
            target["sky"],
            target["fwhm"],
            target["airmass"],
            target["psf"],
        )
        tails.bump[0] = top

    # -- read --------------------------------------------------------------------------------

    def to_trigger_arrays(self, star_ids: npt.ArrayLike, last: int | None = None) -> TriggerInput:
        """CSR trigger input of the given stars (unknown ones get no datasets).

        Parameters
        ----------
        star_ids : (S,) int
        last : keep only the latest ``last`` points of each dataset; enough for
            :func:`consumer.alertfinder.api.rising_batch` with ``n <= last`` and a cached
            ``baseline``, at a fraction of the cost of the whole buffers. None: every point.

        Returns
        -------
        TriggerInput
        """
        ids = np.ascontiguousarray(star_ids, dtype=np.int64).reshape(-1)
        slots = self.stars.lookup(ids)
        known = slots[slots >= 0]
        self.merge_pending(known)
        arena = self.arena
        if last is not None and last < 0:
            raise ValueError(f"last: {last}, expected >= 0 or None")
        held = arena.seg_count[known].astype(np.int64)
        n_points = int((held if last is None else np.minimum(held, 2 * last)).sum())
        n_max_datasets = 2 * N_SITES * len(ids)
        t = np.empty(n_points, dtype=np.float64)
        flux = np.empty(n_points, dtype=np.float64)
        flux_err = np.empty(n_points, dtype=np.float64)
        dataset_offsets = np.empty(n_max_datasets + 1, dtype=np.int64)
        star_offsets = np.empty(len(ids) + 1, dtype=np.int64)
        dataset_site = np.empty(n_max_datasets, dtype=np.int8)
        dataset_field = np.empty(n_max_datasets, dtype=np.int16)
        columns = arena.columns
        n_datasets, n_written = kernels.gather_trigger(
            slots,
            -1 if last is None else last,
            self.stars.fields,
            arena.seg_offset,
            arena.seg_class,
            arena.seg_head,
            arena.seg_count,
            arena.class_sizes,
            columns["t"],
            columns["flux"],
            columns["ferr"],
            columns["psf"],
            HJD_OFFSET,
            FLUX_ERR_TABLE,
            t,
            flux,
            flux_err,
            dataset_offsets,
            star_offsets,
            dataset_site,
            dataset_field,
        )
        return TriggerInput(
            star_ids=ids,
            t=t[:n_written],
            flux=flux[:n_written],
            flux_err=flux_err[:n_written],
            dataset_offsets=dataset_offsets[: n_datasets + 1],
            star_offsets=star_offsets,
            dataset_site=dataset_site[:n_datasets],
            dataset_field=dataset_field[:n_datasets],
        )

    def datasets(self, star_ids: IntArray) -> StarDatasets:
        """Every column of held ``star_ids``, decoded, in one compiled pass."""
        slots = self.stars.rows(star_ids)
        self.merge_pending(slots)
        arena = self.arena
        n_points = int(arena.seg_count[slots].astype(np.int64).sum())
        n_max_datasets = 2 * N_SITES * len(slots)
        hjd, flux, flux_err = (np.empty(n_points, dtype=np.float64) for _ in range(3))
        sky, fwhm, airmass, psf = (np.empty(n_points, dtype=np.float32) for _ in range(4))
        dataset_offsets = np.empty(n_max_datasets + 1, dtype=np.int64)
        star_offsets = np.empty(len(slots) + 1, dtype=np.int64)
        dataset_site = np.empty(n_max_datasets, dtype=np.int64)
        dataset_field = np.empty(n_max_datasets, dtype=np.int64)
        columns = arena.columns
        n_datasets, _ = kernels.gather_datasets(
            slots,
            self.stars.fields,
            arena.seg_offset,
            arena.seg_class,
            arena.seg_head,
            arena.seg_count,
            arena.class_sizes,
            columns["t"],
            columns["flux"],
            columns["ferr"],
            columns["sky"],
            columns["fwhm"],
            columns["airmass"],
            columns["psf"],
            HJD_OFFSET,
            FLUX_ERR_TABLE,
            SKY_TABLE,
            FWHM_TABLE,
            AIRMASS_TABLE,
            PSF_TABLE,
            hjd,
            flux,
            flux_err,
            sky,
            fwhm,
            airmass,
            psf,
            dataset_offsets,
            star_offsets,
            dataset_site,
            dataset_field,
        )
        return StarDatasets(
            star_ids=np.asarray(star_ids, dtype=np.int64),
            star_offsets=star_offsets,
            dataset_site=dataset_site[:n_datasets],
            dataset_field=dataset_field[:n_datasets],
            dataset_offsets=dataset_offsets[: n_datasets + 1],
            hjd=hjd,
            flux=flux,
            flux_err=flux_err,
            sky=sky,
            fwhm=fwhm,
            airmass=airmass,
            psf_quality=psf,
        )

    def rising_input(
        self,
        star_ids: IntArray,
        last: int,
        refresh_fraction: float,
        *,
        force: bool = False,
        baseline_part: IntArray | None = None,
    ) -> tuple[TriggerInput, FloatArray, int]:
        """The rising test's input for held ``star_ids`` (sorted, unique): their datasets'
        latest ``last`` points as :meth:`to_trigger_arrays` gives them, and each dataset's
        cached median flux (NaN as 0), after refreshing the stale medians (the trigger's cache
        in :attr:`stars`: ``baseline``, ``baseline_points``, ``fresh_points``; see
        :func:`~consumer.state.kernels.trigger_tails`). ``baseline_part`` (aligned with
        ``star_ids``; default 1) makes a refreshed median that of each dataset's oldest
        ``1 / baseline_part`` (the rule's baseline). Returns the input, the (D,) medians and
        the number of stars refreshed.

        With two tiers, stars with one field tag whose cache is fresh are read from the hot
        tails alone; stale caches are refreshed from the full buffers in the cold arena, and
        stars with two field tags are read there whole (:mod:`consumer.state.tiers`)."""
        ids = np.asarray(star_ids, dtype=np.int64)
        slots = self.stars.rows(ids)
        parts = (
            np.ones(len(ids), dtype=np.int64)
            if baseline_part is None
            else np.ascontiguousarray(baseline_part, dtype=np.int64)
        )
        hot, stars = self.hot, self.stars
        if hot is None or last > hot.points_per_site:
            self.merge_pending(slots)
            return self._rising_from(self.arena, slots, ids, parts, last, refresh_fraction, force)
        single = np.flatnonzero(stars.fields[slots, 1] < 0)
        double = np.flatnonzero(stars.fields[slots, 1] >= 0)
        rows = slots[single]
        # The kernel's staleness rule, on the hot tier's counts of the full buffers.
        points = stars.baseline_points[rows]
        stale = (points == 0) | (stars.fresh_points[rows] > refresh_fraction * points)
        stale |= np.any((hot.held[rows] > 0) & ~np.isfinite(stars.baseline[rows, :, 0]), axis=1)
        if force:
            stale[:] = True
        refreshed = int(stale.sum())
        if refreshed or len(double):
            self.merge_pending(np.concatenate([rows[stale], slots[double]]))
        if refreshed:
            self._rising_from(
                self.arena, rows[stale], ids[single][stale], parts[single][stale], 0, 0.0, True
            )
        tails, medians, _ = self._rising_from(
            hot.arena, rows, ids[single], parts[single], last, float("inf"), False
        )
        if not len(double):
            return tails, medians, refreshed
        whole, whole_medians, whole_refreshed = self._rising_from(
            self.arena, slots[double], ids[double], parts[double], last, refresh_fraction, force
        )
        merged, merged_medians = _merge_inputs(
            ids, [(single, tails, medians), (double, whole, whole_medians)]
        )
        return merged, merged_medians, refreshed + whole_refreshed

    def _rising_from(
        self,
        arena: Arena,
        slots: IntArray,
        star_ids: IntArray,
        parts: IntArray,
        last: int,
        refresh_fraction: float,
        force: bool,
    ) -> tuple[TriggerInput, FloatArray, int]:
        """:func:`~consumer.state.kernels.trigger_tails` of star ``slots`` on one arena (one
        of trigger columns only, the hot tier's, for stars with one field tag only)."""
        stars = self.stars
        if "psf" not in arena.held_columns and np.any(stars.fields[slots, 1] >= 0):
            raise TierError("stars with two field tags read from the hot tails (no field bits)")
        held = arena.seg_count[slots].astype(np.int64)
        n_points = int(np.minimum(held, 2 * last).sum())
        n_max_datasets = 2 * N_SITES * len(slots)
        t = np.empty(n_points, dtype=np.float64)
        flux = np.empty(n_points, dtype=np.float64)
        flux_err = np.empty(n_points, dtype=np.float64)
        dataset_offsets = np.empty(n_max_datasets + 1, dtype=np.int64)
        star_offsets = np.empty(len(slots) + 1, dtype=np.int64)
        dataset_site = np.empty(n_max_datasets, dtype=np.int8)
        dataset_field = np.empty(n_max_datasets, dtype=np.int16)
        medians = np.empty(n_max_datasets, dtype=np.float64)
        columns = arena.columns
        n_datasets, n_written, refreshed = kernels.trigger_tails(
            slots,
            parts,
            last,
            refresh_fraction,
            force,
            stars.fields,
            arena.seg_offset,
            arena.seg_class,
            arena.seg_head,
            arena.seg_count,
            arena.class_sizes,
            columns["t"],
            columns["flux"],
            columns["ferr"],
            columns["psf"],
            HJD_OFFSET,
            FLUX_ERR_TABLE,
            stars.baseline,
            stars.baseline_points,
            stars.fresh_points,
            t,
            flux,
            flux_err,
            dataset_offsets,
            star_offsets,
            dataset_site,
            dataset_field,
            medians,
        )
        tails = TriggerInput(
            star_ids=np.asarray(star_ids, dtype=np.int64),
            t=t[:n_written],
            flux=flux[:n_written],
            flux_err=flux_err[:n_written],
            dataset_offsets=dataset_offsets[: n_datasets + 1],
            star_offsets=star_offsets,
            dataset_site=dataset_site[:n_datasets],
            dataset_field=dataset_field[:n_datasets],
        )
        return tails, medians[:n_datasets], refreshed

    def snapshot(self, star_id: int) -> tuple[npt.NDArray[np.void], ...]:
        """The stored records of one star, one (N_site,) :data:`SNAPSHOT_DTYPE` array per site,
        time-ordered and exactly as quantised (for equality tests)."""
        row = self.stars.row(star_id)
        self.merge_pending(np.array([row], dtype=np.int64))
        fields = self.stars.fields[row]
        columns = self.arena.columns
        out = []
        for site in range(N_SITES):
            index = self.arena.record_index(row, site)
            records = np.empty(len(index), dtype=SNAPSHOT_DTYPE)
            records["t"] = columns["t"][index]
            records["flux"] = columns["flux"][index]
            records["flux_err"] = columns["ferr"][index]
            records["sky"] = columns["sky"][index]
            records["fwhm"] = columns["fwhm"][index]
            records["airmass"] = columns["airmass"][index]
            psf = columns["psf"][index]
            records["psf_quality"] = psf & kernels.PSF_MASK
            records["field"] = fields[(psf >> 7).astype(np.intp)]
            out.append(records)
        return tuple(out)

    def features(self, star_id: int) -> tuple[SiteBuffer, ...]:
        """Decoded buffers of one star, one :class:`SiteBuffer` per site (SITES order)."""
        return tuple(decode_records(records) for records in self.snapshot(star_id))

    def field_tags(self, star_ids: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """(S, 2) the field tags of each star (-1 where unused); a dataset's tag is one of them,
        and ``TriggerInput.dataset_field`` says which."""
        return self.stars.fields[self.stars.rows(star_ids)]

    # -- checkpoint / restore ----------------------------------------------------------------

    def checkpoint(self, directory: Path, offsets: Mapping[str, int]) -> Path:
        """Write the store and the input ``offsets`` it covers to ``directory/state.ckpt``
        atomically (:func:`~consumer.state.checkpoint.write_checkpoint`); returns the path."""
        self.merge_pending()
        header = {
            "capacity_per_site": self.config.capacity_per_site,
            "class_sizes": self.arena.class_sizes.tolist(),
            "n_stars": len(self.stars),
            "bump": int(self.arena.bump[0]),
            "offsets": {str(k): int(v) for k, v in offsets.items()},
        }
        arrays = {**self.stars.columns(), **self.arena.tables(len(self.stars))}
        return write_checkpoint(directory, arrays, header)

    @classmethod
    def restore(
        cls, directory: Path, config: StoreConfig
    ) -> tuple[StarStore, dict[str, int]] | None:
        """The store and offsets of ``directory/state.ckpt``; None when there is none.

        Raises
        ------
        CheckpointError
            The file is truncated or corrupt, or was written with another capacity.
        """
        with CheckpointFile.open(directory) as checkpoint:
            if checkpoint is None:
                return None
            path, header = checkpoint.path, checkpoint.header
            if header["capacity_per_site"] != config.capacity_per_site:
                raise CheckpointError(
                    f"{path}: written with capacity_per_site={header['capacity_per_site']}, "
                    f"config has {config.capacity_per_site}"
                )
            store = cls(config)
            n = int(header["n_stars"])
            bump = int(header["bump"])
            store.stars.grow(n)
            store.arena.grow_rows(n)
            store.arena.reserve(bump)
            store.arena.bump[0] = bump
            expected = {*STAR_COLUMNS, *store.arena.tables(0)}
            checkpoint.expect(expected)
            width = checkpoint.shape("free_list")[1]
            if width > store.arena.free_list.shape[1]:
                store.arena.free_list = np.zeros((len(store.arena.class_sizes), width), np.int64)
            targets = {**store.stars.columns(n), **store.arena.tables(n, free_width=width)}
            for name, target in targets.items():
                checkpoint.read(name, target)
        if not store.arena.consistent(n):
            raise CheckpointError(f"{path}: segment tables inconsistent with the arena")
        if not store.stars.reindex(n):
            raise CheckpointError(f"{path}: duplicate star ids")
        if store.hot is not None:
            store._rebuild_hot()
        return store, {str(k): int(v) for k, v in header["offsets"].items()}

    def flush(self) -> None:
        """Write a memory-mapped arena's dirty pages to its files, pending rows merged first
        (not a checkpoint)."""
        self.merge_pending()
        self.arena.flush()


# -- equality helpers --------------------------------------------------------------------------


def store_differences(a: StarStore, b: StarStore, limit: int = 10) -> list[str]:
    """Up to ``limit`` human-readable differences between the buffers of two stores (empty when
    every star holds the same records at every site; slots and segments may differ)."""
    out: list[str] = []
    ids_a = set(a.star_ids.tolist())
    ids_b = set(b.star_ids.tolist())
    for star in sorted(ids_a ^ ids_b)[:limit]:
        out.append(f"star {star}: only in {'first' if star in ids_a else 'second'} store")
    for star in sorted(ids_a & ids_b):
        if len(out) >= limit:
            break
        for site, (ra, rb) in enumerate(zip(a.snapshot(star), b.snapshot(star), strict=True)):
            if ra.tobytes() != rb.tobytes():
                out.append(f"star {star} site {SITES[site]}: {len(ra)} vs {len(rb)} records differ")
    return out[:limit]


def stores_equal(a: StarStore, b: StarStore) -> bool:
    """Whether every star holds the same records at every site in both stores."""
    return not store_differences(a, b, limit=1)


def _merge_inputs(
    star_ids: IntArray, parts: list[tuple[IntArray, TriggerInput, FloatArray]]
) -> tuple[TriggerInput, FloatArray]:
    """One CSR input of ``star_ids`` from parts covering them: (positions in ``star_ids``, the
    input of those stars in that order, its (D,) per-dataset medians)."""
    n_datasets = np.zeros(len(star_ids), dtype=np.int64)
    for positions, data, _ in parts:
        n_datasets[positions] = np.diff(data.star_offsets)
    star_offsets = np.zeros(len(star_ids) + 1, dtype=np.int64)
    np.cumsum(n_datasets, out=star_offsets[1:])
    total = int(star_offsets[-1])
    dataset_site = np.empty(total, dtype=np.int8)
    dataset_field = np.empty(total, dtype=np.int16)
    medians = np.empty(total, dtype=np.float64)
    lengths = np.empty(total, dtype=np.int64)
    targets = []
    for positions, data, part_medians in parts:
        counts = np.diff(data.star_offsets)
        target = np.repeat(star_offsets[positions] - data.star_offsets[:-1], counts) + np.arange(
            len(data.dataset_site)
        )
        targets.append(target)
        dataset_site[target] = data.dataset_site
        dataset_field[target] = data.dataset_field
        medians[target] = part_medians
        lengths[target] = np.diff(data.dataset_offsets)
    dataset_offsets = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths, out=dataset_offsets[1:])
    t, flux, flux_err = (np.empty(int(dataset_offsets[-1])) for _ in range(3))
    for (_, data, _), target in zip(parts, targets, strict=True):
        counts = np.diff(data.dataset_offsets)
        points = np.repeat(dataset_offsets[target] - data.dataset_offsets[:-1], counts)
        points += np.arange(len(data.t))
        t[points] = data.t
        flux[points] = data.flux
        flux_err[points] = data.flux_err
    merged = TriggerInput(
        star_ids=star_ids,
        t=t,
        flux=flux,
        flux_err=flux_err,
        dataset_offsets=dataset_offsets,
        star_offsets=star_offsets,
        dataset_site=dataset_site,
        dataset_field=dataset_field,
    )
    return merged, medians


def _site_index(site: int | str) -> int:
    if isinstance(site, str):
        if site not in SITES:
            raise ValueError(f"site: unknown site {site!r}, expected one of {SITES}")
        return SITES.index(site)
    if not 0 <= site < N_SITES:
        raise ValueError(f"site: index {site} out of range 0..{N_SITES - 1}")
    return int(site)
