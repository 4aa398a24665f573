"""Frozen result objects: named fields, never tuples whose length depends on a flag."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Kernels", "KernelDiag", "parse_get"]

_GET_CHOICES = ("nngp", "ntk")


@dataclass(frozen=True)
class Kernels:
    """Gram matrices of one evaluation.

    Attributes
    ----------
    nngp : (n1, n2) ndarray or None
        The NNGP kernel Σ (None when not requested).
    ntk : (n1, n2) ndarray or None
        The NTK Θ (None when not requested).
    error_estimate : float
        The largest relative error estimate reported by the numerical duals (Hermite
        series, quadrature) in this evaluation; 0.0 when every route is exact.
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    error_estimate: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise KeyError(f"{name!r} was not computed; pass get={name!r} (or get=('nngp', 'ntk')).")
        return value


@dataclass(frozen=True)
class KernelDiag:
    """Per-point diagonals Σ(x, x) and Θ(x, x), each (n,) or None when not requested, and the
    largest relative error estimate of the numerical duals in this evaluation (0.0 if exact)."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    error_estimate: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return Kernels.__getitem__(self, name)


def parse_get(get) -> tuple[bool, bool]:
    """``get`` ("nngp", "ntk", or a tuple of them) -> (want_nngp, want_ntk)."""
    from .errors import ParameterError

    expected = "get must be 'nngp', 'ntk' or a tuple of them"
    if isinstance(get, str):
        names = (get,)
    elif isinstance(get, (tuple, list, set, frozenset)):
        names = tuple(get)
    else:
        raise TypeError(
            f"{expected}; got {get!r} of type {type(get).__name__}. For example kernel(X, get='nngp') "
            "skips the NTK work."
        )
    bad = [g for g in names if not isinstance(g, str) or g not in _GET_CHOICES]
    if bad or not names:
        raise ParameterError(
            f"{expected}; got {get!r}. For example kernel(X, get='nngp') skips the NTK work."
        )
    return "nngp" in names, "ntk" in names
