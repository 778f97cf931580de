"""Where a store's observations live: seven column arrays carved into per-star, per-site rings.

Columns
-------
One array per column of the 14-byte record (:data:`ARENA_COLUMNS`, codes as in
:mod:`consumer.state.encoding`), in RAM or, with a directory, as ``np.memmap`` views of sparse
files there (``arena-<owner>-<generation>-<column>.bin``), grown by extending the file and
remapping, so the OS page cache bounds the resident memory and a store larger than RAM still
works (at disk speed when cold). Those files are scratch space, not a checkpoint. ``owner`` is
a random token per arena, held by an exclusive lock on ``arena-<owner>.lock`` while the arena
lives: processes sharing a state directory (a partition moving between them) never write each
other's files, and an arena deletes the files of owners whose lock is free (ended).

An arena made with ``full_records=False`` (a hot tier's, :mod:`consumer.state.tiers`) holds
only :data:`TRIGGER_COLUMNS`, 10 bytes a record; its auxiliary columns are empty arrays, which
the kernels that move records (insert, compact, copy tails) skip.

Segments, size classes, compaction
----------------------------------
Each (star row, site) buffer is a ring in one *segment* of the columns whose size is one of 4,
16, 64, 256, 1024, ... records, the last class being ``capacity_per_site`` (1500 by default);
the segment tables (``seg_offset``, ``seg_class``, ``seg_head``, ``seg_count``, shape
(rows, sites)) say where each ring is and what it holds. A buffer that would overflow moves to
the smallest class that fits (:func:`consumer.state.kernels.insert_rows`), and its old segment
goes to a per-class free list for the next star that grows into that class. Most stars hold far
fewer than 1500 points per site, so they pay for what they hold (within 4x; within 1500/1024 at
~900 points). When stars grow in step nobody reuses the freed segments, so the store calls
:meth:`Arena.compact` (rewrites the held segments back to back, O(records held)) once more than
``compact_free_fraction`` of the arena is free.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import uuid
import weakref
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.state import kernels

IntArray = npt.NDArray[np.int64]

N_SITES: Final = len(SITES)

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

#: The columns the rising test reads of a star with one field tag (time, flux, flux error;
#: 10 bytes a record): all a hot tier's arena holds (:mod:`consumer.state.tiers`). The others,
#: the auxiliary columns (sky, fwhm, airmass, psf with its field bit), are then empty arrays,
#: which the kernels skip.
TRIGGER_COLUMNS: Final = ("t", "flux", "ferr")

#: Segment tables, one row per star row: name -> dtype, each of shape (rows, sites).
SEGMENT_TABLES: Final[dict[str, np.dtype[Any]]] = {
    "seg_offset": np.dtype(np.int64),
    "seg_class": np.dtype(np.int8),
    "seg_head": np.dtype(np.int32),
    "seg_count": np.dtype(np.int32),
}
#: Bytes of segment tables per star row: 51.
SEGMENT_BYTES_PER_ROW: Final = N_SITES * sum(d.itemsize for d in SEGMENT_TABLES.values())

_INITIAL_RECORDS = 1 << 16
_INITIAL_ROWS = 1024
_INITIAL_FREE_WIDTH = 1024


class Arena:
    """The observation records of one store, with the segment tables that place them."""

    seg_offset: IntArray  # (rows, sites) first record of the segment
    seg_class: npt.NDArray[np.int8]  # (rows, sites) size class; -1: no segment yet
    seg_head: npt.NDArray[np.int32]  # (rows, sites) oldest record's position in the ring
    seg_count: npt.NDArray[np.int32]  # (rows, sites) records held

    def __init__(
        self, capacity_per_site: int, directory: Path | None, *, full_records: bool = True
    ) -> None:
        """An empty arena of rings of up to ``capacity_per_site`` records, memory-mapped in
        ``directory`` (None: in RAM). ``full_records=False``: only :data:`TRIGGER_COLUMNS`
        (``record_bytes`` 10, not 14); the other columns stay empty (length 0)."""
        #: Names of the columns that hold records; the others of ARENA_COLUMNS are empty.
        self.held_columns = tuple(ARENA_COLUMNS) if full_records else TRIGGER_COLUMNS
        #: Bytes a record takes in this arena's columns.
        self.record_bytes = sum(ARENA_COLUMNS[name].itemsize for name in self.held_columns)
        sizes = [4**k for k in range(1, 16) if 4**k < capacity_per_site] + [capacity_per_site]
        self.class_sizes = np.array(sizes, dtype=np.int64)
        self.directory = directory
        self.generation = 0
        #: Records the columns have room for.
        self.records = 0
        self.columns: dict[str, npt.NDArray[Any]] = {}
        #: (1,) records handed out to segments so far (held or on a free list).
        self.bump = np.zeros(1, dtype=np.int64)
        self.free_list = np.zeros((len(sizes), _INITIAL_FREE_WIDTH), dtype=np.int64)
        self.free_count = np.zeros(len(sizes), dtype=np.int64)
        self._rows = 0
        self.grow_rows(_INITIAL_ROWS)
        self.owner = uuid.uuid4().hex[:12]
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            # Locked before it is visible under its name, so no one takes it for an ended one;
            # held until the arena is collected (then its files go) or the process ends.
            claiming = directory / f".arena-{self.owner}.lock"
            lock = os.open(claiming, os.O_CREAT | os.O_WRONLY, 0o644)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            claiming.rename(directory / f"arena-{self.owner}.lock")
            weakref.finalize(self, _release, lock, directory, self.owner)
            _remove_ended(directory, self.owner)
        self.reserve(_INITIAL_RECORDS)

    def path(self, name: str, generation: int | None = None) -> Path:
        """File of one column (memory-mapped arenas only)."""
        assert self.directory is not None
        generation = self.generation if generation is None else generation
        return self.directory / f"arena-{self.owner}-{generation}-{name}.bin"

    def reserve(self, records: int) -> None:
        """Make room for at least ``records`` records, keeping the content."""
        if self.columns and records <= self.records:
            return
        new_records = max(records, 2 * self.records, _INITIAL_RECORDS)
        for name, dtype in ARENA_COLUMNS.items():
            if name not in self.held_columns:
                column = np.empty(0, dtype=dtype)  # the kernels skip empty auxiliary columns
            elif self.directory is None:
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

    def grow_rows(self, rows: int) -> None:
        """Segment tables for at least ``rows`` star rows (new rows hold no segment)."""
        if rows <= self._rows:
            return
        new = max(rows, 2 * self._rows)
        for name, dtype in SEGMENT_TABLES.items():
            table = np.full((new, N_SITES), -1 if name == "seg_class" else 0, dtype=dtype)
            if self._rows:
                table[: self._rows] = getattr(self, name)
            setattr(self, name, table)
        self._rows = new

    def make_room(self, site: int, rows: IntArray, new_records: IntArray) -> None:
        """Room for every segment a batch adding ``new_records`` to the ``site`` buffers of
        ``rows`` may move to, and free-list room for the segments it frees."""
        count = self.seg_count[rows, site].astype(np.int64)
        cls = self.seg_class[rows, site].astype(np.int64)
        size = np.where(cls >= 0, self.class_sizes[np.maximum(cls, 0)], 0)
        target = np.minimum(count + new_records, self.class_sizes[-1])
        grows = size < target
        new_classes = np.searchsorted(self.class_sizes, target[grows])
        needed = int(self.class_sizes[new_classes].sum())
        self.reserve(int(self.bump[0]) + needed)
        # Only a buffer that moves frees a segment (one, of its old class).
        width = int(self.free_count.max()) + int(np.count_nonzero(grows & (cls >= 0)))
        if width > self.free_list.shape[1]:
            wider = np.zeros((len(self.class_sizes), 2 * width), dtype=np.int64)
            wider[:, : self.free_list.shape[1]] = self.free_list
            self.free_list = wider

    def free_records(self) -> int:
        """Records in segments on the free lists (handed out once, not holding data now)."""
        return int((self.free_count * self.class_sizes).sum())

    def compact(self, rows: int) -> None:
        """Rewrite the held segments of the first ``rows`` star rows back to back into a new
        generation of columns (O(records held)); the free lists empty, back to their initial
        width."""
        live = int(self.bump[0]) - self.free_records()
        old, old_generation = self.columns, self.generation
        self.columns, self.records = {}, 0
        self.generation += 1
        self.reserve(live + live // 4)
        top = kernels.compact(
            rows,
            self.seg_offset,
            self.seg_class,
            self.seg_head,
            self.seg_count,
            self.class_sizes,
            *(old[name] for name in ARENA_COLUMNS),
            *(self.columns[name] for name in ARENA_COLUMNS),
        )
        assert top == live
        if self.directory is not None:  # the old mappings close when unreferenced
            for name in self.held_columns:
                self.path(name, old_generation).unlink(missing_ok=True)
        self.bump[0] = top
        self.free_count[:] = 0
        # The lists are empty: give back the room a batch of many moving stars made them take
        # (2 x 8 bytes per row of that batch and class; the hot tier's rings never move again
        # once full, so there it would stay for good). make_room widens them again if needed.
        self.free_list = np.zeros((len(self.class_sizes), _INITIAL_FREE_WIDTH), dtype=np.int64)

    def record_index(self, row: int, site: int) -> IntArray:
        """Column indices of the records of one buffer, oldest first."""
        count = int(self.seg_count[row, site])
        if count == 0:
            return np.empty(0, dtype=np.int64)
        size = int(self.class_sizes[self.seg_class[row, site]])
        head = int(self.seg_head[row, site])
        offset = int(self.seg_offset[row, site])
        return offset + (head + np.arange(count, dtype=np.int64)) % size

    def newest_t(self, rows: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """(rows, sites) time code (seconds) of each buffer's newest record, and whether the
        buffer holds any."""
        count = self.seg_count[:rows].astype(np.int64)
        cls = self.seg_class[:rows].astype(np.int64)
        size = np.where(count > 0, self.class_sizes[np.maximum(cls, 0)], 1)
        index = self.seg_offset[:rows] + (self.seg_head[:rows] + count - 1) % size
        seconds = self.columns["t"][np.where(count > 0, index, 0)].astype(np.float64)
        return seconds, count > 0

    def newest_of(self, rows: IntArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """(R, sites) time code (seconds) of the newest record of each buffer of ``rows``, and
        whether the buffer holds any."""
        count = self.seg_count[rows].astype(np.int64)
        cls = self.seg_class[rows].astype(np.int64)
        size = np.where(count > 0, self.class_sizes[np.maximum(cls, 0)], 1)
        index = self.seg_offset[rows] + (self.seg_head[rows] + count - 1) % size
        seconds = self.columns["t"][np.where(count > 0, index, 0)].astype(np.int64)
        return seconds, count > 0

    def consistent(self, rows: int) -> bool:
        """Whether the segment tables of the first ``rows`` rows and the free lists stay
        inside the records handed out: the kernels do not bounds-check, so tables read from
        a checkpoint must pass this before they reach them."""
        cls = self.seg_class[:rows].astype(np.int64)
        held = cls >= 0
        n_classes = len(self.class_sizes)
        if np.any(cls >= n_classes) or np.any(cls < -1):
            return False
        size = np.where(held, self.class_sizes[np.clip(cls, 0, n_classes - 1)], 0)
        offset = self.seg_offset[:rows]
        count = self.seg_count[:rows]
        head = self.seg_head[:rows]
        bump = int(self.bump[0])
        bad = (
            (held & ((offset < 0) | (offset + size > bump)))
            | (count < 0)
            | (count > size)
            | (head < 0)
            | (held & (head >= np.maximum(size, 1)))
        )
        free = self.free_list[:, : max(int(self.free_count.max(initial=0)), 0)]
        return not (
            bad.any() or np.any(self.free_count < 0) or np.any(free < 0) or np.any(free > bump)
        )

    def tables(self, rows: int, free_width: int | None = None) -> dict[str, npt.NDArray[Any]]:
        """Views of what a checkpoint keeps, by its names there: the segment tables of the
        first ``rows`` rows, the free lists (``free_width`` columns; default: those in use)
        and the records handed out (``arena_<column>``)."""
        width = max(int(self.free_count.max()), 0) if free_width is None else free_width
        out: dict[str, npt.NDArray[Any]] = {
            name: getattr(self, name)[:rows] for name in SEGMENT_TABLES
        }
        out["free_list"] = self.free_list[:, :width]
        out["free_count"] = self.free_count
        for name in ARENA_COLUMNS:
            out[f"arena_{name}"] = self.columns[name][: int(self.bump[0])]
        return out

    def flush(self) -> None:
        """Write a memory-mapped arena's dirty pages to its files (not a checkpoint)."""
        for column in self.columns.values():
            if isinstance(column, np.memmap):
                column.flush()


def _release(lock: int, directory: Path, owner: str) -> None:
    """Delete the scratch files of a collected arena and release its lock."""
    for path in directory.glob(f"arena-{owner}-*.bin"):
        path.unlink(missing_ok=True)
    (directory / f"arena-{owner}.lock").unlink(missing_ok=True)
    os.close(lock)


def _remove_ended(directory: Path, owner: str) -> None:
    """Delete the scratch files in ``directory`` of arenas other than ``owner`` whose lock is
    free (their process ended or dropped them), and files of no known owner (older layouts)."""
    live = {owner}
    for lock_path in directory.glob("arena-*.lock"):
        other = lock_path.stem.removeprefix("arena-")
        if other == owner:
            continue
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.add(other)
                continue
        lock_path.unlink(missing_ok=True)
    for stale in directory.glob("arena-*.bin"):
        if stale.name.split("-")[1] not in live:
            stale.unlink(missing_ok=True)
