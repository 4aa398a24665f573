"""The jitted scalar functions against mpmath."""

import math

import mpmath as mp
import numpy as np
import pytest

from ntk_infinite.evaluate._numerics import affine_pair, angle_pair, atan_any, atan_ratio, atan_unit
from tolerances import ATAN_RTOL, SMALL_ANGLE_ATOL, ULP_RTOL


def test_atan_unit_matches_mpmath():
    ts = np.concatenate([np.linspace(0, 1, 2001), np.geomspace(1e-300, 1, 400), [math.sqrt(2) - 1, np.nextafter(math.sqrt(2) - 1, 1)]])
    worst = 0.0
    for t in ts:
        ref = float(mp.atan(mp.mpf(float(t))))
        got = atan_unit(float(t))
        if ref:
            worst = max(worst, abs(got - ref) / ref)
        else:
            assert got == 0.0
    assert worst < ATAN_RTOL


def test_atan_ratio_matches_mpmath_and_handles_zero():
    rng = np.random.default_rng(0)
    for _ in range(500):
        mx = 10.0 ** rng.uniform(-200, 200)
        mn = mx * rng.uniform(0, 1) ** 3
        ref = float(mp.atan(mp.mpf(mn) / mp.mpf(mx)))
        assert abs(atan_ratio(mn, mx) - ref) <= ATAN_RTOL * ref + 1e-300
    assert atan_ratio(0.0, 0.0) == 0.0


def test_atan_any_matches_mpmath_over_the_whole_line():
    mags = np.concatenate([np.geomspace(1e-300, 1e300, 3001), np.linspace(0.0, 3.0, 601),
                           [math.sqrt(2) - 1, 1.0, math.sqrt(2) + 1]])
    for x in np.concatenate([mags, -mags]):
        ref = float(mp.atan(mp.mpf(float(x))))
        assert abs(atan_any(float(x)) - ref) <= ATAN_RTOL * abs(ref), x
    assert atan_any(math.inf) == math.pi / 2 and atan_any(-math.inf) == -math.pi / 2
    assert math.isnan(atan_any(math.nan))


@pytest.mark.parametrize("theta", [0.0, 1e-12, 1e-5, 0.3, 1.0, math.pi / 2, 2.0, math.pi - 1e-6, math.pi - 1e-13, math.pi])
def test_angle_pair_relative_accuracy_at_both_ends(theta):
    with mp.workdps(40):
        s = float(mp.sin(mp.mpf(theta)))
        c = float(mp.cos(mp.mpf(theta)))
        # reference angle of the *rounded* (s, c), and its supplement
        th_ref = mp.atan2(mp.mpf(s), mp.mpf(c))
        psi_ref = mp.pi - th_ref
    th, psi = angle_pair(s, c)
    assert abs(th - float(th_ref)) <= ATAN_RTOL * float(th_ref) + 1e-300
    assert abs(psi - float(psi_ref)) <= ATAN_RTOL * float(psi_ref) + 1e-300


def test_angle_pair_zero_vector_convention():
    assert angle_pair(0.0, 0.0) == (0.0, math.pi)


def test_affine_pair_keeps_small_angles():
    """The angle after a Dense layer on a nearly parallel pair, against 50-digit arithmetic.

    θ' ≈ 1e-9 is accurate to ~1e-17 absolute (the naive 1 - ρ'² route gives ~1e-8): the
    absolute accuracy is what the kernel values need. (Its relative accuracy is limited by
    √q₁ - √q₂, known only to absolute precision ε√q from the per-point variances.)"""
    q1, q2, theta = 1.3, 1.3 * (1 + 2e-9), 1e-9
    w2, b2 = 2.0, 0.3
    rho, sn2 = math.cos(theta), math.sin(theta) ** 2
    q1n, q2n = w2 * q1 + b2, w2 * q2 + b2
    p, s2, c_new = affine_pair(rho, sn2, math.sqrt(q1), math.sqrt(q2), 1 / math.sqrt(q1n), 1 / math.sqrt(q2n), w2, b2)
    with mp.workdps(50):
        c = mp.cos(mp.mpf(theta)) * mp.sqrt(mp.mpf(q1) * mp.mpf(q2))
        cn = w2 * c + b2
        D = (w2 * mp.mpf(q1) + b2) * (w2 * mp.mpf(q2) + b2) - cn**2
        ref = D / ((w2 * mp.mpf(q1) + b2) * (w2 * mp.mpf(q2) + b2))
    assert abs(math.sqrt(s2) - math.sqrt(float(ref))) <= SMALL_ANGLE_ATOL
    naive_rho = float(cn) / math.sqrt(q1n * q2n)
    assert abs(math.sqrt(max(0.0, (1 - naive_rho) * (1 + naive_rho))) - math.sqrt(float(ref))) > 1e-12
    assert abs(c_new - float(cn)) <= ULP_RTOL * float(cn)
