"""kernel.formula(), kernel.latex() and `ntk-infinite formula ARCH`."""

import math

import numpy as np
import pytest
import sympy as sp

import ntk_infinite as nk
from naive import mp_kernels, relu_T, relu_Tdot
from ntk_infinite.cli import main
from tolerances import EVAL_RTOL


def evaluate(formula, x1, x2):
    """Evaluate the recursion of ``formula`` numerically at one pair, layer by layer (values
    carried as exact rationals of their float64 values, each step evaluated at 30 digits)."""
    d = len(x1)
    vals = {"xx": float(x1 @ x1) / d, "yy": float(x2 @ x2) / d, "xy": float(x1 @ x2) / d, "t": 0.0}
    vals = {k: sp.Rational(v) for k, v in vals.items()}
    X, XP = sp.symbols("x x'")
    for step in formula.steps:
        l = step.index - 1
        S, Th = sp.Function(f"Sigma_{l}"), sp.Function(f"Theta_{l}")
        subs = {S(X, X): vals["xx"], S(XP, XP): vals["yy"], S(X, XP): vals["xy"], Th(X, XP): vals["t"]}

        def ev(expr, **extra):
            e = expr.subs(subs)
            for k, v in extra.items():
                e = e.subs(sp.Function(f"Sigma_{l + 1}")(X, XP), v)
            return sp.Rational(float(sp.N(e, 30)))

        def diag(expr, which):
            # the same map on the pair (x, x) or (x', x')
            a = vals[which]
            return sp.Rational(float(sp.N(expr.subs({S(X, X): a, S(XP, XP): a, S(X, XP): a}), 30)))

        new_xy = ev(step.nngp.rhs)
        new_t = ev(step.ntk.rhs, s=new_xy)
        vals = {"xx": diag(step.nngp.rhs, "xx"), "yy": diag(step.nngp.rhs, "yy"), "xy": new_xy, "t": new_t}
    return float(vals["xy"]), float(vals["t"])


@pytest.mark.parametrize("text", [
    # Each shares its jitted engine with other tests (one per set of tile kinds).
    "Dense(1.5, 0.1) > ReLU > Dense(1.2, 0.2) > LeakyReLU(0.1) > Dense(1, 0)",
    "Dense(1.3, 0.2) > Erf(1, 1.5, 0.1) > Dense(0.9, 0.3) > GELU > Dense(1.1, 0.1)",
    "Dense(1.3, 0.2) > Sin(1, 1.2, 0.3) > Dense(1.1, 0.1) > Polynomial((0.1, 1, 0.3)) > Dense",
])
def test_formula_evaluates_to_the_kernel(text):
    kernel = nk.compile(text)
    formula = kernel.formula()
    X = np.random.default_rng(2).normal(size=(2, 4))
    k = kernel(X)
    S, Th = evaluate(formula, X[0], X[1])
    np.testing.assert_allclose(S, k.nngp[0, 1], rtol=EVAL_RTOL, atol=0)
    np.testing.assert_allclose(Th, k.ntk[0, 1], rtol=EVAL_RTOL, atol=0)
    # ... and against the independent mpmath recursion
    S_mp, Th_mp = mp_kernels(kernel.architecture, X[0], X[1])
    np.testing.assert_allclose(S, float(S_mp), rtol=EVAL_RTOL, atol=0)


def test_relu_step_is_the_arc_cosine_kernel():
    f = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)").formula()
    dense, relu = f.steps[0], f.steps[1]
    assert dense.route == "affine" and relu.route.startswith("closed form")
    q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
    T = sp.lambdify((q1, q2, c), relu.T)
    Td = sp.lambdify((q1, q2, c), relu.Tdot)
    for a, b, cc in [(1.0, 2.0, 0.4), (0.3, 0.8, -0.45)]:
        assert math.isclose(T(a, b, cc), relu_T(a, b, cc), rel_tol=EVAL_RTOL)
        assert math.isclose(Td(a, b, cc), relu_Tdot(a, b, cc), rel_tol=EVAL_RTOL)
    assert str(f.nngp) == "Sigma_3(x, x')" and str(f.ntk) == "Theta_3(x, x')"


def test_numerical_routes_show_their_series_or_integral():
    f = nk.compile("Dense(1.2) > Tanh > Dense > ELU > Dense").formula()
    assert f.steps[1].nngp.rhs.has(sp.Sum) and f.steps[1].route == "Hermite series"
    assert f.steps[3].nngp.rhs.has(sp.Integral) and f.steps[3].route == "kink-aware quadrature"


def test_text_and_latex():
    kernel = nk.compile("Dense(1.5, 0.1) > GELU > Dense(1.5, 0.1)")
    text = str(kernel.formula())
    assert text.splitlines()[0] == "Sigma_0(x, x') = x·x'/d"
    assert "# layer 2: GELU() (closed form (sympy))" in text
    assert text.splitlines()[-1] == "NNGP = Sigma_3(x, x'),  NTK = Theta_3(x, x')"
    latex = kernel.latex()
    assert latex.startswith("\\begin{aligned}") and latex.endswith("\\end{aligned}")
    assert "\\Sigma_{2}{\\left(x,x' \\right)} &=" in latex and "\\text{layer 2: GELU (closed form (sympy))}" in latex


def test_command_line(capsys):
    assert main(["formula", "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"]) == 0
    out = capsys.readouterr().out
    assert "Sigma_1(x, x') = 2.25*Sigma_0(x, x') + 0.01" in out
    assert main(["formula", "--latex", "Dense(1.5, 0.1) > Step > Dense(1.5, 0.1)"]) == 0
    assert capsys.readouterr().out.startswith("\\begin{aligned}")
    assert main(["formula", "Dense > Nope > Dense"]) == 2
    assert "Unknown layer 'Nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------- convolutional networks
CONV_NET = nk.serial(
    nk.Conv(filter_shape=(3, 3), strides=(2, 1), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
    nk.AvgPool(window_shape=(2, 2)), nk.Conv(filter_shape=(2, 2), padding="CIRCULAR", w_std=1.2), nk.Erf(),
    nk.GlobalAvgPool(), nk.Dense(w_std=1.1, b_std=0.2), nk.ReLU(), nk.Dense(w_std=0.9),
)


def test_conv_formula_names_each_layer_in_order_with_its_parameters():
    kernel = nk.compile(CONV_NET)
    text = str(kernel.formula())
    lines = text.splitlines()
    assert lines[:2] == ["Sigma_0(x, x')[p, p'] = x[p]·x'[p']/C", "Theta_0(x, x')[p, p'] = 0"]
    headers = [line for line in lines if line.startswith("# layer")]
    routes = ["affine", "closed form (arc-cosine, sympy)", "linear", "affine", "closed form (sympy)", "readout",
              "affine", "closed form (arc-cosine, sympy)", "affine"]
    assert headers == [f"# layer {i + 1}: {layer!r} ({route})" for i, (layer, route) in
                       enumerate(zip(CONV_NET, routes))]

    def block(i):
        """The lines after the header of layer i, up to the next header."""
        start = lines.index(headers[i - 1]) + 1
        end = lines.index(headers[i]) if i < len(headers) else len(lines) - 1
        return lines[start:end]

    # Conv 1: σw² = 2.25 over |k| = 9, the same offset on both positions, σb² = 0.01; SAME with strides (2, 1).
    where, nngp, ntk = block(1)
    assert where.startswith("#   where filter k = (3, 3), |k| = 9, strides s = (2, 1); SAME: out = ceil(n/s)")
    assert "entries outside the input are 0" in where
    src = "[s*p + o - p_lo, s*p' + o - p_lo]"
    assert nngp == f"Sigma_1(x, x')[p, p'] = 2.25/9 * sum_{{o in {{0..2}}x{{0..2}}}} Sigma_0(x, x'){src} + 0.01"
    assert ntk == (f"Theta_1(x, x')[p, p'] = 2.25/9 * sum_{{o in {{0..2}}x{{0..2}}}} Theta_0(x, x'){src} "
                   "+ Sigma_1(x, x')[p, p']")
    # ReLU per position pair, with the variances of the two positions.
    relu = block(2)
    assert relu[0].startswith("Sigma_2(x, x')[p, p'] = ") and "Sigma_1(x, x)[p, p]" in relu[0]
    assert "Sigma_1(x', x')[p', p']" in relu[0] and relu[1].endswith("*Theta_1(x, x')[p, p']/(2*pi)")
    # AvgPool 2x2, stride 1: independent offsets, 1/|w|², no bias and no Σ added to Θ.
    where, nngp, ntk = block(3)
    assert where == ("#   where window w = (2, 2), |w| = 4, strides s = (1, 1); VALID: p_lo = 0, "
                     "out = floor((n - w)/s) + 1 per axis of input length n")
    assert nngp == ("Sigma_3(x, x')[p, p'] = 1/4^2 * sum_{o, o' in {0..1}x{0..1}} "
                    "Sigma_2(x, x')[s*p + o - p_lo, s*p' + o' - p_lo]")
    assert ntk == nngp.replace("Sigma", "Theta")
    # Conv 2 without bias, CIRCULAR at stride 1: p_lo = floor((k - 1)/2) = (0, 0) for a 2x2 filter.
    where, nngp, ntk = block(4)
    assert "CIRCULAR" in where and "p_lo = floor((k - 1)/2) = (0, 0)" in where and "wrap around" in where
    assert nngp.startswith("Sigma_4(x, x')[p, p'] = 1.44/4 * sum_{o in {0..1}x{0..1}} Sigma_3(x, x')")
    assert nngp.endswith("p_lo]") and ntk.endswith("+ Sigma_4(x, x')[p, p']")
    # GlobalAvgPool: the mean over all position pairs; then scalar Dense lines.
    _, nngp, ntk = block(6)
    assert nngp == "Sigma_6(x, x') = 1/P^2 * sum_{p, p'} Sigma_5(x, x')[p, p']"
    assert ntk == "Theta_6(x, x') = 1/P^2 * sum_{p, p'} Theta_5(x, x')[p, p']"
    assert block(7) == ["Sigma_7(x, x') = 1.21*Sigma_6(x, x') + 0.04", "Theta_7(x, x') = Sigma_7(x, x') + 1.21*Theta_6(x, x')"]
    assert "Sigma_8(x, x')" in block(8)[0] and "[p" not in block(8)[0]  # after the readout: one number per pair
    assert lines[-1] == "NNGP = Sigma_9(x, x'),  NTK = Theta_9(x, x')"


def test_flatten_is_the_mean_of_the_spatial_diagonal():
    f = nk.compile("Conv(filter_shape=(3,), padding='SAME', w_std=1.5) > ReLU > Flatten > Dense").formula()
    flatten = f.steps[2]
    assert flatten.route == "readout" and flatten.nngp is None
    assert flatten.text == ("Sigma_3(x, x') = 1/P * sum_{p} Sigma_2(x, x')[p, p]",
                            "Theta_3(x, x') = 1/P * sum_{p} Theta_2(x, x')[p, p]")
    conv = f.steps[0]
    assert conv.text[0].endswith("Sigma_0(x, x')[s*p + o - p_lo, s*p' + o - p_lo]")  # no "+ 0" for b_std = 0
    assert "p_lo = floor((k - 1)/2) = (1,)" in conv.where


def test_spatial_activation_lines_evaluate_to_the_dual_per_position_pair():
    # The sympy line of an activation on a spatial state, evaluated at one position pair with
    # distinct variances, against the arc-cosine kernel of tests/naive.py.
    f = nk.compile(CONV_NET).formula()
    relu = f.steps[1]
    X, XP = sp.symbols("x x'")
    p, pp = sp.symbols("p p'")
    S1, T1 = sp.Function("Sigma_1"), sp.Function("Theta_1")
    at = lambda fn, a, b, i, j: sp.IndexedBase(fn(a, b))[i, j]  # noqa: E731
    q1, q2, c, t = 0.7, 1.9, -0.4, 0.3
    subs = {at(S1, X, X, p, p): q1, at(S1, XP, XP, pp, pp): q2, at(S1, X, XP, p, pp): c, at(T1, X, XP, p, pp): t}
    assert relu.nngp.lhs == at(sp.Function("Sigma_2"), X, XP, p, pp)
    assert math.isclose(float(relu.nngp.rhs.subs(subs)), relu_T(q1, q2, c), rel_tol=EVAL_RTOL)
    assert math.isclose(float(relu.ntk.rhs.subs(subs)), relu_Tdot(q1, q2, c) * t, rel_tol=EVAL_RTOL)


def _latex_rows(latex):
    assert latex.startswith("\\begin{aligned}\n") and latex.endswith("\n\\end{aligned}")
    return latex[len("\\begin{aligned}\n"):-len("\n\\end{aligned}")].split(" \\\\\n")


def _assert_balanced(row):
    depth = 0
    for i, ch in enumerate(row):
        if ch in "{}" and (i == 0 or row[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            assert depth >= 0, row
    assert depth == 0, row


@pytest.mark.parametrize("arch", [CONV_NET, "Conv(filter_shape=(3,), padding='SAME', w_std=1.5) > ReLU > Flatten > Dense"])
def test_conv_latex_rows_are_balanced_and_parse_as_mathtext(arch):
    rows = _latex_rows(nk.compile(arch).latex())
    kernel = nk.compile(arch)
    # Σ₀, Θ₀, then per layer its label, its geometry (spatial windows and readouts) and two lines.
    assert len(rows) == 2 + sum(3 + bool(s.where) for s in kernel.formula().steps)
    for row in rows:
        _assert_balanced(row)
        assert row.count("&") == 1 or row.startswith("&\\text"), row
    assert rows[0] == "{\\Sigma_{0}{\\left(x,x' \\right)}}_{p,p'} &= \\frac{x[p]·x'[p']}{C}"
    assert any(r.startswith("{\\Sigma_{1}{\\left(x,x' \\right)}}_{p,p'} &= \\frac{2.25}{") for r in rows)
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    for row in rows:
        parser.parse("$" + row.replace("&", "", 1) + "$")  # raises ValueError on malformed TeX
