r"""Built-in elementwise activations as immutable layer values.

Every class is a frozen dataclass registered with :func:`~ntk_infinite.describe.layers.register_layer`,
so the one-line text form knows it (``"Dense(1.5, 0.1) > Erf(1, 2, 0) > Dense(1.5, 0.1)"``).
Each provides vectorised ``fn(x)`` and ``dfn(x)``, the points ``kinks`` where ``fn`` is not
smooth, and ``expression(x)``, the same function as a sympy expression (used for the
closed-form derivations of :mod:`ntk_infinite.compiler.duals.closed_forms` and for
:meth:`~ntk_infinite.kernel.CompiledKernel.formula`).

Constructor arguments and definitions follow neural-tangents (Novak et al. 2020):

=========================  ===================================================
layer                      :math:`\phi(x)`
=========================  ===================================================
``ReLU()``                 :math:`\max(x, 0)`
``LeakyReLU(alpha)``       :math:`\alpha\min(x, 0) + \max(x, 0)`
``ABReLU(a, b)``           :math:`a\min(x, 0) + b\max(x, 0)`
``Abs()``                  :math:`|x|`
``Step()``                 :math:`1` if :math:`x > 0` else :math:`0`
``Sign()``                 :math:`\operatorname{sign}(x)`
``RectifiedMonomial(n)``   :math:`x^n` for :math:`x \ge 0`, else 0
``Monomial(n)``            :math:`x^n`
``Polynomial(coef)``       :math:`\sum_k \mathrm{coef}_k x^k`
``Erf(a, b, c)``           :math:`a\,\mathrm{erf}(bx) + c`
``GELU()``                 :math:`x\,\Phi(x)`
``Sin(a, b, c)``           :math:`a\sin(bx + c)`
``Cos(a, b, c)``           :math:`a\cos(bx + c)`
``Gaussian(a, b)``         :math:`a\exp(bx^2)`
``Exp(a, b)``              :math:`a\exp(bx)`
``RBF(gamma)``             :math:`\sqrt2\sin(\sqrt{2\gamma}x + \pi/4)`
``Tanh()``, ``Sigmoid()``  :math:`\tanh x`, :math:`1/(1+e^{-x})`
``Softplus()``             :math:`\log(1 + e^x)`
``SiLU()``                 :math:`x/(1+e^{-x})`
``ELU(alpha)``             :math:`x` for :math:`x > 0`, else :math:`\alpha(e^x - 1)`
``Mish()``                 :math:`x\tanh(\log(1+e^x))`
=========================  ===================================================

Step and Sign have a zero derivative almost everywhere; by convention their
:math:`\dot T = E[\phi'(u)\phi'(v)]` is 0 (the Dirac mass of the jump is dropped), as in
neural-tangents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import sympy as sp
from scipy import special

from ..errors import ParameterError, check_param
from .layers import ActivationLayer, Identity, ReLU, register_layer

__all__ = [
    "ReLU",
    "Identity",
    "LeakyReLU",
    "ABReLU",
    "Abs",
    "Step",
    "Sign",
    "RectifiedMonomial",
    "Monomial",
    "Polynomial",
    "Erf",
    "GELU",
    "Sin",
    "Cos",
    "Gaussian",
    "Exp",
    "RBF",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "SiLU",
    "ELU",
    "Mish",
    "BUILTIN_ACTIVATIONS",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _real(owner: str, name: str, value) -> float:
    return check_param(owner, name, value)


# ------------------------------------------------------------------- piecewise linear family
@register_layer
@dataclass(frozen=True)
class LeakyReLU(ActivationLayer):
    r"""Leaky ReLU :math:`\phi(x) = \alpha\min(x, 0) + \max(x, 0)`.

    Its dual is a two-sided arc-cosine kernel of order 1 (Cho & Saul 2009):

    .. math::

        T = \frac{\sqrt{q_1q_2}}{2\pi}\big[(1+\alpha^2) J_1(\theta) - 2\alpha J_1(\pi-\theta)\big].
    """

    alpha: float = 0.01
    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def __post_init__(self):
        object.__setattr__(self, "alpha", _real("LeakyReLU", "alpha", self.alpha))

    def fn(self, x):
        x = _arr(x)
        return np.where(x > 0, x, self.alpha * x)

    def dfn(self, x):
        return np.where(_arr(x) > 0, 1.0, self.alpha)

    def expression(self, x):
        return self.alpha * sp.Min(x, 0) + sp.Max(x, 0)


@register_layer
@dataclass(frozen=True)
class ABReLU(ActivationLayer):
    r""":math:`\phi(x) = a\min(x, 0) + b\max(x, 0)`; ``ABReLU(-1, 1)`` is ``Abs``.

    .. math::

        T = \frac{\sqrt{q_1q_2}}{2\pi}\big[(a^2+b^2) J_1(\theta) - 2ab\, J_1(\pi-\theta)\big],
        \qquad \dot T = \frac{(a^2+b^2)(\pi-\theta) + 2ab\,\theta}{2\pi}.
    """

    a: float = -1.0
    b: float = 1.0
    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def __post_init__(self):
        a = _real("ABReLU", "a", self.a)
        b = _real("ABReLU", "b", self.b)
        if a == 0.0 and b == 0.0:
            raise ParameterError(
                "The 'a' and 'b' parameters of ABReLU must not both be 0: that activation is "
                "identically zero. Got a=0.0, b=0.0 instead; pass e.g. ABReLU(a=0.1, b=1.0)."
            )
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    def fn(self, x):
        x = _arr(x)
        return np.where(x > 0, self.b * x, self.a * x)

    def dfn(self, x):
        return np.where(_arr(x) > 0, self.b, self.a)

    def expression(self, x):
        return self.a * sp.Min(x, 0) + self.b * sp.Max(x, 0)


@register_layer
@dataclass(frozen=True)
class Abs(ActivationLayer):
    r"""Absolute value :math:`\phi(x) = |x|`:
    :math:`T = \frac{\sqrt{q_1q_2}}{\pi}\big[J_1(\theta) + J_1(\pi-\theta)\big]`,
    :math:`\dot T = 1 - 2\theta/\pi` (two-sided arc-cosine kernel; Cho & Saul 2009)."""

    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def fn(self, x):
        return np.abs(_arr(x))

    def dfn(self, x):
        return np.sign(_arr(x))

    def expression(self, x):
        return sp.Abs(x)


@register_layer
@dataclass(frozen=True)
class Step(ActivationLayer):
    r"""Heaviside step, 1 for :math:`x > 0` else 0.

    .. math::

        T = \frac{\pi - \theta}{2\pi}, \qquad \dot T = 0 \text{ (convention: the jump's Dirac mass is dropped)}.
    """

    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def fn(self, x):
        return (_arr(x) > 0).astype(np.float64)

    def dfn(self, x):
        return np.zeros_like(_arr(x))

    def expression(self, x):
        return sp.Piecewise((1, x > 0), (0, True))


@register_layer
@dataclass(frozen=True)
class Sign(ActivationLayer):
    r"""Sign function, :math:`T = 1 - 2\theta/\pi = \frac{2}{\pi}\arcsin\rho`; :math:`\dot T = 0` by convention."""

    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def fn(self, x):
        return np.sign(_arr(x))

    def dfn(self, x):
        return np.zeros_like(_arr(x))

    def expression(self, x):
        return sp.sign(x)


@register_layer
@dataclass(frozen=True)
class RectifiedMonomial(ActivationLayer):
    r""":math:`\phi(x) = x^n` for :math:`x \ge 0`, else 0 (``degree`` n >= 0; n = 1 is ReLU, n = 0 Step).

    The arc-cosine kernel of order n, with :math:`J_n` derived by sympy from Cho & Saul
    (2009, eq. 4):

    .. math::

        T = \frac{(q_1q_2)^{n/2}}{2\pi} J_n(\theta), \qquad
        \dot T = \frac{n^2 (q_1q_2)^{(n-1)/2}}{2\pi} J_{n-1}(\theta).
    """

    degree: int = 1
    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def __post_init__(self):
        object.__setattr__(self, "degree", check_param("RectifiedMonomial", "degree", self.degree, low=0, integer=True))

    def fn(self, x):
        x = _arr(x)
        return np.where(x > 0, np.maximum(x, 0.0) ** self.degree, 0.0)

    def dfn(self, x):
        x = _arr(x)
        n = self.degree
        if n == 0:
            return np.zeros_like(x)
        return np.where(x > 0, n * np.maximum(x, 0.0) ** (n - 1), 0.0)

    def expression(self, x):
        return sp.Piecewise((x**self.degree, x > 0), (0, True))


# ------------------------------------------------------------------- polynomials
@register_layer
@dataclass(frozen=True)
class Monomial(ActivationLayer):
    r""":math:`\phi(x) = x^n`. Exact Gaussian moments (Isserlis/Wick):
    :math:`T = \sum_m \frac{c^m}{m!} E[\phi^{(m)}(u)]\,E[\phi^{(m)}(v)]`."""

    degree: int = 2

    def __post_init__(self):
        object.__setattr__(self, "degree", check_param("Monomial", "degree", self.degree, low=0, integer=True))

    @property
    def coef(self) -> tuple:
        return tuple(0.0 for _ in range(self.degree)) + (1.0,)

    def fn(self, x):
        return _arr(x) ** self.degree

    def dfn(self, x):
        x = _arr(x)
        return self.degree * x ** (self.degree - 1) if self.degree else np.zeros_like(x)

    def expression(self, x):
        return x**self.degree


@register_layer
@dataclass(frozen=True)
class Polynomial(ActivationLayer):
    r""":math:`\phi(x) = \sum_k \mathrm{coef}_k x^k` (``coef`` from the constant term up).

    Exact Gaussian moments (Isserlis/Wick), :math:`u, v` centred with covariance
    :math:`[[q_1, c], [c, q_2]]`:

    .. math::

        T = \sum_{m \ge 0} \frac{c^m}{m!} E[\phi^{(m)}(u)]\, E[\phi^{(m)}(v)], \qquad
        \dot T = \sum_{m \ge 0} \frac{c^m}{m!} E[\phi^{(m+1)}(u)]\, E[\phi^{(m+1)}(v)].
    """

    coef: tuple = (0.0, 1.0)

    def __post_init__(self):
        coef = self.coef
        if isinstance(coef, (str, bytes)) or not hasattr(coef, "__iter__"):
            raise TypeError(
                f"The 'coef' parameter of Polynomial must be a sequence of floats (constant term first); "
                f"got {coef!r} of type {type(coef).__name__}. Pass e.g. Polynomial(coef=(0.0, 1.0, 0.5))."
            )
        values = tuple(check_param("Polynomial", "coef", c) for c in coef)
        if not values or all(v == 0.0 for v in values):
            raise ParameterError(
                f"The 'coef' parameter of Polynomial must contain at least one nonzero float. Got {coef!r} "
                "instead; pass e.g. Polynomial(coef=(0.0, 1.0))."
            )
        while len(values) > 1 and values[-1] == 0.0:
            values = values[:-1]
        object.__setattr__(self, "coef", values)

    @property
    def degree(self) -> int:
        return len(self.coef) - 1

    def fn(self, x):
        return np.polynomial.polynomial.polyval(_arr(x), self.coef)

    def dfn(self, x):
        d = np.polynomial.polynomial.polyder(np.array(self.coef)) if len(self.coef) > 1 else np.zeros(1)
        return np.polynomial.polynomial.polyval(_arr(x), d) + 0.0 * _arr(x)

    def expression(self, x):
        return sum((sp.Float(c) * x**k for k, c in enumerate(self.coef)), sp.Integer(0))


# ------------------------------------------------------------------- smooth closed forms
@register_layer
@dataclass(frozen=True)
class Erf(ActivationLayer):
    r""":math:`\phi(x) = a\,\mathrm{erf}(bx) + c`. Derived by Price's theorem (Williams 1997):

    .. math::

        T = c^2 + \frac{2a^2}{\pi}\arcsin\frac{2b^2 c_{12}}{\sqrt{(1+2b^2q_1)(1+2b^2q_2)}}.
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, _real("Erf", name, getattr(self, name)))

    def fn(self, x):
        return self.a * special.erf(self.b * _arr(x)) + self.c

    def dfn(self, x):
        x = _arr(x)
        return self.a * self.b * (2.0 / math.sqrt(math.pi)) * np.exp(-(self.b * x) ** 2)

    def expression(self, x):
        return self.a * sp.erf(self.b * x) + self.c


@register_layer
@dataclass(frozen=True)
class GELU(ActivationLayer):
    r"""Gaussian error linear unit :math:`\phi(x) = x\Phi(x)` (exact erf form; Hendrycks & Gimpel 2016).

    Its dual follows from Price's theorem applied twice (see
    :mod:`ntk_infinite.compiler.duals.closed_forms`)."""

    def fn(self, x):
        x = _arr(x)
        return x * special.ndtr(x)

    def dfn(self, x):
        x = _arr(x)
        return special.ndtr(x) + x * np.exp(-0.5 * x * x) / _SQRT_2PI

    def expression(self, x):
        return x * (1 + sp.erf(x / sp.sqrt(2))) / 2


@register_layer
@dataclass(frozen=True)
class Sin(ActivationLayer):
    r""":math:`\phi(x) = a\sin(bx + c)`; with :math:`\delta_\mp = q_1 + q_2 \mp 2c_{12}`:

    .. math::

        T = \frac{a^2}{2}\big[e^{-b^2\delta_-/2} - \cos(2c)\, e^{-b^2\delta_+/2}\big].
    """

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        for name in ("a", "b", "c"):
            object.__setattr__(self, name, _real(type(self).__name__, name, getattr(self, name)))

    def fn(self, x):
        return self.a * np.sin(self.b * _arr(x) + self.c)

    def dfn(self, x):
        return self.a * self.b * np.cos(self.b * _arr(x) + self.c)

    def expression(self, x):
        return self.a * sp.sin(self.b * x + self.c)

    def sinusoid(self) -> tuple[float, float, float]:
        """(α, β, b) with φ(x) = α sin(bx) + β cos(bx)."""
        return self.a * math.cos(self.c), self.a * math.sin(self.c), self.b


@register_layer
@dataclass(frozen=True)
class Cos(Sin):
    r""":math:`\phi(x) = a\cos(bx + c)`:
    :math:`T = \frac{a^2}{2}\big[e^{-b^2\delta_-/2} + \cos(2c)\, e^{-b^2\delta_+/2}\big]`."""

    def fn(self, x):
        return self.a * np.cos(self.b * _arr(x) + self.c)

    def dfn(self, x):
        return -self.a * self.b * np.sin(self.b * _arr(x) + self.c)

    def expression(self, x):
        return self.a * sp.cos(self.b * x + self.c)

    def sinusoid(self) -> tuple[float, float, float]:
        return -self.a * math.sin(self.c), self.a * math.cos(self.c), self.b


@register_layer
@dataclass(frozen=True)
class RBF(ActivationLayer):
    r""":math:`\phi(x) = \sqrt2\sin(\sqrt{2\gamma}x + \pi/4)`, whose NNGP is the RBF kernel
    :math:`T = e^{-\gamma(q_1 + q_2 - 2c)}` (Rahimi & Recht 2007)."""

    gamma: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "gamma", check_param("RBF", "gamma", self.gamma, low=0.0, low_open=True))

    def fn(self, x):
        return math.sqrt(2.0) * np.sin(math.sqrt(2.0 * self.gamma) * _arr(x) + 0.25 * math.pi)

    def dfn(self, x):
        k = math.sqrt(2.0 * self.gamma)
        return math.sqrt(2.0) * k * np.cos(k * _arr(x) + 0.25 * math.pi)

    def expression(self, x):
        return sp.sqrt(2) * sp.sin(sp.sqrt(2 * sp.Float(self.gamma)) * x + sp.pi / 4)

    def sinusoid(self) -> tuple[float, float, float]:
        # √2 sin(kx + π/4) = sin(kx) + cos(kx) exactly.
        return 1.0, 1.0, math.sqrt(2.0 * self.gamma)


@register_layer
@dataclass(frozen=True)
class Gaussian(ActivationLayer):
    r""":math:`\phi(x) = a\exp(bx^2)`; finite when :math:`4bq < 1`:

    .. math::

        T = \frac{a^2}{\sqrt{(1 - 2bq_1)(1 - 2bq_2) - 4b^2c^2}}.
    """

    a: float = 1.0
    b: float = -1.0

    def __post_init__(self):
        object.__setattr__(self, "a", _real("Gaussian", "a", self.a))
        object.__setattr__(self, "b", _real("Gaussian", "b", self.b))
        if self.a == 0.0:
            raise ParameterError(
                "The 'a' parameter of Gaussian must be a nonzero float: a = 0 gives the zero function. "
                "Got 0.0 instead."
            )

    def fn(self, x):
        x = _arr(x)
        return self.a * np.exp(self.b * x * x)

    def dfn(self, x):
        x = _arr(x)
        return 2.0 * self.a * self.b * x * np.exp(self.b * x * x)

    def expression(self, x):
        return self.a * sp.exp(self.b * x**2)


@register_layer
@dataclass(frozen=True)
class Exp(ActivationLayer):
    r""":math:`\phi(x) = a\exp(bx)`: :math:`T = a^2\exp\big(b^2(q_1 + q_2 + 2c)/2\big)`."""

    a: float = 1.0
    b: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "a", _real("Exp", "a", self.a))
        object.__setattr__(self, "b", _real("Exp", "b", self.b))
        if self.a == 0.0:
            raise ParameterError(
                "The 'a' parameter of Exp must be a nonzero float: a = 0 gives the zero function. Got 0.0 instead."
            )

    def fn(self, x):
        return self.a * np.exp(self.b * _arr(x))

    def dfn(self, x):
        return self.a * self.b * np.exp(self.b * _arr(x))

    def expression(self, x):
        return self.a * sp.exp(self.b * x)


# ------------------------------------------------------------------- smooth, series route
@register_layer
@dataclass(frozen=True)
class Tanh(ActivationLayer):
    r""":math:`\phi(x) = \tanh x`; no closed form: the Mehler/Hermite series route."""

    def fn(self, x):
        return np.tanh(_arr(x))

    def dfn(self, x):
        t = np.tanh(_arr(x))
        return 1.0 - t * t

    def expression(self, x):
        return sp.tanh(x)


@register_layer
@dataclass(frozen=True)
class Sigmoid(ActivationLayer):
    r"""Logistic sigmoid :math:`\phi(x) = 1/(1 + e^{-x})` (series route)."""

    def fn(self, x):
        return special.expit(_arr(x))

    def dfn(self, x):
        s = special.expit(_arr(x))
        return s * (1.0 - s)

    def expression(self, x):
        return 1 / (1 + sp.exp(-x))


@register_layer
@dataclass(frozen=True)
class Softplus(ActivationLayer):
    r""":math:`\phi(x) = \log(1 + e^x)` (series route)."""

    def fn(self, x):
        return np.logaddexp(0.0, _arr(x))

    def dfn(self, x):
        return special.expit(_arr(x))

    def expression(self, x):
        return sp.log(1 + sp.exp(x))


@register_layer
@dataclass(frozen=True)
class SiLU(ActivationLayer):
    r"""Sigmoid linear unit (swish) :math:`\phi(x) = x/(1 + e^{-x})` (series route)."""

    def fn(self, x):
        x = _arr(x)
        return x * special.expit(x)

    def dfn(self, x):
        x = _arr(x)
        s = special.expit(x)
        return s + x * s * (1.0 - s)

    def expression(self, x):
        return x / (1 + sp.exp(-x))


@register_layer
@dataclass(frozen=True)
class ELU(ActivationLayer):
    r""":math:`\phi(x) = x` for :math:`x > 0`, else :math:`\alpha(e^x - 1)` (Clevert et al. 2016).

    Its second derivative jumps at 0, so the Hermite series converges only algebraically;
    the dual uses the kink-aware quadrature route."""

    alpha: float = 1.0
    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def __post_init__(self):
        object.__setattr__(self, "alpha", _real("ELU", "alpha", self.alpha))

    def fn(self, x):
        x = _arr(x)
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def dfn(self, x):
        x = _arr(x)
        return np.where(x > 0, 1.0, self.alpha * np.exp(np.minimum(x, 0.0)))

    def expression(self, x):
        return sp.Piecewise((x, x > 0), (self.alpha * (sp.exp(x) - 1), True))


@register_layer
@dataclass(frozen=True)
class Mish(ActivationLayer):
    r""":math:`\phi(x) = x\tanh(\log(1 + e^x))` (Misra 2019; series route)."""

    def fn(self, x):
        x = _arr(x)
        return x * np.tanh(np.logaddexp(0.0, x))

    def dfn(self, x):
        x = _arr(x)
        sp_ = np.logaddexp(0.0, x)
        th = np.tanh(sp_)
        return th + x * (1.0 - th * th) * special.expit(x)

    def expression(self, x):
        return x * sp.tanh(sp.log(1 + sp.exp(x)))


#: Every built-in activation class, in the order of the issue's tables.
BUILTIN_ACTIVATIONS = (
    ReLU, LeakyReLU, ABReLU, Abs, Step, Sign, RectifiedMonomial, Monomial, Polynomial, Erf, GELU,
    Sin, Cos, Gaussian, Exp, RBF, Identity, Tanh, Sigmoid, Softplus, SiLU, ELU, Mish,
)
