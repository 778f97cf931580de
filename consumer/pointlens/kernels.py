"""Numba kernels of the point-lens fit and its anomaly test: numpy arrays in, numpy arrays out.

The model and the method are documented in :mod:`consumer.pointlens.fit`, which prepares the
input and calls them (:func:`fit_steps` runs its starts and robust rounds in one call), as
:mod:`consumer.pointlens.anomaly` calls :func:`deviations` and :func:`deviating_runs`. Kernels
assume clean input: every value finite, ``flux_err > 0``. The steps that replaced numpy code
(:func:`median`, :func:`highest_run_time`, :func:`subsample`, :func:`robust_weights`) give
its results bit for bit: the daemon's decisions follow from the fit's last bits.

Layout (CSR-like, as in :mod:`consumer.alertfinder.kernels`): the points of one star's datasets
are concatenated into ``t``, ``flux`` and ``weight`` (``flux_err**-2``, 0 for a point left out),
shape ``(N,)``; ``offsets`` (shape ``(D + 1,)``) delimits the datasets.

Parameters: ``p = (t0, ln u0, ln tE)`` (days, Einstein radii, days), the nonlinear part of
``flux_i = fs_d * A(u(t_i)) + fb_d``. For a given ``p`` each dataset's ``(fs_d, fb_d)`` is the
weighted least-squares solution, in centred form so that an almost constant magnification
(far from the event) does not cancel digits. A Levenberg-Marquardt step works on ``p`` alone
with the Gauss-Newton matrix of the full problem after eliminating the linear parameters (the
Schur complement of their block, i.e. variable projection with Kaufman's Jacobian); the same
blocks give the full covariance at the optimum.

Kernels compile with ``error_model="numpy"``: divisions are guarded where a zero can occur.

Determinism. A fit must be a function of its input alone: the event updates a restarted daemon
publishes are compared with the ones it published before (the update rule's thresholds, on an
ill-conditioned fit, turn last-bit noise into another update). So no kernel compiles with
``fastmath``, not even a subset of its flags: with reassociation allowed, LLVM vectorised the
sums behind a runtime check that the arrays written and read do not overlap and fell back to
the scalar loop when they might, so the order of the sum, and the last bits of the fit,
depended on where the buffers happened to lie in memory (a middle way, ``fastmath`` only on
sums that do not write, passed the kernel tests but not the daemon's fault tests). Without
fast-math flags every operation is the IEEE one the source spells, in the source's order, with
no fused multiply-add: whatever LLVM vectorises must give the scalar loop's bits.

Speed within that rule (BENCHMARKS.md, "Event model"): the costly operations (square roots
and divisions) sit in a loop that only maps, :func:`_magnifications`, one of each a point,
which LLVM vectorises as it is; the sums are fixed-order: :func:`_solve_linear`'s run in
:data:`LANES` partial sums (lane ``l`` takes the points ``a + l, a + l + LANES, ...`` of a
dataset starting at ``a``, the tail goes to lane 0, and the lanes are added pairwise at the
end), which depends on the dataset's length, never on an address, and shortens the chains of
dependent additions (:func:`_gauss_newton`'s eighteen sums stay one running sum each, in point
order: eighteen independent chains already keep the core busy, and it needs no square root or
division, the map having stored ``(dA/du) / u``); and the Levenberg-Marquardt step reuses the
magnifications, slopes and linear parameters of the trial it accepts instead of a second pass
at the same point.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from consumer.alertfinder import kernels as alertfinder_kernels

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Bounds of the nonlinear parameters: ln u0 for 1e-4 <= u0 <= 3, ln tE for 0.3 <= tE <= 3000 d.
LN_U0_MIN = math.log(1e-4)
LN_U0_MAX = math.log(3.0)
LN_TE_MIN = math.log(0.3)
LN_TE_MAX = math.log(3000.0)
#: t0 stays within this many days of the data.
T0_MARGIN = 1000.0
#: u below this is treated as this (A ~ 1/u diverges at 0).
U_FLOOR = 1e-9
#: Partial sums of each fixed-order sum (:func:`_solve_linear`; its loops are written out for 4).
LANES = 4


@numba.njit(cache=True, error_model="numpy")
def _magnifications(t: F64, p: F64, amp: F64, slope: F64) -> None:  # pragma: no cover
    """``amp`` (N,) the point-source point-lens magnification ``(u**2 + 2) / (u sqrt(u**2 + 4))``
    at each point of ``t`` for ``p``; ``slope`` (N,) its ``(dA/du) / u`` (per Einstein radius
    squared), unless ``slope`` is empty.

    One square root and one division a point: with ``r = 1 / sqrt(u**2 (u**2 + 4))``,
    ``A = (u**2 + 2) r`` and ``(dA/du) / u = -8 / (u**3 (u**2 + 4)**1.5) = -8 r**3``. The loop
    only maps (no sum), so LLVM vectorises it without any fast-math flag, and every lane
    computes exactly what the scalar loop would.
    """
    t0, u0, inv_tE = p[0], math.exp(p[1]), math.exp(-p[2])
    u02 = u0 * u0
    floor2 = U_FLOOR * U_FLOOR
    if len(slope) == 0:
        for i in range(len(t)):
            tau = (t[i] - t0) * inv_tE
            u2 = max(u02 + tau * tau, floor2)
            r = 1.0 / math.sqrt(u2 * (u2 + 4.0))
            amp[i] = (u2 + 2.0) * r
        return
    for i in range(len(t)):
        tau = (t[i] - t0) * inv_tE
        u2 = max(u02 + tau * tau, floor2)
        r = 1.0 / math.sqrt(u2 * (u2 + 4.0))
        amp[i] = (u2 + 2.0) * r
        slope[i] = -8.0 * (r * r) * r


@numba.njit(cache=True, inline="always")
def _centred_products(
    w: float, a: float, f: float, mean_a: float, mean_f: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """One point's terms of the centred sums: ``w x x``, ``w x y``, ``w y y`` with
    ``x = a - mean_a``, ``y = f - mean_f``."""
    x = a - mean_a
    y = f - mean_f
    wx = w * x
    return wx * x, wx * y, w * y * y


@numba.njit(cache=True, error_model="numpy")
def _solve_linear(
    flux: F64, weight: F64, offsets: I64, amp: F64, fs: F64, fb: F64
) -> float:  # pragma: no cover - compiled
    """chi2 with every dataset's ``(fs, fb)`` solved (written into ``fs``, ``fb``) given the
    magnifications ``amp`` (N,).

    Every sum runs in a fixed order (:data:`LANES` partial sums over the points ``a + l``,
    ``a + l + LANES``, ..., of a dataset starting at ``a``, the tail in lane 0, combined
    pairwise at the end): a function of the dataset's values alone, whatever the buffers'
    addresses, and shorter dependency chains than one running sum.
    """
    chi2 = 0.0
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        whole = a + (b - a) // LANES * LANES
        s1_0 = s1_1 = s1_2 = s1_3 = 0.0
        sa_0 = sa_1 = sa_2 = sa_3 = 0.0
        sf_0 = sf_1 = sf_2 = sf_3 = 0.0
        for i in range(a, whole, LANES):
            w0, w1, w2, w3 = weight[i], weight[i + 1], weight[i + 2], weight[i + 3]
            s1_0 += w0
            s1_1 += w1
            s1_2 += w2
            s1_3 += w3
            sa_0 += w0 * amp[i]
            sa_1 += w1 * amp[i + 1]
            sa_2 += w2 * amp[i + 2]
            sa_3 += w3 * amp[i + 3]
            sf_0 += w0 * flux[i]
            sf_1 += w1 * flux[i + 1]
            sf_2 += w2 * flux[i + 2]
            sf_3 += w3 * flux[i + 3]
        for i in range(whole, b):
            s1_0 += weight[i]
            sa_0 += weight[i] * amp[i]
            sf_0 += weight[i] * flux[i]
        s1 = (s1_0 + s1_1) + (s1_2 + s1_3)
        if s1 <= 0.0:
            fs[d] = 0.0
            fb[d] = 0.0
            continue
        mean_a = ((sa_0 + sa_1) + (sa_2 + sa_3)) / s1
        mean_f = ((sf_0 + sf_1) + (sf_2 + sf_3)) / s1
        xx_0 = xx_1 = xx_2 = xx_3 = 0.0
        xy_0 = xy_1 = xy_2 = xy_3 = 0.0
        yy_0 = yy_1 = yy_2 = yy_3 = 0.0
        for i in range(a, whole, LANES):
            xx, xy, yy = _centred_products(weight[i], amp[i], flux[i], mean_a, mean_f)
            xx_0, xy_0, yy_0 = xx_0 + xx, xy_0 + xy, yy_0 + yy
            xx, xy, yy = _centred_products(weight[i + 1], amp[i + 1], flux[i + 1], mean_a, mean_f)
            xx_1, xy_1, yy_1 = xx_1 + xx, xy_1 + xy, yy_1 + yy
            xx, xy, yy = _centred_products(weight[i + 2], amp[i + 2], flux[i + 2], mean_a, mean_f)
            xx_2, xy_2, yy_2 = xx_2 + xx, xy_2 + xy, yy_2 + yy
            xx, xy, yy = _centred_products(weight[i + 3], amp[i + 3], flux[i + 3], mean_a, mean_f)
            xx_3, xy_3, yy_3 = xx_3 + xx, xy_3 + xy, yy_3 + yy
        for i in range(whole, b):
            xx, xy, yy = _centred_products(weight[i], amp[i], flux[i], mean_a, mean_f)
            xx_0, xy_0, yy_0 = xx_0 + xx, xy_0 + xy, yy_0 + yy
        sxx = (xx_0 + xx_1) + (xx_2 + xx_3)
        sxy = (xy_0 + xy_1) + (xy_2 + xy_3)
        syy = (yy_0 + yy_1) + (yy_2 + yy_3)
        if sxx > 1e-12 * s1:
            fs[d] = sxy / sxx
            chi2 += max(syy - sxy * sxy / sxx, 0.0)
        else:  # no magnification over this dataset: only its mean is measured
            fs[d] = 0.0
            chi2 += syy
        fb[d] = mean_f - fs[d] * mean_a
    return chi2


@numba.njit(cache=True, error_model="numpy")
def _prepare_linear(
    flux: F64, weight: F64, offsets: I64, s1: F64, mean_f: F64, centred: F64, syy: F64
) -> None:  # pragma: no cover - compiled
    """The parts of :func:`_solve_linear` that do not depend on the magnifications, for
    :func:`_solve_prepared` to reuse while ``flux`` and ``weight`` stay the same (a grid, a
    Levenberg-Marquardt run): per dataset ``s1`` (D,) the sum of weights, ``mean_f`` (D,) the
    weighted mean flux and ``syy`` (D,) the weighted sum of squares about it; ``centred`` (N,)
    ``flux - mean_f``. Every sum in :func:`_solve_linear`'s lanes and order, so the values are
    its own to the bit."""
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        whole = a + (b - a) // LANES * LANES
        s1_0 = s1_1 = s1_2 = s1_3 = 0.0
        sf_0 = sf_1 = sf_2 = sf_3 = 0.0
        for i in range(a, whole, LANES):
            w0, w1, w2, w3 = weight[i], weight[i + 1], weight[i + 2], weight[i + 3]
            s1_0 += w0
            s1_1 += w1
            s1_2 += w2
            s1_3 += w3
            sf_0 += w0 * flux[i]
            sf_1 += w1 * flux[i + 1]
            sf_2 += w2 * flux[i + 2]
            sf_3 += w3 * flux[i + 3]
        for i in range(whole, b):
            s1_0 += weight[i]
            sf_0 += weight[i] * flux[i]
        s1[d] = (s1_0 + s1_1) + (s1_2 + s1_3)
        mean_f[d] = 0.0
        syy[d] = 0.0
        if s1[d] <= 0.0:
            continue
        mean_f[d] = ((sf_0 + sf_1) + (sf_2 + sf_3)) / s1[d]
        for i in range(a, b):
            centred[i] = flux[i] - mean_f[d]
        yy_0 = yy_1 = yy_2 = yy_3 = 0.0
        for i in range(a, whole, LANES):
            yy_0 += weight[i] * centred[i] * centred[i]
            yy_1 += weight[i + 1] * centred[i + 1] * centred[i + 1]
            yy_2 += weight[i + 2] * centred[i + 2] * centred[i + 2]
            yy_3 += weight[i + 3] * centred[i + 3] * centred[i + 3]
        for i in range(whole, b):
            yy_0 += weight[i] * centred[i] * centred[i]
        syy[d] = (yy_0 + yy_1) + (yy_2 + yy_3)


@numba.njit(cache=True, error_model="numpy")
def _solve_prepared(
    weight: F64,
    offsets: I64,
    amp: F64,
    s1: F64,
    mean_f: F64,
    centred: F64,
    syy: F64,
    fs: F64,
    fb: F64,
) -> float:  # pragma: no cover - compiled
    """:func:`_solve_linear` (same result, bit for bit) from :func:`_prepare_linear`'s parts:
    only the sums that involve ``amp`` (N,) are left, about half the work."""
    chi2 = 0.0
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        if s1[d] <= 0.0:
            fs[d] = 0.0
            fb[d] = 0.0
            continue
        whole = a + (b - a) // LANES * LANES
        sa_0 = sa_1 = sa_2 = sa_3 = 0.0
        for i in range(a, whole, LANES):
            sa_0 += weight[i] * amp[i]
            sa_1 += weight[i + 1] * amp[i + 1]
            sa_2 += weight[i + 2] * amp[i + 2]
            sa_3 += weight[i + 3] * amp[i + 3]
        for i in range(whole, b):
            sa_0 += weight[i] * amp[i]
        mean_a = ((sa_0 + sa_1) + (sa_2 + sa_3)) / s1[d]
        xx_0 = xx_1 = xx_2 = xx_3 = 0.0
        xy_0 = xy_1 = xy_2 = xy_3 = 0.0
        for i in range(a, whole, LANES):
            x = amp[i] - mean_a
            wx = weight[i] * x
            xx_0 += wx * x
            xy_0 += wx * centred[i]
            x = amp[i + 1] - mean_a
            wx = weight[i + 1] * x
            xx_1 += wx * x
            xy_1 += wx * centred[i + 1]
            x = amp[i + 2] - mean_a
            wx = weight[i + 2] * x
            xx_2 += wx * x
            xy_2 += wx * centred[i + 2]
            x = amp[i + 3] - mean_a
            wx = weight[i + 3] * x
            xx_3 += wx * x
            xy_3 += wx * centred[i + 3]
        for i in range(whole, b):
            x = amp[i] - mean_a
            wx = weight[i] * x
            xx_0 += wx * x
            xy_0 += wx * centred[i]
        sxx = (xx_0 + xx_1) + (xx_2 + xx_3)
        sxy = (xy_0 + xy_1) + (xy_2 + xy_3)
        if sxx > 1e-12 * s1[d]:
            fs[d] = sxy / sxx
            chi2 += max(syy[d] - sxy * sxy / sxx, 0.0)
        else:  # no magnification over this dataset: only its mean is measured
            fs[d] = 0.0
            chi2 += syy[d]
        fb[d] = mean_f[d] - fs[d] * mean_a
    return chi2


@numba.njit(cache=True, error_model="numpy")
def linear_fit(
    t: F64, flux: F64, weight: F64, offsets: I64, p: F64, amp: F64, fs: F64, fb: F64
) -> float:  # pragma: no cover - compiled
    """chi2 of ``p`` with every dataset's ``(fs, fb)`` solved (written into ``fs``, ``fb``);
    ``amp`` (N,) receives the magnification at each point."""
    _magnifications(t, p, amp, amp[:0])
    return _solve_linear(flux, weight, offsets, amp, fs, fb)


@numba.njit(cache=True, error_model="numpy")
def _gauss_newton(
    t: F64,
    flux: F64,
    weight: F64,
    offsets: I64,
    p: F64,
    amp: F64,
    slope: F64,
    fs: F64,
    fb: F64,
    schur: F64,
    gradient: F64,
    cross: F64,
    linear: F64,
) -> None:  # pragma: no cover - compiled
    """:func:`normal_matrix`'s blocks from ``amp``, ``slope`` (N,) (:func:`_magnifications`)
    and ``fs``, ``fb`` (D,) (:func:`_solve_linear`) already computed at ``p``."""
    t0, u0, inv_tE = p[0], math.exp(p[1]), math.exp(-p[2])
    u02 = u0 * u0
    schur[:, :] = 0.0
    gradient[:] = 0.0
    h = np.zeros((3, 3))
    c = np.zeros((3, 2))
    for d in range(len(offsets) - 1):
        # d model / d p_j = k_j e_j with e = slope * (tau, 1, tau**2) and constant
        # k = fs * (-1/tE, u0**2, -1): the sums run over w e_j e_k etc., scaled by k at the end.
        # Scalars in the loop (it runs over every point at every LM step): h the p-p block,
        # c the p-(fs, fb) block, b the gradient, s* the (fs, fb) block.
        h00 = h10 = h11 = h20 = h21 = h22 = 0.0
        c00 = c01 = c10 = c11 = c20 = c21 = 0.0
        b0 = b1 = b2 = 0.0
        s1 = sa = saa = 0.0
        fsd, fbd = fs[d], fb[d]
        for i in range(offsets[d], offsets[d + 1]):
            w = weight[i]
            tau = (t[i] - t0) * inv_tE
            e1 = slope[i]
            e0 = e1 * tau
            e2 = e0 * tau
            a = amp[i]
            wr = w * (flux[i] - fsd * a - fbd)
            b0 += e0 * wr
            b1 += e1 * wr
            b2 += e2 * wr
            w0, w1, w2 = w * e0, w * e1, w * e2
            h00 += w0 * e0
            h10 += w1 * e0
            h11 += w1 * e1
            h20 += w2 * e0
            h21 += w2 * e1
            h22 += w2 * e2
            c00 += w0 * a
            c01 += w0
            c10 += w1 * a
            c11 += w1
            c20 += w2 * a
            c21 += w2
            s1 += w
            wa = w * a
            sa += wa
            saa += wa * a
        k0, k1, k2 = -fsd * inv_tE, fsd * u02, -fsd
        gradient[0] += k0 * b0
        gradient[1] += k1 * b1
        gradient[2] += k2 * b2
        h[0, 0], h[1, 0], h[1, 1] = k0 * k0 * h00, k1 * k0 * h10, k1 * k1 * h11
        h[2, 0], h[2, 1], h[2, 2] = k2 * k0 * h20, k2 * k1 * h21, k2 * k2 * h22
        h[0, 1], h[0, 2], h[1, 2] = h[1, 0], h[2, 0], h[2, 1]
        c[0, 0], c[0, 1], c[1, 0] = k0 * c00, k0 * c01, k1 * c10
        c[1, 1], c[2, 0], c[2, 1] = k1 * c11, k2 * c20, k2 * c21
        linear[d, 0, 0] = saa
        linear[d, 0, 1] = sa
        linear[d, 1, 0] = sa
        linear[d, 1, 1] = s1
        cross[d] = c
        if s1 <= 0.0:
            continue
        sxx = saa - sa * sa / s1  # centred: s1 * sxx is the block's determinant
        for j in range(3):
            for k in range(3):
                # c L^-1 c^T with L^-1 = [[1, -m], [-m, saa/s1]] / sxx, m = sa / s1
                if sxx > 1e-12 * s1:
                    m = sa / s1
                    term = (
                        c[j, 0] * c[k, 0]
                        - m * (c[j, 0] * c[k, 1] + c[j, 1] * c[k, 0])
                        + (saa / s1) * c[j, 1] * c[k, 1]
                    ) / sxx
                else:
                    term = c[j, 1] * c[k, 1] / s1
                schur[j, k] += h[j, k] - term


@numba.njit(cache=True, error_model="numpy")
def normal_matrix(
    t: F64,
    flux: F64,
    weight: F64,
    offsets: I64,
    p: F64,
    amp: F64,
    fs: F64,
    fb: F64,
    schur: F64,
    gradient: F64,
    cross: F64,
    linear: F64,
) -> float:  # pragma: no cover - compiled
    """Gauss-Newton blocks at ``p`` with the linear parameters solved; returns chi2.

    Writes ``schur`` (3, 3), the normal matrix of ``p`` after eliminating every dataset's
    ``(fs, fb)``; ``gradient`` (3,), ``J^T W r`` of ``p`` (that of the linear parameters is 0
    at their solution); per dataset ``cross`` (D, 3, 2), the ``p``-``(fs, fb)`` block, and
    ``linear`` (D, 2, 2), the ``(fs, fb)`` block, for the covariance.
    """
    slope = np.empty(len(t))
    _magnifications(t, p, amp, slope)
    chi2 = _solve_linear(flux, weight, offsets, amp, fs, fb)
    _gauss_newton(t, flux, weight, offsets, p, amp, slope, fs, fb, schur, gradient, cross, linear)
    return chi2


@numba.njit(cache=True, error_model="numpy")
def prior_penalty(p: F64, prior: F64) -> float:  # pragma: no cover - compiled
    """``-2 ln`` of the prior density of ``p = (t0, ln u0, ln tE)``, up to a constant.

    ``prior = (mean ln u0, sd ln u0, mean ln tE, sd ln tE)``: independent normals in ln u0 and
    ln tE (a non-positive sd switches that part off); t0 is free.
    """
    penalty = 0.0
    for j in range(2):
        if prior[2 * j + 1] > 0.0:
            z = (p[j + 1] - prior[2 * j]) / prior[2 * j + 1]
            penalty += z * z
    return penalty


@numba.njit(cache=True, error_model="numpy")
def _add_prior(p: F64, prior: F64, schur: F64, gradient: F64) -> None:  # pragma: no cover
    """Add the prior's curvature and ``-1/2`` its slope to the normal equations."""
    for j in range(2):
        sd = prior[2 * j + 1]
        if sd > 0.0:
            schur[j + 1, j + 1] += 1.0 / (sd * sd)
            gradient[j + 1] -= (p[j + 1] - prior[2 * j]) / (sd * sd)


@numba.njit(cache=True, error_model="numpy")
def _clamp(p: F64, t_lo: float, t_hi: float) -> None:  # pragma: no cover - compiled
    p[0] = min(max(p[0], t_lo), t_hi)
    p[1] = min(max(p[1], LN_U0_MIN), LN_U0_MAX)
    p[2] = min(max(p[2], LN_TE_MIN), LN_TE_MAX)


@numba.njit(cache=True, error_model="numpy")
def _solve3(a: F64, b: F64, out: F64) -> bool:  # pragma: no cover - compiled
    """``a out = b`` for a symmetric positive (semi)definite 3x3 ``a`` (Cholesky); False when
    ``a`` is not positive definite."""
    l00 = a[0, 0]
    if not l00 > 0.0:
        return False
    l00 = math.sqrt(l00)
    l10 = a[1, 0] / l00
    l20 = a[2, 0] / l00
    d1 = a[1, 1] - l10 * l10
    if not d1 > 0.0:
        return False
    l11 = math.sqrt(d1)
    l21 = (a[2, 1] - l20 * l10) / l11
    d2 = a[2, 2] - l20 * l20 - l21 * l21
    if not d2 > 0.0:
        return False
    l22 = math.sqrt(d2)
    y0 = b[0] / l00
    y1 = (b[1] - l10 * y0) / l11
    y2 = (b[2] - l20 * y0 - l21 * y1) / l22
    out[2] = y2 / l22
    out[1] = (y1 - l21 * out[2]) / l11
    out[0] = (y0 - l10 * out[1] - l20 * out[2]) / l00
    return True


@numba.njit(cache=True, error_model="numpy")
def levenberg_marquardt(
    t: F64,
    flux: F64,
    weight: F64,
    offsets: I64,
    p: F64,
    prior: F64,
    max_iterations: int,
    tolerance: float,
    fix_t0: bool = False,
) -> tuple[float, int, bool]:  # pragma: no cover - compiled
    """Minimise chi2 + :func:`prior_penalty` over ``p`` (updated in place) from its value;
    over ``(ln u0, ln tE)`` alone with ``fix_t0`` (a profile in t0).

    Returns ``(objective, iterations, converged)``; converged when a step lowers the objective
    by less than ``tolerance`` (absolute) or the parameters stop moving.
    """
    n = len(t)
    n_sets = len(offsets) - 1
    amp = np.empty(n)
    slope = np.empty(n)
    fs = np.empty(n_sets)
    fb = np.empty(n_sets)
    schur = np.zeros((3, 3))
    gradient = np.zeros(3)
    cross = np.zeros((n_sets, 3, 2))
    linear = np.zeros((n_sets, 2, 2))
    trial = np.empty(3)
    step = np.empty(3)
    damped = np.zeros((3, 3))
    s1 = np.empty(n_sets)
    mean_f = np.empty(n_sets)
    centred = np.empty(n)
    syy = np.empty(n_sets)
    _prepare_linear(flux, weight, offsets, s1, mean_f, centred, syy)
    t_lo = t.min() - T0_MARGIN
    t_hi = t.max() + T0_MARGIN
    _clamp(p, t_lo, t_hi)
    _magnifications(t, p, amp, slope)
    chi2 = _solve_prepared(weight, offsets, amp, s1, mean_f, centred, syy, fs, fb)
    _gauss_newton(t, flux, weight, offsets, p, amp, slope, fs, fb, schur, gradient, cross, linear)
    chi2 += prior_penalty(p, prior)
    _add_prior(p, prior, schur, gradient)
    lam = 1e-3
    for iteration in range(max_iterations):
        accepted = False
        while lam < 1e10:
            for j in range(3):
                for k in range(3):
                    damped[j, k] = schur[j, k]
                # Marquardt's scaling, with a floor so a flat direction still gets damped.
                damped[j, j] += lam * max(schur[j, j], 1e-12)
            if fix_t0:  # no step in t0: its row and column become the identity's
                for j in range(3):
                    damped[0, j] = 0.0
                    damped[j, 0] = 0.0
                damped[0, 0] = 1.0
                gradient[0] = 0.0
            if not _solve3(damped, gradient, step):
                lam *= 10.0
                continue
            for j in range(3):
                trial[j] = p[j] + step[j]
            _clamp(trial, t_lo, t_hi)
            # The slopes too: if the step is taken, its blocks need no second pass.
            _magnifications(t, trial, amp, slope)
            trial_chi2 = _solve_prepared(weight, offsets, amp, s1, mean_f, centred, syy, fs, fb)
            trial_chi2 += prior_penalty(trial, prior)
            if trial_chi2 < chi2:
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            return chi2, iteration, True  # no step lowers chi2: a minimum (or a bound)
        moved = 0.0
        for j in range(3):
            moved = max(moved, abs(trial[j] - p[j]))
            p[j] = trial[j]
        decrease = chi2 - trial_chi2
        # amp, slope, fs and fb are those of trial, now p: the same values a new pass would give.
        _gauss_newton(
            t, flux, weight, offsets, p, amp, slope, fs, fb, schur, gradient, cross, linear
        )
        chi2 = trial_chi2
        _add_prior(p, prior, schur, gradient)
        lam = max(lam * 0.1, 1e-9)
        if decrease < tolerance or moved < 1e-7:
            return chi2, iteration + 1, True
    return chi2, max_iterations, False


@numba.njit(cache=True, error_model="numpy")
def grid_chi2(
    t: F64, flux: F64, weight: F64, offsets: I64, grid: F64, prior: F64
) -> F64:  # pragma: no cover - compiled
    """chi2 + prior penalty at each row of ``grid`` (G, 3) (linear parameters solved)."""
    n_sets = len(offsets) - 1
    amp = np.empty(len(t))
    fs = np.empty(n_sets)
    fb = np.empty(n_sets)
    out = np.empty(len(grid))
    s1 = np.empty(n_sets)
    mean_f = np.empty(n_sets)
    centred = np.empty(len(t))
    syy = np.empty(n_sets)
    _prepare_linear(flux, weight, offsets, s1, mean_f, centred, syy)
    for g in range(len(grid)):
        _magnifications(t, grid[g], amp, amp[:0])
        out[g] = _solve_prepared(weight, offsets, amp, s1, mean_f, centred, syy, fs, fb)
        out[g] += prior_penalty(grid[g], prior)
    return out


@numba.njit(cache=True, error_model="numpy")
def blocks(
    t: F64, flux: F64, weight: F64, offsets: I64, p: F64, prior: F64
) -> tuple[F64, F64, F64, F64, F64, float]:  # pragma: no cover - compiled
    """The Gauss-Newton blocks at ``p`` for the covariance (inverted by the caller, numpy):
    ``(schur (3, 3), cross (D, 3, 2), linear (D, 2, 2), fs (D,), fb (D,), chi2)``, as
    :func:`normal_matrix` defines them, the prior's curvature included (chi2 without it)."""
    n_sets = len(offsets) - 1
    amp = np.empty(len(t))
    fs = np.empty(n_sets)
    fb = np.empty(n_sets)
    schur = np.zeros((3, 3))
    gradient = np.zeros(3)
    cross = np.zeros((n_sets, 3, 2))
    linear = np.zeros((n_sets, 2, 2))
    chi2 = normal_matrix(t, flux, weight, offsets, p, amp, fs, fb, schur, gradient, cross, linear)
    _add_prior(p, prior, schur, gradient)
    return schur, cross, linear, fs, fb, chi2


@numba.njit(cache=True, error_model="numpy")
def profile_interval(
    t: F64,
    flux: F64,
    weight: F64,
    offsets: I64,
    p: F64,
    prior: F64,
    best: float,
    step: float,
    max_steps: int,
    delta: float,
    max_iterations: int,
    tolerance: float,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Where the objective profiled over ``(ln u0, ln tE)`` (and the linear parameters) rises by
    ``delta`` above ``best`` (its value at the optimum ``p``), walking t0 away from ``p[0]`` in
    steps of ``step`` days, each fit warm-started from the last; interpolated between the last
    two steps in ``sqrt(rise)`` (linear in t0 for a parabola). Returns ``(lower, upper)``, t0
    offsets from ``p[0]`` (negative, positive); +-inf when ``max_steps`` steps do not get
    there."""
    out = np.empty(2)
    for side in range(2):
        direction = -1.0 if side == 0 else 1.0
        q = p.copy()
        previous = 0.0
        out[side] = direction * np.inf
        for k in range(1, max_steps + 1):
            q[0] = p[0] + direction * k * step
            value, _, _ = levenberg_marquardt(
                t, flux, weight, offsets, q, prior, max_iterations, tolerance, True
            )
            rise = max(value - best, 0.0)
            if rise >= delta:
                # sqrt(rise) is about linear in the distance (a parabola's): interpolate it.
                low, high = math.sqrt(previous), math.sqrt(rise)
                fraction = (math.sqrt(delta) - low) / max(high - low, 1e-12)
                out[side] = direction * step * (k - 1 + min(max(fraction, 0.0), 1.0))
                break
            previous = rise
    return out[0], out[1]


@numba.njit(cache=True, error_model="numpy")
def valid_input(t: F64, flux: F64, flux_err: F64) -> bool:  # pragma: no cover - compiled
    """Every ``t`` and ``flux`` finite and every ``flux_err`` finite and positive (N,)."""
    for i in range(len(t)):
        if not (math.isfinite(t[i]) and math.isfinite(flux[i])):
            return False
        if not (flux_err[i] > 0.0 and math.isfinite(flux_err[i])):
            return False
    return True


@numba.njit(cache=True, error_model="numpy")
def median(values: F64, a: int, b: int, buf: F64) -> float:  # pragma: no cover - compiled
    """``np.median(values[a:b])`` bit for bit (NaN if any of them is NaN or there are none);
    ``buf`` (at least ``b - a``) is scratch.

    np.median selects the middle value(s) exactly and takes their ``np.mean``, which sums from
    0.0: ``(0.0 + lower + upper) / 2``. The AlertFinder's median computes
    ``0.5 * (lower + upper)``, the same but for the sign of a zero, which ``0.0 + x`` makes
    positive as numpy's does. Whole arrays and a range, not slices: the AlertFinder compiles
    its median for these types already (a slice's layout would be a second compilation).
    """
    if b <= a:
        return np.nan
    for i in range(a, b):
        if np.isnan(values[i]):
            return np.nan
    return 0.0 + alertfinder_kernels.median(values, a, b, buf)


@numba.njit(cache=True, error_model="numpy")
def highest_run_time(t: F64, flux: F64, flux_err: F64, offsets: I64) -> float:  # pragma: no cover
    """The ``t`` (N,) of the point whose 3-point run (it and its two neighbours in its dataset)
    is highest above the dataset's median flux in units of ``flux_err``: the peak, robust to
    lone outliers; ``t[-1]`` when no dataset has 3 points. The first of equal runs wins."""
    best, best_t = -np.inf, t[len(t) - 1]
    buf = np.empty(len(t))
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        if b - a < 3:
            continue
        middle = median(flux, a, b, buf)
        z0 = (flux[a] - middle) / flux_err[a]
        z1 = (flux[a + 1] - middle) / flux_err[a + 1]
        for i in range(a + 2, b):
            z2 = (flux[i] - middle) / flux_err[i]
            run = min(min(z0, z1), z2)
            if run > best:
                best, best_t = run, t[i - 1]
            z0, z1 = z1, z2
    return best_t


@numba.njit(cache=True, error_model="numpy")
def subsample(offsets: I64, stride: int, tail: int) -> tuple[I64, I64]:  # pragma: no cover
    """Every ``stride``-th point of each dataset (from its first) plus its last ``tail``, in
    order: ``(index (M,), offsets (D + 1,))`` of the subsample."""
    n_sets = len(offsets) - 1
    index = np.empty(offsets[n_sets], dtype=np.int64)
    sub_offsets = np.zeros(n_sets + 1, dtype=np.int64)
    m = 0
    for d in range(n_sets):
        a, b = offsets[d], offsets[d + 1]
        for i in range(a, b):
            if (i - a) % stride == 0 or i >= b - tail:
                index[m] = i
                m += 1
        sub_offsets[d + 1] = m
    return index[:m], sub_offsets


@numba.njit(cache=True, error_model="numpy")
def _argmin(values: F64, a: int, b: int) -> int:  # pragma: no cover - compiled
    """``a + np.argmin(values[a:b])``: the first NaN, else the first smallest."""
    best = a
    for i in range(a, b):
        if np.isnan(values[i]):
            return i
        if values[i] < values[best]:
            best = i
    return best


@numba.njit(cache=True, error_model="numpy")
def robust_weights(
    t: F64,
    flux: F64,
    flux_err: F64,
    offsets: I64,
    keep: npt.NDArray[np.bool_],
    p: F64,
    clip_sigma: float,
    weight: F64,
    scale: F64,
    used: npt.NDArray[np.bool_],
) -> None:  # pragma: no cover - compiled
    """One robust round at ``p``: the normalised residuals ``(flux - fs A - fb) / flux_err``
    with the linear parameters solved under ``weight`` (N,); each dataset's error scale
    ``scale`` (D,) ``max(1, 1.4826 median |residual|)`` over its ``keep`` points; ``used`` (N,)
    the kept points within ``clip_sigma`` scaled errors; ``weight`` replaced by
    ``(flux_err scale)**-2`` on them, 0 elsewhere."""
    n = len(t)
    n_sets = len(offsets) - 1
    amp = np.empty(n)
    fs = np.empty(n_sets)
    fb = np.empty(n_sets)
    linear_fit(t, flux, weight, offsets, p, amp, fs, fb)
    residual = np.empty(n)
    kept = np.empty(n)
    buf = np.empty(n)
    for d in range(n_sets):
        a, b = offsets[d], offsets[d + 1]
        m = 0
        for i in range(a, b):
            residual[i] = (flux[i] - fs[d] * amp[i] - fb[d]) / flux_err[i]
            if keep[i]:
                kept[m] = abs(residual[i])
                m += 1
        scale[d] = 1.0
        if m > 0:
            robust = 1.4826 * median(kept, 0, m, buf)
            if robust > 1.0:  # max(1.0, robust) as Python has it: 1.0 for NaN
                scale[d] = robust
        limit = clip_sigma * scale[d]
        for i in range(a, b):
            used[i] = keep[i] and abs(residual[i]) <= limit
            scaled = flux_err[i] * scale[d]
            weight[i] = 1.0 / (scaled * scaled) if used[i] else 0.0


@numba.njit(cache=True, error_model="numpy")
def fit_steps(
    t: F64,
    flux: F64,
    flux_err: F64,
    offsets: I64,
    keep: npt.NDArray[np.bool_],
    t0_ahead: F64,
    nodes: F64,
    prior: F64,
    grid_points: int,
    rounds: int,
    clip_sigma: float,
    max_iterations: int,
    tolerance: float,
) -> tuple[F64, float, int, bool, F64, npt.NDArray[np.bool_], F64]:  # pragma: no cover
    """Steps 1 and 2 of :func:`consumer.pointlens.fit.fit` (starts, then robust rounds) in one
    compiled call; ``t`` (N,) days relative to the newest point.

    ``t0_ahead`` (T,): t0 tried after the last point, besides the highest 3-point run;
    ``nodes`` (K, 2): ``(ln u0, ln tE)`` of the grid at each t0. Returns ``(p (3,), objective,
    iterations, converged, weight (N,), used (N,), scale (D,))``: the optimum, its objective
    (chi2 + prior penalty) under the final ``weight``, and the final round's weights, points
    used and error scales.
    """
    n = len(t)
    n_sets = len(offsets) - 1
    weight = np.empty(n)
    for i in range(n):
        weight[i] = 1.0 / (flux_err[i] * flux_err[i]) if keep[i] else 0.0
    # 1. starts: the grid on a subsample, LM from each t0's best node, then on every point
    n_t0 = 1 + len(t0_ahead)
    n_nodes = len(nodes)
    grid = np.empty((n_t0 * n_nodes, 3))
    t_peak = highest_run_time(t, flux, flux_err, offsets)
    for j in range(n_t0):
        for k in range(n_nodes):
            grid[j * n_nodes + k, 0] = t_peak if j == 0 else t0_ahead[j - 1]
            grid[j * n_nodes + k, 1] = nodes[k, 0]
            grid[j * n_nodes + k, 2] = nodes[k, 1]
    if n <= grid_points:
        sub_t, sub_flux, sub_weight, sub_offsets = t, flux, weight, offsets
    else:
        index, sub_offsets = subsample(offsets, (n + grid_points - 1) // grid_points, 20)
        sub_t, sub_flux, sub_weight = t[index], flux[index], weight[index]
    chi2_grid = grid_chi2(sub_t, sub_flux, sub_weight, sub_offsets, grid, prior)
    best_p = grid[_argmin(chi2_grid, 0, len(chi2_grid))].copy()
    best_chi2 = np.inf
    for j in range(n_t0):
        p = grid[_argmin(chi2_grid, j * n_nodes, (j + 1) * n_nodes)].copy()
        chi2, _, _ = levenberg_marquardt(
            sub_t, sub_flux, sub_weight, sub_offsets, p, prior, max_iterations, tolerance
        )
        if chi2 < best_chi2:
            best_p, best_chi2 = p, chi2
    p = best_p
    objective, iterations, converged = levenberg_marquardt(
        t, flux, weight, offsets, p, prior, max_iterations, tolerance
    )
    # 2. robust rounds: per-dataset error scale, outliers out
    scale = np.ones(n_sets)
    used = np.empty(n, dtype=np.bool_)
    used[:] = True
    for _ in range(rounds):
        robust_weights(t, flux, flux_err, offsets, keep, p, clip_sigma, weight, scale, used)
        objective, more, converged = levenberg_marquardt(
            t, flux, weight, offsets, p, prior, max_iterations, tolerance
        )
        iterations += more
    return p, objective, iterations, converged, weight, used, scale


@numba.njit(cache=True, error_model="numpy")
def deviations(
    t: F64,
    flux: F64,
    flux_err: F64,
    offsets: I64,
    t0: float,
    u0: float,
    tE: float,
    fs: F64,
    fb: F64,
    scale: F64,
) -> F64:  # pragma: no cover - compiled
    """(N,) ``(flux - fs A(t) - fb) / (flux_err scale)`` of every point (``t`` full HJD,
    ``fs``, ``fb``, ``scale`` (D,) per dataset): the anomaly test's deviations, with the
    operations of :func:`consumer.pointlens.fit.magnification` in its order (``A`` of
    ``u = max(|sqrt(u0**2 + ((t - t0) / tE)**2)|, U_FLOOR)``)."""
    out = np.empty(len(t))
    u02 = u0 * u0
    for d in range(len(offsets) - 1):
        for i in range(offsets[d], offsets[d + 1]):
            tau = (t[i] - t0) / tE
            u = max(abs(math.sqrt(u02 + tau * tau)), U_FLOOR)
            u2 = u * u
            amp = (u2 + 2.0) / (u * math.sqrt(u2 + 4.0))
            out[i] = (flux[i] - (fs[d] * amp + fb[d])) / (flux_err[i] * scale[d])
    return out


@numba.njit(cache=True, error_model="numpy")
def deviating_runs(
    t: F64,
    z: F64,
    site: I64,
    n_sigma: float,
    recent_days: float,
    min_run: int,
    min_run_one_site: int,
) -> tuple[I64, I64]:  # pragma: no cover - compiled
    """The runs that qualify as anomalies (:mod:`consumer.pointlens.anomaly`): maximal runs of
    points (time order, ``t`` and ``z`` (N,), ``site`` (N,) a code per site) all deviating by
    at least ``n_sigma`` with the same sign, ending within ``recent_days`` of the last point,
    at least ``min_run`` long when seen from two sites or more, else ``min_run_one_site``.
    Returns ``(starts, ends)`` (R,), each run ``[start, end)``, in time order."""
    n = len(z)
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    found = 0
    if n == 0:
        return starts, ends
    newest = t[n - 1] - recent_days
    a = 0
    while a < n:
        sign = 1 if z[a] >= n_sigma else (-1 if z[a] <= -n_sigma else 0)
        b = a + 1
        while b < n and (1 if z[b] >= n_sigma else (-1 if z[b] <= -n_sigma else 0)) == sign:
            b += 1
        if sign != 0 and t[b - 1] >= newest:
            several_sites = False
            for i in range(a + 1, b):
                if site[i] != site[a]:
                    several_sites = True
                    break
            if b - a >= (min_run if several_sites else min_run_one_site):
                starts[found] = a
                ends[found] = b
                found += 1
        a = b
    return starts[:found], ends[:found]
