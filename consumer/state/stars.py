"""The per-star table of a store: one row per star, typed columns, a sorted id index.

A star gets a row when the store admits it and keeps it (rows are never reused); the row is
also its index into the arena's segment tables (the kernels call it the star's *slot*).
Columns are plain arrays over rows, read and written by callers with the rows of their stars::

    rows = store.stars.rows(star_ids)        # UnknownStarError for a star not held
    baseline = store.stars.baseline[rows]    # (S, sites, 2)
    store.stars.alerted_hjd[rows] = t_last

Arrays grow (reallocated) while a batch admits new stars, so take them after an append, not
across one. Positions come from each star's latest observation (:meth:`StarTable.observe`);
the trigger cache is written by :mod:`consumer.pipeline.trigger`, the alert bookkeeping by
:mod:`consumer.pipeline.scoring` and :mod:`consumer.state.partitions`. Every column is
checkpointed, under its attribute name.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consumer.constants import SITES
from consumer.edge.photometry import Observations
from consumer.exceptions import LensNetError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Columns: name -> (dtype, trailing shape, fill value of a new row).
COLUMNS: Final[dict[str, tuple[np.dtype[Any], tuple[int, ...], float]]] = {
    "star_ids": (np.dtype(np.int64), (), 0),
    "fields": (np.dtype(np.int16), (2,), -1),
    "chip": (np.dtype(np.int8), (), -1),
    "ra": (np.dtype(np.float64), (), np.nan),
    "dec": (np.dtype(np.float64), (), np.nan),
    "x": (np.dtype(np.float32), (), np.nan),
    "y": (np.dtype(np.float32), (), np.nan),
    "baseline": (np.dtype(np.float32), (len(SITES), 2), np.nan),
    "baseline_points": (np.dtype(np.int32), (), 0),
    "fresh_points": (np.dtype(np.int32), (), 0),
    "alerted_hjd": (np.dtype(np.float64), (), np.nan),
    "scored_hjd": (np.dtype(np.float64), (), np.nan),
}
#: Bytes of the columns per star (identity 12, annotations 73): 85.
COLUMN_BYTES_PER_STAR: Final = sum(
    dtype.itemsize * int(np.prod(shape)) for dtype, shape, _ in COLUMNS.values()
)
#: Bytes per star of the sorted ``star_id -> row`` index.
INDEX_BYTES_PER_STAR: Final = 16

_INITIAL_ROWS = 1024


class UnknownStarError(LensNetError, KeyError):
    """The star is not in the store."""


class StarTable:
    """Rows of per-star columns (see the module docstring)."""

    # Identity. The field tags are those of the star's overlapping fields, at most two; an
    # observation's psf byte says which of the two it carries.
    star_ids: IntArray  # (R,)
    fields: npt.NDArray[np.int16]  # (R, 2), -1 where unused
    # Position, from the latest observation.
    chip: npt.NDArray[np.int8]  # (R,) CCD chip 0-3, -1 unknown
    ra: FloatArray  # (R,) deg
    dec: FloatArray  # (R,) deg
    x: npt.NDArray[np.float32]  # (R,) pixels on the chip
    y: npt.NDArray[np.float32]  # (R,) pixels on the chip
    # Trigger cache: median flux per site and field tag (the rising test's baseline), the
    # points held when it was computed and the points offered since, to know when it is stale.
    baseline: npt.NDArray[np.float32]  # (R, sites, 2) DIA flux units
    baseline_points: npt.NDArray[np.int32]  # (R,)
    fresh_points: npt.NDArray[np.int32]  # (R,)
    # Alert bookkeeping: HJD of the published alert and of the last LensNet score (NaN: none).
    alerted_hjd: FloatArray  # (R,)
    scored_hjd: FloatArray  # (R,)

    def __init__(self) -> None:
        self._held = 0
        self._capacity = 0
        # star_id -> row: star ids sorted, and the row of each (16 bytes per star).
        self._index_ids = np.empty(0, dtype=np.int64)
        self._index_rows = np.empty(0, dtype=np.int64)
        self.grow(_INITIAL_ROWS)

    def __len__(self) -> int:
        """Rows in use: the stars held."""
        return self._held

    def grow(self, rows: int) -> None:
        """Room for at least ``rows`` rows (new ones filled as in :data:`COLUMNS`)."""
        if rows <= self._capacity:
            return
        new = max(rows, 2 * self._capacity)
        for name, (dtype, shape, fill) in COLUMNS.items():
            column = np.full((new, *shape), fill, dtype=dtype)
            if self._capacity:
                column[: self._capacity] = getattr(self, name)
            setattr(self, name, column)
        self._capacity = new

    def columns(self, rows: int | None = None) -> dict[str, npt.NDArray[Any]]:
        """Views of every column over the first ``rows`` rows (default: those in use), by
        name (what a checkpoint keeps)."""
        held = self._held if rows is None else rows
        return {name: getattr(self, name)[:held] for name in COLUMNS}

    # -- star id -> row ----------------------------------------------------------------------

    def lookup(self, star_ids: IntArray) -> IntArray:
        """Row of each star id, -1 for stars not held (sorted-array index, O(log S) each)."""
        if len(self._index_ids) == 0:
            return np.full(len(star_ids), -1, dtype=np.int64)
        position = np.searchsorted(self._index_ids, star_ids)
        position = np.minimum(position, len(self._index_ids) - 1)
        found = self._index_ids[position] == star_ids
        return np.where(found, self._index_rows[position], -1)

    def rows(self, star_ids: npt.ArrayLike) -> IntArray:
        """(S,) rows of ``star_ids``; :class:`UnknownStarError` for a star not held."""
        ids = np.ascontiguousarray(star_ids, dtype=np.int64).reshape(-1)
        rows = self.lookup(ids)
        if np.any(rows < 0):
            raise UnknownStarError(f"star {int(ids[np.argmax(rows < 0)])} is not in the store")
        return rows

    def row(self, star_id: int) -> int:
        """Row of one star; :class:`UnknownStarError` if it is not held."""
        row = int(self.lookup(np.array([star_id], dtype=np.int64))[0])
        if row < 0:
            raise UnknownStarError(f"star {star_id} is not in the store")
        return row

    def admit(self, unique_ids: IntArray, max_stars: int) -> IntArray:
        """Row of each (sorted, unique) star id, giving new stars rows while fewer than
        ``max_stars`` are held (lowest ids first); -1 for refused ones."""
        rows = self.lookup(unique_ids)
        new = np.flatnonzero(rows < 0)
        if new.size == 0:
            return rows
        admit = new[: max(max_stars - self._held, 0)]
        if admit.size:
            first = self._held
            new_rows = np.arange(first, first + admit.size, dtype=np.int64)
            self.grow(first + admit.size)
            new_ids = unique_ids[admit]
            self.star_ids[new_rows] = new_ids
            # One O(S) merge per batch that brings new stars; none in the steady state.
            where = np.searchsorted(self._index_ids, new_ids)
            self._index_ids = np.insert(self._index_ids, where, new_ids)
            self._index_rows = np.insert(self._index_rows, where, new_rows)
            self._held += admit.size
            rows[admit] = new_rows
        return rows

    def reindex(self, held: int) -> bool:
        """Take the first ``held`` rows as the stars held (after a restore wrote them) and
        rebuild the index; False when two rows hold the same star."""
        self._held = held
        ids = self.star_ids[:held]
        order = np.argsort(ids, kind="stable")
        self._index_ids = ids[order]
        self._index_rows = order.astype(np.int64)
        return not (held and np.any(np.diff(self._index_ids) == 0))

    # -- updates from observations --------------------------------------------------------------

    def observe(
        self, rows: IntArray, obs: Observations, latest: IntArray, offered: IntArray
    ) -> None:
        """Stars ``rows`` were offered ``offered`` points of ``obs``, the latest of each at
        row ``latest`` of ``obs``: take their positions from it and count the points."""
        if len(rows) == 0:
            return
        self.chip[rows] = obs.chip[latest].astype(np.int8)
        self.ra[rows] = obs.ra[latest]
        self.dec[rows] = obs.dec[latest]
        self.x[rows] = obs.x[latest]
        self.y[rows] = obs.y[latest]
        self.fresh_points[rows] = np.minimum(
            self.fresh_points[rows].astype(np.int64) + offered, np.iinfo(np.int32).max
        )
