"""The point-lens fit against slow, obvious references: numpy least squares, finite
differences, the inverse of the full Gauss-Newton matrix, a brute-force grid, and pulls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumer.pointlens import kernels
from consumer.pointlens.fit import (
    PRIOR,
    Datasets,
    FitInputError,
    covariance,
    fit,
    magnification,
    make_datasets,
)

T0 = 2_461_150.0


def event(
    rng: np.random.Generator,
    *,
    t0: float = T0,
    u0: float = 0.2,
    tE: float = 20.0,
    days: tuple[float, float] = (-60.0, 60.0),
    n: int = 300,
    sets: int = 3,
    noise: float = 1.0,
) -> tuple[Datasets, list[tuple[float, float]]]:
    """A point-lens event seen by ``sets`` datasets with their own fs, fb and errors."""
    parts, truth = [], []
    for d in range(sets):
        t = np.sort(t0 + rng.uniform(days[0], days[1], n))
        fs, fb = 800.0 * (1.0 + 0.3 * d), 50.0 * (d - 1)
        flux_err = rng.uniform(15.0, 30.0, n)
        tau = (t - t0) / tE
        flux = fs * magnification(np.sqrt(u0 * u0 + tau * tau)) + fb
        flux += noise * flux_err * rng.standard_normal(n)
        parts.append((("CTIO", "SAAO", "SSO")[d % 3], d, t, flux, flux_err))
        truth.append((fs, fb))
    return make_datasets(parts), truth


def profiled_chi2(data: Datasets, p: np.ndarray, weight: np.ndarray) -> tuple[float, list]:
    """chi2 at p with each dataset's (fs, fb) from numpy's least squares: the reference."""
    u0, tE = math.exp(p[1]), math.exp(p[2])
    total, linear = 0.0, []
    for d in range(len(data.sites)):
        a, b = int(data.offsets[d]), int(data.offsets[d + 1])
        amp = magnification(np.sqrt(u0**2 + ((data.t[a:b] - p[0]) / tE) ** 2))
        root = np.sqrt(weight[a:b])
        design = np.stack([amp, np.ones_like(amp)], axis=1) * root[:, None]
        solution, *_ = np.linalg.lstsq(design, data.flux[a:b] * root, rcond=None)
        total += float(np.sum((design @ solution - data.flux[a:b] * root) ** 2))
        linear.append(solution)
    return total, linear


def test_linear_solution_matches_numpy_least_squares() -> None:
    rng = np.random.default_rng(1)
    data, _ = event(rng)
    weight = data.flux_err**-2.0
    for _ in range(20):
        p = np.array([T0 + rng.uniform(-30, 30), math.log(rng.uniform(0.01, 2)),
                      math.log(rng.uniform(2, 100))])  # fmt: skip
        amp, fs, fb = np.empty(len(data)), np.empty(3), np.empty(3)
        chi2 = kernels.linear_fit(data.t, data.flux, weight, data.offsets, p, amp, fs, fb)
        expected, linear = profiled_chi2(data, p, weight)
        assert chi2 == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(np.stack([fs, fb], axis=1), np.array(linear), rtol=1e-7)


def test_gradient_is_half_the_slope_of_the_profiled_chi2() -> None:
    """Envelope theorem: d chi2_profiled / dp = -2 J^T W r at the linear solution."""
    rng = np.random.default_rng(2)
    data, _ = event(rng)
    weight = data.flux_err**-2.0
    p = np.array([T0 + 3.0, math.log(0.3), math.log(15.0)])
    n = len(data)
    schur, gradient = np.zeros((3, 3)), np.zeros(3)
    cross, linear = np.zeros((3, 3, 2)), np.zeros((3, 2, 2))
    kernels.normal_matrix(data.t, data.flux, weight, data.offsets, p, np.empty(n), np.empty(3),
                          np.empty(3), schur, gradient, cross, linear)  # fmt: skip
    for j, h in enumerate((1e-5, 1e-6, 1e-6)):
        up, down = p.copy(), p.copy()
        up[j] += h
        down[j] -= h
        slope = (profiled_chi2(data, up, weight)[0] - profiled_chi2(data, down, weight)[0]) / (
            2 * h
        )
        assert -2.0 * gradient[j] == pytest.approx(slope, rel=1e-4)


def test_covariance_is_the_inverse_of_the_full_gauss_newton_matrix() -> None:
    rng = np.random.default_rng(3)
    data, _ = event(rng)
    weight = data.flux_err**-2.0
    p = np.array([T0 + 0.5, math.log(0.25), math.log(19.0)])
    cov_p, fs, fb, cov_linear, cov_cross, _ = covariance(data.t, data.flux, weight, data.offsets, p)
    # The reference: the (3 + 2D)-column Jacobian of the model by central differences.
    n_sets = len(data.sites)
    dataset = data.dataset_of()

    def model(q: np.ndarray) -> np.ndarray:
        core, linear = q[:3], q[3:].reshape(n_sets, 2)
        amp = magnification(np.sqrt(math.exp(core[1]) ** 2
                                     + ((data.t - core[0]) / math.exp(core[2])) ** 2))  # fmt: skip
        return linear[dataset, 0] * amp + linear[dataset, 1]

    q = np.concatenate([p, np.stack([fs, fb], axis=1).ravel()])
    jacobian = np.empty((len(data), len(q)))
    for j in range(len(q)):
        h = 1e-6 * max(abs(q[j]), 1.0) if j else 1e-5
        up, down = q.copy(), q.copy()
        up[j] += h
        down[j] -= h
        jacobian[:, j] = (model(up) - model(down)) / (2 * h)
    matrix = jacobian.T @ (weight[:, None] * jacobian)
    matrix[1, 1] += 1.0 / PRIOR[1] ** 2  # the priors' curvature, as the kernel adds it
    matrix[2, 2] += 1.0 / PRIOR[3] ** 2
    full = np.linalg.inv(matrix)
    np.testing.assert_allclose(cov_p, full[:3, :3], rtol=1e-4)
    for d in range(n_sets):
        block = slice(3 + 2 * d, 5 + 2 * d)
        np.testing.assert_allclose(cov_linear[d], full[block, block], rtol=1e-4)
        np.testing.assert_allclose(cov_cross[d], full[:3, block], rtol=1e-4, atol=1e-12)


def test_noiseless_event_is_recovered_exactly() -> None:
    rng = np.random.default_rng(4)
    data, truth = event(rng, noise=0.0)
    result = fit(data)
    # Not to rounding: the weak priors pull by a few 1e-5 where the data have no noise at all.
    assert result.t0 == pytest.approx(T0, abs=1e-4)
    assert result.u0 == pytest.approx(0.2, rel=1e-3)
    assert result.tE == pytest.approx(20.0, rel=1e-3)
    for d, (fs, fb) in enumerate(truth):
        assert result.datasets[d].fs == pytest.approx(fs, rel=1e-3)
        assert result.datasets[d].fb == pytest.approx(fb, abs=0.5)
    assert result.peak_seen
    assert result.peak_magnification == pytest.approx(float(magnification(0.2)), rel=1e-3)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_fit_beats_a_brute_force_grid(seed: int) -> None:
    """No node of a dense grid (profiled by numpy) has a lower objective than the fit."""
    rng = np.random.default_rng(seed)
    data, _ = event(rng, u0=rng.uniform(0.05, 0.8), tE=rng.uniform(5, 60),
                    days=(-40.0, rng.uniform(-5, 30)))  # fmt: skip
    result = fit(data)
    scale = np.array([f.error_scale for f in result.datasets])[data.dataset_of()]
    weight = (data.flux_err * scale) ** -2.0
    p = np.array([result.t0, math.log(result.u0), math.log(result.tE)])
    best = profiled_chi2(data, p, weight)[0] + kernels.prior_penalty(p, PRIOR)
    t_last = data.t.max()
    for t0 in np.linspace(t_last - 40, t_last + 40, 33):
        for ln_u0 in np.linspace(math.log(0.01), math.log(2.0), 12):
            for ln_tE in np.linspace(math.log(2.0), math.log(200.0), 12):
                q = np.array([t0, ln_u0, ln_tE])
                value = profiled_chi2(data, q, weight)[0] + kernels.prior_penalty(q, PRIOR)
                assert value >= best - 1e-6 * best


def test_peak_time_pulls_are_unit_normal_for_a_well_sampled_event() -> None:
    """Over independent noise draws, (t0 fit - t0) / t0_err has a standard deviation near 1."""
    rng = np.random.default_rng(8)
    pulls = []
    for _ in range(40):
        data, _ = event(rng, days=(-40.0, -2.0), n=150)
        result = fit(data)
        pulls.append((result.t0 - T0) / result.t0_err)
    assert 0.7 < float(np.std(pulls)) < 1.35
    assert abs(float(np.mean(pulls))) < 0.5


def test_outliers_are_left_out_and_errors_rescaled() -> None:
    rng = np.random.default_rng(9)
    data, _ = event(rng, noise=1.5)
    flux = data.flux.copy()
    flux[::97] += 40.0 * data.flux_err[::97]
    result = fit(Datasets(data.t, flux, data.flux_err, data.offsets, data.sites, data.fields))
    assert result.t0 == pytest.approx(T0, abs=0.1)
    assert sum(f.n_points for f in result.datasets) <= len(data) - len(flux[::97])
    for dataset in result.datasets:  # 1.5 times the stated errors, to the MAD's noise
        assert 1.2 < dataset.error_scale < 2.0


def test_too_few_or_bad_points_are_refused() -> None:
    rng = np.random.default_rng(10)
    data, _ = event(rng, n=2, sets=2)
    with pytest.raises(FitInputError, match="needs"):
        fit(data, name="star 7")
    data, _ = event(rng, n=20, sets=1)
    bad = data.flux_err.copy()
    bad[3] = 0.0
    with pytest.raises(FitInputError, match="flux_err"):
        fit(Datasets(data.t, data.flux, bad, data.offsets, data.sites, data.fields))


def test_kernels_do_not_depend_on_where_the_buffers_lie() -> None:
    """The same input gives the same bits wherever the arrays are in memory: no
    alignment- or overlap-dependent vectorisation (it made restarted daemons publish other
    event updates than uninterrupted ones)."""
    rng = np.random.default_rng(3)
    n = 301
    t = np.sort(rng.uniform(-60.0, 0.0, n))
    flux = rng.normal(1000.0, 30.0, n)
    weight = np.full(n, 1 / 900.0)
    offsets = np.array([0, 150, n])
    p = np.array([-10.0, math.log(0.2), math.log(15.0)])
    seen = set()
    for gap in range(24):  # the arrays side by side in one buffer, at every spacing
        arena = np.zeros(4 * (n + gap) + 8)
        t_, flux_, weight_, amp = (arena[i * (n + gap) : i * (n + gap) + n] for i in range(4))
        t_[:], flux_[:], weight_[:] = t, flux, weight
        fs, fb = np.empty(2), np.empty(2)
        chi2 = kernels.linear_fit(t_, flux_, weight_, offsets, p, amp, fs, fb)
        schur, gradient = np.empty((3, 3)), np.empty(3)
        cross, linear = np.empty((2, 3, 2)), np.empty((2, 2, 2))
        chi2_n = kernels.normal_matrix(
            t_, flux_, weight_, offsets, p, amp, fs, fb, schur, gradient, cross, linear
        )
        arrays = (fs, fb, schur, gradient, cross, linear)
        seen.add((chi2, chi2_n, *(a.tobytes() for a in arrays)))
    assert len(seen) == 1


def test_whole_fits_do_not_depend_on_where_the_buffers_lie() -> None:
    """Levenberg-Marquardt (which reuses a taken step's magnifications and slopes for the next
    normal matrix) and the blocks of the covariance give the same bits wherever their inputs
    lie, and dataset lengths not a multiple of the sums' lanes change nothing either."""
    rng = np.random.default_rng(11)
    data, _ = event(rng, n=203)  # 203 = 4 * 50 + 3: every dataset has a tail after the lanes
    n = len(data)
    t = data.t - data.t.max()
    weight = data.flux_err**-2.0
    seen = set()
    for gap in range(13):
        arena = np.zeros(3 * (n + gap) + 8)
        t_, flux_, weight_ = (
            arena[i * (n + gap) + gap : i * (n + gap) + gap + n] for i in range(3)
        )
        t_[:], flux_[:], weight_[:] = t, data.flux, weight
        p = np.array([-60.0, math.log(0.3), math.log(10.0)])
        chi2, iterations, converged = kernels.levenberg_marquardt(
            t_, flux_, weight_, data.offsets, p, PRIOR, 60, 1e-4
        )
        blocks = kernels.blocks(t_, flux_, weight_, data.offsets, p, PRIOR)
        seen.add(
            (chi2, iterations, converged, p.tobytes(), *(np.asarray(b).tobytes() for b in blocks))
        )
    assert len(seen) == 1
