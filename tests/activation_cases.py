"""Every activation of the library with typical parameters, for suites parametrised over them.

``ACTIVATION_CASES`` is a list of ``(id, layer)``. Parameters are chosen so that networks of
depth <= 5 with w_std <= 2 on inputs in [-3, 3] stay finite (a growing exponential or a
cubic compounds super-exponentially through such depths). The list covers each route:
arc-cosine closed forms, Wick polynomials, sympy-derived closed forms, the Hermite series,
the kink-aware quadrature, and activations given as sympy expressions or kinked callables.
"""

import numpy as np
import sympy as sp

import ntk_infinite as nk

_x = sp.Symbol("x")

ACTIVATION_CASES = [
    ("leaky_relu", nk.LeakyReLU(0.1)),
    ("abrelu", nk.ABReLU(-0.3, 1.2)),
    ("abs", nk.Abs()),
    ("step", nk.Step()),
    ("sign", nk.Sign()),
    ("rectified_monomial_2", nk.RectifiedMonomial(2)),
    ("monomial_2", nk.Monomial(2)),
    ("polynomial", nk.Polynomial((0.1, 1.0, 0.3))),
    ("erf", nk.Erf(1.0, 1.5, 0.1)),
    ("gelu", nk.GELU()),
    ("sin", nk.Sin(1.0, 1.2, 0.3)),
    ("cos", nk.Cos(1.0, 0.8, 0.0)),
    ("gaussian", nk.Gaussian(1.0, -0.5)),
    ("exp", nk.Exp(1.0, 0.1)),
    ("rbf", nk.RBF(0.5)),
    ("tanh", nk.Tanh()),
    ("sigmoid", nk.Sigmoid()),
    ("softplus", nk.Softplus()),
    ("silu", nk.SiLU()),
    ("elu", nk.ELU(1.0)),
    ("mish", nk.Mish()),
    ("sympy_piecewise_linear", nk.Activation(sp.Piecewise((0.2 * _x, _x < 0), (_x, True)))),
    ("sympy_closed_form", nk.Activation(sp.exp(-_x**2) + sp.sin(_x))),
    ("kinked_callable", nk.Activation(lambda v: np.maximum(v - 0.5, 0.0), dfn=lambda v: (v > 0.5) * 1.0,
                                      kinks=(0.5,), name="shifted_relu")),
]

#: Ids of the cases, in order.
CASE_IDS = [case_id for case_id, _ in ACTIVATION_CASES]

#: The route each case is expected to take (closed form, series or quadrature), which sets its
#: tolerance in the contract suite (tolerances.CONTRACT_RTOL). Declared by hand, not read from
#: the compiled kernel, so a case that silently changes route fails or is re-declared.
CASE_ROUTES = {
    **{case: "closed form" for case in (
        "leaky_relu", "abrelu", "abs", "step", "sign", "rectified_monomial_2", "monomial_2", "polynomial",
        "erf", "gelu", "sin", "cos", "gaussian", "exp", "rbf", "sympy_piecewise_linear", "sympy_closed_form")},
    **{case: "series" for case in ("tanh", "sigmoid", "softplus", "silu", "mish")},
    **{case: "quadrature" for case in ("elu", "kinked_callable")},
}
