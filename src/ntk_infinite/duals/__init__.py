"""Duals of activations: the (T, Ṫ) maps of the infinite-width recursion.

:func:`resolve_dual` picks the route for a layer: a registered closed form when there is
one, else the Hermite series. New closed forms register a factory with
:func:`register_dual`.
"""

from __future__ import annotations

from ..layers import Activation, ActivationLayer, ReLU
from .arccos import HomogeneousDual, rectified_monomial_dual
from .base import Dual, PointResult
from .series import SeriesDual

__all__ = ["Dual", "PointResult", "HomogeneousDual", "SeriesDual", "resolve_dual", "register_dual", "DUAL_FACTORIES"]

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


@register_dual(Activation)
def _activation(layer, tol):
    return SeriesDual(layer, tol=tol)


def resolve_dual(layer: ActivationLayer, tol: float) -> Dual:
    """The dual the engine uses for ``layer``."""
    for cls in type(layer).__mro__:
        factory = DUAL_FACTORIES.get(cls)
        if factory is not None:
            return factory(layer, tol)
    return SeriesDual(layer, tol=tol)
