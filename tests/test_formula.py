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
