"""The dual of an activation: the maps (T, Ṫ) of the infinite-width recursion.

With (u, v) ~ N(0, [[q₁, c], [c, q₂]]) (Neal 1996; Lee et al. 2018; Jacot et al. 2018):

.. math::

    T(q_1, q_2, c) = E[\\phi(u)\\phi(v)], \\qquad \\dot T(q_1, q_2, c) = E[\\phi'(u)\\phi'(v)].

A dual gives the engine three things:

* ``point(q)``: per-point output variance T(q, q, q), the diagonal Ṫ(q, q, q), any
  per-point data the pair pass needs, and everything else that depends on this call's
  variances (the tile's parameter vector, the error estimate, a truncation), all in the
  returned :class:`PointResult`;
* ``tile_source(name)``: Numba source of a tile function that maps the pair state
  (ρ, sin²θ, Θ) of a tile through the activation in place (generated at compile time,
  cached on disk);
* NumPy references ``T(q1, q2, c)`` and ``Tdot(q1, q2, c)`` used by formulas, tests and
  derivative computations.

Tile function signature (all duals)::

    tile_<name>(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk)

``rho``/``sn2``/``t`` are (bi, bj) tile buffers; ``sqa``/``sqb`` the per-point √q at the
layer input for the rows (X1) and columns (X2), ``*_out`` at its output; ``P1``/``P2``
(K, n) per-point data; ``prm`` the parameter vector of this call (``PointResult.params``, or
the dual's static ``params``); ``i0``/``j0`` the tile offsets.

**Immutability.** A compiled kernel may be called from several threads at once, all
sharing its duals. So a dual is frozen once constructed: ``point`` is a pure function of
``q`` and assigning an attribute afterwards raises ``AttributeError``. Whatever depends
on the call (a truncation chosen for these variances, a table covering their range, the
achieved accuracy) travels in the :class:`PointResult`.
On return ``rho``/``sn2`` hold the output correlation and its sin², and ``t`` holds
Ṫ·Θ (the affine layer that follows adds Σ).

Writing a tile function that LLVM vectorises (measured: 5-10× faster):

* loop over 1-D row views (``rr = rho[a]`` then ``rr[b]``), not ``rho[a, b]``;
* keep ``want_ntk`` and every other loop-invariant test outside the entry loop (two loops);
* no branches inside the entry loop: compute every candidate (series and closed form)
  as straight-line code, then choose with ``x if cond else y`` on the computed values.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["Dual", "PointResult"]


class PointResult:
    """Per-point output of one ``Dual.point`` call; immutable.

    Attributes
    ----------
    q_out : (n,) ndarray
        T(q, q, q), the output variance.
    tdot : (n,) ndarray
        Ṫ(q, q, q).
    data : (K, n) ndarray or None
        Per-point data of the pair pass.
    params : (P,) ndarray or None
        The tile's parameter vector for this call; None means the dual's static ``params``.
    error_estimate : float
        Estimated relative error of (T, Ṫ) for this call (0.0 for exact routes).
    terms : tuple of int or None
        The series truncation (Ka for T, Kb for Ṫ) chosen for this call, if any.
    """

    __slots__ = ("q_out", "tdot", "data", "params", "error_estimate", "terms")

    def __init__(self, q_out, tdot, data=None, *, params=None, error_estimate=0.0, terms=None):
        for name, value in (("q_out", q_out), ("tdot", tdot), ("data", data), ("params", params),
                            ("error_estimate", float(error_estimate)), ("terms", terms)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"PointResult is immutable; cannot set {name!r}.")


class _FrozenAfterInit(abc.ABCMeta):
    """Metaclass freezing each instance once its ``__init__`` has returned."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


class Dual(abc.ABC, metaclass=_FrozenAfterInit):
    """Base class. Subclasses set ``key`` (a string unique per generated code) and ``layer``
    and implement every abstract method (instantiating one that does not raises TypeError).

    Instances are frozen after ``__init__`` (see the module docstring): per-call quantities
    go in the :class:`PointResult` that ``point`` returns, never on the dual.
    """

    #: Unique identifier of the generated code (same key => same source).
    key: str = ""
    #: Static parameter vector passed to the tile function when ``point`` returns none.
    params: np.ndarray = np.zeros(0)
    #: Human-readable name of the route ("closed form", "Hermite series", ...).
    route: str = ""
    #: n when φ(λx) = λⁿφ(x) for λ > 0 (then T and Ṫ are homogeneous of degrees n and n − 1
    #: in the variances, and the engine may pass variances in units of a power of 4, see
    #: :func:`ntk_infinite.evaluate.engine.point_pass`); None when the dual needs the actual variances.
    homogeneous_degree: int | None = None
    #: False when the tile function reads none of its per-point arguments (sqa, sqb, their
    #: outputs, P1, P2): its map depends on (ρ, sin²θ, Θ) alone, so the diagonal spatial driver
    #: may apply it to all positions of a tile in one call rather than one call per position.
    tile_reads_points: bool = True
    #: The architecture role (see :mod:`ntk_infinite.compiler.steps`); an activation has no
    #: trainable w_std/b_std.
    role = "activation"
    trainable = False

    # The formula contract of every step (:class:`ntk_infinite.compiler.steps._Step`): an
    # activation acts entry by entry with the variances of the two points of each pair.
    def formula_eqs(self, index: int = 1, spatial: bool = False):
        """(Σ, Θ) of the layer ``index`` as sympy equations, with T and Ṫ substituted."""
        from ..notation import activation_eqs

        return activation_eqs(self, index, spatial)

    def formula_text(self, index: int = 1, spatial: bool = False):
        from ..notation import eq_text

        return tuple(eq_text(eq) for eq in self.formula_eqs(index, spatial))

    def formula_latex(self, index: int = 1, spatial: bool = False):
        from ..notation import eq_latex

        return tuple(eq_latex(eq) for eq in self.formula_eqs(index, spatial))

    def formula_where(self) -> str:
        return ""

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"{type(self).__name__} is immutable after construction, but something set {name!r}: a compiled "
                "kernel shares its duals between threads. Return per-call quantities in the PointResult of "
                "point() instead."
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable after construction; cannot delete {name!r}.")
        object.__delattr__(self, name)

    @abc.abstractmethod
    def point(self, q: np.ndarray) -> PointResult:
        """Per-point pass: output variance T(q, q, q), diagonal Ṫ(q, q, q), pair-pass data and
        this call's parameters and error estimate. Pure: must not modify the dual."""

    @abc.abstractmethod
    def tile_source(self, name: str) -> str:
        """Numba source of the tile function ``name`` (signature in the module docstring)."""

    @abc.abstractmethod
    def T(self, q1, q2, c):
        """NumPy reference of T(q₁, q₂, c) = E[φ(u)φ(v)]."""

    @abc.abstractmethod
    def Tdot(self, q1, q2, c):
        """NumPy reference of Ṫ(q₁, q₂, c) = E[φ'(u)φ'(v)]."""

    @abc.abstractmethod
    def formula(self):
        """(T, Ṫ) as sympy expressions in q1, q2, c (or a description for numerical routes)."""
