"""Microlensing magnification: point lens (analytic) and binary lens (point source).

Lengths are in units of the Einstein radius of the total lens mass; times in days. The source
moves along ``u(t) = tau(t) * (cos alpha, sin alpha) + u0 * (-sin alpha, cos alpha)`` with
``tau = (t - t0) / tE``, in a frame centred on the lens's centre of mass with the lenses on the
real axis (the heavier at negative x).

The binary lens uses the classic complex fifth-order polynomial (Witt & Mao 1995) solved for
all points at once as eigenvalues of (N, 5, 5) companion matrices; roots that do not satisfy the
lens equation are dropped. The source is a point: magnification diverges on caustics, so it is
capped at :data:`MAX_MAGNIFICATION` (a finite source of ~1e-3 Einstein radii peaks near there).
Far from the lenses (|u| > :data:`BINARY_RADIUS`) the binary acts as a point lens of the total
mass, which also keeps the polynomial well-conditioned.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]

MAX_MAGNIFICATION: Final = 1000.0
BINARY_RADIUS: Final = 5.0
#: A root is an image when it maps back to the source within this distance (Einstein radii).
_IMAGE_TOLERANCE: Final = 1e-4


def pspl_magnification(u: F64) -> F64:
    """Point-source point-lens magnification ``(u**2 + 2) / (u * sqrt(u**2 + 4))``, shape of u."""
    u = np.maximum(np.abs(u), 1e-9)  # u = 0 is a point of infinite magnification
    u2 = u * u
    return np.minimum((u2 + 2.0) / (u * np.sqrt(u2 + 4.0)), MAX_MAGNIFICATION)


def pspl_flux_excess(t: F64, t0: float, u0: float, tE: float, fs: float) -> F64:
    """Difference flux ``fs * (A(t) - 1)`` of a point-lens event, shape of t (DIA flux units)."""
    tau = (t - t0) / tE
    return fs * (pspl_magnification(np.sqrt(u0 * u0 + tau * tau)) - 1.0)


def source_position(t: F64, t0: float, u0: float, tE: float, alpha: float) -> C128:
    """Source position in the lens plane (complex, Einstein radii), shape of t."""
    tau = (t - t0) / tE
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    return (tau * cos_a - u0 * sin_a) + 1j * (tau * sin_a + u0 * cos_a)


def _polymul(a: C128, b: C128) -> C128:
    """Product of polynomials, coefficients highest first along the last axis: (N, i), (N, j)."""
    out = np.zeros((a.shape[0], a.shape[1] + b.shape[1] - 1), dtype=np.complex128)
    for k in range(b.shape[1]):
        out[:, k : k + a.shape[1]] += a * b[:, k : k + 1]
    return out


def _polish(poly: C128, roots: C128, steps: int = 2) -> C128:
    """Newton steps on the polynomial: eigenvalues lose digits for small q (planets)."""
    for _ in range(steps):
        value = np.zeros_like(roots)
        slope = np.zeros_like(roots)
        for k in range(poly.shape[1]):  # Horner for p and p'
            slope = slope * roots + value
            value = value * roots + poly[:, k : k + 1]
        step = np.where(slope != 0, value / np.where(slope != 0, slope, 1.0), 0.0)
        roots = roots - step
    return roots


def binary_magnification(zeta: C128, s: float, q: float) -> F64:
    """Point-source binary-lens magnification at source positions ``zeta``, shape (N,).

    Parameters
    ----------
    zeta : complex source positions, Einstein radii of the total mass, shape (N,).
    s : lens separation, Einstein radii.
    q : mass ratio m2 / m1, 1e-4 <= q <= 1 (smaller q loses digits in the polynomial).
    """
    zeta = np.asarray(zeta, dtype=np.complex128)
    result = pspl_magnification(np.abs(zeta))
    near = np.abs(zeta) < BINARY_RADIUS
    if not np.any(near):
        return result
    m1, m2 = 1.0 / (1.0 + q), q / (1.0 + q)
    z1, z2 = -s * m2, s * m1  # centre of mass at the origin
    zn = zeta[near]
    zc = np.conj(zn)
    n = len(zn)
    ones = np.ones(n, dtype=np.complex128)
    # conj(z) = P(z) / Q(z) from the conjugated lens equation, Q = (z - z1)(z - z2).
    Q: C128 = np.stack([ones, -(z1 + z2) * ones, z1 * z2 * ones], axis=1)
    P: C128 = np.stack([zc, -zc * (z1 + z2) + m1 + m2, zc * z1 * z2 - m1 * z2 - m2 * z1], axis=1)
    A1: C128 = P - z1 * Q  # Q * (conj(z) - z1)
    A2: C128 = P - z2 * Q
    zeta_minus_z: C128 = np.stack([-ones, zn], axis=1)
    # (zeta - z) A1 A2 + m1 Q A2 + m2 Q A1 = 0: degree 5, coefficients highest first.
    poly = _polymul(zeta_minus_z, _polymul(A1, A2))
    poly[:, 1:] += m1 * _polymul(Q, A2) + m2 * _polymul(Q, A1)
    companion = np.zeros((n, 5, 5), dtype=np.complex128)
    companion[:, 0, :] = -poly[:, 1:] / poly[:, :1]
    companion[:, np.arange(1, 5), np.arange(4)] = 1.0
    roots = _polish(poly, np.linalg.eigvals(companion).astype(np.complex128))  # (n, 5)
    conj_roots = np.conj(roots)
    mapped = roots - m1 / (conj_roots - z1) - m2 / (conj_roots - z2)
    is_image = np.abs(mapped - zn[:, None]) < _IMAGE_TOLERANCE
    shear = m1 / (conj_roots - z1) ** 2 + m2 / (conj_roots - z2) ** 2
    jacobian = np.abs(1.0 - np.abs(shear) ** 2)
    image_magnification = np.where(is_image, 1.0 / np.maximum(jacobian, 1e-12), 0.0)
    result[near] = np.minimum(image_magnification.sum(axis=1), MAX_MAGNIFICATION)
    return result
