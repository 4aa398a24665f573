"""nk.signal: mean-field signal propagation (Poole et al. 2016; Schoenholz et al. 2017).

References, none from the library's duals: values known in closed form (ReLU's χ₁ = σ_w²/2,
the σ_b = 0 edges at σ_w φ'(0) = 1), mpmath quadrature of the defining Gaussian integrals
(with the Schoenholz form V'(q*) = χ₁ + σ_w² E[φ φ''], not a derivative of the dual), a
200 × 200-node Gauss–Hermite product rule for the two-dimensional expectations, and deep
finite-width networks drawn with NumPy.
"""

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import optimize

import ntk_infinite as nk
from ntk_infinite.errors import ParameterError

# φ, φ', φ'' for the references (mpmath), by hand.
MP_FUNCTIONS = {
    "tanh": (mp.tanh, lambda x: 1 - mp.tanh(x) ** 2, lambda x: -2 * mp.tanh(x) * (1 - mp.tanh(x) ** 2)),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x),
            lambda x: -4 * x / mp.sqrt(mp.pi) * mp.exp(-x * x)),
}
LAYERS = {"tanh": nk.Tanh(), "erf": nk.Erf()}
NP_PHI = {"tanh": np.tanh, "erf": lambda x: __import__("scipy").special.erf(x)}


def _gauss(f, q):
    """E[f(√q z)], z ~ N(0, 1), by mpmath quadrature."""
    s = mp.sqrt(q)
    return mp.quad(lambda z: mp.npdf(z) * f(s * z), [-mp.inf, 0, mp.inf])


def _reference(name, w, b):
    """q*, χ₁, V'(q*) from mpmath (20 digits), the fixed point by mpmath.findroot."""
    mp.mp.dps = 20
    phi, dphi, ddphi = MP_FUNCTIONS[name]
    w2, b2 = mp.mpf(w) ** 2, mp.mpf(b) ** 2
    q = mp.mpf(1)
    for _ in range(8):  # along the orbit from q0 = 1, then the secant method
        q = w2 * _gauss(lambda x: phi(x) ** 2, q) + b2
    q = mp.findroot(lambda x: w2 * _gauss(lambda y: phi(y) ** 2, x) + b2 - x, q)
    chi1 = w2 * _gauss(lambda x: dphi(x) ** 2, q)
    slope = chi1 + w2 * _gauss(lambda x: phi(x) * ddphi(x), q)
    mp.mp.dps = 15
    return float(q), float(chi1), float(slope)


_Z, _WZ = np.polynomial.hermite_e.hermegauss(200)
_WZ = _WZ / math.sqrt(2.0 * math.pi)


def _pair_expectation(f, g, q, c):
    """E[f(u) g(v)] with u, v ~ N(0, q), correlation c: a Gauss–Hermite product rule."""
    z1, z2 = np.meshgrid(_Z, _Z, indexing="ij")
    u = math.sqrt(q) * z1
    v = math.sqrt(q) * (c * z1 + math.sqrt(1.0 - c * c) * z2)
    return float(np.einsum("i,j,ij->", _WZ, _WZ, f(u) * g(v)))


@pytest.mark.parametrize("w", [0.5, 1.0, 1.3, 1.9])
def test_relu_without_bias_has_chi_1_half_sigma_w_squared(w):
    point = nk.signal.analyse(nk.ReLU(), w)
    assert point.chi_1 == pytest.approx(w * w / 2, rel=1e-15)
    assert point.phase == ("ordered" if w * w < 2 else "chaotic")


@pytest.mark.parametrize("b", [0.0, 0.3, 1.0])
def test_relu_edge_of_chaos_is_sigma_w_squared_two(b):
    assert nk.signal.edge_of_chaos(nk.ReLU(), b) ** 2 == pytest.approx(2.0, abs=1e-12)


def test_odd_activations_without_bias_are_critical_where_sigma_w_phi_prime_zero_is_one():
    # tanh'(0) = 1 and erf'(0) = 2/√π: χ₁ = σ_w² φ'(0)² at q* = 0.
    assert nk.signal.edge_of_chaos(nk.Erf(), 0.0) == pytest.approx(math.sqrt(math.pi) / 2, abs=1e-12)
    assert nk.signal.analyse(nk.Erf(), math.sqrt(math.pi) / 2).phase == "critical"


def test_tanh_edge_matches_the_published_critical_point():
    # Schoenholz et al. (2017) train tanh networks at their critical point σ_w² ≈ 1.76 for
    # σ_b² = 0.05 (quoted to two decimals).
    assert nk.signal.edge_of_chaos(nk.Tanh(), math.sqrt(0.05)) ** 2 == pytest.approx(1.76, abs=0.005)


@pytest.mark.slow
def test_tanh_without_bias_is_critical_at_sigma_w_one():
    assert nk.signal.edge_of_chaos(nk.Tanh(), 0.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name, w, b, rtol", [("erf", 2.0, 0.1, 1e-10), ("tanh", 1.5, 0.3, 1e-9),
                                              pytest.param("erf", 1.2, 0.6, 1e-10, marks=pytest.mark.slow),
                                              pytest.param("tanh", 1.1, 0.5, 1e-9, marks=pytest.mark.slow)])
def test_fixed_point_chi_1_and_variance_slope_match_mpmath(name, w, b, rtol):
    point = nk.signal.analyse(LAYERS[name], w, b)
    q, chi1, slope = _reference(name, w, b)
    assert point.q_star == pytest.approx(q, rel=rtol)
    assert point.chi_1 == pytest.approx(chi1, rel=rtol)
    assert point.slope_q == pytest.approx(slope, rel=rtol)
    assert point.xi_q == pytest.approx(-1.0 / math.log(slope), rel=10 * rtol)
    assert point.phase == ("chaotic" if chi1 > 1 else "ordered")


@pytest.mark.parametrize("name, w, b", [("erf", 2.0, 0.1), ("tanh", 1.5, 0.3)])
def test_chaotic_correlation_fixed_point_and_its_depth_scale_match_quadrature(name, w, b):
    point = nk.signal.analyse(LAYERS[name], w, b)
    q = point.q_star
    phi = NP_PHI[name]
    dphi = {"tanh": lambda x: 1 - np.tanh(x) ** 2, "erf": lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x)}[name]

    def excess(c):
        return (w * w * _pair_expectation(phi, phi, q, c) + b * b) / q - c

    c_star = optimize.brentq(excess, -0.99, 0.999, xtol=1e-15)
    chi_c = w * w * _pair_expectation(dphi, dphi, q, c_star)
    assert point.c_star == pytest.approx(c_star, abs=1e-9)
    assert point.chi_c == pytest.approx(chi_c, rel=1e-9)
    assert point.xi_c == pytest.approx(-1.0 / math.log(chi_c), rel=1e-8)


def test_ordered_phase_has_c_star_one_and_xi_c_from_chi_1():
    point = nk.signal.analyse(nk.Erf(), 1.2, 0.6)
    assert point.phase == "ordered" and point.c_star == 1.0
    assert point.xi_c == pytest.approx(-1.0 / math.log(point.chi_1), rel=1e-14)


def test_maps_are_consistent_with_the_fixed_points():
    point = nk.signal.analyse(nk.Erf(), 2.0, 0.1)
    V = nk.signal.variance_map(nk.Erf(), 2.0, 0.1)
    C = nk.signal.correlation_map(nk.Erf(), 2.0, 0.1)
    assert float(V(point.q_star)) == pytest.approx(point.q_star, rel=1e-13)
    assert float(C(1.0)) == pytest.approx(1.0, rel=1e-13)
    assert float(C(point.c_star)) == pytest.approx(point.c_star, abs=1e-12)


def _finite_correlations(phi, w, b, q, c0, depth, width, seed):
    """Correlation of two inputs layer by layer through one deep finite network (NumPy)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, width))
    h = np.sqrt(q) * np.stack([z[0], c0 * z[0] + math.sqrt(1 - c0 * c0) * z[1]])
    out = []
    for _ in range(depth):
        W = rng.standard_normal((width, width)) * (w / math.sqrt(width))
        h = phi(h) @ W.T + b * rng.standard_normal(width)
        out.append(float(h[0] @ h[1] / math.sqrt((h[0] @ h[0]) * (h[1] @ h[1]))))
    return np.array(out)


def test_finite_network_correlations_follow_the_correlation_map():
    w, b, c0, depth = 1.5, 0.3, 0.2, 6
    point = nk.signal.analyse(nk.Tanh(), w, b)
    C = nk.signal.correlation_map(nk.Tanh(), w, b)
    predicted, c = [], c0
    for _ in range(depth):
        c = float(C(c))
        predicted.append(c)
    runs = np.array([_finite_correlations(np.tanh, w, b, point.q_star, c0, depth, 800, seed) for seed in range(6)])
    mean, err = runs.mean(0), runs.std(0, ddof=1) / math.sqrt(len(runs))
    # Finite-width bias is O(1/width); 4 standard errors plus 0.01 for it.
    assert np.all(np.abs(mean - predicted) <= 4 * err + 0.01), (mean, predicted, err)


def _decay_depth(gap, layers):
    """−1/slope of log|c_l − c*| against l, and its standard error."""
    coef, cov = np.polyfit(layers, np.log(gap), 1, cov=True)
    return -1.0 / coef[0], math.sqrt(cov[0, 0]) / coef[0] ** 2


def test_iterated_correlation_map_decays_to_c_star_at_rate_xi_c():
    point = nk.signal.analyse(nk.Tanh(), 1.5, 0.3)
    C = nk.signal.correlation_map(nk.Tanh(), 1.5, 0.3)
    c, gaps = point.c_star + 1e-3, []
    for _ in range(150):
        c = float(C(c))
        gaps.append(abs(c - point.c_star))
    layers = np.arange(1, 151)
    deep = layers > 40  # gaps 1e-4 ... 1e-6: linear to ~1e-5, far above rounding
    assert _decay_depth(np.array(gaps)[deep], layers[deep])[0] == pytest.approx(point.xi_c, rel=1e-4)


@pytest.mark.slow
def test_finite_network_correlations_decay_to_c_star_over_xi_c():
    """Deep finite tanh networks: |c_l − c*| decays over the depth the correlation map predicts,
    within the Monte-Carlo error of the fitted depth. (At c* + 0.08 the map's curvature makes
    that depth ~25 rather than its asymptotic ξ_c ≈ 20, which the map reaches closer to c*:
    test_iterated_correlation_map_decays_to_c_star_at_rate_xi_c.)"""
    w, b = 1.5, 0.3
    point = nk.signal.analyse(nk.Tanh(), w, b)
    C = nk.signal.correlation_map(nk.Tanh(), w, b)
    depth, c0 = 24, point.c_star + 0.08
    runs = np.array([_finite_correlations(np.tanh, w, b, point.q_star, c0, depth, 2000, seed) for seed in range(12)])
    mean, se = runs.mean(0), runs.std(0, ddof=1) / math.sqrt(len(runs))
    predicted, c = [], c0
    for _ in range(depth):
        c = float(C(c))
        predicted.append(c)
    layers = np.arange(1, depth + 1)
    use = np.abs(mean - point.c_star) > 4 * se
    measured, err = _decay_depth(np.abs(mean - point.c_star)[use], layers[use])
    theory, _ = _decay_depth(np.abs(np.array(predicted) - point.c_star)[use], layers[use])
    assert abs(measured - theory) <= 3 * err + 0.05 * theory, (measured, err, theory)


def test_errors_name_what_was_expected():
    with pytest.raises(TypeError, match="activation layer such as nk.Tanh"):
        nk.signal.analyse(nk.Dense(), 1.0)
    with pytest.raises(ParameterError, match="'sigma_w' parameter of analyse must be a float in the range \\(0"):
        nk.signal.analyse(nk.ReLU(), 0.0)
    with pytest.raises(ParameterError, match="'sigma_b' parameter"):
        nk.signal.analyse(nk.ReLU(), 1.0, -0.1)
    with pytest.raises(ParameterError, match="low < high"):
        nk.signal.edge_of_chaos(nk.ReLU(), 0.0, bracket=(2.0, 1.0))
    with pytest.raises(ParameterError, match="does not change sign.*wider bracket"):
        nk.signal.edge_of_chaos(nk.Erf(), 0.1, bracket=(0.1, 0.5))


def _naive_layerwise(layers, q, c):
    """The pair recursion by mpmath quadrature of E[φ(u)φ(v)] (tanh) and plain algebra (Dense)."""
    mp.mp.dps = 20
    out = [(q, c)]
    for kind, w, b in layers:
        if kind == "dense":
            q, c = w * w * q + b * b, (w * w * c * q + b * b) / (w * w * q + b * b)
        else:
            q_out = float(_gauss(lambda x: mp.tanh(x) ** 2, q))
            pair = _pair_expectation(np.tanh, np.tanh, q, c)
            q, c = q_out, pair / q_out
        out.append((q, c))
    return np.array(out)


def test_layerwise_follows_the_naive_pair_recursion():
    text = "2*(Dense(1.5, 0.3) > Tanh) > Dense(0.8, 0.1)"
    s = nk.signal.layerwise(text, q=0.7, c=0.25)
    layers = [("dense", 1.5, 0.3), ("tanh", 0, 0)] * 2 + [("dense", 0.8, 0.1)]
    ref = _naive_layerwise(layers, 0.7, 0.25)
    np.testing.assert_allclose(s.q, ref[:, 0], rtol=1e-9)
    np.testing.assert_allclose(s.c, ref[:, 1], rtol=1e-9)
    # The compiled kernel of the same architecture: its NNGP of two inputs with |x|²/d = 0.7.
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal((2, 40))
    v = v - (u @ v) / (u @ u) * u
    x1 = u / np.linalg.norm(u)
    x2 = 0.25 * x1 + math.sqrt(1 - 0.25 ** 2) * v / np.linalg.norm(v)
    X = np.stack([x1, x2]) * math.sqrt(0.7 * 40)
    K = nk.compile(text)(X).nngp
    assert K[0, 0] == pytest.approx(s.q[-1], rel=1e-12)
    assert K[0, 1] / K[0, 0] == pytest.approx(s.c[-1], rel=1e-12)


def test_layerwise_rejects_spatial_layers_and_zero_variance():
    with pytest.raises(nk.ArchitectureError, match="covers dense architectures"):
        nk.signal.layerwise("Conv(filter_shape=(3,)) > ReLU > Flatten > Dense")
    with pytest.raises(ParameterError, match="'q' parameter of layerwise must be a float in the range \\(0, inf\\)"):
        nk.signal.layerwise("Dense(1.0, 0.0) > ReLU", q=-1.0)


def test_ntk_degenerates_with_depth_in_the_ordered_phase_only():
    X = np.random.default_rng(0).standard_normal((8, 6))
    ordered = nk.signal.ntk_condition(nk.Erf(), 1.0, 0.3, X, depths=[4, 12, 36], threshold=1e3)
    chaotic = nk.signal.ntk_condition(nk.Erf(), 2.5, 0.3, X, depths=[36])
    assert np.all(np.diff(ordered.ntk) > 0) and ordered.ntk[-1] > 1e3
    assert ordered.degenerate_depth == 36
    assert chaotic.ntk[-1] < 2.0 and chaotic.degenerate_depth is None
    with pytest.raises(ParameterError, match="n >= 2 distinct inputs"):
        nk.signal.ntk_condition(nk.Erf(), 1.0, 0.3, X[:1])


def test_command_line_prints_the_quantities_and_the_edge(capsys):
    from ntk_infinite.cli import main

    assert main(["signal", "Erf", "--sigma-w", "2.0", "--sigma-b", "0.1"]) == 0
    out = capsys.readouterr().out
    point = nk.signal.analyse(nk.Erf(), 2.0, 0.1)
    assert "chaotic" in out and f"{point.c_star:.12g}" in out
    assert main(["signal", "ReLU", "--sigma-b", "0", "0.5"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [float(r[2]) for r in rows] == pytest.approx([2.0, 2.0], abs=1e-12)
    assert main(["signal", "Dense > ReLU"]) == 2
    assert "expects one activation in text form" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_signal_table_is_written(tmp_path):
    from ntk_infinite.reports import signal as report

    text = report.write_table(tmp_path, quick=True).read_text()
    assert "Generated by" in text and "| ReLU | 1.4142135624 (σ_w² 2.00000000)" in text


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=20)
@given(w=st.floats(0.3, 3.0), b=st.floats(0.05, 1.5), which=st.sampled_from(["erf", "relu"]))
def test_fixed_points_phase_and_depth_scales_are_consistent(w, b, which):
    """For drawn (σ_w, σ_b): V(q*) = q*, C(1) = 1, C(c*) = c*, the phase agrees with χ₁, and
    the depth scales are −1/log of their slopes."""
    act = nk.Erf() if which == "erf" else nk.ReLU()
    p = nk.signal.analyse(act, w, b)
    if math.isfinite(p.q_star):
        assert float(nk.signal.variance_map(act, w, b)(p.q_star)) == pytest.approx(p.q_star, rel=1e-12)
        C = nk.signal.correlation_map(act, w, b, q=p.q_star)
        assert float(C(1.0)) == pytest.approx(1.0, rel=1e-12)
        assert float(C(p.c_star)) == pytest.approx(p.c_star, abs=1e-11)
        assert p.slope_q < 1.0 and p.xi_q == pytest.approx(-1.0 / math.log(p.slope_q), rel=1e-12)
    assert p.phase == ("critical" if abs(p.chi_1 - 1) <= 1e-12 else "ordered" if p.chi_1 < 1 else "chaotic")
    assert (p.c_star == 1.0) == (p.phase != "chaotic" or not 0 < p.q_star < math.inf)
    if p.phase == "ordered":
        assert p.xi_c == pytest.approx(-1.0 / math.log(p.chi_1), rel=1e-12)
    else:
        assert p.chi_c <= p.chi_1 + 1e-12 or not 0 < p.q_star < math.inf


def test_a_variance_map_that_returns_nan_is_an_error_not_a_divergence(monkeypatch):
    from ntk_infinite.compiler.duals.base import PointResult
    from ntk_infinite.signal import meanfield

    real = meanfield._dual

    class NaNDual:
        def __init__(self, dual):
            self.layer = dual.layer

        def point(self, q):
            return PointResult(np.full(q.shape, np.nan), np.full(q.shape, np.nan))

    monkeypatch.setattr(meanfield, "_dual", lambda act, tol: NaNDual(real(act, tol)))
    with pytest.raises(nk.ActivationError, match="returned NaN at q = 1"):
        nk.signal.analyse(nk.Erf(), 1.0, 0.1)
