"""Numba kernels of the AlertFinder trigger: numpy arrays in, numpy arrays out.

The rule and its edge cases are documented in :mod:`consumer.alertfinder.api`, which validates the
input and is the only caller. Kernels assume clean input: every value finite, ``flux_err > 0``
and each dataset sorted by time.

Layout (CSR-like, shared by every kernel): the points of all datasets of all stars are
concatenated into ``t``, ``flux``, ``flux_err`` (shape ``(N,)``); ``dataset_offsets`` (shape
``(D + 1,)``) delimits datasets in points and ``star_offsets`` (shape ``(S + 1,)``) delimits stars
in datasets. A combination of a star's datasets is a bitmask whose bit ``j`` is the star's
``j``-th dataset.

Broken-line fit. For a break time ``t_b`` let ``x = max(0, t - t_b)``. With fluxes centred on
each dataset's weighted mean (so each dataset's sum of ``w F`` is zero) and the intercepts
profiled out, ``slope = num / den`` and ``dchi2 = num**2 / den`` with, summed over the datasets
d of the combination and over the points after ``t_b`` (the *suffix*)::

    num = sum_d sum w x F
    den = sum_d [ sum w x**2 - (sum w x)**2 / W_d ]      (W_d: total weight of d)

Written with the suffix's weight ``V``, weighted mean time ``m``, spread ``M2 = sum w (t - m)**2``,
co-moment ``Cov = sum w (t - m) F`` and ``G = sum w F``, a dataset contributes::

    num_d = Cov_d + (m_d - t_b) G_d
    den_d = M2_d + (m_d - t_b)**2 V_d P_d / W_d           (P_d = W_d - V_d: weight before t_b)

which depend on ``t_b`` only through the suffix and ``m_d - t_b``. Per star, then:

1. each dataset's suffix statistics are tabulated for every suffix length by a backward
   weighted Welford pass (:func:`_suffix_table`);
2. one walk down the star's distinct times records, for each candidate ``t_b``, every
   dataset's ``num_d`` and ``den_d`` (:func:`_break_candidates`);
3. each combination to be reported on adds up its datasets' rows and takes the largest
   ``num**2 / den`` with ``num > 0`` (:func:`_best_break`), in branch-free loops that vectorise.

The work per star is O(points * (datasets + combinations)). Both ``den_d`` terms are
non-negative and no large sums cancel, so precision holds at HJD ~ 2.46e6 d; times are also
centred on the star's last time, and ``P_d`` comes from a forward cumulative sum rather than
``W_d - V_d``.

Kernels compile with ``error_model="numpy"``: no ZeroDivisionError checks in the inner loops,
where every divisor is positive by construction (or the quotient is discarded).
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Most datasets one star may have: 3 sites x 2 overlapping fields is 6; 8 leaves headroom and
#: keeps the 2**8 - 1 = 255 combinations cheap. Combination bitmasks are int64.
MAX_DATASETS = 8


def subset_table(max_datasets: int = MAX_DATASETS) -> tuple[IntArray, IntArray]:
    """Non-empty subsets of ``q`` items for every ``q <= max_datasets``, in evaluation order.

    Returns
    -------
    subsets : (sum_q 2**q - 1,) int64
        Block ``q`` holds the bitmasks ``1 .. 2**q - 1`` sorted by (number of items, value), so
        that walking a block and keeping only strict improvements prefers fewer datasets, then
        the lower bitmask, on ties.
    offsets : (max_datasets + 2,) int64
        Block ``q`` is ``subsets[offsets[q]:offsets[q + 1]]``.
    """
    blocks = [
        sorted(range(1, 1 << q), key=lambda mask: (mask.bit_count(), mask))
        for q in range(max_datasets + 1)
    ]
    offsets = np.zeros(max_datasets + 2, dtype=np.int64)
    offsets[1:] = np.cumsum([len(block) for block in blocks])
    subsets = np.array([mask for block in blocks for mask in block], dtype=np.int64)
    return subsets, offsets


@numba.njit(cache=True, error_model="numpy")
def _select(buf: FloatArray, lo: int, hi: int, kth: int) -> float:
    """The ``kth`` smallest of ``buf[lo:hi + 1]``, partially ordering ``buf`` around it.

    Quickselect with a branch-free Lomuto partition: on noisy fluxes a branching partition
    mispredicts every other comparison and is ~3x slower (np.median: ~6 us for 500 points, this:
    ~2 us). A lopsided split triggers a pass grouping the values equal to the pivot, so constant
    data stay linear; after 64 rounds the rest is sorted, so there is no quadratic worst case.
    On return every value left of ``kth`` is <= ``buf[kth]``.
    """
    rounds = 0
    while hi - lo > 16:
        rounds += 1
        if rounds > 64:
            buf[lo : hi + 1] = np.sort(buf[lo : hi + 1])
            return buf[kth]
        mid = (lo + hi) >> 1
        a = buf[lo]
        b = buf[mid]
        c = buf[hi]
        if (a <= b) == (b <= c):
            p = mid
        elif (b <= a) == (a <= c):
            p = lo
        else:
            p = hi
        pivot = buf[p]
        buf[p] = buf[hi]
        buf[hi] = pivot
        store = lo
        for i in range(lo, hi):
            v = buf[i]
            buf[i] = buf[store]
            buf[store] = v
            store += v < pivot
        buf[hi] = buf[store]
        buf[store] = pivot
        if kth == store:
            return pivot
        if kth < store:
            hi = store - 1
            continue
        lopsided = store - lo < (hi - lo) >> 3
        lo = store + 1
        if lopsided:
            equal = lo
            for i in range(lo, hi + 1):
                v = buf[i]
                buf[i] = buf[equal]
                buf[equal] = v
                equal += v <= pivot
            if kth < equal:
                return pivot
            lo = equal
    for i in range(lo + 1, hi + 1):
        v = buf[i]
        j = i - 1
        while j >= lo and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    return buf[kth]


@numba.njit(cache=True, error_model="numpy")
def _median(values: FloatArray, a: int, b: int, buf: FloatArray) -> float:
    """Median of ``values[a:b]`` (``b > a``), equal to ``np.median``; ``buf`` is scratch."""
    size = b - a
    for i in range(size):
        buf[i] = values[a + i]
    half = size // 2
    upper = _select(buf, 0, size - 1, half)
    if size % 2 == 1:
        return upper
    lower = buf[0]
    for i in range(1, half):
        lower = max(lower, buf[i])
    return 0.5 * (lower + upper)


#: Median of ``values[a:b]`` into scratch ``buf`` (the trigger's baseline), for kernels that
#: read their own buffers (:func:`consumer.state.kernels.trigger_tails`).
median = _median


@numba.njit(cache=True)
def baseline_count(count: int, part: int) -> int:
    """Points the baseline of a dataset of ``count`` points is the median of: its oldest
    ``ceil(count / part)`` (all of them for ``part = 1``, the published rule)."""
    return (count + part - 1) // part


@numba.njit(cache=True, error_model="numpy")
def _medians(
    flux: FloatArray,
    dataset_offsets: IntArray,
    d0: int,
    d1: int,
    baseline: FloatArray,
    buf: FloatArray,
    part: int,
) -> None:
    """Baseline flux of datasets ``d0 .. d1 - 1`` into ``baseline``: the median of each one's
    oldest :func:`baseline_count` points (NaN for an empty dataset)."""
    for d in range(d0, d1):
        a = dataset_offsets[d]
        b = dataset_offsets[d + 1]
        baseline[d] = _median(flux, a, a + baseline_count(b - a, part), buf) if b > a else np.nan


@numba.njit(cache=True, error_model="numpy")
def dataset_medians(flux: FloatArray, dataset_offsets: IntArray) -> FloatArray:
    """(D,) median flux of every dataset (NaN for an empty one), equal to ``np.median``."""
    n_datasets = len(dataset_offsets) - 1
    longest = 0
    for d in range(n_datasets):
        longest = max(longest, dataset_offsets[d + 1] - dataset_offsets[d])
    baseline = np.empty(n_datasets, dtype=np.float64)
    buf = np.empty(longest, dtype=np.float64)
    _medians(flux, dataset_offsets, 0, n_datasets, baseline, buf, 1)
    return baseline


@numba.njit(cache=True, error_model="numpy")
def _tail(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    d0: int,
    nonempty: IntArray,
    q: int,
    baseline: FloatArray,
    n_sigma: float,
    n: int,
    average: int,
    cursor: IntArray,
    tail_bit: IntArray,
    tail_high: IntArray,
) -> int:
    """The star's last points, latest first, as needed by the rising test of any combination.

    Each non-empty dataset (position ``i`` in ``nonempty``) contributes its last ``n`` points;
    they are merged in descending (time, dataset) order, the reverse of the rule's (time,
    dataset, position) order, into ``tail_bit`` (``1 << i``) and ``tail_high`` (1 when high:
    the point itself, or with ``average > 1`` the weighted mean of it and its ``average - 1``
    predecessors in its dataset, fewer at the dataset's start, is ``n_sigma`` errors above the
    baseline).
    The last ``n`` points of any combination are then its first ``n`` entries in this list.

    Returns
    -------
    Number of entries written (at most ``q * n``).
    """
    for i in range(q):
        d = d0 + nonempty[i]
        cursor[i] = dataset_offsets[d + 1] - 1
    n_tail = 0
    # Selects rather than branches: which dataset holds the next point is random.
    while True:
        pick = -1
        t_pick = -np.inf
        for i in range(q):
            d = d0 + nonempty[i]
            p = cursor[i]
            in_tail = p >= max(dataset_offsets[d], dataset_offsets[d + 1] - n)
            t_p = t[max(p, 0)]
            # >= : of equal times the higher dataset comes later in the rule's order.
            take = in_tail & (t_p >= t_pick)
            pick = i if take else pick
            t_pick = t_p if take else t_pick
        if pick < 0:
            return n_tail
        p = cursor[pick]
        d = d0 + nonempty[pick]
        tail_bit[n_tail] = 1 << pick
        if average == 1:
            tail_high[n_tail] = flux[p] - baseline[d] >= n_sigma * flux_err[p]
        else:
            tail_high[n_tail] = _high_mean(
                flux, flux_err, max(dataset_offsets[d], p - average + 1), p, baseline[d], n_sigma
            )
        cursor[pick] = p - 1
        n_tail += 1


@numba.njit(cache=True, error_model="numpy")
def _high_mean(
    flux: FloatArray, flux_err: FloatArray, a: int, p: int, baseline: float, n_sigma: float
) -> bool:
    """Whether the weighted mean of points ``a .. p`` is ``n_sigma`` of its error above
    ``baseline``: ``sum w (F - b) >= n_sigma * sqrt(sum w)`` with ``w = flux_err**-2``."""
    excess = 0.0
    weight = 0.0
    for i in range(a, p + 1):
        w = 1.0 / (flux_err[i] * flux_err[i])
        excess += w * (flux[i] - baseline)
        weight += w
    return excess >= n_sigma * np.sqrt(weight)


@numba.njit(cache=True, error_model="numpy")
def _count_tail(
    sub: int, n: int, tail_bit: IntArray, tail_high: IntArray, n_tail: int
) -> tuple[int, int]:
    """(points taken, high points) among the last ``n`` points of combination ``sub``."""
    taken = 0
    high = 0
    for e in range(n_tail):  # no early exit: n_tail is small and membership random
        take = ((tail_bit[e] & sub) != 0) & (taken < n)
        taken += take
        high += take & (tail_high[e] != 0)
    return taken, high


@numba.njit(cache=True, error_model="numpy")
def _max_sizes(dataset_offsets: IntArray, star_offsets: IntArray) -> tuple[int, int]:
    """Most points and most datasets of any star."""
    max_points = 0
    max_datasets = 0
    for s in range(star_offsets.size - 1):
        d0 = star_offsets[s]
        d1 = star_offsets[s + 1]
        max_points = max(max_points, dataset_offsets[d1] - dataset_offsets[d0])
        max_datasets = max(max_datasets, d1 - d0)
    return max_points, max_datasets


@numba.njit(cache=True, error_model="numpy")
def _suffix_table(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    p0: int,
    a: int,
    count: int,
    base: int,
    t_last: float,
    t_local: FloatArray,
    w_local: FloatArray,
    w_cumsum: FloatArray,
    slot_t: FloatArray,
    slot_cov: FloatArray,
    slot_g: FloatArray,
    slot_m2: FloatArray,
    slot_q: FloatArray,
) -> tuple[float, float, float]:
    """Suffix statistics of one dataset (star-local points ``a .. a + count - 1``).

    Fills ``t_local`` (time - t_last), ``w_local`` (flux_err**-2) and ``w_cumsum`` (forward
    cumulative weight) for the points, and for every suffix start ``j`` (0 .. count, ``count``
    being the empty suffix) the slot ``base + j``: weighted mean time, co-moment with the centred
    flux, G, M2 and ``V P / W`` (see the module docstring).

    Returns
    -------
    (weighted mean flux, 1 / total weight, chi2 of the weighted mean)
    """
    total_w = 0.0
    total_wf = 0.0
    for lp in range(a, a + count):
        p = p0 + lp
        wi = 1.0 / (flux_err[p] * flux_err[p])
        w_local[lp] = wi
        total_w += wi
        w_cumsum[lp] = total_w
        total_wf += wi * flux[p]
        t_local[lp] = t[p] - t_last
    inv_weight = 1.0 / total_w
    # Second pass removes the rounding of the first mean, so the centred fluxes sum to ~0.
    mean0 = total_wf * inv_weight
    correction = 0.0
    spread = 0.0
    for lp in range(a, a + count):
        df = flux[p0 + lp] - mean0
        correction += w_local[lp] * df
        spread += w_local[lp] * df * df
    mean = mean0 + correction * inv_weight
    chi2 = max(0.0, spread - correction * correction * inv_weight)

    weight = 0.0
    t_mean = 0.0
    f_mean = 0.0
    m2 = 0.0
    cov = 0.0
    g = 0.0
    slot_t[base + count] = 0.0
    slot_cov[base + count] = 0.0
    slot_g[base + count] = 0.0
    slot_m2[base + count] = 0.0
    slot_q[base + count] = 0.0
    for j in range(count - 1, -1, -1):
        lp = a + j
        wi = w_local[lp]
        ti = t_local[lp]
        fi = flux[p0 + lp] - mean
        weight += wi
        r = wi / weight
        dt = ti - t_mean
        t_mean += dt * r
        df = fi - f_mean
        f_mean += df * r
        dt_new = ti - t_mean
        m2 += wi * dt * dt_new
        cov += wi * dt_new * df
        g += wi * fi
        prefix = w_cumsum[lp - 1] if j > 0 else 0.0
        slot_t[base + j] = t_mean
        slot_cov[base + j] = cov
        slot_g[base + j] = g
        slot_m2[base + j] = m2
        slot_q[base + j] = weight * prefix * inv_weight
    return mean, inv_weight, chi2


@numba.njit(cache=True, error_model="numpy")
def _break_candidates(
    t: FloatArray,
    p0: int,
    first: IntArray,
    ds_count: IntArray,
    q: int,
    t_last: float,
    stride: int,
    slot_t: FloatArray,
    slot_cov: FloatArray,
    slot_g: FloatArray,
    slot_m2: FloatArray,
    slot_q: FloatArray,
    cursor: IntArray,
    next_t: FloatArray,
    step_group: IntArray,
    step_point: IntArray,
    num_ds: FloatArray,
    den_ds: FloatArray,
) -> int:
    """Walk the star's distinct times from the latest down, recording each candidate break.

    Step ``k`` is the (k + 2)-th latest distinct time (the latest has nothing after it):
    ``step_group[k]`` the bitmask of datasets with a point at it (t_b is a candidate only for
    combinations including one of them), ``step_point[k]`` the star-local index of such a
    point, and ``num_ds[i * stride + k]``, ``den_ds[i * stride + k]`` dataset i's share of num
    and den at that break.

    Returns
    -------
    Number of steps.
    """
    for i in range(q):
        cursor[i] = ds_count[i]  # dataset i's suffix starts at its point cursor[i]
        next_t[i] = t[p0 + first[i] + ds_count[i] - 1]
    n_steps = -1  # the latest time is walked but not recorded
    while True:
        # Raw times (not centred ones, which rounding could merge) decide which are equal.
        tau = -np.inf
        for i in range(q):
            tau = max(tau, next_t[i])
        if tau == -np.inf:
            return max(n_steps, 0)
        if n_steps >= 0:
            t_b = tau - t_last
            group = 0
            point = -1
            for i in range(q):
                hit = next_t[i] == tau
                group |= int(hit) << i
                point = first[i] + cursor[i] - 1 if hit else point
                # This dataset's share of num and den (module docstring); off the loop's
                # critical path (the walk), so nearly free.
                slot = first[i] + i + cursor[i]
                lever = slot_t[slot] - t_b
                num_ds[i * stride + n_steps] = slot_cov[slot] + lever * slot_g[slot]
                den_ds[i * stride + n_steps] = slot_m2[slot] + slot_q[slot] * lever * lever
            step_group[n_steps] = group
            step_point[n_steps] = point
        n_steps += 1
        for i in range(q):
            c = cursor[i] - int(next_t[i] == tau)
            after = t[p0 + first[i] + c - 1] if c > 0 else -np.inf
            while after == tau:  # rare: a time repeated within one dataset
                c -= 1
                after = t[p0 + first[i] + c - 1] if c > 0 else -np.inf
            cursor[i] = c
            next_t[i] = after


@numba.njit(cache=True, error_model="numpy")
def _best_break(
    sub: int,
    q: int,
    n_steps: int,
    stride: int,
    step_group: IntArray,
    num_ds: FloatArray,
    den_ds: FloatArray,
    num_sum: FloatArray,
    den_sum: FloatArray,
    value: FloatArray,
) -> tuple[float, float, int]:
    """Best break of combination ``sub`` (bits over the star's non-empty datasets).

    Loops run over all steps without data-dependent branches, so they vectorise; the datasets
    are added in ascending order, so a dataset contributing exactly 0 leaves dchi2 unchanged
    to the bit (which makes ties between combinations exact).

    Returns
    -------
    (dchi2, slope, step of the break or -1); among equal dchi2 the earliest step, which is the
    latest t_b.
    """
    started = False
    for i in range(q):
        if not (sub >> i) & 1:
            continue
        row = i * stride
        if started:
            for k in range(n_steps):
                num_sum[k] += num_ds[row + k]
                den_sum[k] += den_ds[row + k]
        else:
            num_sum[:n_steps] = num_ds[row : row + n_steps]
            den_sum[:n_steps] = den_ds[row : row + n_steps]
            started = True
    for k in range(n_steps):
        num = num_sum[k]
        den = den_sum[k]
        usable = ((step_group[k] & sub) != 0) & (num > 0.0) & (den > 0.0)
        value[k] = num * num / den if usable else 0.0
    # Four running maxima break the dependency chain of one.
    best0 = 0.0
    best1 = 0.0
    best2 = 0.0
    best3 = 0.0
    k = 0
    while k + 4 <= n_steps:
        best0 = max(best0, value[k])
        best1 = max(best1, value[k + 1])
        best2 = max(best2, value[k + 2])
        best3 = max(best3, value[k + 3])
        k += 4
    while k < n_steps:
        best0 = max(best0, value[k])
        k += 1
    best = max(max(best0, best1), max(best2, best3))
    if best <= 0.0:
        return 0.0, 0.0, -1
    k = 0
    while value[k] != best:
        k += 1
    return best, num_sum[k] / den_sum[k], k


@numba.njit(cache=True, error_model="numpy")
def evaluate_stars(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    star_offsets: IntArray,
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    average: IntArray,
    dchi2_min: FloatArray,
    baseline_part: IntArray,
    subsets: IntArray,
    subset_offsets: IntArray,
) -> tuple[
    BoolArray,
    BoolArray,
    FloatArray,
    FloatArray,
    IntArray,
    IntArray,
    FloatArray,
    IntArray,
    IntArray,
    FloatArray,
    FloatArray,
]:
    """Full AlertFinder rule for every star (rising test, then the broken-line fit).

    ``k``, ``n``, ``n_sigma``, ``average``, ``dchi2_min``, ``baseline_part`` have shape (S,).
    When some combination of a star passes the rising test only those combinations are fitted;
    otherwise all are.

    Returns
    -------
    triggered, passed_rising : (S,) bool
    dchi2, chi2_flat : (S,) float64, of the reported combination
    combination : (S,) int64 bitmask over the star's datasets (0 when the star has no points)
    break_index : (S,) int64 absolute point index of ``t_break``, -1 when none
    slope : (S,) float64, flux units per time unit; 0 when no break
    n_high, n_points : (S,) int64 high points among the last n, points in the combination
    intercepts : (D,) float64, the line's ``c_d`` for datasets in the combination, the weighted
        mean flux for the others, NaN for empty datasets
    baseline : (D,) float64 median flux of each dataset's oldest ``1 / baseline_part`` (NaN
        for empty datasets)
    """
    n_stars = star_offsets.size - 1
    n_datasets = dataset_offsets.size - 1
    triggered = np.zeros(n_stars, dtype=np.bool_)
    passed_rising = np.zeros(n_stars, dtype=np.bool_)
    dchi2 = np.zeros(n_stars)
    chi2_flat = np.zeros(n_stars)
    combination = np.zeros(n_stars, dtype=np.int64)
    break_index = np.full(n_stars, -1, dtype=np.int64)
    slope = np.zeros(n_stars)
    n_high = np.zeros(n_stars, dtype=np.int64)
    n_points = np.zeros(n_stars, dtype=np.int64)
    intercepts = np.full(n_datasets, np.nan)
    baseline = np.full(n_datasets, np.nan)

    # Scratch reused by every star. Per point (P,); per suffix slot (P + M,): dataset i of the
    # star owns slots first_i + i .. first_i + i + count_i, the last one the empty suffix.
    max_points, max_ds = _max_sizes(dataset_offsets, star_offsets)
    max_n = 0
    for s in range(n_stars):
        max_n = max(max_n, n[s])
    buf = np.empty(max_points)
    t_local = np.empty(max_points)
    w_local = np.empty(max_points)
    w_cumsum = np.empty(max_points)
    n_slots = max_points + max_ds
    slot_t = np.empty(n_slots)
    slot_cov = np.empty(n_slots)
    slot_g = np.empty(n_slots)
    slot_m2 = np.empty(n_slots)
    slot_q = np.empty(n_slots)
    ds_count = np.empty(max_ds, dtype=np.int64)
    inv_weight = np.empty(max_ds)
    mean_flux = np.empty(max_ds)
    chi2_ds = np.empty(max_ds)
    nonempty = np.empty(max_ds, dtype=np.int64)
    first = np.empty(max_ds, dtype=np.int64)
    cursor = np.empty(max_ds, dtype=np.int64)
    next_t = np.empty(max_ds)
    # Per candidate break (P,), and per dataset and break (M * P,) with row stride P.
    step_group = np.empty(max_points, dtype=np.int64)
    step_point = np.empty(max_points, dtype=np.int64)
    num_ds = np.empty(max_ds * max_points)
    den_ds = np.empty(max_ds * max_points)
    num_sum = np.empty(max_points)
    den_sum = np.empty(max_points)
    value = np.empty(max_points)
    tail_bit = np.empty(max_ds * max_n, dtype=np.int64)
    tail_high = np.empty(max_ds * max_n, dtype=np.int64)
    n_combos = (1 << max_ds) - 1
    combo_passed = np.empty(n_combos, dtype=np.bool_)
    combo_high = np.empty(n_combos, dtype=np.int64)
    combo_points = np.empty(n_combos, dtype=np.int64)
    candidates = np.empty(n_combos, dtype=np.int64)
    fit_dchi2 = np.empty(n_combos)
    fit_slope = np.empty(n_combos)
    fit_point = np.empty(n_combos, dtype=np.int64)

    for s in range(n_stars):
        d0 = star_offsets[s]
        d1 = star_offsets[s + 1]
        p0 = dataset_offsets[d0]
        _medians(flux, dataset_offsets, d0, d1, baseline, buf, baseline_part[s])
        q = 0
        t_last = -np.inf
        for d in range(d1 - d0):
            a = dataset_offsets[d0 + d]
            b = dataset_offsets[d0 + d + 1]
            if b > a:
                nonempty[q] = d
                first[q] = a - p0
                ds_count[q] = b - a
                q += 1
                t_last = max(t_last, t[b - 1])
        if q == 0:
            continue

        for i in range(q):
            mean_flux[i], inv_weight[i], chi2_ds[i] = _suffix_table(
                t,
                flux,
                flux_err,
                p0,
                first[i],
                ds_count[i],
                first[i] + i,
                t_last,
                t_local,
                w_local,
                w_cumsum,
                slot_t,
                slot_cov,
                slot_g,
                slot_m2,
                slot_q,
            )
            intercepts[d0 + nonempty[i]] = mean_flux[i]

        # Steps 1-2: the rising test of every combination, from the star's merged tail.
        n_tail = _tail(
            t,
            flux,
            flux_err,
            dataset_offsets,
            d0,
            nonempty,
            q,
            baseline,
            n_sigma[s],
            n[s],
            average[s],
            cursor,
            tail_bit,
            tail_high,
        )
        block = subset_offsets[q]
        n_sub = subset_offsets[q + 1] - block
        any_passed = False
        for c in range(n_sub):
            sub = subsets[block + c]
            taken, high = _count_tail(sub, n[s], tail_bit, tail_high, n_tail)
            size = 0
            for i in range(q):
                if (sub >> i) & 1:
                    size += ds_count[i]
            combo_points[c] = size
            combo_high[c] = high
            combo_passed[c] = taken >= n[s] and high >= k[s]
            any_passed = any_passed or combo_passed[c]
        # Step 3: the candidate breaks and each dataset's share of num and den at each, once
        # per star; then every combination to be reported on picks its best break.
        n_steps = _break_candidates(
            t,
            p0,
            first,
            ds_count,
            q,
            t_last,
            max_points,
            slot_t,
            slot_cov,
            slot_g,
            slot_m2,
            slot_q,
            cursor,
            next_t,
            step_group,
            step_point,
            num_ds,
            den_ds,
        )
        n_candidates = 0
        for c in range(n_sub):
            if combo_passed[c] or not any_passed:
                candidates[n_candidates] = c
                n_candidates += 1
                fit_dchi2[c], fit_slope[c], step = _best_break(
                    subsets[block + c],
                    q,
                    n_steps,
                    max_points,
                    step_group,
                    num_ds,
                    den_ds,
                    num_sum,
                    den_sum,
                    value,
                )
                fit_point[c] = step_point[step] if step >= 0 else -1

        # Step 4: subsets come by (size, bitmask), so keeping strict improvements of
        # (triggered, dchi2) breaks ties towards fewer datasets.
        best = -1
        best_fires = False
        for j in range(n_candidates):
            c = candidates[j]
            fires = combo_passed[c] and fit_dchi2[c] >= dchi2_min[s]
            if best < 0 or (fires and not best_fires):
                better = True
            else:
                better = fires == best_fires and fit_dchi2[c] > fit_dchi2[best]
            if better:
                best = c
                best_fires = fires
        sub = subsets[block + best]
        mask = 0
        flat = 0.0
        for i in range(q):
            if (sub >> i) & 1:
                mask |= 1 << nonempty[i]
                flat += chi2_ds[i]
        triggered[s] = best_fires
        passed_rising[s] = combo_passed[best]
        dchi2[s] = fit_dchi2[best]
        chi2_flat[s] = flat
        combination[s] = mask
        n_high[s] = combo_high[best]
        n_points[s] = combo_points[best]
        if fit_point[best] < 0:
            continue
        break_index[s] = p0 + fit_point[best]
        slope[s] = fit_slope[best]
        # Intercepts with the slope fixed: c_d = mean(F - slope x) = mean F - slope X_d / W_d.
        t_b = t_local[fit_point[best]]
        for i in range(q):
            if not (sub >> i) & 1:
                continue
            lever_sum = 0.0
            for lp in range(first[i] + ds_count[i] - 1, first[i] - 1, -1):
                if t_local[lp] <= t_b:
                    break
                lever_sum += w_local[lp] * (t_local[lp] - t_b)
            shift = fit_slope[best] * lever_sum * inv_weight[i]
            intercepts[d0 + nonempty[i]] = mean_flux[i] - shift

    return (
        triggered,
        passed_rising,
        dchi2,
        chi2_flat,
        combination,
        break_index,
        slope,
        n_high,
        n_points,
        intercepts,
        baseline,
    )


@numba.njit(cache=True, error_model="numpy")
def rising_stars(
    t: FloatArray,
    flux: FloatArray,
    flux_err: FloatArray,
    dataset_offsets: IntArray,
    star_offsets: IntArray,
    k: IntArray,
    n: IntArray,
    n_sigma: FloatArray,
    average: IntArray,
    baseline_part: IntArray,
    baseline_in: FloatArray,
    subsets: IntArray,
    subset_offsets: IntArray,
) -> tuple[BoolArray, IntArray, IntArray]:
    """Rising test only (steps 1-2) for every star.

    ``baseline_in`` is the (D,) baseline per dataset, or an empty array to compute it here from
    each star's ``baseline_part`` (the medians are then most of the cost: the test itself reads
    ~n points per dataset).

    Returns
    -------
    passed : (S,) bool, some combination has >= k high points among its last n
    n_high : (S,) int64, the most high points among the last n of any combination holding at
        least n points (0 when none does)
    combination : (S,) int64 bitmask attaining ``n_high``; fewer datasets, then the lower
        bitmask, on ties (0 when no combination holds n points)
    """
    n_stars = star_offsets.size - 1
    passed = np.zeros(n_stars, dtype=np.bool_)
    n_high = np.zeros(n_stars, dtype=np.int64)
    combination = np.zeros(n_stars, dtype=np.int64)
    max_points, max_ds = _max_sizes(dataset_offsets, star_offsets)
    max_n = 0
    for s in range(n_stars):
        max_n = max(max_n, n[s])
    own_baseline = baseline_in.size == 0
    baseline = np.empty(dataset_offsets.size - 1) if own_baseline else baseline_in
    buf = np.empty(max_points if own_baseline else 0)
    nonempty = np.empty(max_ds, dtype=np.int64)
    cursor = np.empty(max_ds, dtype=np.int64)
    tail_bit = np.empty(max_ds * max_n, dtype=np.int64)
    tail_high = np.empty(max_ds * max_n, dtype=np.int64)
    for s in range(n_stars):
        d0 = star_offsets[s]
        d1 = star_offsets[s + 1]
        if own_baseline:
            _medians(flux, dataset_offsets, d0, d1, baseline, buf, baseline_part[s])
        q = 0
        for d in range(d1 - d0):
            if dataset_offsets[d0 + d + 1] > dataset_offsets[d0 + d]:
                nonempty[q] = d
                q += 1
        n_tail = _tail(
            t,
            flux,
            flux_err,
            dataset_offsets,
            d0,
            nonempty,
            q,
            baseline,
            n_sigma[s],
            n[s],
            average[s],
            cursor,
            tail_bit,
            tail_high,
        )
        block = subset_offsets[q]
        best_high = -1
        for c in range(subset_offsets[q + 1] - block):
            sub = subsets[block + c]
            taken, high = _count_tail(sub, n[s], tail_bit, tail_high, n_tail)
            if taken < n[s] or high <= best_high:
                continue
            best_high = high
            combination[s] = 0
            for i in range(q):
                if (sub >> i) & 1:
                    combination[s] |= 1 << nonempty[i]
            if high == n[s]:
                break  # nothing does better, and later subsets lose ties
        if best_high >= 0:
            n_high[s] = best_high
            passed[s] = best_high >= k[s]
    return passed, n_high, combination
