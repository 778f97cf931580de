"""Compiled kernels of the star store (:mod:`~consumer.state.store`): quantise, insert, gather,
compact.

The store keeps, for every (star slot, site), one *segment*: a ring buffer of ``size`` records
in the columnar arena, holding the site's observations in time order from ``head`` (logical
index 0, the oldest) for ``count`` records. Segment sizes come from a short list of size classes
(``class_sizes``, increasing, the last one the capacity); a segment that would overflow moves to
the smallest class that fits, and the freed segment goes to its class's free list.

Arena columns (all of shape (A,)): ``t`` uint32 seconds since HJD 2450000, ``flux`` float32,
``ferr`` uint16 log-scaled flux error, ``sky`` uint8 log-scaled, ``fwhm``/``airmass`` uint8
linear, ``psf`` uint8 with bits 0-6 the PSF quality and bit 7 the field slot (0 or 1) of the
star's two field tags. An arena of trigger columns only (a hot tier's, ``t``, ``flux``,
``ferr``; :data:`consumer.state.arena.TRIGGER_COLUMNS`) passes the other four as empty arrays:
:func:`insert_rows`, :func:`compact` and :func:`copy_tails` then skip them, and the readers of
``psf`` (the field bit of a star with two field tags) must not be given such an arena for those
stars. The encoding constants live in :mod:`consumer.state.encoding` and are passed in
(:func:`encode_rows` applies them); the other kernels only move bytes and compare times. No
Kafka, Avro or logging here.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from consumer.alertfinder.kernels import baseline_count, median

#: Row outcomes written by :func:`insert_rows`.
APPENDED = 0
DUPLICATE = 1
DROPPED = 2  # older than everything in a full buffer ("too old")
REJECTED = 3

FIELD_BIT = np.uint8(128)
PSF_MASK = np.uint8(127)


@numba.njit(cache=True)
def _allocate(
    cls: int,
    class_sizes: npt.NDArray[np.int64],
    bump: npt.NDArray[np.int64],
    free_list: npt.NDArray[np.int64],
    free_count: npt.NDArray[np.int64],
) -> int:
    """Offset of a free segment of class ``cls``: the class's free list first, else the top."""
    if free_count[cls] > 0:
        free_count[cls] -= 1
        return free_list[cls, free_count[cls]]
    offset = bump[0]
    bump[0] += class_sizes[cls]
    return offset


@numba.njit(cache=True)
def insert_rows(
    site: int,
    slots: npt.NDArray[np.int64],
    group_offsets: npt.NDArray[np.int64],
    t: npt.NDArray[np.uint32],
    flux: npt.NDArray[np.float32],
    ferr: npt.NDArray[np.uint16],
    sky: npt.NDArray[np.uint8],
    fwhm: npt.NDArray[np.uint8],
    airmass: npt.NDArray[np.uint8],
    psf: npt.NDArray[np.uint8],
    field: npt.NDArray[np.int16],
    star_fields: npt.NDArray[np.int16],
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_sky: npt.NDArray[np.uint8],
    a_fwhm: npt.NDArray[np.uint8],
    a_airmass: npt.NDArray[np.uint8],
    a_psf: npt.NDArray[np.uint8],
    bump: npt.NDArray[np.int64],
    free_list: npt.NDArray[np.int64],
    free_count: npt.NDArray[np.int64],
    status: npt.NDArray[np.int8],
    changed: npt.NDArray[np.bool_],
) -> int:
    """Insert rows grouped by star (group g: rows ``group_offsets[g]:group_offsets[g + 1]``,
    sorted by ``t``) into the site's segment of star slot ``slots[g]``.

    Per row, ``status`` gets APPENDED, DUPLICATE (same quantised time already held), DROPPED
    (buffer full and the row older than everything held) or REJECTED (a third field tag).
    ``changed[g]`` is set when group g appended a row. Returns the number of records evicted
    (the oldest of a full buffer, pushed out by a later one). The caller guarantees room: the
    arena holds ``bump[0]`` plus every segment this batch may allocate, and each free-list row
    has space for one more entry per group whose segment moves to a larger class. An arena
    whose ``a_psf`` is empty holds the trigger columns only: the rows' other columns are not
    stored (the field tags are still assigned).
    """
    capacity = class_sizes[-1]
    aux = len(a_psf) > 0  # False: an arena of trigger columns only, the others empty
    evicted = 0
    for g in range(len(slots)):
        slot = slots[g]
        start = group_offsets[g]
        stop = group_offsets[g + 1]
        count = np.int64(seg_count[slot, site])
        cls = np.int64(seg_class[slot, site])
        target = min(count + (stop - start), capacity)
        size = class_sizes[cls] if cls >= 0 else 0
        if size < target:
            new_cls = 0
            while class_sizes[new_cls] < target:
                new_cls += 1
            new_offset = _allocate(new_cls, class_sizes, bump, free_list, free_count)
            if cls >= 0:
                old_offset = seg_offset[slot, site]
                head = np.int64(seg_head[slot, site])
                for i in range(count):
                    src = old_offset + (head + i) % size
                    dst = new_offset + i
                    a_t[dst] = a_t[src]
                    a_flux[dst] = a_flux[src]
                    a_ferr[dst] = a_ferr[src]
                    if aux:
                        a_sky[dst] = a_sky[src]
                        a_fwhm[dst] = a_fwhm[src]
                        a_airmass[dst] = a_airmass[src]
                        a_psf[dst] = a_psf[src]
                free_list[cls, free_count[cls]] = old_offset
                free_count[cls] += 1
            seg_offset[slot, site] = new_offset
            seg_class[slot, site] = new_cls
            seg_head[slot, site] = 0
            cls = np.int64(new_cls)
            size = class_sizes[cls]
        offset = seg_offset[slot, site]
        head = np.int64(seg_head[slot, site])
        for row in range(start, stop):
            # Field slot: the star's first two field tags, in order of arrival.
            if star_fields[slot, 0] == field[row] or star_fields[slot, 0] < 0:
                star_fields[slot, 0] = field[row]
                field_bit = np.uint8(0)
            elif star_fields[slot, 1] == field[row] or star_fields[slot, 1] < 0:
                star_fields[slot, 1] = field[row]
                field_bit = FIELD_BIT
            else:
                status[row] = REJECTED
                continue
            time = t[row]
            if count == 0 or time > a_t[offset + (head + count - 1) % size]:
                position = count  # the common case: later than everything held
                if count == size:  # only at full capacity: the oldest record goes
                    head = (head + 1) % size
                    count -= 1
                    position -= 1
                    evicted += 1
            else:
                low = np.int64(0)
                high = count
                while low < high:
                    mid = (low + high) // 2
                    if a_t[offset + (head + mid) % size] < time:
                        low = mid + 1
                    else:
                        high = mid
                position = low
                if position < count and a_t[offset + (head + position) % size] == time:
                    status[row] = DUPLICATE
                    continue
                if count == size:
                    if position == 0:
                        status[row] = DROPPED  # older than a full window: outside it
                        continue
                    head = (head + 1) % size
                    count -= 1
                    position -= 1
                    evicted += 1
                for i in range(count - 1, position - 1, -1):
                    src = offset + (head + i) % size
                    dst = offset + (head + i + 1) % size
                    a_t[dst] = a_t[src]
                    a_flux[dst] = a_flux[src]
                    a_ferr[dst] = a_ferr[src]
                    if aux:
                        a_sky[dst] = a_sky[src]
                        a_fwhm[dst] = a_fwhm[src]
                        a_airmass[dst] = a_airmass[src]
                        a_psf[dst] = a_psf[src]
            dst = offset + (head + position) % size
            a_t[dst] = time
            a_flux[dst] = flux[row]
            a_ferr[dst] = ferr[row]
            if aux:
                a_sky[dst] = sky[row]
                a_fwhm[dst] = fwhm[row]
                a_airmass[dst] = airmass[row]
                a_psf[dst] = psf[row] | field_bit
            count += 1
            status[row] = APPENDED
            changed[g] = True
        seg_head[slot, site] = head
        seg_count[slot, site] = count
    return evicted


@numba.njit(cache=True)
def gather_trigger(
    slots: npt.NDArray[np.int64],
    last: int,
    star_fields: npt.NDArray[np.int16],
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_psf: npt.NDArray[np.uint8],
    hjd_zero: float,
    ferr_table: npt.NDArray[np.float64],
    t: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float64],
    flux_err: npt.NDArray[np.float64],
    dataset_offsets: npt.NDArray[np.int64],
    star_offsets: npt.NDArray[np.int64],
    dataset_site: npt.NDArray[np.int8],
    dataset_field: npt.NDArray[np.int16],
) -> tuple[int, int]:
    """Write the site-field datasets of star slots ``slots`` (-1: unknown, no datasets) as CSR,
    each cut to its latest ``last`` points (``last < 0``: all).

    Outputs are sized by the caller for every held point and 2 datasets per site; returns the
    numbers of datasets and points written. ``t`` in days (full HJD), ``flux_err`` through
    ``ferr_table`` (code -> flux units). Datasets are site-major, then field slot; empty ones
    are not written.
    """
    n_sites = seg_count.shape[1]
    point = 0
    dataset = 0
    dataset_offsets[0] = 0
    star_offsets[0] = 0
    for s in range(len(slots)):
        slot = slots[s]
        if slot >= 0:
            n_fields = 2 if star_fields[slot, 1] >= 0 else 1
            for site in range(n_sites):
                count = np.int64(seg_count[slot, site])
                if count == 0:
                    continue
                size = class_sizes[seg_class[slot, site]]
                offset = seg_offset[slot, site]
                head = np.int64(seg_head[slot, site])
                for field_slot in range(n_fields):
                    bit = FIELD_BIT if field_slot == 1 else np.uint8(0)
                    # Walk back to the first of the latest `last` points of this field.
                    begin = count
                    kept = 0
                    while begin > 0 and (last < 0 or kept < last):
                        begin -= 1
                        if (
                            n_fields == 1
                            or (a_psf[offset + (head + begin) % size] & FIELD_BIT) == bit
                        ):
                            kept += 1
                    if kept == 0:
                        continue
                    for i in range(begin, count):
                        src = offset + (head + i) % size
                        if n_fields == 2 and (a_psf[src] & FIELD_BIT) != bit:
                            continue
                        t[point] = hjd_zero + a_t[src] / 86400.0
                        flux[point] = a_flux[src]
                        flux_err[point] = ferr_table[a_ferr[src]]
                        point += 1
                    dataset_site[dataset] = site
                    dataset_field[dataset] = star_fields[slot, field_slot]
                    dataset += 1
                    dataset_offsets[dataset] = point
        star_offsets[s + 1] = dataset
    return dataset, point


@numba.njit(cache=True)
def trigger_tails(
    slots: npt.NDArray[np.int64],
    baseline_part: npt.NDArray[np.int64],
    last: int,
    refresh_fraction: float,
    force: bool,
    star_fields: npt.NDArray[np.int16],
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_psf: npt.NDArray[np.uint8],
    hjd_zero: float,
    ferr_table: npt.NDArray[np.float64],
    baseline: npt.NDArray[np.float32],
    baseline_points: npt.NDArray[np.int32],
    fresh_points: npt.NDArray[np.int32],
    t: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float64],
    flux_err: npt.NDArray[np.float64],
    dataset_offsets: npt.NDArray[np.int64],
    star_offsets: npt.NDArray[np.int64],
    dataset_site: npt.NDArray[np.int8],
    dataset_field: npt.NDArray[np.int16],
    dataset_baseline: npt.NDArray[np.float64],
) -> tuple[int, int, int]:
    """The rising test's input for star slots ``slots`` (all held), with its cache of medians.

    Per star, first the cache (the ``baseline`` (R, sites, 2) float32 medians per site and
    field slot, ``baseline_points`` and ``fresh_points``): it is stale when a dataset with
    points has no finite median, when it was never computed (``baseline_points == 0``), when
    more than ``refresh_fraction`` of the points it was computed on arrived since, or always
    with ``force``. A stale star gets the median of every dataset's whole buffer (NaN for the
    datasets without points), ``baseline_points`` = its points held, ``fresh_points`` = 0; with
    ``baseline_part[s] = j > 1`` (aligned with ``slots``) the median of the oldest
    ``ceil(held / j)`` points of each dataset instead (the rule's baseline).
    Then its datasets' latest ``last`` points are written as :func:`gather_trigger` writes them
    (``last = 0``: none), with each dataset's field tag and cached median as float64 (NaN as
    0). Returns the datasets and points written, and the stars refreshed.
    """
    n_sites = seg_count.shape[1]
    capacity = class_sizes[-1]
    values = np.empty(capacity)
    scratch = np.empty(capacity)
    point = 0
    dataset = 0
    refreshed = 0
    dataset_offsets[0] = 0
    star_offsets[0] = 0
    for s in range(len(slots)):
        slot = slots[s]
        n_fields = 2 if star_fields[slot, 1] >= 0 else 1
        stale = force or baseline_points[slot] == 0
        stale = stale or fresh_points[slot] > refresh_fraction * baseline_points[slot]
        held = np.int64(0)
        for site in range(n_sites):
            count = np.int64(seg_count[slot, site])
            held += count
            if count == 0 or stale:
                continue
            size = class_sizes[seg_class[slot, site]]
            offset = seg_offset[slot, site]
            head = np.int64(seg_head[slot, site])
            for field_slot in range(n_fields):
                if np.isfinite(baseline[slot, site, field_slot]):
                    continue
                bit = FIELD_BIT if field_slot == 1 else np.uint8(0)
                for i in range(count):
                    if n_fields == 1 or (a_psf[offset + (head + i) % size] & FIELD_BIT) == bit:
                        stale = True  # a dataset with points and no median
                        break
        if stale:
            refreshed += 1
            for site in range(n_sites):
                count = np.int64(seg_count[slot, site])
                size = class_sizes[seg_class[slot, site]] if count > 0 else 1
                offset = seg_offset[slot, site]
                head = np.int64(seg_head[slot, site])
                for field_slot in range(2):
                    bit = FIELD_BIT if field_slot == 1 else np.uint8(0)
                    kept = 0
                    if field_slot < n_fields:
                        for i in range(count):
                            src = offset + (head + i) % size
                            if n_fields == 1 or (a_psf[src] & FIELD_BIT) == bit:
                                values[kept] = a_flux[src]
                                kept += 1
                    used = baseline_count(kept, baseline_part[s])
                    middle = median(values, 0, used, scratch) if kept > 0 else np.nan
                    baseline[slot, site, field_slot] = np.float32(middle)
            baseline_points[slot] = held
            fresh_points[slot] = 0
        for site in range(n_sites):
            count = np.int64(seg_count[slot, site])
            if count == 0 or last == 0:
                continue
            size = class_sizes[seg_class[slot, site]]
            offset = seg_offset[slot, site]
            head = np.int64(seg_head[slot, site])
            for field_slot in range(n_fields):
                bit = FIELD_BIT if field_slot == 1 else np.uint8(0)
                begin = count
                kept = 0
                while begin > 0 and kept < last:
                    begin -= 1
                    if n_fields == 1 or (a_psf[offset + (head + begin) % size] & FIELD_BIT) == bit:
                        kept += 1
                if kept == 0:
                    continue
                for i in range(begin, count):
                    src = offset + (head + i) % size
                    if n_fields == 2 and (a_psf[src] & FIELD_BIT) != bit:
                        continue
                    t[point] = hjd_zero + a_t[src] / 86400.0
                    flux[point] = a_flux[src]
                    flux_err[point] = ferr_table[a_ferr[src]]
                    point += 1
                cached = float(baseline[slot, site, field_slot])  # as np.nan_to_num
                if np.isnan(cached):
                    cached = 0.0
                elif np.isinf(cached):
                    cached = 1.7976931348623157e308 if cached > 0 else -1.7976931348623157e308
                dataset_site[dataset] = site
                dataset_field[dataset] = star_fields[slot, field_slot]
                dataset_baseline[dataset] = cached
                dataset += 1
                dataset_offsets[dataset] = point
        star_offsets[s + 1] = dataset
    return dataset, point, refreshed


@numba.njit(cache=True)
def gather_datasets(
    slots: npt.NDArray[np.int64],
    star_fields: npt.NDArray[np.int16],
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_sky: npt.NDArray[np.uint8],
    a_fwhm: npt.NDArray[np.uint8],
    a_airmass: npt.NDArray[np.uint8],
    a_psf: npt.NDArray[np.uint8],
    hjd_zero: float,
    ferr_table: npt.NDArray[np.float64],
    sky_table: npt.NDArray[np.float32],
    fwhm_table: npt.NDArray[np.float32],
    airmass_table: npt.NDArray[np.float32],
    psf_table: npt.NDArray[np.float32],
    hjd: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float64],
    flux_err: npt.NDArray[np.float64],
    sky: npt.NDArray[np.float32],
    fwhm: npt.NDArray[np.float32],
    airmass: npt.NDArray[np.float32],
    psf_quality: npt.NDArray[np.float32],
    dataset_offsets: npt.NDArray[np.int64],
    star_offsets: npt.NDArray[np.int64],
    dataset_site: npt.NDArray[np.int64],
    dataset_field: npt.NDArray[np.int64],
) -> tuple[int, int]:
    """Every column of star slots ``slots`` (all held) decoded, one dataset per site and
    field tag (site-major, then ascending field tag; only those with records), as CSR.

    Decoding is by tables (code -> value, made by :mod:`consumer.state.encoding`'s decoders),
    so every value equals what :meth:`StarStore.features` decodes. Returns the numbers of
    datasets and points written.
    """
    n_sites = seg_count.shape[1]
    point = 0
    dataset = 0
    dataset_offsets[0] = 0
    star_offsets[0] = 0
    for s in range(len(slots)):
        slot = slots[s]
        for site in range(n_sites):
            count = np.int64(seg_count[slot, site])
            if count == 0:
                continue
            size = class_sizes[seg_class[slot, site]]
            offset = seg_offset[slot, site]
            head = np.int64(seg_head[slot, site])
            seen = np.zeros(2, dtype=np.bool_)
            for i in range(count):
                seen[(a_psf[offset + (head + i) % size] & FIELD_BIT) >> 7] = True
            order = (
                (0, 1)
                if star_fields[slot, 1] < 0 or star_fields[slot, 0] <= star_fields[slot, 1]
                else (1, 0)
            )
            for field_slot in order:
                if not seen[field_slot]:
                    continue
                bit = FIELD_BIT if field_slot == 1 else np.uint8(0)
                for i in range(count):
                    src = offset + (head + i) % size
                    code = a_psf[src]
                    if (code & FIELD_BIT) != bit:
                        continue
                    hjd[point] = hjd_zero + a_t[src] / 86400.0
                    flux[point] = a_flux[src]
                    flux_err[point] = ferr_table[a_ferr[src]]
                    sky[point] = sky_table[a_sky[src]]
                    fwhm[point] = fwhm_table[a_fwhm[src]]
                    airmass[point] = airmass_table[a_airmass[src]]
                    psf_quality[point] = psf_table[code & PSF_MASK]
                    point += 1
                dataset_site[dataset] = site
                dataset_field[dataset] = star_fields[slot, field_slot]
                dataset += 1
                dataset_offsets[dataset] = point
        star_offsets[s + 1] = dataset
    return dataset, point


@numba.njit(cache=True)
def compact(
    n_stars: int,
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_sky: npt.NDArray[np.uint8],
    a_fwhm: npt.NDArray[np.uint8],
    a_airmass: npt.NDArray[np.uint8],
    a_psf: npt.NDArray[np.uint8],
    b_t: npt.NDArray[np.uint32],
    b_flux: npt.NDArray[np.float32],
    b_ferr: npt.NDArray[np.uint16],
    b_sky: npt.NDArray[np.uint8],
    b_fwhm: npt.NDArray[np.uint8],
    b_airmass: npt.NDArray[np.uint8],
    b_psf: npt.NDArray[np.uint8],
) -> int:
    """Copy every held segment from arena ``a_*`` to arena ``b_*`` back to back in slot order,
    each linearised (head 0) and keeping its size class; returns the records used in ``b``.
    With ``b_psf`` empty (an arena of trigger columns only) the other columns are not copied."""
    aux = len(b_psf) > 0
    top = 0
    for slot in range(n_stars):
        for site in range(seg_count.shape[1]):
            cls = seg_class[slot, site]
            if cls < 0:
                continue
            size = class_sizes[cls]
            offset = seg_offset[slot, site]
            head = np.int64(seg_head[slot, site])
            for i in range(seg_count[slot, site]):
                src = offset + (head + i) % size
                dst = top + i
                b_t[dst] = a_t[src]
                b_flux[dst] = a_flux[src]
                b_ferr[dst] = a_ferr[src]
                if aux:
                    b_sky[dst] = a_sky[src]
                    b_fwhm[dst] = a_fwhm[src]
                    b_airmass[dst] = a_airmass[src]
                    b_psf[dst] = a_psf[src]
            seg_offset[slot, site] = top
            seg_head[slot, site] = 0
            top += size
    return top


@numba.njit(cache=True)
def copy_tails(
    n_stars: int,
    keep: int,
    seg_offset: npt.NDArray[np.int64],
    seg_class: npt.NDArray[np.int8],
    seg_head: npt.NDArray[np.int32],
    seg_count: npt.NDArray[np.int32],
    class_sizes: npt.NDArray[np.int64],
    a_t: npt.NDArray[np.uint32],
    a_flux: npt.NDArray[np.float32],
    a_ferr: npt.NDArray[np.uint16],
    a_sky: npt.NDArray[np.uint8],
    a_fwhm: npt.NDArray[np.uint8],
    a_airmass: npt.NDArray[np.uint8],
    a_psf: npt.NDArray[np.uint8],
    tail_offset: npt.NDArray[np.int64],
    tail_class: npt.NDArray[np.int8],
    tail_head: npt.NDArray[np.int32],
    tail_count: npt.NDArray[np.int32],
    tail_sizes: npt.NDArray[np.int64],
    b_t: npt.NDArray[np.uint32],
    b_flux: npt.NDArray[np.float32],
    b_ferr: npt.NDArray[np.uint16],
    b_sky: npt.NDArray[np.uint8],
    b_fwhm: npt.NDArray[np.uint8],
    b_airmass: npt.NDArray[np.uint8],
    b_psf: npt.NDArray[np.uint8],
) -> int:
    """Copy the latest ``keep`` records of every buffer of arena ``a`` (its segment tables
    first) into an empty arena ``b`` (``tail_*`` tables, size classes ``tail_sizes``), each
    in the smallest class that holds them, back to back in slot order, head 0, records and
    field bits unchanged. ``b`` has room for every segment; returns the records used. With
    ``b_psf`` empty (a hot tier's arena of trigger columns) only ``t``, ``flux`` and ``ferr``
    are copied."""
    aux = len(b_psf) > 0
    top = 0
    for slot in range(n_stars):
        for site in range(seg_count.shape[1]):
            count = np.int64(seg_count[slot, site])
            kept = count if count < keep else np.int64(keep)
            if kept == 0:
                continue
            cls = 0
            while tail_sizes[cls] < kept:
                cls += 1
            size = class_sizes[seg_class[slot, site]]
            offset = seg_offset[slot, site]
            head = np.int64(seg_head[slot, site])
            for i in range(kept):
                src = offset + (head + count - kept + i) % size
                dst = top + i
                b_t[dst] = a_t[src]
                b_flux[dst] = a_flux[src]
                b_ferr[dst] = a_ferr[src]
                if aux:
                    b_sky[dst] = a_sky[src]
                    b_fwhm[dst] = a_fwhm[src]
                    b_airmass[dst] = a_airmass[src]
                    b_psf[dst] = a_psf[src]
            tail_offset[slot, site] = top
            tail_class[slot, site] = cls
            tail_head[slot, site] = 0
            tail_count[slot, site] = kept
            top += tail_sizes[cls]
    return top


@numba.njit(cache=True)
def encode_rows(
    hjd: npt.NDArray[np.float64],
    flux: npt.NDArray[np.float64],
    flux_err: npt.NDArray[np.float64],
    band: npt.NDArray[np.uint8],
    sky: npt.NDArray[np.float32],
    fwhm: npt.NDArray[np.float32],
    airmass: npt.NDArray[np.float32],
    psf_quality: npt.NDArray[np.float32],
    hjd_zero: float,
    ferr_log_min: float,
    ferr_log_step: float,
    ferr_max: float,
    sky_log_min: float,
    sky_log_step: float,
    sky_max: float,
    fwhm_step: float,
    airmass_min: float,
    airmass_step: float,
    t: npt.NDArray[np.int64],
    ferr_code: npt.NDArray[np.uint16],
    sky_code: npt.NDArray[np.uint8],
    fwhm_code: npt.NDArray[np.uint8],
    airmass_code: npt.NDArray[np.uint8],
    psf_code: npt.NDArray[np.uint8],
) -> None:
    """Quantise every row in one pass (the encodings of :mod:`consumer.state.store`); ``t`` gets the
    time in seconds since ``hjd_zero``, or -1 for a row the store rejects."""
    float32_max = 3.4028234663852886e38
    for i in range(len(hjd)):
        seconds = np.rint((hjd[i] - hjd_zero) * 86400.0)
        usable = (
            np.abs(flux[i]) <= float32_max  # False for NaN
            and np.isfinite(flux_err[i])
            and flux_err[i] > 0
            and band[i] == 0
            and seconds >= 0  # False for NaN
            and seconds <= 4294967295.0
        )
        if not usable:
            t[i] = -1
            continue
        t[i] = np.int64(seconds)
        err = min(max(np.log(flux_err[i]), ferr_log_min), np.log(ferr_max))
        ferr_code[i] = np.uint16(np.rint((err - ferr_log_min) / ferr_log_step))
        value = sky[i]
        if np.isfinite(value):
            level = min(max(np.log(max(value, 1e-30)), sky_log_min), np.log(sky_max))
            sky_code[i] = np.uint8(np.rint((level - sky_log_min) / sky_log_step))
        else:
            sky_code[i] = 255
        value = fwhm[i]
        if np.isfinite(value):
            fwhm_code[i] = np.uint8(np.rint(min(max(value / fwhm_step, 0.0), 254.0)))
        else:
            fwhm_code[i] = 255
        value = airmass[i]
        if np.isfinite(value):
            code = np.rint(min(max((value - airmass_min) / airmass_step, 0.0), 254.0))
            airmass_code[i] = np.uint8(code)
        else:
            airmass_code[i] = 255
        value = psf_quality[i]
        if np.isfinite(value):
            psf_code[i] = np.uint8(np.rint(min(max(value, 0.0), 100.0)))
        else:
            psf_code[i] = 127
