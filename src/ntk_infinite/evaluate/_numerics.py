"""Numba configuration and the small jitted scalar functions the engine is built from.

Why a custom arctangent: the pair pass is bound by one angle per entry and layer. libm's
``atan2`` is an opaque call that stops LLVM from vectorising the loop; the branch-free
polynomial below vectorises (AVX2/AVX-512) and is accurate to a few ulp.

Why angles from (sin², cos) and not ``arccos(rho)``: near ρ = ±1, ``arccos`` of a rounded ρ
loses half the digits (θ ≈ √(2(1-ρ))). The engine carries ``sn2 = sin²θ = 1 - ρ²``
computed without cancellation, and recovers θ (and ψ = π - θ) with relative accuracy
at both ends.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: Options for every jitted function of the library (one place).
#: ``error_model='numpy'`` lets division by zero produce inf/nan instead of raising, which
#: removes the per-division check that would block vectorisation; the code guards every
#: division that matters. ``fastmath`` allows FMA contraction and x/c -> x*(1/c) (at most
#: 1 ulp; turns the generated divisions by π into multiplications): no reassociation, and
#: NaN/inf semantics are kept.
JIT_OPTIONS = dict(cache=True, error_model="numpy", fastmath={"contract", "arcp"})
#: For functions that are inlined at the Numba-IR level into the generated loops.
JIT_INLINE = dict(JIT_OPTIONS, inline="always")

PI = math.pi
TWO_PI = 2.0 * math.pi
_TAN_PI_8 = math.sqrt(2.0) - 1.0
#: Smallest positive normal number; guards divisions by a zero norm.
TINY = np.finfo(np.float64).tiny


def _atan_coefficients(degree: int = 10) -> np.ndarray:
    """Coefficients c_j of atan(t)/t ≈ Σ_j c_j z^j, z = t², on t ∈ [0, tan(π/8)].

    Polynomial interpolation at the Chebyshev nodes of z ∈ [0, tan²(π/8)], solved in
    40-digit arithmetic (mpmath, a dependency of sympy) so the only error left is the
    interpolation error, about 1.7e-16 relative for degree 10 (tested against mpmath).
    """
    import mpmath as mp

    with mp.workdps(40):
        zmax = (mp.sqrt(2) - 1) ** 2
        n = degree + 1
        nodes = [zmax / 2 * (1 + mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n)) for k in range(n)]
        vander = mp.matrix([[z**j for j in range(n)] for z in nodes])
        values = mp.matrix([mp.atan(mp.sqrt(z)) / mp.sqrt(z) for z in nodes])
        coeffs = mp.lu_solve(vander, values)
        return np.array([float(coeffs[j]) for j in range(n)])


ATAN_COEFFS = _atan_coefficients()
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10 = (float(c) for c in ATAN_COEFFS)


@nb.njit(**JIT_INLINE)
def atan_unit(t):
    """arctan(t) for t in [0, 1], branch-free, relative accuracy a few ulp (< 1e-15).

    Range reduction arctan(t) = π/4 + arctan((t-1)/(t+1)) for t > tan(π/8), then a degree-10
    polynomial in t² (:func:`_atan_coefficients`) evaluated by Estrin's scheme, whose short
    dependency chains keep the vector units busy.
    """
    big = t > _TAN_PI_8
    u = (t - 1.0) / (t + 1.0) if big else t
    return (0.25 * PI if big else 0.0) + u * _atan_poly(u * u)


@nb.njit(**JIT_INLINE)
def _atan_poly(z):
    z2 = z * z
    z4 = z2 * z2
    z8 = z4 * z4
    p01 = _A0 + _A1 * z
    p23 = _A2 + _A3 * z
    p45 = _A4 + _A5 * z
    p67 = _A6 + _A7 * z
    p89 = _A8 + _A9 * z
    return (p01 + z2 * p23) + z4 * (p45 + z2 * p67) + z8 * (p89 + z2 * _A10)


@nb.njit(**JIT_INLINE)
def atan_ratio(mn, mx):
    """arctan(mn/mx) for 0 <= mn <= mx with one division (0 when mx = 0)."""
    big = mn > _TAN_PI_8 * mx
    num = mn - mx if big else mn
    den = mn + mx if big else mx
    u = num / max(den, TINY)
    return (0.25 * PI if big else 0.0) + u * _atan_poly(u * u)


@nb.njit(**JIT_INLINE)
def atan_any(x):
    """arctan(x) for any real x (±π/2 at ±inf, NaN for NaN), branch-free like :func:`atan_unit`.

    arctan|x| = atan_ratio(|x|, 1) for |x| <= 1 and π/2 − atan_ratio(1, |x|) above; the sign
    is restored at the end (arctan is odd). Used by the generated closed-form tiles, where
    libm's ``atan`` would stop the entry loop from vectorising.
    """
    ax = abs(x)
    big = ax > 1.0
    alpha = atan_ratio(1.0 if big else ax, ax if big else 1.0)
    r = 0.5 * PI - alpha if big else alpha
    return -r if x < 0.0 else r


@nb.njit(**JIT_INLINE)
def angle_pair(s, c):
    """(θ, ψ) with θ = atan2(s, c) ∈ [0, π] and ψ = π - θ, both to full relative accuracy.

    ``s >= 0`` is sin θ (up to a positive factor) and ``c`` cos θ (same factor). Returns
    (0, π) when s = c = 0, the convention for zero-variance points.
    """
    ac = abs(c)
    mx = max(ac, s)
    mn = min(ac, s)
    alpha = atan_ratio(mn, mx)  # angle to the nearest axis, in [0, π/4]
    near_x_axis = s <= ac
    if near_x_axis:
        theta = alpha if c >= 0.0 else PI - alpha
        psi = PI - alpha if c >= 0.0 else alpha
    else:
        theta = 0.5 * PI - alpha if c >= 0.0 else 0.5 * PI + alpha
        psi = 0.5 * PI + alpha if c >= 0.0 else 0.5 * PI - alpha
    return theta, psi


@nb.njit(**JIT_INLINE)
def one_minus_rho(rho, sn2):
    """1 - ρ without cancellation, from ρ = cos θ and sn2 = sin² θ."""
    return sn2 / (1.0 + rho) if rho > 0.0 else 1.0 - rho


@nb.njit(**JIT_INLINE)
def one_plus_rho(rho, sn2):
    """1 + ρ without cancellation, from ρ = cos θ and sn2 = sin² θ."""
    return sn2 / (1.0 - rho) if rho < 0.0 else 1.0 + rho


@nb.njit(**JIT_INLINE)
def affine_pair(rho, sn2, sqa, sqb, inv_a, inv_b, w2, b2):
    r"""Dense layer on one pair, in normalised form.

    With c = ρ r, r = √q₁√q₂: c' = w²c + b², q' = w²q + b², and the Gram determinant
    D = q₁q₂ - c² obeys D' = w⁴ D + w² b² δ with δ = q₁ + q₂ - 2c = (√q₁-√q₂)² + 2r(1-ρ),
    every term non-negative, so sin²θ' = D'/(q₁'q₂') has no cancellation: for nearly
    parallel (or antiparallel) pairs θ' stays accurate to rounding level in absolute terms,
    where 1 − ρ'² would lose half the digits. (Its relative accuracy is limited by √q₁ − √q₂,
    known to absolute precision ε√q from the per-point variances.) ``inv_a``, ``inv_b`` are
    1/√q₁', 1/√q₂' (0 for a zero-variance point), applied one after the other: their product
    overflows when both variances are far below float64's normal range. Returns (ρ', sin²θ', c').
    """
    r = sqa * sqb
    c_new = w2 * (rho * r) + b2
    dsq = sqa - sqb
    delta = dsq * dsq + 2.0 * r * one_minus_rho(rho, sn2)
    # Scaled so nothing overflows for very deep or wide-scaled networks: r / √(q₁'q₂') <= 1/w2-ish.
    wr = w2 * ((sqa * inv_a) * (sqb * inv_b))
    det_scaled = wr * wr * sn2 + (w2 * b2) * ((delta * inv_a) * inv_b) * (inv_a * inv_b)
    rho_new = (c_new * inv_a) * inv_b
    rho_new = min(max(rho_new, -1.0), 1.0)
    sn2_new = min(det_scaled, 1.0)
    return rho_new, sn2_new, c_new


@nb.njit(**JIT_INLINE)
def reciprocal(x):
    """1/x, and 0 where x = 0 (zero-variance points)."""
    return 1.0 / x if x > 0.0 else 0.0
