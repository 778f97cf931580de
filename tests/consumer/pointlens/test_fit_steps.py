"""The compiled steps around the point-lens kernels against the numpy code they replaced
(the slow, obvious references), bit for bit: medians, the highest 3-point run, the
subsample, the prepared linear solve, the anomaly test's deviations and runs."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from consumer.pointlens import kernels
from consumer.pointlens.anomaly import AnomalyRule
from consumer.pointlens.fit import GRID_POINTS, magnification
from tests.consumer.pointlens.test_fit import T0, event

F64 = npt.NDArray[np.float64]


def bits(value: float) -> bytes:
    return np.float64(value).tobytes()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 8, 17, 100, 501, 1500])
def test_median_is_numpys_bit_for_bit(size: int) -> None:
    rng = np.random.default_rng(size)
    buf = np.empty(size)
    for values in (
        rng.standard_normal(size),
        np.abs(rng.standard_normal(size)),
        np.round(rng.standard_normal(size)),  # ties
        np.full(size, 3.0),
        np.full(size, -0.0),  # numpy's median of -0.0 is +0.0
        np.where(rng.uniform(size=size) < 0.5, 0.0, -0.0),
    ):
        assert bits(kernels.median(values, 0, size, buf)) == bits(float(np.median(values)))
    values = rng.standard_normal(size + 6)  # a range of a longer array
    expected = float(np.median(values[3 : size + 3]))
    assert bits(kernels.median(values, 3, size + 3, buf)) == bits(expected)
    with_nan = rng.standard_normal(size)
    with_nan[size // 2] = np.nan
    assert math.isnan(kernels.median(with_nan, 0, size, buf))
    assert math.isnan(kernels.median(np.zeros(0), 0, 0, buf))


def highest_run_time_reference(
    t: F64, flux: F64, flux_err: F64, offsets: npt.NDArray[np.int64]
) -> float:
    """The numpy code of fit.py before the compiled steps."""
    best, best_t = -math.inf, float(t[-1])
    for d in range(len(offsets) - 1):
        a, b = int(offsets[d]), int(offsets[d + 1])
        z = (flux[a:b] - np.median(flux[a:b])) / flux_err[a:b]
        if b - a >= 3:
            z = np.minimum(np.minimum(z[:-2], z[1:-1]), z[2:])
            i = int(np.argmax(z))
            if z[i] > best:
                best, best_t = float(z[i]), float(t[a + i + 1])
    return best_t


@pytest.mark.parametrize("seed", range(6))
def test_highest_run_time_is_the_numpy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data, _ = event(rng, n=int(rng.integers(2, 200)), sets=int(rng.integers(1, 5)))
    t = data.t - data.t.max()
    flux = data.flux.copy()
    if seed % 2:  # equal runs: the first wins
        flux[:] = np.round(flux / 500.0) * 500.0
    expected = highest_run_time_reference(t, flux, data.flux_err, data.offsets)
    assert bits(kernels.highest_run_time(t, flux, data.flux_err, data.offsets)) == bits(expected)


@pytest.mark.parametrize("sizes", [[301], [400, 3, 250], [1500, 1500, 1500], [20, 900, 7, 1]])
def test_subsample_is_every_kth_point_and_the_last_20(sizes: list[int]) -> None:
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    stride = math.ceil(int(offsets[-1]) / GRID_POINTS)
    index, sub_offsets = kernels.subsample(offsets, stride, 20)
    expected = [
        np.union1d(np.arange(a, b, stride), np.arange(max(a, b - 20), b))
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]
    assert index.tolist() == np.concatenate(expected).tolist()
    assert sub_offsets.tolist() == [0, *np.cumsum([len(e) for e in expected]).tolist()]


@pytest.mark.parametrize("seed", range(4))
def test_prepared_linear_solve_is_the_plain_one_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data, _ = event(rng, n=int(rng.integers(5, 300)), sets=int(rng.integers(1, 5)))
    weight = data.flux_err**-2.0
    weight[rng.uniform(size=len(weight)) < 0.1] = 0.0
    if seed == 3:  # a dataset all left out
        weight[int(data.offsets[0]) : int(data.offsets[1])] = 0.0
    n, n_sets = len(data), len(data.sites)
    s1, mean_f, centred, syy = np.empty(n_sets), np.empty(n_sets), np.empty(n), np.empty(n_sets)
    kernels._prepare_linear(data.flux, weight, data.offsets, s1, mean_f, centred, syy)
    for _ in range(10):
        p = np.array([T0 + rng.uniform(-40, 40), math.log(rng.uniform(0.01, 2)),
                      math.log(rng.uniform(1, 300))])  # fmt: skip
        amp, fs, fb = np.empty(n), np.empty(n_sets), np.empty(n_sets)
        chi2 = kernels.linear_fit(data.t, data.flux, weight, data.offsets, p, amp, fs, fb)
        fs2, fb2 = np.empty(n_sets), np.empty(n_sets)
        chi2_prepared = kernels._solve_prepared(
            weight, data.offsets, amp, s1, mean_f, centred, syy, fs2, fb2
        )
        assert bits(chi2_prepared) == bits(chi2)
        assert fs2.tobytes() == fs.tobytes()
        assert fb2.tobytes() == fb.tobytes()


def test_deviations_are_the_numpy_formula_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    data, _ = event(rng, sets=3)
    fs, fb, scale = np.array([800.0, 1000.0, 1250.0]), np.array([-50, 0, 50.0]), np.ones(3) * 1.3
    t0, u0, tE = T0 + 0.3, 0.2, 21.0
    dataset = data.dataset_of()
    tau = (data.t - t0) / tE
    expected = fs[dataset] * magnification(np.sqrt(u0 * u0 + tau * tau)) + fb[dataset]
    expected = (data.flux - expected) / (data.flux_err * scale[dataset])
    got = kernels.deviations(data.t, data.flux, data.flux_err, data.offsets, t0, u0, tE, fs, fb,
                             scale)  # fmt: skip
    assert got.tobytes() == expected.tobytes()


def runs_reference(
    t: F64, z: F64, site: npt.NDArray[np.int64], rule: AnomalyRule, n_sigma: float
) -> list[tuple[int, int]]:
    """The qualifying runs as anomaly.py's Python loop found them before the kernel."""
    sign = np.where(z >= n_sigma, 1, np.where(z <= -n_sigma, -1, 0))
    recent = t >= t[-1] - rule.recent_days
    edges = np.flatnonzero(np.diff(sign)) + 1
    out = []
    for a, b in zip(np.r_[0, edges].tolist(), np.r_[edges, len(sign)].tolist(), strict=True):
        if sign[a] == 0 or not recent[b - 1]:
            continue
        needed = rule.min_run if len(set(site[a:b].tolist())) >= 2 else rule.min_run_one_site
        if b - a >= needed:
            out.append((a, b))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_deviating_runs_are_the_python_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    t = np.sort(rng.uniform(0.0, 20.0, n))
    z = rng.standard_normal(n) * 2.0 + np.where(rng.uniform(size=n) < 0.2, 3.0, 0.0)
    site = rng.integers(0, 1 + seed % 3, n)
    rule = AnomalyRule(min_run=2 + seed % 3, min_run_one_site=3 + seed % 2, recent_days=8.0)
    for n_sigma in (rule.n_sigma, rule.suspect_sigma, 1.0):
        starts, ends = kernels.deviating_runs(t, z, site, n_sigma, rule.recent_days,
                                              rule.min_run, rule.min_run_one_site)  # fmt: skip
        assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == runs_reference(
            t, z, site, rule, n_sigma
        )


def test_an_empty_light_curve_has_no_runs() -> None:
    starts, ends = kernels.deviating_runs(np.zeros(0), np.zeros(0), np.zeros(0, np.int64),
                                          2.5, 3.0, 3, 3)  # fmt: skip
    assert len(starts) == len(ends) == 0
