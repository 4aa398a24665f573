"""The activation layers: definitions, derivatives, parameter checks, text form, sympy
activations and the route each one is compiled to."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import ntk_infinite as nk
from activation_cases import ACTIVATION_CASES
from ntk_infinite.compiler.duals import ArcCosineDual, ClosedFormDual, PolynomialDual, SeriesDual, resolve_dual
from ntk_infinite.compiler.duals.quadrature import QuadratureDual
from tolerances import ACTIVATION_FD_RTOL, EXACT_ATOL, EXACT_RTOL, EXPRESSION_RTOL, ULP_RTOL

#: Central-difference step (ACTIVATION_FD_RTOL says what it costs).
FD_STEP = 1e-6

x = sp.Symbol("x")
reals = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False)
positive = st.floats(0.1, 3.0)


def textbook(name, p):
    """φ typed from the issue's table, independently of the layer classes."""
    return {
        "LeakyReLU": lambda v: p["alpha"] * np.minimum(v, 0) + np.maximum(v, 0),
        "ABReLU": lambda v: p["a"] * np.minimum(v, 0) + p["b"] * np.maximum(v, 0),
        "Erf": lambda v: p["a"] * special.erf(p["b"] * v) + p["c"],
        "Sin": lambda v: p["a"] * np.sin(p["b"] * v + p["c"]),
        "Cos": lambda v: p["a"] * np.cos(p["b"] * v + p["c"]),
        "Gaussian": lambda v: p["a"] * np.exp(p["b"] * v * v),
        "Exp": lambda v: p["a"] * np.exp(p["b"] * v),
        "RBF": lambda v: math.sqrt(2) * np.sin(math.sqrt(2 * p["gamma"]) * v + math.pi / 4),
        "ELU": lambda v: np.where(v > 0, v, p["alpha"] * (np.exp(v) - 1)),
    }[name]


param_strategies = {
    "LeakyReLU": st.fixed_dictionaries({"alpha": reals}),
    "ABReLU": st.fixed_dictionaries({"a": reals, "b": positive}),
    "Erf": st.fixed_dictionaries({"a": reals, "b": positive, "c": reals}),
    "Sin": st.fixed_dictionaries({"a": reals, "b": positive, "c": reals}),
    "Cos": st.fixed_dictionaries({"a": reals, "b": positive, "c": reals}),
    "Gaussian": st.fixed_dictionaries({"a": positive, "b": st.floats(-2.0, 0.1)}),
    "Exp": st.fixed_dictionaries({"a": positive, "b": st.floats(-1.0, 1.0)}),
    "RBF": st.fixed_dictionaries({"gamma": positive}),
    "ELU": st.fixed_dictionaries({"alpha": positive}),
}


@pytest.mark.parametrize("name", sorted(param_strategies))
def test_definitions_match_the_issue_table(name):
    @settings(max_examples=15)
    @given(params=param_strategies[name], v=st.lists(reals, min_size=1, max_size=8))
    def run(params, v):
        layer = getattr(nk, name)(**params)
        v = np.array(v)
        np.testing.assert_allclose(layer.fn(v), textbook(name, params)(v), rtol=EXACT_RTOL, atol=EXACT_ATOL)

    run()


@pytest.mark.parametrize("case_id, layer", ACTIVATION_CASES, ids=[c[0] for c in ACTIVATION_CASES])
def test_dfn_is_the_derivative_of_fn(case_id, layer):
    v = np.linspace(-2.9, 2.9, 23)
    kinks = np.array(layer.kinks, dtype=float)
    if kinks.size:
        v = v[np.min(np.abs(v[:, None] - kinks[None, :]), axis=1) > 10 * FD_STEP]
    fd = (layer.fn(v + FD_STEP) - layer.fn(v - FD_STEP)) / (2 * FD_STEP)
    d = layer.dfn(v)
    assert d.shape == v.shape and fn_shape_ok(layer)
    np.testing.assert_allclose(d, fd, rtol=ACTIVATION_FD_RTOL, atol=ACTIVATION_FD_RTOL * max(1.0, np.abs(fd).max()))


def fn_shape_ok(layer):
    v = np.zeros((2, 3))
    return layer.fn(v).shape == (2, 3) and layer.dfn(v).shape == (2, 3)


@pytest.mark.parametrize("cls", [c for c in nk.describe.activations.BUILTIN_ACTIVATIONS if hasattr(c, "expression")])
def test_sympy_expression_agrees_with_fn(cls):
    layer = dict(ACTIVATION_CASES).get(cls.__name__.lower()) or cls()
    f = sp.lambdify(x, layer.expression(x), ["scipy", "numpy"])
    v = np.array([-2.5, -0.3, 0.4, 1.7])
    np.testing.assert_allclose(np.broadcast_to(f(v), v.shape), layer.fn(v), rtol=EXPRESSION_RTOL, atol=EXACT_ATOL)


def test_step_and_sign_have_zero_derivative_by_convention():
    v = np.array([-1.0, 0.5])
    assert np.all(nk.Step().dfn(v) == 0) and np.all(nk.Sign().dfn(v) == 0)
    k = nk.compile("Dense(1, 0) > Sign > Dense(1, 0)")(np.array([[1.0, 0.0], [0.6, 0.8]]))
    np.testing.assert_array_equal(k.ntk, k.nngp)  # Θ = Ṫ·Θ₁ + Σ with Ṫ = 0


# ------------------------------------------------------------------ parameter checks
@pytest.mark.parametrize("make, exc, match", [
    (lambda: nk.LeakyReLU("0.1"), TypeError, r"'alpha' parameter of LeakyReLU must be a float .* Got '0.1'"),
    (lambda: nk.ABReLU(0.0, 0.0), nk.ParameterError, r"must not both be 0.*pass e.g. ABReLU"),
    (lambda: nk.RectifiedMonomial(-1), nk.ParameterError, r"'degree' parameter of RectifiedMonomial must be an integer in the range \[0, inf\)"),
    (lambda: nk.Monomial(2.5), nk.ParameterError, r"'degree' parameter of Monomial must be an integer .* pass a whole number"),
    (lambda: nk.Polynomial(()), nk.ParameterError, r"at least one nonzero float"),
    (lambda: nk.Polynomial("12"), TypeError, r"'coef' parameter of Polynomial must be a sequence of floats"),
    (lambda: nk.Erf(b=float("nan")), nk.ParameterError, r"'b' parameter of Erf .* Got nan instead"),
    (lambda: nk.RBF(0.0), nk.ParameterError, r"'gamma' parameter of RBF must be a float in the range \(0, inf\)"),
    (lambda: nk.Gaussian(a=0.0), nk.ParameterError, r"'a' parameter of Gaussian must be a nonzero float"),
    (lambda: nk.Exp(a=0.0), nk.ParameterError, r"'a' parameter of Exp must be a nonzero float"),
    (lambda: nk.Sin(c=float("inf")), nk.ParameterError, r"'c' parameter of Sin"),
    (lambda: nk.Cos(a=True), TypeError, r"'a' parameter of Cos"),
])
def test_parameter_messages(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_divergent_gaussian_variance_is_an_error_not_a_nan():
    kernel = nk.compile(nk.serial(nk.Dense(w_std=2.0, b_std=0.0), nk.Gaussian(1.0, 0.5), nk.Dense()))
    with pytest.raises(nk.ParameterError, match=r"infinite or overflows float64 .* Reduce the activation"):
        kernel(np.ones((2, 3)))


def test_an_activation_needs_a_dense_layer_before_it():
    with pytest.raises(nk.ArchitectureError, match="needs an affine layer"):
        nk.compile("Erf > Dense")


# ------------------------------------------------------------------ text form
@pytest.mark.parametrize("case_id, layer", [c for c in ACTIVATION_CASES if c[1].textual],
                         ids=[c[0] for c in ACTIVATION_CASES if c[1].textual])
def test_text_form_round_trip(case_id, layer):
    arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.1), layer, nk.Dense(w_std=1.0))
    text = arch.to_text()
    assert nk.parse_architecture(text) == arch
    assert type(layer).__name__.lower() in nk.describe.layers.LAYER_REGISTRY


def test_text_form_accepts_positional_arguments():
    arch = nk.parse_architecture("Dense(1.2, 0.1) > Erf(1, 2, 0.5) > Dense > Polynomial((0, 1, 0.5)) > Dense")
    assert arch[1] == nk.Erf(1.0, 2.0, 0.5) and arch[3] == nk.Polynomial((0.0, 1.0, 0.5))


# ------------------------------------------------------------------ sympy activations
@pytest.mark.parametrize("expr, kinks", [
    (sp.Max(x, 0), (0.0,)),
    (sp.Abs(x - 1), (1.0,)),
    (sp.Min(x, 2 * x - 1), (1.0,)),
    (sp.Heaviside(x + 0.5), (-0.5,)),
    (sp.sign(x) + sp.Max(x - 2, 0), (0.0, 2.0)),
    (sp.Piecewise((0.1 * x, x < 0), (x, True)), (0.0,)),
    (sp.tanh(x), ()),
])
def test_kinks_are_read_off_the_expression(expr, kinks):
    layer = nk.Activation(expr)
    assert layer.kinks == kinks
    v = np.array([-1.7, 0.3, 2.6])
    f = sp.lambdify(x, expr, ["numpy"])
    np.testing.assert_allclose(layer.fn(v), np.broadcast_to(f(v), v.shape).astype(float), rtol=ULP_RTOL)


def test_sympy_derivative_drops_dirac_masses():
    layer = nk.Activation(sp.Heaviside(x) * x + 2 * sp.Heaviside(x))
    np.testing.assert_allclose(layer.dfn(np.array([-1.0, 1.0])), [0.0, 1.0], rtol=0, atol=0)


def test_sympy_activation_equality_and_messages():
    assert nk.Activation(sp.tanh(x)) == nk.Activation(sp.tanh(x))
    assert hash(nk.Activation(sp.tanh(x))) == hash(nk.Activation(sp.tanh(x)))
    a, y = sp.symbols("a y")
    with pytest.raises(nk.ParameterError, match=r"exactly one symbol .* got .* symbols \['a', 'y'\]"):
        nk.Activation(a * y)
    with pytest.raises(TypeError, match="Activation expects a callable fn"):
        nk.Activation(3.0)


# ------------------------------------------------------------------ routes
@pytest.mark.parametrize("layer, cls, key", [
    (nk.ReLU(), ArcCosineDual, "arccos1p"),
    (nk.LeakyReLU(0.2), ArcCosineDual, "arccos1"),
    (nk.ABReLU(-1, 2), ArcCosineDual, "arccos1"),
    (nk.Abs(), ArcCosineDual, "arccos1"),
    (nk.Step(), ArcCosineDual, "arccos0p"),
    (nk.Sign(), ArcCosineDual, "arccos0"),
    (nk.RectifiedMonomial(3), ArcCosineDual, "arccos3p"),
    (nk.Monomial(3), PolynomialDual, "series"),
    (nk.Polynomial((1, 2)), PolynomialDual, "series"),
    (nk.Erf(), ClosedFormDual, "cf_erf"),
    (nk.GELU(), ClosedFormDual, "cf_gelu"),
    (nk.Sin(), ClosedFormDual, "cf_sinusoid"),
    (nk.Cos(), ClosedFormDual, "cf_sinusoid"),
    (nk.RBF(), ClosedFormDual, "cf_sinusoid"),
    (nk.Gaussian(), ClosedFormDual, "cf_gauss"),
    (nk.Exp(), ClosedFormDual, "cf_exp"),
    (nk.Tanh(), SeriesDual, "series"),
    (nk.Sigmoid(), SeriesDual, "series"),
    (nk.Softplus(), SeriesDual, "series"),
    (nk.SiLU(), SeriesDual, "series"),
    (nk.Mish(), SeriesDual, "series"),
    (nk.ELU(), QuadratureDual, "quadrature"),
    (nk.Activation(np.tanh), SeriesDual, "series"),
    (nk.Activation(np.abs, kinks=(0.0,)), QuadratureDual, "quadrature"),
    (nk.Activation(sp.Max(x, 0)), ArcCosineDual, "arccos1p"),
    (nk.Activation(sp.Max(x, 0) ** 2), ArcCosineDual, "arccos2p"),
    (nk.Activation(2 * sp.Heaviside(x) - 1), ArcCosineDual, "arccos0"),
    (nk.Activation(x**3 - x), PolynomialDual, "series"),
    (nk.Activation(sp.Max(x - 1, 0)), QuadratureDual, "quadrature"),
    (nk.Activation(sp.Max(x, 0) + 1), QuadratureDual, "quadrature"),
    (nk.Activation(sp.tanh(x)), SeriesDual, "series"),
])
def test_route_of_each_activation(layer, cls, key):
    dual = resolve_dual(layer, 1e-10)
    assert type(dual) is cls and dual.key == key


def test_sympy_expression_in_a_closed_form_class_gets_its_own_closed_form():
    dual = resolve_dual(nk.Activation(sp.erf(2 * x) + sp.Rational(3, 10)), 1e-10)
    assert isinstance(dual, ClosedFormDual) and dual.key.startswith("cf_expr_")
    family = resolve_dual(nk.Erf(1.0, 2.0, 0.3), 1e-10)
    q1, q2, c = np.array([0.7, 1.3]), np.array([1.1, 0.4]), np.array([0.2, -0.5])
    np.testing.assert_allclose(dual.T(q1, q2, c), family.T(q1, q2, c), rtol=EXACT_RTOL, atol=0)
    np.testing.assert_allclose(dual.Tdot(q1, q2, c), family.Tdot(q1, q2, c), rtol=EXACT_RTOL, atol=0)
