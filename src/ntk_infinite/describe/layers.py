"""Architecture descriptions: layers as immutable values.

A layer is a frozen dataclass with a readable ``repr``, equality and hashing. An
architecture is an :class:`Architecture`, a tuple of layers built by :func:`serial`.
Nothing here computes a kernel: :func:`ntk_infinite.compile` turns a description into a
program. Parameterisation and conventions follow neural-tangents (Novak et al. 2020),
NTK parameterisation (Jacot et al. 2018).

Every activation layer also carries its elementwise function ``fn`` and derivative ``dfn``
as vectorised NumPy callables, so finite-width networks and reference integrals can be
built from the same description.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from ..errors import ArchitectureError, KeywordOnlyError, ParameterError, check_param

__all__ = [
    "Layer",
    "Dense",
    "ActivationLayer",
    "ReLU",
    "Identity",
    "Activation",
    "Architecture",
    "serial",
    "MAX_LAYERS",
    "MAX_STD",
    "LAYER_REGISTRY",
    "register_layer",
]

#: Most layers an architecture may have. Far beyond any trainable depth (a kernel's cost grows
#: linearly with it), small enough that a typo such as ``99999999*(Dense > ReLU)`` fails at once
#: instead of allocating gigabytes. :func:`serial` and the text form check it before expanding.
MAX_LAYERS = 10_000

#: Largest ``w_std``/``b_std`` of a Dense layer: their squares enter the recursion and must be
#: finite floats (1e154² = 1e308 < 1.8e308, the largest float64).
MAX_STD = 1e154

#: Lower-cased layer name -> layer class; the text form looks names up here.
LAYER_REGISTRY: dict[str, type] = {}


def register_layer(cls):
    """Class decorator: make a layer available to the text form under its class name."""
    LAYER_REGISTRY[cls.__name__.lower()] = cls
    return cls


class Layer:
    """Base class of all layers (frozen dataclasses)."""

    #: Whether the text form can express this layer (callables cannot be written as text).
    textual: ClassVar[bool] = True

    def to_text(self) -> str:
        """This layer in the one-line text form, e.g. ``Dense(w_std=1.5, b_std=0.1)``."""
        args = []
        for f in dataclasses.fields(self):
            if not f.init or not f.repr:
                continue
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            args.append(f"{f.name}={value!r}")
        name = type(self).__name__
        return f"{name}({', '.join(args)})" if args else name


@register_layer
@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    r"""Fully connected layer in NTK parameterisation.

    For a finite network of width ``width``, :math:`z = \frac{\sigma_w}{\sqrt{n_{in}}} W x + \sigma_b b`
    with standard normal ``W`` and ``b``. In the infinite-width limit
    (Jacot et al. 2018; Lee et al. 2019):

    .. math::

        \Sigma \leftarrow \sigma_w^2 \Sigma + \sigma_b^2, \qquad
        \Theta \leftarrow \sigma_w^2 \Theta + \Sigma_{\text{new}}.

    Parameters are keyword-only: in neural-tangents ``Dense(512)`` is the output width, here it
    would be read as a weight scale, so a positional call raises
    :class:`~ntk_infinite.errors.KeywordOnlyError`. (The text form ``"Dense(1.5, 0.1)"`` keeps
    positional arguments, mapped in order to ``w_std, b_std, width``.)

    Parameters
    ----------
    w_std : float, in [0, MAX_STD]
        Weight standard deviation :math:`\sigma_w`.
    b_std : float, in [0, MAX_STD]
        Bias standard deviation :math:`\sigma_b`.
    width : int or None
        Output width of a finite network built from this description. The analytic kernels
        ignore it in NTK parameterisation; in standard parameterisation the next layer's NTK
        depends on it (its fan-in).
    parameterization : {"ntk", "standard"}
        ``"standard"`` (Sohl-Dickstein et al. 2020; neural-tangents' ``parameterization="standard"``):
        the trained parameters are the weights themselves, :math:`z = W h + b` with
        :math:`W_{ij} \sim N(0, \sigma_w^2/n_{in})`, :math:`b_i \sim N(0, \sigma_b^2)`. Σ is the same; the
        NTK becomes

        .. math::

            \Theta \leftarrow n_{in}\,\Sigma_{in} + \sigma_w^2\,\Theta + [\sigma_b > 0],

        with :math:`n_{in}` the input width: the previous Dense/Conv layer's ``width``/``channels``,
        or the data's feature count for the first layer. ``b_std = 0`` means no bias (neural-tangents'
        ``b_std=None``), so the bias term 1 is then absent.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> nk.Dense(w_std=1.5, b_std=0.1, width=512)
    Dense(w_std=1.5, b_std=0.1, width=512)
    >>> nk.Dense(w_std=1.5, width=512, parameterization="standard")
    Dense(w_std=1.5, b_std=0.0, width=512, parameterization='standard')
    """

    w_std: float = 1.0
    b_std: float = 0.0
    width: int | None = None
    parameterization: str = "ntk"

    def __new__(cls, *args, **kwargs):
        # Runs before the generated keyword-only __init__, so a positional call gets this message
        # (with the neural-tangents hint) instead of Python's "takes 1 positional argument".
        if args:
            raise KeywordOnlyError(_keyword_only_message(cls.__name__, args, kwargs))
        return super().__new__(cls)

    def __post_init__(self):
        for name in ("w_std", "b_std"):
            object.__setattr__(self, name, check_param("Dense", name, getattr(self, name), low=0.0, high=MAX_STD))
        if self.width is not None:
            object.__setattr__(self, "width", check_param("Dense", "width", self.width, low=1, integer=True))
        object.__setattr__(self, "parameterization", check_parameterization("Dense", self.parameterization))

    def __repr__(self):
        extra = "" if self.parameterization == "ntk" else f", parameterization={self.parameterization!r}"
        return f"Dense(w_std={self.w_std!r}, b_std={self.b_std!r}, width={self.width!r}{extra})"


# help() and IDEs show the keyword-only __init__, not __new__'s catch-all (*args, **kwargs).
Dense.__signature__ = inspect.signature(Dense.__init__).replace(
    parameters=list(inspect.signature(Dense.__init__).parameters.values())[1:]
)


#: The parameterisations of Dense and Conv (neural-tangents' names).
PARAMETERIZATIONS = ("ntk", "standard")


def check_parameterization(owner: str, value) -> str:
    """The canonical (lower-case) parameterisation name, or a clear error."""
    if not isinstance(value, str):
        raise TypeError(f"The 'parameterization' parameter of {owner} must be one of {PARAMETERIZATIONS}. Got "
                        f"{value!r} of type {type(value).__name__} instead.")
    if value.lower() not in PARAMETERIZATIONS:
        raise ParameterError(f"The 'parameterization' parameter of {owner} must be one of {PARAMETERIZATIONS}. Got "
                             f"{value!r} instead.")
    return value.lower()


def _keyword_only_message(name: str, args: tuple, kwargs: dict) -> str:
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    return (
        f"{name} takes keyword arguments only: {name}(w_std=..., b_std=..., width=...); got {name}({shown}). "
        f"In neural-tangents Dense(512) means the output width: write Dense(width=512, w_std=...) here, "
        "with w_std and b_std the weight and bias standard deviations."
    )


class ActivationLayer(Layer):
    """Base class for elementwise nonlinearities.

    Subclasses provide ``fn(x)`` and ``dfn(x)`` (vectorised NumPy) and ``kinks``, the points
    where ``fn`` is not smooth. The kernel compiler resolves each one to a *dual* (T, Ṫ).
    """

    kinks: ClassVar[tuple[float, ...]] = ()

    def fn(self, x: np.ndarray) -> np.ndarray:
        raise TypeError(self._missing("fn"))

    def dfn(self, x: np.ndarray) -> np.ndarray:
        raise TypeError(self._missing("dfn"))

    def _missing(self, method: str) -> str:
        return (f"{type(self).__name__} is an ActivationLayer without {method}(x): a subclass must define fn(x) and "
                "dfn(x) as vectorised NumPy functions (and kinks, if fn is not smooth), or use "
                "nk.Activation(fn, dfn, kinks=...) instead of subclassing.")


@register_layer
@dataclass(frozen=True)
class ReLU(ActivationLayer):
    r"""Rectified linear unit :math:`\phi(x) = \max(x, 0)`.

    Its dual is the first-order arc-cosine kernel (Cho & Saul 2009), derived symbolically:
    :math:`T = \frac{\sqrt{q_1 q_2}}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)`,
    :math:`\dot T = \frac{\pi-\theta}{2\pi}`.
    """

    kinks: ClassVar[tuple[float, ...]] = (0.0,)

    def fn(self, x):
        return np.maximum(x, 0.0)

    def dfn(self, x):
        return (np.asarray(x) > 0).astype(np.float64)


@register_layer
@dataclass(frozen=True)
class Identity(ActivationLayer):
    r"""The identity :math:`\phi(x) = x`; :math:`T = c`, :math:`\dot T = 1`."""

    def fn(self, x):
        return np.asarray(x, dtype=np.float64)

    def dfn(self, x):
        return np.ones_like(np.asarray(x, dtype=np.float64))


@dataclass(frozen=True, eq=False)
class Activation(ActivationLayer):
    r"""Any elementwise activation given as a vectorised NumPy callable.

    The dual is computed numerically (the Mehler/Hermite series route; see
    :mod:`ntk_infinite.compiler.duals.series`), with an error estimate; a result that misses the
    tolerance raises an :class:`~ntk_infinite.errors.AccuracyWarning`.

    Parameters
    ----------
    fn : callable or sympy expression
        ``fn(x)`` elementwise on float64 arrays, or a sympy expression in one symbol (then
        ``dfn`` comes from sympy differentiation, kinks from its Piecewise/Max/Min/Abs/
        Heaviside/sign atoms, and polynomial or piecewise-linear expressions get exact
        closed forms; see :mod:`ntk_infinite.compiler.duals.symbolic`).
    dfn : callable, optional
        Its derivative. When omitted, :math:`\dot T` is obtained exactly from the
        coefficients of ``fn`` by Gaussian integration by parts (Stein's lemma), which holds
        for any absolutely continuous ``fn``.
    name : str, optional
        Used in the ``repr`` and in formulas.
    kinks : tuple of float
        Points where ``fn`` is not smooth (informational for the series route; the
        quadrature reference splits there).

    Two ``Activation`` layers are equal when they wrap the same callables, name and kinks.
    """

    textual: ClassVar[bool] = False

    fn_: Callable = field(default=None, repr=False)
    dfn_: Callable | None = field(default=None, repr=False)
    name: str | None = None
    kinks: tuple = ()
    #: The sympy expression when the activation was given as one (else None).
    expr: object = field(default=None, repr=False)

    def __init__(self, fn: Callable, dfn: Callable | None = None, name: str | None = None, kinks=()):
        # A sympy expression in one symbol: fn/dfn generated, kinks read off the expression
        # (see ntk_infinite.compiler.duals.symbolic).
        expr = None
        from ..compiler.duals.symbolic import activation_parts, is_sympy_expression

        # Remembered for pickling: a derivative generated from an expression is rebuilt, not stored.
        object.__setattr__(self, "_given_dfn", dfn)

        if is_sympy_expression(fn):
            fn, auto_dfn, auto_name, auto_kinks, expr, symbol = activation_parts(fn)
            dfn = auto_dfn if dfn is None else dfn
            name = auto_name if name is None else name
            kinks = tuple(kinks) or auto_kinks
            object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "expr", expr)
        if not callable(fn):
            raise TypeError(
                f"Activation expects a callable fn(x) working elementwise on NumPy arrays; got "
                f"{type(fn).__name__}. Pass e.g. Activation(np.tanh)."
            )
        if dfn is not None and not callable(dfn):
            raise TypeError(f"Activation's dfn must be callable or None; got {type(dfn).__name__}.")
        object.__setattr__(self, "fn_", fn)
        object.__setattr__(self, "dfn_", dfn)
        object.__setattr__(self, "name", name if name is not None else getattr(fn, "__name__", "fn"))
        if isinstance(kinks, (str, bytes)) or not isinstance(kinks, (tuple, list, np.ndarray)):
            raise TypeError(
                f"Activation's kinks must be a tuple of the points where fn is not smooth, e.g. kinks=(0.0,); "
                f"got {kinks!r} of type {type(kinks).__name__}. Use kinks=() for a smooth function."
            )
        kinks = tuple(float(check_param("Activation", "kinks", k)) for k in kinks)
        object.__setattr__(self, "kinks", kinks)

    def __reduce_ex__(self, protocol):
        # Functions generated from a sympy expression are local objects pickle cannot store;
        # such an activation pickles as its expression and is rebuilt from it.
        if self.expr is None:
            return super().__reduce_ex__(protocol)
        return (Activation, (self.expr, self._given_dfn, self.name, self.kinks))

    def __repr__(self):
        extra = f", kinks={self.kinks!r}" if self.kinks else ""
        return f"Activation({self.name}{extra})"

    def __eq__(self, other):
        if not isinstance(other, Activation):
            return NotImplemented
        if self.expr is not None or other.expr is not None:
            return (self.expr, self.name, self.kinks) == (other.expr, other.name, other.kinks)
        return (self.fn_, self.dfn_, self.name, self.kinks) == (other.fn_, other.dfn_, other.name, other.kinks)

    def __hash__(self):
        if self.expr is not None:
            return hash((Activation, self.expr, self.name, self.kinks))
        return hash((Activation, self.fn_, self.dfn_, self.name, self.kinks))

    def fn(self, x):
        return np.asarray(self.fn_(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    def dfn(self, x):
        if self.dfn_ is not None:
            return np.asarray(self.dfn_(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        return _numerical_derivative(self.fn_, np.asarray(x, dtype=np.float64), self.kinks)

    def to_text(self) -> str:
        raise ArchitectureError(
            f"{self!r} wraps a Python callable, which the one-line text form cannot express; "
            "use the Python API (nk.compile(nk.serial(...))) for this architecture."
        )


def _numerical_derivative(fn, x, kinks=()):
    r"""Derivative of a vectorised callable that never differentiates across a declared kink.

    Complex step where ``fn`` accepts complex input and its result agrees with the finite
    difference below to 1e-7 (then it is exact to rounding: fn is real-analytic there).
    Otherwise finite differences of order 6 with step
    :math:`s = 10^{-3}\max(1, |x|)`: central, :math:`f' \approx (45 d_1 - 9 d_2 + d_3)/(60 s)`
    with :math:`d_j = f(x + js) - f(x - js)`, where no kink lies within 3s of x; else one-sided
    on the kink-free side,

    .. math::

        f'(x) \approx \frac{1}{h}\Big(-\tfrac{49}{20} f_0 + 6 f_1 - \tfrac{15}{2} f_2
        + \tfrac{20}{3} f_3 - \tfrac{15}{4} f_4 + \tfrac{6}{5} f_5 - \tfrac16 f_6\Big),
        \qquad f_j = f(x + j h),

    (Fornberg 1988) with h = ±min(s, room/6.5), room the distance to the next kink on that side,
    so the stencil stays on one smooth piece. At a kink itself the mean of the two one-sided
    derivatives. Error: O(s⁶ f⁽⁷⁾) + ~30 ε|f|/h, below 1e-10 relative for unit-scale φ.
    """
    x = np.asarray(x, dtype=np.float64)
    fd = _finite_difference(fn, x, kinks)
    try:
        with np.errstate(all="ignore"):
            val = np.asarray(fn(x + 1e-30j))
    except Exception:
        return fd
    if not (np.iscomplexobj(val) and val.shape == x.shape):
        return fd
    # The complex step is exact only where fn's complex extension is analytic: np.abs or
    # np.maximum inside fn silently break it, so it is kept only where it agrees with the
    # finite difference to that one's accuracy.
    cs = val.imag / 1e-30
    agree = np.isfinite(cs) & (np.abs(cs - fd) <= 1e-7 * np.maximum(1.0, np.abs(fd)))
    return np.where(agree, cs, fd)


def _finite_difference(fn, x, kinks):
    """The order-6 finite differences of :func:`_numerical_derivative`."""

    def f(y):
        return np.asarray(fn(y), dtype=np.float64)

    s = 1e-3 * np.maximum(1.0, np.abs(x))
    d1 = f(x + s) - f(x - s)
    d2 = f(x + 2 * s) - f(x - 2 * s)
    d3 = f(x + 3 * s) - f(x - 3 * s)
    out = (45 * d1 - 9 * d2 + d3) / (60 * s)
    k = np.array(sorted(kinks), dtype=np.float64)
    if k.size == 0:
        return out
    flat, sf, res = x.ravel(), s.ravel(), out.ravel().copy()
    right = np.where(k[None, :] > flat[:, None], k[None, :] - flat[:, None], np.inf).min(axis=1)
    left = np.where(k[None, :] < flat[:, None], flat[:, None] - k[None, :], np.inf).min(axis=1)
    at = np.isin(flat, k)
    near = ~at & (np.minimum(left, right) <= 3 * sf)
    fwd = near & (left <= right)  # the nearest kink is on the left: step to the right
    bwd = near & ~fwd
    if fwd.any():
        res[fwd] = _one_sided(f, flat[fwd], np.minimum(sf[fwd], right[fwd] / 6.5))
    if bwd.any():
        res[bwd] = _one_sided(f, flat[bwd], -np.minimum(sf[bwd], left[bwd] / 6.5))
    if at.any():
        xa, sa = flat[at], sf[at]
        res[at] = 0.5 * (_one_sided(f, xa, np.minimum(sa, right[at] / 6.5))
                         + _one_sided(f, xa, -np.minimum(sa, left[at] / 6.5)))
    return res.reshape(x.shape)


#: Order-6 one-sided first-derivative weights on x, x+h, ..., x+6h (Fornberg 1988).
_ONE_SIDED = np.array([-49 / 20, 6.0, -15 / 2, 20 / 3, -15 / 4, 6 / 5, -1 / 6])


def _one_sided(f, x, h):
    """Σⱼ wⱼ f(x + j h) / h; h may be negative (a backward difference)."""
    total = np.zeros_like(x)
    for j, w in enumerate(_ONE_SIDED):
        total += w * f(x + j * h)
    return total / h


@dataclass(frozen=True)
class Architecture:
    """An immutable sequence of layers. Build it with :func:`serial`.

    ``len(arch)``, iteration and indexing give the layers; ``arch.to_text()`` the one-line text
    form that :func:`ntk_infinite.compile` and the command line accept.
    """

    layers: tuple

    def __post_init__(self):
        layers = self.layers
        if not isinstance(layers, tuple):
            raise TypeError(f"Architecture.layers must be a tuple of layers; got {type(layers).__name__}. "
                            "Build architectures with nk.serial(...).")
        _check_layer_count(sum(_leaf_count(layer) for layer in layers))
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Architecture.layers[{i}] is {type(layer).__name__} ({layer!r}), not a layer; "
                                "build architectures with nk.serial(...).")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, item):
        return self.layers[item]

    def __repr__(self):
        return "serial(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    def to_text(self) -> str:
        """The architecture as one line, e.g. ``Dense(w_std=1.5) > ReLU > Dense(w_std=1.5)``."""
        return " > ".join(layer.to_text() for layer in self.layers)

    @property
    def depth(self) -> int:
        """Number of hidden (activation) layers, in every branch."""
        return sum(isinstance(layer, ActivationLayer) and not isinstance(layer, Identity) for layer in self.walk())

    def walk(self):
        """Every layer in data-flow order, descending into the branches of parallel blocks
        (the blocks themselves are not yielded)."""
        for layer in self.layers:
            branches = getattr(layer, "branches", None)
            if branches is None:
                yield layer
            else:
                for branch in branches:
                    yield from branch.walk()

    @property
    def branched(self) -> bool:
        """True when the architecture has parallel branches."""
        return any(hasattr(layer, "branches") for layer in self.layers)


def serial(*layers) -> Architecture:
    """Compose layers (or architectures, which are flattened) into an :class:`Architecture`.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
    serial(Dense(w_std=1.5, b_std=0.1, width=None), ReLU(), Dense(w_std=1.5, b_std=0.1, width=None))

    Raises :class:`~ntk_infinite.errors.ArchitectureError` for more than :data:`MAX_LAYERS`
    layers in total, counted before anything is copied.
    """
    _check_layer_count(sum(_leaf_count(layer) for layer in layers))
    flat = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Architecture):
            flat.extend(layer.layers)
        elif isinstance(layer, Layer):
            flat.append(layer)
        elif isinstance(layer, type) and issubclass(layer, Layer):
            raise TypeError(
                f"serial() argument {i} is the class {layer.__name__}, not a layer; instantiate it: "
                f"{layer.__name__}()."
            )
        else:
            raise TypeError(
                f"serial() takes layers such as Dense(...) or ReLU(); argument {i} is "
                f"{type(layer).__name__} ({layer!r})."
            )
    return Architecture(tuple(flat))


def _leaf_count(item) -> int:
    """Layers in an architecture, a parallel block or one layer, counting every branch."""
    if isinstance(item, Architecture):
        return sum(_leaf_count(layer) for layer in item.layers)
    branches = getattr(item, "branches", None)
    if branches is not None:
        return sum(_leaf_count(branch) for branch in branches)
    return 1


def _check_layer_count(count: int, where: str = "The architecture") -> None:
    """Raise ArchitectureError when ``count`` exceeds :data:`MAX_LAYERS`."""
    if count > MAX_LAYERS:
        raise ArchitectureError(
            f"{where} would have {count} layers; at most MAX_LAYERS = {MAX_LAYERS} are allowed "
            "(ntk_infinite.describe.layers.MAX_LAYERS). Check repetition counts such as N*(...) for a typo."
        )
