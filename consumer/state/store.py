"""The per-partition star store: bounded, time-ordered, compact per-star per-site buffers.

One :class:`StarStore` holds the recent photometry of the stars of one input partition, so the
state moves with the partition on a rebalance (checkpoint on revoke, restore on assign).

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

Layout: 14 bytes per observation
---------------------------------
Columnar arena, one array per column; resolution is the largest rounding error.

============  =======  ==========================================================  ===========
column        type     encoding                                                    resolution
============  =======  ==========================================================  ===========
hjd           uint32   seconds since HJD 2450000 (range to HJD 2499710)            0.5 s
flux          float32  as is                                                       2**-24 rel.
flux_err      uint16   log scale over [1e-4, 1e8] flux units, clipped              2.1e-4 rel.
sky           uint8    log scale over [10, 1e6] ADU, clipped; 255 = missing        2.3 % rel.
fwhm          uint8    0.05 arcsec steps over [0, 12.7], clipped; 255 = missing    0.025 "
airmass       uint8    0.01 steps over [1.00, 3.54], clipped; 255 = missing        0.005
psf_quality   7 bits   integer 0-100; 127 = missing                                0.5
field         1 bit    which of the star's two field tags (bit 7 of the psf byte)  exact
============  =======  ==========================================================  ===========

The effect on the trigger is measured in ``bench/bench_state.py`` (BENCHMARKS.md, "Daemon
state"): AlertFinder dchi2 on quantised versus original light curves.

Memory: size classes, compaction, optionally memory-mapped
----------------------------------------------------------
A buffer is a ring in a segment of the arena whose size is one of 4, 16, 64, 256, 1024, ...
records, the last class being ``capacity_per_site`` (1500 by default); a buffer that would
overflow moves to the smallest class that fits, and its old segment goes to a per-class free
list for the next star that grows into that class. Most stars hold far fewer than 1500 points
per site, so they pay for what they hold (within 4x; within 1500/1024 at ~900 points). When
stars grow in step nobody reuses the freed segments, so :meth:`StarStore.append` compacts the
arena (rewrites the held segments back to back, O(records held)) once more than
``StoreConfig.compact_free_fraction`` (default 0.1) of it is free.

Bytes per star (:meth:`StarStore.nbytes`): 14 x the sizes of its segments, plus
:data:`OVERHEAD_BYTES_PER_STAR` = 152 (slot tables 63, the sorted ``star_id -> slot`` index 16,
and the :data:`ANNOTATIONS` 73: position, trigger cache, alert bookkeeping); plus up to
``compact_free_fraction`` of free segments. At the defaults a full star takes
3 x 1500 x 14 + 152 = 63 152 bytes (< 64 KiB), a star with ~900 points per site
3 x 1024 x 14 + 152 = 43 160 bytes.

With ``StoreConfig.directory`` set (one directory per partition, see
:meth:`StoreConfig.for_partition`) the arena columns are ``np.memmap`` views of sparse files
there, grown by extending the file and remapping, so the OS page cache bounds the resident
memory and a store larger than RAM still works (at disk speed when cold); per-star metadata
(152 bytes a star) stays in RAM. Those files are scratch space, deleted on start: not a
checkpoint.

Checkpoints
-----------
:meth:`StarStore.checkpoint` writes one file, ``state.ckpt``, holding the store and the input
offsets it covers: the raw arrays, then a JSON footer (format version, capacity, array names,
dtypes, shapes, byte offsets and CRC32s, offsets), the footer's length and CRC32, and an end
marker. It is written to a temporary name, fsynced, renamed over the previous one and the
directory fsynced, so a crash leaves the old or the new checkpoint, never a mix.
:meth:`StarStore.restore` returns ``None`` when there is no checkpoint (rebuild from the topic)
and raises :class:`CheckpointError` when one is there but truncated, corrupt or incompatible.

API
---
``StarStore(StoreConfig(...))``; ``append(site, observations) -> AppendResult`` once per decoded
batch; ``to_trigger_arrays(star_ids, last=None) -> TriggerInput`` (CSR input of
:func:`consumer.alertfinder.api.evaluate_batch` / ``rising_batch``); ``features(star_id)`` (decoded
per-site columns for LensNet); ``snapshot(star_id)`` and :func:`stores_equal` /
:func:`store_differences` for equality tests; ``checkpoint(directory, offsets)`` and
``StarStore.restore(directory, config)``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import mmap
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import HJD_OFFSET, SITES
from consumer.edge.photometry import Observations
from consumer.exceptions import ConfigError, LensNetError
from consumer.state import kernels

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

N_SITES: Final = len(SITES)
SECONDS_PER_DAY: Final = 86_400.0
T_MAX_SECONDS: Final = 2**32 - 1

FLUX_ERR_RANGE: Final = (1e-4, 1e8)
SKY_RANGE: Final = (10.0, 1e6)
FWHM_STEP: Final = 0.05
AIRMASS_MIN: Final = 1.0
AIRMASS_STEP: Final = 0.01
MISSING_U8: Final = 255
MISSING_PSF: Final = 127

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FERR_LOG_MIN = float(np.log(FLUX_ERR_RANGE[0]))
_FERR_LOG_STEP = float(np.log(FLUX_ERR_RANGE[1] / FLUX_ERR_RANGE[0]) / 65535)
_SKY_LOG_MIN = float(np.log(SKY_RANGE[0]))
_SKY_LOG_STEP = float(np.log(SKY_RANGE[1] / SKY_RANGE[0]) / 254)

#: Arena columns: name -> dtype. 14 bytes per observation.
ARENA_COLUMNS: Final[dict[str, np.dtype[Any]]] = {
    "t": np.dtype(np.uint32),
    "flux": np.dtype(np.float32),
    "ferr": np.dtype(np.uint16),
    "sky": np.dtype(np.uint8),
    "fwhm": np.dtype(np.uint8),
    "airmass": np.dtype(np.uint8),
    "psf": np.dtype(np.uint8),
}
RECORD_BYTES: Final = sum(dtype.itemsize for dtype in ARENA_COLUMNS.values())

#: Per-star annotations the store keeps for its callers (checkpointed with the buffers):
#: name -> (dtype, trailing shape, fill value). Positions come from the latest observation of
#: the star; the others are written by the daemon through :meth:`StarStore.put`.
ANNOTATIONS: Final[dict[str, tuple[np.dtype[Any], tuple[int, ...], float]]] = {
    "chip": (np.dtype(np.int8), (), -1),  # CCD chip 0-3
    "ra": (np.dtype(np.float64), (), np.nan),  # deg
    "dec": (np.dtype(np.float64), (), np.nan),  # deg
    "x": (np.dtype(np.float32), (), np.nan),  # pixels on the chip
    "y": (np.dtype(np.float32), (), np.nan),
    # Trigger cache: median flux per site and field tag (the rising test's baseline), and the
    # points held and offered since, to know when it is stale.
    "baseline": (np.dtype(np.float32), (N_SITES, 2), np.nan),
    "baseline_points": (np.dtype(np.int32), (), 0),
    "fresh_points": (np.dtype(np.int32), (), 0),
    # Alert bookkeeping: HJD of the published alert, of the last LensNet score.
    "alerted_hjd": (np.dtype(np.float64), (), np.nan),
    "scored_hjd": (np.dtype(np.float64), (), np.nan),
}

#: Per-star metadata arrays: name -> (dtype, trailing shape, fill value).
_META: Final[dict[str, tuple[np.dtype[Any], tuple[int, ...], float]]] = {
    "star_ids": (np.dtype(np.int64), (), 0),
    "fields": (np.dtype(np.int16), (2,), -1),
    "seg_offset": (np.dtype(np.int64), (N_SITES,), 0),
    "seg_class": (np.dtype(np.int8), (N_SITES,), -1),
    "seg_head": (np.dtype(np.int32), (N_SITES,), 0),
    "seg_count": (np.dtype(np.int32), (N_SITES,), 0),
    **ANNOTATIONS,
}
#: Bytes of per-star metadata (slot tables 63, annotations 73), beside the observations: 136.
META_BYTES_PER_STAR: Final = sum(
    dtype.itemsize * int(np.prod(shape)) for dtype, shape, _ in _META.values()
)

#: Bytes per star beside its observations: metadata plus the sorted-array index (16): 152.
OVERHEAD_BYTES_PER_STAR: Final = META_BYTES_PER_STAR + 16

_COMPACT_MIN_BYTES = 1 << 20

CHECKPOINT_NAME: Final = "state.ckpt"
_FORMAT = "lensnet-star-store"
_VERSION = 2
_END_MAGIC = b"LNSTORE1"
_FOOTER = struct.Struct("<QI8s")  # footer JSON length, its CRC32, end marker
_CHUNK = 1 << 24
_INITIAL_RECORDS = 1 << 16

#: Snapshot records: the stored (quantised) columns, ``field`` as the field tag.
SNAPSHOT_DTYPE: Final = np.dtype(
    [
        ("t", np.uint32),
        ("flux", np.float32),
        ("flux_err", np.uint16),
        ("sky", np.uint8),
        ("fwhm", np.uint8),
        ("airmass", np.uint8),
        ("psf_quality", np.uint8),
        ("field", np.int16),
    ]
)


class CheckpointError(LensNetError):
    """A checkpoint file exists but is truncated, corrupt or incompatible; the message says so."""


class UnknownStarError(LensNetError, KeyError):
    """The star is not in the store."""


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
    """

    capacity_per_site: int = 1500
    max_stars: int = 2_000_000
    directory: Path | None = None
    compact_free_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.capacity_per_site <= 2**31 - 1:
            raise ConfigError(f"capacity_per_site: {self.capacity_per_site}, expected >= 1")
        if self.max_stars < 0:
            raise ConfigError(f"max_stars: {self.max_stars}, expected >= 0")
        if not 0 < self.compact_free_fraction <= 1:
            raise ConfigError(
                f"compact_free_fraction: {self.compact_free_fraction}, expected in (0, 1]"
            )

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
class SiteBuffer:
    """One site's buffer of one star, decoded; every array (N,), time-ordered, NaN = missing."""

    hjd: FloatArray  # days, full HJD
    flux: FloatArray  # DIA flux units
    flux_err: FloatArray
    sky: FloatArray  # ADU
    fwhm: FloatArray  # arcsec
    airmass: FloatArray
    psf_quality: FloatArray  # 0-100
    field: npt.NDArray[np.int16]


class _Arena:
    """The observation columns, in RAM or as memory-mapped sparse files; grows by doubling.

    Files are ``arena-<generation>-<column>.bin``; compaction writes the next generation.
    """

    def __init__(self, directory: Path | None, records: int, generation: int = 0) -> None:
        self.directory = directory
        self.generation = generation
        self.records = 0
        self.columns: dict[str, npt.NDArray[Any]] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.reserve(records)

    def path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / f"arena-{self.generation}-{name}.bin"

    def reserve(self, records: int) -> None:
        """Make room for at least ``records`` records, keeping the content."""
        if self.columns and records <= self.records:
            return
        new_records = max(records, 2 * self.records, _INITIAL_RECORDS)
        for name, dtype in ARENA_COLUMNS.items():
            if self.directory is None:
                # Anonymous mapping rather than malloc: pages are touched only when written
                # and go back to the OS when the column is dropped (grown or compacted). Huge
                # pages (as numpy asks for its own large arrays): appends write 7 columns at
                # scattered places, and with 4 KiB pages the TLB misses cost ~5x in speed.
                buffer = mmap.mmap(-1, new_records * dtype.itemsize)
                if hasattr(mmap, "MADV_HUGEPAGE"):
                    buffer.madvise(mmap.MADV_HUGEPAGE)
                column = np.frombuffer(buffer, dtype=dtype)
                if self.records:
                    column[: self.records] = self.columns[name]
            else:
                path = self.path(name)
                with path.open("ab") as handle:  # a sparse extension: no pages are written
                    handle.truncate(new_records * dtype.itemsize)
                column = np.memmap(path, dtype=dtype, mode="r+", shape=(new_records,))
            self.columns[name] = column
        self.records = new_records

    def release(self) -> None:
        """Drop the columns and delete the files (the mappings close when unreferenced)."""
        self.columns = {}
        if self.directory is not None:
            for name in ARENA_COLUMNS:
                self.path(name).unlink(missing_ok=True)

    def flush(self) -> None:
        for column in self.columns.values():
            if isinstance(column, np.memmap):
                column.flush()


class StarStore:
    """Rolling per-star, per-site buffers of one partition (see the module docstring)."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        capacity = config.capacity_per_site
        sizes = [4**k for k in range(1, 16) if 4**k < capacity] + [capacity]
        self._class_sizes = np.array(sizes, dtype=np.int64)
        # star_id -> slot: star ids sorted, and the slot of each (16 bytes per star).
        self._index_ids = np.empty(0, dtype=np.int64)
        self._index_slots = np.empty(0, dtype=np.int64)
        self._n_stars = 0
        self._meta: dict[str, npt.NDArray[Any]] = {}
        self._grow_meta(1024)
        if config.directory is not None:  # scratch of an earlier run: not a checkpoint
            for stale in config.directory.glob("arena-*.bin"):
                stale.unlink()
        self._arena = _Arena(config.directory, _INITIAL_RECORDS)
        self._bump = np.zeros(1, dtype=np.int64)
        self._free_list = np.zeros((len(sizes), 1024), dtype=np.int64)
        self._free_count = np.zeros(len(sizes), dtype=np.int64)

    # -- size and introspection -------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_stars

    def __contains__(self, star_id: object) -> bool:
        if not isinstance(star_id, int | np.integer):
            return False
        return bool(self._lookup(np.array([star_id], dtype=np.int64))[0] >= 0)

    @property
    def star_ids(self) -> IntArray:
        """(S,) ids of the stars held, in order of admission."""
        return self._meta["star_ids"][: self._n_stars].copy()

    def latest(self) -> npt.NDArray[np.float64]:
        """(S,) HJD of each held star's newest observation (any site), in ``star_ids`` order."""
        n = self._n_stars
        meta = self._meta
        count = meta["seg_count"][:n].astype(np.int64)  # (S, sites)
        cls = meta["seg_class"][:n].astype(np.int64)
        size = np.where(count > 0, self._class_sizes[np.maximum(cls, 0)], 1)
        index = meta["seg_offset"][:n] + (meta["seg_head"][:n] + count - 1) % size
        seconds = self._arena.columns["t"][np.where(count > 0, index, 0)].astype(np.float64)
        newest = np.where(count > 0, HJD_OFFSET + seconds / 86400.0, -np.inf).max(
            axis=1, initial=-np.inf
        )
        return np.asarray(newest, dtype=np.float64)

    def nbytes(self) -> int:
        """Bytes of the state: arena segments handed out (held or on a free list), per-star
        metadata and index (:data:`OVERHEAD_BYTES_PER_STAR` each) and the free lists."""
        return int(
            self._bump[0] * RECORD_BYTES
            + self._n_stars * OVERHEAD_BYTES_PER_STAR
            + self._free_list.nbytes
        )

    def free_records(self) -> int:
        """Records in segments on the free lists (handed out once, not holding data now)."""
        return int((self._free_count * self._class_sizes).sum())

    def compact(self) -> None:
        """Rewrite the arena with only the held segments, back to back (O(records held)).

        :meth:`append` calls it when more than ``config.compact_free_fraction`` of the arena is on
        free lists (stars outgrowing their size class leave their old segments there, and when
        every star grows together nobody reuses them).
        """
        live = int(self._bump[0]) - self.free_records()
        old = self._arena
        new = _Arena(old.directory, live + live // 4, old.generation + 1)
        a, b = old.columns, new.columns
        top = kernels.compact(
            self._n_stars,
            self._meta["seg_offset"],
            self._meta["seg_class"],
            self._meta["seg_head"],
            self._meta["seg_count"],
            self._class_sizes,
            *(a[name] for name in ARENA_COLUMNS),
            *(b[name] for name in ARENA_COLUMNS),
        )
        assert top == live
        old.release()
        self._arena = new
        self._bump[0] = top
        self._free_count[:] = 0

    def counts(self, star_id: int) -> tuple[int, ...]:
        """Observations held per site."""
        slot = self._slot(star_id)
        return tuple(int(c) for c in self._meta["seg_count"][slot])

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
        unique_slots = self._slots_admitting(unique_ids)
        admitted = unique_slots >= 0
        group_sizes = np.diff(np.r_[first, len(rows)])
        admitted_rows = np.repeat(admitted, group_sizes)
        refused_rows = np.sort(rows[~admitted_rows])
        rows = rows[admitted_rows]
        slots = unique_slots[admitted]
        group_offsets = np.zeros(len(slots) + 1, dtype=np.int64)
        np.cumsum(group_sizes[admitted], out=group_offsets[1:])
        self._reserve(site_index, slots, group_sizes[admitted])
        self._annotate(obs, rows, slots, group_offsets)

        status = np.zeros(len(rows), dtype=np.int8)
        changed = np.zeros(len(slots), dtype=np.bool_)
        meta = self._meta
        arena = self._arena.columns
        evicted = kernels.insert_rows(
            site_index,
            slots,
            group_offsets,
            codes.t[rows].astype(np.uint32),
            obs.flux[rows].astype(np.float32),
            codes.flux_err[rows],
            codes.sky[rows],
            codes.fwhm[rows],
            codes.airmass[rows],
            codes.psf_quality[rows],
            obs.field[rows].astype(np.int16),
            meta["fields"],
            meta["seg_offset"],
            meta["seg_class"],
            meta["seg_head"],
            meta["seg_count"],
            self._class_sizes,
            arena["t"],
            arena["flux"],
            arena["ferr"],
            arena["sky"],
            arena["fwhm"],
            arena["airmass"],
            arena["psf"],
            self._bump,
            self._free_list,
            self._free_count,
            status,
            changed,
        )
        free = self.free_records()
        if (
            free * RECORD_BYTES > _COMPACT_MIN_BYTES
            and free > self.config.compact_free_fraction * self._bump[0]
        ):
            self.compact()
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

    def _lookup(self, star_ids: IntArray) -> IntArray:
        """Slot of each star id, -1 for stars not held (sorted-array index, O(log S) each)."""
        if len(self._index_ids) == 0:
            return np.full(len(star_ids), -1, dtype=np.int64)
        position = np.searchsorted(self._index_ids, star_ids)
        position = np.minimum(position, len(self._index_ids) - 1)
        found = self._index_ids[position] == star_ids
        return np.where(found, self._index_slots[position], -1)

    def _slots_admitting(self, unique_ids: IntArray) -> IntArray:
        """Slot of each (sorted, unique) star id, admitting new stars while there is room;
        -1 for refused ones."""
        slots = self._lookup(unique_ids)
        new = np.flatnonzero(slots < 0)
        if new.size == 0:
            return slots
        admit = new[: max(self.config.max_stars - self._n_stars, 0)]
        if admit.size:
            first = self._n_stars
            new_slots = np.arange(first, first + admit.size, dtype=np.int64)
            self._grow_meta(first + admit.size)
            new_ids = unique_ids[admit]
            self._meta["star_ids"][new_slots] = new_ids
            # One O(S) merge per batch that brings new stars; none in the steady state.
            where = np.searchsorted(self._index_ids, new_ids)
            self._index_ids = np.insert(self._index_ids, where, new_ids)
            self._index_slots = np.insert(self._index_slots, where, new_slots)
            self._n_stars += admit.size
            slots[admit] = new_slots
        return slots

    def _grow_meta(self, stars: int) -> None:
        current = len(self._meta["star_ids"]) if self._meta else 0
        if stars <= current:
            return
        new = max(stars, 2 * current)
        for name, (dtype, shape, fill) in _META.items():
            array = np.full((new, *shape), fill, dtype=dtype)
            if current:
                array[:current] = self._meta[name]
            self._meta[name] = array

    def _reserve(self, site: int, slots: IntArray, new_rows: IntArray) -> None:
        """Room for every segment this batch may move to, and for the segments it frees."""
        count = self._meta["seg_count"][slots, site].astype(np.int64)
        cls = self._meta["seg_class"][slots, site].astype(np.int64)
        size = np.where(cls >= 0, self._class_sizes[np.maximum(cls, 0)], 0)
        target = np.minimum(count + new_rows, self._class_sizes[-1])
        grows = size < target
        new_classes = np.searchsorted(self._class_sizes, target[grows])
        needed = int(self._class_sizes[new_classes].sum())
        self._arena.reserve(int(self._bump[0]) + needed)
        width = int(self._free_count.max()) + len(slots)
        if width > self._free_list.shape[1]:
            wider = np.zeros((len(self._class_sizes), 2 * width), dtype=np.int64)
            wider[:, : self._free_list.shape[1]] = self._free_list
            self._free_list = wider

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
        slots = self._lookup(ids)
        known = slots[slots >= 0]
        meta = self._meta
        if last is not None and last < 0:
            raise ValueError(f"last: {last}, expected >= 0 or None")
        held = meta["seg_count"][known].astype(np.int64)
        n_points = int((held if last is None else np.minimum(held, 2 * last)).sum())
        n_max_datasets = 2 * N_SITES * len(ids)
        t = np.empty(n_points, dtype=np.float64)
        flux = np.empty(n_points, dtype=np.float64)
        flux_err = np.empty(n_points, dtype=np.float64)
        dataset_offsets = np.empty(n_max_datasets + 1, dtype=np.int64)
        star_offsets = np.empty(len(ids) + 1, dtype=np.int64)
        dataset_site = np.empty(n_max_datasets, dtype=np.int8)
        dataset_field = np.empty(n_max_datasets, dtype=np.int16)
        arena = self._arena.columns
        n_datasets, n_written = kernels.gather_trigger(
            slots,
            -1 if last is None else last,
            meta["fields"],
            meta["seg_offset"],
            meta["seg_class"],
            meta["seg_head"],
            meta["seg_count"],
            self._class_sizes,
            arena["t"],
            arena["flux"],
            arena["ferr"],
            arena["psf"],
            HJD_OFFSET,
            _FERR_TABLE,
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

    def snapshot(self, star_id: int) -> tuple[npt.NDArray[np.void], ...]:
        """The stored records of one star, one (N_site,) :data:`SNAPSHOT_DTYPE` array per site,
        time-ordered and exactly as quantised (for equality tests)."""
        slot = self._slot(star_id)
        fields = self._meta["fields"][slot]
        out = []
        for site in range(N_SITES):
            index = self._record_index(slot, site)
            arena = self._arena.columns
            records = np.empty(len(index), dtype=SNAPSHOT_DTYPE)
            records["t"] = arena["t"][index]
            records["flux"] = arena["flux"][index]
            records["flux_err"] = arena["ferr"][index]
            records["sky"] = arena["sky"][index]
            records["fwhm"] = arena["fwhm"][index]
            records["airmass"] = arena["airmass"][index]
            psf = arena["psf"][index]
            records["psf_quality"] = psf & kernels.PSF_MASK
            records["field"] = fields[(psf >> 7).astype(np.intp)]
            out.append(records)
        return tuple(out)

    def features(self, star_id: int) -> tuple[SiteBuffer, ...]:
        """Decoded buffers of one star, one :class:`SiteBuffer` per site (SITES order)."""
        return tuple(decode_records(records) for records in self.snapshot(star_id))

    # -- annotations -------------------------------------------------------------------------

    def get(self, name: str, star_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Values of the annotation ``name`` (see :data:`ANNOTATIONS`) for ``star_ids``: shape
        (S, *trailing). Raises :class:`UnknownStarError` for a star not held."""
        return self._meta[_annotation(name)][self._slots_of(star_ids)]

    def put(self, name: str, star_ids: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Set the annotation ``name`` of ``star_ids`` (values broadcast to (S, *trailing))."""
        self._meta[_annotation(name)][self._slots_of(star_ids)] = values

    def field_tags(self, star_ids: npt.ArrayLike) -> npt.NDArray[np.int16]:
        """(S, 2) the field tags of each star (-1 where unused); a dataset's tag is one of them,
        and ``TriggerInput.dataset_field`` says which."""
        return self._meta["fields"][self._slots_of(star_ids)]

    def _slots_of(self, star_ids: npt.ArrayLike) -> IntArray:
        ids = np.ascontiguousarray(star_ids, dtype=np.int64).reshape(-1)
        slots = self._lookup(ids)
        if np.any(slots < 0):
            raise UnknownStarError(f"star {int(ids[np.argmax(slots < 0)])} is not in the store")
        return slots

    def _annotate(
        self, obs: Observations, rows: IntArray, slots: IntArray, group_offsets: IntArray
    ) -> None:
        """Positions from each star's latest row of the batch; count the points offered."""
        if len(slots) == 0:
            return
        latest = rows[group_offsets[1:] - 1]
        meta = self._meta
        meta["chip"][slots] = obs.chip[latest].astype(np.int8)
        for name in ("ra", "dec", "x", "y"):
            meta[name][slots] = getattr(obs, name)[latest]
        fresh = meta["fresh_points"]
        fresh[slots] = np.minimum(
            fresh[slots].astype(np.int64) + np.diff(group_offsets), np.iinfo(np.int32).max
        )

    def _slot(self, star_id: int) -> int:
        slot = int(self._lookup(np.array([star_id], dtype=np.int64))[0])
        if slot < 0:
            raise UnknownStarError(f"star {star_id} is not in the store")
        return slot

    def _record_index(self, slot: int, site: int) -> IntArray:
        count = int(self._meta["seg_count"][slot, site])
        if count == 0:
            return np.empty(0, dtype=np.int64)
        size = int(self._class_sizes[self._meta["seg_class"][slot, site]])
        head = int(self._meta["seg_head"][slot, site])
        offset = int(self._meta["seg_offset"][slot, site])
        return offset + (head + np.arange(count, dtype=np.int64)) % size

    # -- checkpoint / restore ----------------------------------------------------------------

    def checkpoint(self, directory: Path, offsets: Mapping[str, int]) -> Path:
        """Write the store and the input ``offsets`` it covers to ``directory/state.ckpt``
        atomically (temporary file, fsync, rename, directory fsync); returns the path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CHECKPOINT_NAME
        temporary = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
        n = self._n_stars
        bump = int(self._bump[0])
        arrays: dict[str, npt.NDArray[Any]] = {name: self._meta[name][:n] for name in _META}
        arrays["free_list"] = self._free_list[:, : max(int(self._free_count.max()), 0)]
        arrays["free_count"] = self._free_count
        for name in ARENA_COLUMNS:
            arrays[f"arena_{name}"] = self._arena.columns[name][:bump]
        entries = []
        try:
            with temporary.open("wb") as handle:
                for name, array in arrays.items():
                    start = handle.tell()
                    crc = _write_array(handle, np.ascontiguousarray(array))
                    entries.append(
                        {
                            "name": name,
                            "dtype": array.dtype.str,
                            "shape": list(array.shape),
                            "offset": start,
                            "nbytes": int(array.nbytes),
                            "crc32": crc,
                        }
                    )
                footer = json.dumps(
                    {
                        "format": _FORMAT,
                        "version": _VERSION,
                        "capacity_per_site": self.config.capacity_per_site,
                        "class_sizes": self._class_sizes.tolist(),
                        "n_stars": n,
                        "bump": bump,
                        "offsets": {str(k): int(v) for k, v in offsets.items()},
                        "arrays": entries,
                    }
                ).encode()
                handle.write(footer)
                handle.write(_FOOTER.pack(len(footer), zlib.crc32(footer), _END_MAGIC))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return path

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
        path = directory / CHECKPOINT_NAME
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        with handle:
            header = _read_footer(handle, path)
            if header.get("format") != _FORMAT or header.get("version") != _VERSION:
                raise CheckpointError(f"{path}: not a version {_VERSION} {_FORMAT} checkpoint")
            if header["capacity_per_site"] != config.capacity_per_site:
                raise CheckpointError(
                    f"{path}: written with capacity_per_site={header['capacity_per_site']}, "
                    f"config has {config.capacity_per_site}"
                )
            store = cls(config)
            n = int(header["n_stars"])
            bump = int(header["bump"])
            store._grow_meta(n)
            store._arena.reserve(bump)
            entries = {entry["name"]: entry for entry in header["arrays"]}
            expected = {*_META, "free_list", "free_count"} | {f"arena_{c}" for c in ARENA_COLUMNS}
            if set(entries) != expected:
                raise CheckpointError(f"{path}: arrays {sorted(entries)}, expected {expected}")
            width = int(entries["free_list"]["shape"][1])
            if width > store._free_list.shape[1]:
                store._free_list = np.zeros((len(store._class_sizes), width), dtype=np.int64)
            targets: dict[str, npt.NDArray[Any]] = {name: store._meta[name][:n] for name in _META}
            targets["free_list"] = store._free_list[:, :width]
            targets["free_count"] = store._free_count
            for name in ARENA_COLUMNS:
                targets[f"arena_{name}"] = store._arena.columns[name][:bump]
            for name, target in targets.items():
                _read_array(handle, path, entries[name], target)
        store._n_stars = n
        store._bump[0] = bump
        store._check_layout(path)
        ids = store._meta["star_ids"][:n]
        order = np.argsort(ids, kind="stable")
        store._index_ids = ids[order]
        store._index_slots = order.astype(np.int64)
        if n and np.any(np.diff(store._index_ids) == 0):
            raise CheckpointError(f"{path}: duplicate star ids")
        return store, {str(k): int(v) for k, v in header["offsets"].items()}

    def _check_layout(self, path: Path) -> None:
        """Refuse tables whose segments fall outside the arena: the kernels do not bounds-check,
        so a checkpoint that passed its CRCs but was written wrong must not reach them."""
        n = self._n_stars
        meta = self._meta
        cls = meta["seg_class"][:n].astype(np.int64)
        held = cls >= 0
        n_classes = len(self._class_sizes)
        if np.any(cls >= n_classes) or np.any(cls < -1):
            raise CheckpointError(f"{path}: size class out of range")
        size = np.where(held, self._class_sizes[np.clip(cls, 0, n_classes - 1)], 0)
        offset = meta["seg_offset"][:n]
        count = meta["seg_count"][:n]
        head = meta["seg_head"][:n]
        bump = int(self._bump[0])
        bad = (
            (held & ((offset < 0) | (offset + size > bump)))
            | (count < 0)
            | (count > size)
            | (head < 0)
            | (held & (head >= np.maximum(size, 1)))
        )
        free = self._free_list[:, : max(int(self._free_count.max(initial=0)), 0)]
        if bad.any() or np.any(self._free_count < 0) or np.any(free < 0) or np.any(free > bump):
            raise CheckpointError(f"{path}: segment tables inconsistent with the arena")

    def flush(self) -> None:
        """Write a memory-mapped arena's dirty pages to its files (not a checkpoint)."""
        self._arena.flush()


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


# -- quantisation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedRows:
    """Codes of a batch's rows as the store keeps them; every array (N,).

    ``t`` is seconds since HJD 2450000, -1 for a row the store rejects (its other codes are then
    meaningless).
    """

    t: IntArray
    flux_err: npt.NDArray[np.uint16]
    sky: npt.NDArray[np.uint8]
    fwhm: npt.NDArray[np.uint8]
    airmass: npt.NDArray[np.uint8]
    psf_quality: npt.NDArray[np.uint8]


def encode(obs: Observations) -> EncodedRows:
    """Quantise a batch (one compiled pass; the table in the module docstring)."""
    n = len(obs)
    codes = EncodedRows(
        t=np.empty(n, dtype=np.int64),
        flux_err=np.zeros(n, dtype=np.uint16),
        sky=np.zeros(n, dtype=np.uint8),
        fwhm=np.zeros(n, dtype=np.uint8),
        airmass=np.zeros(n, dtype=np.uint8),
        psf_quality=np.zeros(n, dtype=np.uint8),
    )
    kernels.encode_rows(
        np.asarray(obs.hjd, dtype=np.float64),
        np.asarray(obs.flux, dtype=np.float64),
        np.asarray(obs.flux_err, dtype=np.float64),
        np.asarray(obs.band, dtype=np.uint8),
        np.asarray(obs.sky, dtype=np.float32),
        np.asarray(obs.fwhm, dtype=np.float32),
        np.asarray(obs.airmass, dtype=np.float32),
        np.asarray(obs.psf_quality, dtype=np.float32),
        HJD_OFFSET,
        _FERR_LOG_MIN,
        _FERR_LOG_STEP,
        FLUX_ERR_RANGE[1],
        _SKY_LOG_MIN,
        _SKY_LOG_STEP,
        SKY_RANGE[1],
        FWHM_STEP,
        AIRMASS_MIN,
        AIRMASS_STEP,
        codes.t,
        codes.flux_err,
        codes.sky,
        codes.fwhm,
        codes.airmass,
        codes.psf_quality,
    )
    return codes


def decode_flux_err(code: npt.ArrayLike) -> FloatArray:
    """Flux error (DIA flux units) of its log code."""
    return np.exp(_FERR_LOG_MIN + np.asarray(code, dtype=np.float64) * _FERR_LOG_STEP)


#: flux_err of every code, flux units (65536,): the gather kernel's decoder.
_FERR_TABLE = decode_flux_err(np.arange(65536))


def decode_sky(code: npt.ArrayLike) -> FloatArray:
    """Sky (ADU) of its log code; NaN where missing."""
    array = np.asarray(code)
    values = np.exp(_SKY_LOG_MIN + array.astype(np.float64) * _SKY_LOG_STEP)
    return np.where(array == MISSING_U8, np.nan, values)


def _decode_linear(code: npt.ArrayLike, low: float, step: float) -> FloatArray:
    array = np.asarray(code)
    return np.where(array == MISSING_U8, np.nan, low + array.astype(np.float64) * step)


def decode_records(records: npt.NDArray[np.void]) -> SiteBuffer:
    """Decode :data:`SNAPSHOT_DTYPE` records to physical units (NaN where missing)."""
    psf = records["psf_quality"]
    return SiteBuffer(
        hjd=HJD_OFFSET + records["t"].astype(np.float64) / SECONDS_PER_DAY,
        flux=records["flux"].astype(np.float64),
        flux_err=decode_flux_err(records["flux_err"]),
        sky=decode_sky(records["sky"]),
        fwhm=_decode_linear(records["fwhm"], 0.0, FWHM_STEP),
        airmass=_decode_linear(records["airmass"], AIRMASS_MIN, AIRMASS_STEP),
        psf_quality=np.where(psf == MISSING_PSF, np.nan, psf.astype(np.float64)),
        field=records["field"].astype(np.int16),
    )


def quantise(obs: Observations) -> Observations:
    """The observations as the store reads them back (each column through its encoding);
    rows the store would reject come back unchanged."""
    codes = encode(obs)
    kept = codes.t >= 0
    records = np.empty(len(obs), dtype=SNAPSHOT_DTYPE)
    records["t"] = np.where(kept, codes.t, 0)
    records["flux"] = np.where(kept, obs.flux, 0.0)
    records["flux_err"] = codes.flux_err
    records["sky"] = codes.sky
    records["fwhm"] = codes.fwhm
    records["airmass"] = codes.airmass
    records["psf_quality"] = codes.psf_quality
    records["field"] = obs.field
    series = decode_records(records)
    columns = {f.name: getattr(obs, f.name) for f in fields(obs)}
    for name in ("hjd", "flux", "flux_err", "sky", "fwhm", "airmass", "psf_quality"):
        columns[name] = np.where(kept, getattr(series, name), columns[name])
    return Observations.from_columns(**columns)


# -- file helpers ----------------------------------------------------------------------------


def _annotation(name: str) -> str:
    if name not in ANNOTATIONS:
        raise KeyError(f"unknown annotation {name!r}; expected one of {', '.join(ANNOTATIONS)}")
    return name


def _site_index(site: int | str) -> int:
    if isinstance(site, str):
        if site not in SITES:
            raise ValueError(f"site: unknown site {site!r}, expected one of {SITES}")
        return SITES.index(site)
    if not 0 <= site < N_SITES:
        raise ValueError(f"site: index {site} out of range 0..{N_SITES - 1}")
    return int(site)


def _write_array(handle: BinaryIO, array: npt.NDArray[Any]) -> int:
    """Write the array's bytes in chunks (no full copy of a large memmap); returns its CRC32."""
    raw = array.reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, len(raw), _CHUNK):
        chunk = raw[start : start + _CHUNK]
        crc = zlib.crc32(chunk.data, crc)
        handle.write(chunk.data)
    return crc


def _read_footer(handle: io.BufferedReader, path: Path) -> dict[str, Any]:
    size = handle.seek(0, os.SEEK_END)
    if size < _FOOTER.size:
        raise CheckpointError(f"{path}: truncated ({size} bytes)")
    handle.seek(size - _FOOTER.size)
    length, crc, magic = _FOOTER.unpack(handle.read(_FOOTER.size))
    if magic != _END_MAGIC or length > size - _FOOTER.size:
        raise CheckpointError(f"{path}: truncated or not a checkpoint (no end marker)")
    handle.seek(size - _FOOTER.size - length)
    footer = handle.read(length)
    if zlib.crc32(footer) != crc:
        raise CheckpointError(f"{path}: footer CRC mismatch")
    try:
        header: dict[str, Any] = json.loads(footer)
    except ValueError as error:
        raise CheckpointError(f"{path}: unreadable footer: {error}") from error
    return header


def _read_array(
    handle: io.BufferedReader, path: Path, entry: Mapping[str, Any], target: npt.NDArray[Any]
) -> None:
    """Read one array's bytes into ``target`` (same dtype and shape), checking its CRC32."""
    name = entry["name"]
    if np.dtype(entry["dtype"]) != target.dtype or tuple(entry["shape"]) != target.shape:
        raise CheckpointError(
            f"{path}: array {name} is {entry['dtype']}{tuple(entry['shape'])}, "
            f"expected {target.dtype.str}{target.shape}"
        )
    contiguous = target if target.flags.c_contiguous else np.empty_like(target, order="C")
    raw = contiguous.reshape(-1).view(np.uint8)
    handle.seek(int(entry["offset"]))
    crc = 0
    for start in range(0, len(raw), _CHUNK):
        chunk = raw[start : start + _CHUNK]
        if handle.readinto(chunk.data) != len(chunk):
            raise CheckpointError(f"{path}: array {name} truncated")
        crc = zlib.crc32(chunk.data, crc)
    if crc != entry["crc32"]:
        raise CheckpointError(f"{path}: array {name} CRC mismatch")
    if contiguous is not target:
        target[...] = contiguous
