"""The dual of an activation: the maps (T, Ṫ) of the infinite-width recursion.

With (u, v) ~ N(0, [[q₁, c], [c, q₂]]) (Neal 1996; Lee et al. 2018; Jacot et al. 2018):

.. math::

    T(q_1, q_2, c) = E[\\phi(u)\\phi(v)], \\qquad \\dot T(q_1, q_2, c) = E[\\phi'(u)\\phi'(v)].

A dual gives the engine three things:

* ``point(q)``: per-point output variance T(q, q, q), the diagonal Ṫ(q, q, q), and any
  per-point data the pair pass needs (``point_data``);
* ``tile_source(name)``: Numba source of a tile function that maps the pair state
  (ρ, sin²θ, Θ) of a tile through the activation in place (generated at compile time,
  cached on disk);
* NumPy references ``T(q1, q2, c)`` and ``Tdot(q1, q2, c)`` used by formulas, tests and
  derivative computations.

Tile function signature (all duals)::

    tile_<name>(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk)

``rho``/``sn2``/``t`` are (bi, bj) tile buffers; ``sqa``/``sqb`` the per-point √q at the
layer input for the rows (X1) and columns (X2), ``*_out`` at its output; ``P1``/``P2``
(K, n) per-point data; ``prm`` the dual's parameter vector; ``i0``/``j0`` the tile offsets.
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
    """Per-point output of a dual: ``q_out`` (n,), ``tdot`` (n,), ``data`` (K, n) or None."""

    __slots__ = ("q_out", "tdot", "data")

    def __init__(self, q_out, tdot, data=None):
        self.q_out = q_out
        self.tdot = tdot
        self.data = data


class Dual(abc.ABC):
    """Base class. Subclasses set ``key`` (a string unique per generated code) and ``layer``
    and implement every abstract method (instantiating one that does not raises TypeError)."""

    #: Unique identifier of the generated code (same key => same source).
    key: str = ""
    #: Parameter vector passed to the tile function.
    params: np.ndarray = np.zeros(0)
    #: Estimated relative error of (T, Ṫ) as computed by the engine.
    error_estimate: float = 0.0
    #: Human-readable name of the route ("closed form", "Hermite series", ...).
    route: str = ""
    #: n when φ(λx) = λⁿφ(x) for λ > 0 (then T and Ṫ are homogeneous of degrees n and n − 1
    #: in the variances, and the engine may pass variances in units of a power of 4, see
    #: :func:`ntk_infinite.engine.point_pass`); None when the dual needs the actual variances.
    homogeneous_degree: int | None = None

    @abc.abstractmethod
    def point(self, q: np.ndarray) -> PointResult:
        """Per-point pass: output variance T(q, q, q), diagonal Ṫ(q, q, q) and pair-pass data."""

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
