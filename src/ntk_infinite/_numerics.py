"""Numba configuration and the small jitted scalar functions the engine is built from.

Why a custom arctangent: the pair pass is bound by one angle per entry and layer. libm's
``atan2`` is an opaque call that stops LLVM from vectorising the loop; the branch-free
polynomial below vectorises (AVX2/AVX-512) and is accurate to about one ulp.

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
#: division that matters. ``fastmath`` only allows FMA contraction: no value-changing
#: reassociation, and NaN/inf semantics are kept.
JIT_OPTIONS = dict(cache=True, error_model="numpy", fastmath={"contract"})
#: For functions that are inlined at the Numba-IR level into the generated loops.
JIT_INLINE = dict(JIT_OPTIONS, inline="always")

PI = math.pi
TWO_PI = 2.0 * math.pi
_TAN_PI_8 = math.sqrt(2.0) - 1.0
#: Taylor coefficients of atan(t)/t = sum_k (-1)^k t^(2k) / (2k+1). On |t| <= tan(pi/8),
#: t^2 <= 0.1716 and 21 terms leave a remainder below 1.3e-17 relative.
_ATAN_TERMS = 21
ATAN_COEFFS = np.array([(-1.0) ** k / (2 * k + 1) for k in range(_ATAN_TERMS)])
#: Smallest positive normal number; guards divisions by a zero norm.
TINY = np.finfo(np.float64).tiny


@nb.njit(**JIT_INLINE)
def atan_unit(t):
    """arctan(t) for t in [0, 1], branch-free, relative accuracy ~1 ulp.

    Range reduction arctan(t) = π/4 + arctan((t-1)/(t+1)) for t > tan(π/8), then the
    Taylor series of arctan on [-tan(π/8), tan(π/8)] evaluated by Horner's rule.
    """
    big = t > _TAN_PI_8
    u = (t - 1.0) / (t + 1.0) if big else t
    off = 0.25 * PI if big else 0.0
    z = u * u
    acc = ATAN_COEFFS[_ATAN_TERMS - 1]
    for k in range(_ATAN_TERMS - 2, -1, -1):
        acc = acc * z + ATAN_COEFFS[k]
    return off + u * acc


@nb.njit(**JIT_INLINE)
def angle_pair(s, c):
    """(θ, ψ) with θ = atan2(s, c) ∈ [0, π] and ψ = π - θ, both to full relative accuracy.

    ``s >= 0`` is sin θ (up to a positive factor) and ``c`` cos θ (same factor). Returns
    (0, π) when s = c = 0, the convention for zero-variance points.
    """
    ac = abs(c)
    mx = max(ac, s)
    mn = min(ac, s)
    alpha = atan_unit(mn / max(mx, TINY))  # angle to the nearest axis, in [0, π/4]
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
def affine_pair(rho, sn2, sqa, sqb, sqa_new, sqb_new, w2, b2):
    r"""Dense layer on one pair, in normalised form.

    With c = ρ r, r = √q₁√q₂: c' = w²c + b², q' = w²q + b², and the Gram determinant
    D = q₁q₂ - c² obeys D' = w⁴ D + w² b² δ with δ = q₁ + q₂ - 2c = (√q₁-√q₂)² + 2r(1-ρ),
    every term non-negative, so sin²θ' = D'/(q₁'q₂') keeps full relative accuracy for
    nearly parallel (or antiparallel) pairs. Returns (ρ', sin²θ', c').
    """
    r = sqa * sqb
    c_new = w2 * (rho * r) + b2
    r_new = sqa_new * sqb_new
    dsq = sqa - sqb
    delta = dsq * dsq + 2.0 * r * one_minus_rho(rho, sn2)
    # D'/(q1' q2') written so that nothing overflows for very deep or wide-scaled networks.
    inv = 1.0 / max(r_new, TINY)
    det_scaled = (w2 * sqa * inv) * (w2 * sqb * inv) * sqa * sqb * sn2 + w2 * b2 * delta * inv * inv
    rho_new = c_new * inv
    if rho_new > 1.0:
        rho_new = 1.0
    elif rho_new < -1.0:
        rho_new = -1.0
    if r_new <= 0.0:
        rho_new = 0.0
        det_scaled = 0.0
    sn2_new = min(det_scaled, 1.0)
    return rho_new, sn2_new, c_new
