r"""Branches and normalisation: ``FanOut``, ``parallel``, ``FanInSum``, ``FanInConcat``,
``Residual`` and ``LayerNorm``.

An architecture with branches is a tree: ``serial(FanOut(n), parallel(b₁, …, bₙ), FanIn…())``
copies the state into n branches, runs each, and joins them. The conventions are
neural-tangents 0.6.5's (Novak et al. 2020), so values are comparable:

* :class:`FanInSum`: the kernels add, :math:`\Sigma = \sum_i \Sigma_i`,
  :math:`\Theta = \sum_i \Theta_i`. This is the covariance of a sum only when the summed
  branches are independent zero-mean Gaussians: the compiler accepts a sum where at most one
  branch passes its input on unchanged and every other ends in a fresh Dense/Conv (followed
  only by linear layers), e.g. ``Residual``'s block and its identity.
* :class:`FanInConcat`: concatenation along the channel axis; a Dense/Conv after it sees the
  channel-weighted mean :math:`\sum_i n_i \Sigma_i / \sum_i n_i` (equal weights when the widths
  are not declared or all equal), and Θ alike.
* :func:`Residual`: ``serial(FanOut(2), parallel(serial(*block), Identity()), FanInSum())``.
* :class:`LayerNorm`: normalisation over the channel axis with neural-tangents' ``eps``:
  :math:`\Sigma(x, x') \leftarrow \Sigma(x, x')/\sqrt{(q(x)+\epsilon)(q(x')+\epsilon)}`, Θ alike,
  per position pair in a convolutional network.

Like every layer these are frozen values with a text form:
``"Dense > FanOut(2) > [ReLU > Dense | Identity] > FanInSum > Dense"``, or
``"Dense > Residual(ReLU > Dense) > Dense"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArchitectureError, check_param
from .layers import Architecture, Identity, Layer, register_layer, serial

__all__ = ["FanOut", "Parallel", "parallel", "FanInSum", "FanInConcat", "Residual", "LayerNorm", "MAX_BRANCHES",
           "FAN_INS"]

#: Most branches one FanOut may open: far beyond any real architecture, small enough that a
#: typo fails at once.
MAX_BRANCHES = 64


@register_layer
@dataclass(frozen=True)
class FanOut(Layer):
    """Copy the state into ``num`` branches; a :func:`parallel` with ``num`` branches follows,
    then a :class:`FanInSum` or :class:`FanInConcat`."""

    num: int = 2

    def __post_init__(self):
        object.__setattr__(self, "num", check_param("FanOut", "num", self.num, low=1, high=MAX_BRANCHES,
                                                    integer=True))


@register_layer
@dataclass(frozen=True)
class FanInSum(Layer):
    r"""Join branches by summing them: :math:`\Sigma = \sum_i\Sigma_i`, :math:`\Theta = \sum_i\Theta_i`."""


@register_layer
@dataclass(frozen=True)
class FanInConcat(Layer):
    r"""Join branches by concatenating their channels: the channel-weighted mean of the branch
    kernels, :math:`\sum_i n_i K_i / \sum_i n_i` (neural-tangents' ``FanInConcat(axis=-1)``)."""


#: The layers that close a parallel block.
FAN_INS = (FanInSum, FanInConcat)


@dataclass(frozen=True)
class Parallel(Layer):
    """Branches that run side by side, one per copy made by the :class:`FanOut` before them.
    Build it with :func:`parallel`; its text form is ``[branch | branch | …]``."""

    branches: tuple

    def __post_init__(self):
        if not isinstance(self.branches, tuple) or not self.branches:
            raise ArchitectureError(f"parallel() needs at least one branch; got {self.branches!r}.")
        if len(self.branches) > MAX_BRANCHES:
            raise ArchitectureError(f"parallel() got {len(self.branches)} branches; at most MAX_BRANCHES = "
                                    f"{MAX_BRANCHES} are allowed.")
        for i, branch in enumerate(self.branches):
            if not isinstance(branch, Architecture):
                raise TypeError(f"Parallel.branches[{i}] is {type(branch).__name__}, not an architecture; build "
                                "parallel blocks with nk.parallel(branch, branch, ...).")

    def __repr__(self):
        return "parallel(" + ", ".join(repr(b) for b in self.branches) + ")"

    def to_text(self) -> str:
        return "[" + " | ".join(branch.to_text() for branch in self.branches) + "]"


def parallel(*branches) -> Parallel:
    """Branches side by side; each is a layer, a list of layers or an architecture.

    An empty branch is written ``Identity()``: it passes its copy of the state on unchanged.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> block = nk.parallel(nk.serial(nk.ReLU(), nk.Dense(w_std=1.5)), nk.Identity())
    >>> block.to_text()
    '[ReLU > Dense(w_std=1.5) | Identity]'
    """
    if not branches:
        raise ArchitectureError("parallel() needs at least one branch, e.g. parallel(nk.Dense(), nk.Identity()).")
    out = []
    for i, branch in enumerate(branches):
        if isinstance(branch, (list, tuple)):
            branch = serial(*branch)
        elif isinstance(branch, Layer):
            branch = serial(branch)
        elif not isinstance(branch, Architecture):
            raise TypeError(f"parallel() takes layers, lists of layers or architectures; branch {i} is "
                            f"{type(branch).__name__} ({branch!r}).")
        out.append(branch)
    return Parallel(tuple(out))


def Residual(*block) -> Architecture:  # noqa: N802 - neural-tangents' name for the block
    """``serial(FanOut(2), parallel(serial(*block), Identity()), FanInSum())``: the block's
    output added to its input (He et al. 2016). The block must end in a Dense or Conv (then
    the sum is of independent Gaussians); a pre-activation block reads
    ``Residual(ReLU(), Dense(...), ReLU(), Dense(...))``.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> nk.Residual(nk.ReLU(), nk.Dense(w_std=1.5)).to_text()
    'FanOut > [ReLU > Dense(w_std=1.5) | Identity] > FanInSum'
    """
    if not block:
        raise ArchitectureError("Residual() needs the layers of its block, e.g. Residual(nk.ReLU(), nk.Dense()).")
    return serial(FanOut(2), parallel(serial(*block), Identity()), FanInSum())


@register_layer
@dataclass(frozen=True, kw_only=True)
class LayerNorm(Layer):
    r"""Layer normalisation over the channel axis (Ba et al. 2016), with neural-tangents' ``eps``.

    Finite network: :math:`y = (h - \bar h)/\sqrt{\operatorname{var}(h) + \epsilon}`, mean and
    variance over the channels (features) of each sample (and position). On a zero-mean
    Gaussian input the channel mean vanishes and the variance tends to q(x) as the width grows,
    so (neural-tangents' ``LayerNorm(axis=-1)``):

    .. math::

        \Sigma(x, x') \leftarrow \frac{\Sigma(x, x')}{\sqrt{(q(x) + \epsilon)(q(x') + \epsilon)}},
        \qquad \Theta(x, x') \leftarrow \frac{\Theta(x, x')}{\sqrt{(q(x) + \epsilon)(q(x') + \epsilon)}},

    per position pair (p, p') with q(x)[p] in a convolutional network. A zero input gives the
    limit 0 when ``eps > 0``; with ``eps = 0`` it has no limit and evaluation raises.

    Parameters
    ----------
    eps : float, >= 0
        Added to the variance before the square root (default 1e-12, as in neural-tangents).
    """

    eps: float = 1e-12

    def __post_init__(self):
        object.__setattr__(self, "eps", check_param("LayerNorm", "eps", self.eps, low=0.0, high=1e300))
