"""Duals of activations: the (T, Ṫ) maps of the infinite-width recursion.

:func:`resolve_dual` picks the route for a layer: a registered closed form when there is
one, else the Hermite series (smooth activations) or the kink-aware quadrature (declared
kinks). New closed forms register a factory with :func:`register_dual`. User activations
(``Activation`` and unregistered ``ActivationLayer`` subclasses) are probed first
(:func:`.guards.probe_activation`): fn/dfn must be real, finite and elementwise.

Routes of the built-in activations:

* arc-cosine closed forms (:mod:`.arccos`): ReLU, LeakyReLU, ABReLU, Abs, Step, Sign,
  RectifiedMonomial;
* Gaussian moments, Wick/Isserlis (:mod:`.closed_forms`, :class:`PolynomialDual`): Monomial,
  Polynomial;
* sympy-derived closed forms (:mod:`.closed_forms`): Erf, GELU, Sin, Cos, RBF, Gaussian, Exp;
* Hermite series (:mod:`.series`): Tanh, Sigmoid, Softplus, SiLU, Mish;
* kink-aware quadrature (:mod:`.quadrature`): ELU, and any ``Activation`` with kinks.
"""

from __future__ import annotations

from ...describe import activations as act
from ...describe.layers import Activation, ActivationLayer, ReLU
from .arccos import ArcCosineDual, rectified_monomial_dual
from .base import Dual, PointResult
from .closed_forms import ClosedFormDual, closed_form_dual
from .guards import probe_activation
from .series import PolynomialDual, SeriesDual

__all__ = [
    "Dual",
    "PointResult",
    "ArcCosineDual",
    "ClosedFormDual",
    "PolynomialDual",
    "SeriesDual",
    "resolve_dual",
    "register_dual",
    "DUAL_FACTORIES",
]

#: Layer class -> factory(layer, tol) -> Dual.
DUAL_FACTORIES: dict[type, object] = {}


def register_dual(layer_cls):
    """Decorator registering ``factory(layer, tol) -> Dual`` for ``layer_cls``."""

    def deco(factory):
        DUAL_FACTORIES[layer_cls] = factory
        return factory

    return deco


@register_dual(ReLU)
def _relu(layer, tol):
    return rectified_monomial_dual(1, layer=layer)


# φ = b·max(x, 0)ⁿ + a'·max(−x, 0)ⁿ: a·min(x, 0) = −a·max(−x, 0).
register_dual(act.LeakyReLU)(lambda layer, tol: ArcCosineDual(1, -layer.alpha, 1.0, layer=layer))
register_dual(act.ABReLU)(lambda layer, tol: ArcCosineDual(1, -layer.a, layer.b, layer=layer))
register_dual(act.Abs)(lambda layer, tol: ArcCosineDual(1, 1.0, 1.0, layer=layer))
register_dual(act.Step)(lambda layer, tol: ArcCosineDual(0, 0.0, 1.0, layer=layer))
register_dual(act.Sign)(lambda layer, tol: ArcCosineDual(0, -1.0, 1.0, layer=layer))
register_dual(act.RectifiedMonomial)(lambda layer, tol: ArcCosineDual(layer.degree, 0.0, 1.0, layer=layer))
register_dual(act.Monomial)(lambda layer, tol: PolynomialDual(layer.coef, layer=layer))
register_dual(act.Polynomial)(lambda layer, tol: PolynomialDual(layer.coef, layer=layer))
register_dual(act.Erf)(lambda layer, tol: closed_form_dual("erf", (layer.a, layer.b, layer.c), layer=layer))
register_dual(act.GELU)(lambda layer, tol: closed_form_dual("gelu", (), layer=layer))
register_dual(act.Sin)(lambda layer, tol: closed_form_dual("sinusoid", layer.sinusoid(), layer=layer))
register_dual(act.RBF)(lambda layer, tol: closed_form_dual("sinusoid", layer.sinusoid(), layer=layer))
register_dual(act.Gaussian)(lambda layer, tol: closed_form_dual("gauss", (layer.a, layer.b), layer=layer))
register_dual(act.Exp)(lambda layer, tol: closed_form_dual("exp", (layer.a, layer.b), layer=layer))


@register_dual(act.ELU)
def _elu(layer, tol):
    from .quadrature import QuadratureDual

    return QuadratureDual(layer, tol=tol)


@register_dual(Activation)
def _activation(layer, tol):
    from .symbolic import resolve_activation

    probe_activation(layer)
    return resolve_activation(layer, tol)


def resolve_dual(layer: ActivationLayer, tol: float) -> Dual:
    """The dual the engine uses for ``layer``."""
    for cls in type(layer).__mro__:
        factory = DUAL_FACTORIES.get(cls)
        if factory is not None:
            return factory(layer, tol)
    # No registered dual: the numerical routes integrate fn/dfn, so check them first.
    probe_activation(layer)
    if layer.kinks:
        from .quadrature import QuadratureDual

        return QuadratureDual(layer, tol=tol)
    return SeriesDual(layer, tol=tol)
