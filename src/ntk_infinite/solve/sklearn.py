r"""Infinite-width NNGP and NTK as scikit-learn Gaussian-process kernels.

:class:`NNGPKernel` and :class:`NTKKernel` are
:class:`sklearn.gaussian_process.kernels.Kernel` subclasses for a Dense/activation network
of a given depth whose Dense layers share one weight scale ``w_std`` and one bias scale
``b_std`` (the hyperparameters). ``eval_gradient=True`` returns the exact derivatives
with respect to log w_std and log b_std, computed in forward mode through the recursion
(:mod:`ntk_infinite.evaluate.gradients`), so :class:`~sklearn.gaussian_process.GaussianProcessRegressor`
can fit them by maximum marginal likelihood (Lee et al. 2018; Novak et al. 2020 use
the same kernels as GP priors):

.. math::

    \frac{\partial K}{\partial \log\sigma_w} = \sigma_w \sum_{l} \frac{\partial K}{\partial \sigma_{w,l}},
    \qquad
    \frac{\partial K}{\partial \log\sigma_b} = \sigma_b \sum_{l} \frac{\partial K}{\partial \sigma_{b,l}}.

This module needs scikit-learn; import it as ``ntk_infinite.solve.sklearn`` (or ``nk.sklearn``).
"""

from __future__ import annotations

import math

import numpy as np

try:
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "ntk_infinite.solve.sklearn needs scikit-learn; install it with `pip install ntk_infinite[sklearn]`."
    ) from exc

from ..errors import ArchitectureError, check_param
from ..evaluate.gradients import kernel_gradients
from ..kernel import compile
from ..describe.layers import LAYER_REGISTRY

__all__ = ["NNGPKernel", "NTKKernel"]


class _InfiniteWidthKernel(Kernel):
    """Shared implementation; subclasses set ``_get``."""

    _get = "nngp"

    def __init__(self, depth=1, activation="ReLU", w_std=math.sqrt(2.0), b_std=0.1,
                 w_std_bounds=(1e-2, 1e2), b_std_bounds=(1e-5, 1e2)):
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.w_std_bounds = w_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def hyperparameter_w_std(self):
        return Hyperparameter("w_std", "numeric", self.w_std_bounds)

    @property
    def hyperparameter_b_std(self):
        return Hyperparameter("b_std", "numeric", self.b_std_bounds)

    def architecture_text(self) -> str:
        """The network in the one-line text form, with the current w_std and b_std."""
        owner = type(self).__name__
        depth = check_param(owner, "depth", self.depth, low=0, integer=True)
        w = check_param(owner, "w_std", self.w_std, low=0.0)
        b = check_param(owner, "b_std", self.b_std, low=0.0)
        if not isinstance(self.activation, str) or self.activation.lower() not in LAYER_REGISTRY:
            raise ArchitectureError(
                f"The 'activation' parameter of {owner} must be the name of a layer of the text form such as "
                f"'ReLU'; got {self.activation!r}. Known names: {sorted(LAYER_REGISTRY)}."
            )
        dense = f"Dense(w_std={w!r}, b_std={b!r})"
        return f"{depth}*({dense} > {self.activation}) > {dense}" if depth else dense

    def _compiled(self):
        return compile(self.architecture_text())

    def __call__(self, X, Y=None, eval_gradient=False):
        """K(X, Y), and with ``eval_gradient`` (Y must be None) dK/dθ of shape (n, n, n_free)
        for the free log-hyperparameters θ = (log w_std, log b_std)."""
        get = self._get
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        kernel = self._compiled()
        if not eval_gradient:
            Yarr = None if Y is None else np.atleast_2d(np.asarray(Y, dtype=np.float64))
            return getattr(kernel(X, Yarr, get=get), get)
        if Y is not None:
            raise ValueError("The gradient can only be evaluated when Y is None (the training Gram matrix).")
        g = kernel_gradients(kernel, X, get=get)
        K, dK = getattr(g, get), getattr(g, f"d_{get}")
        tied = {"w_std": self.w_std * dK[0::2].sum(axis=0), "b_std": self.b_std * dK[1::2].sum(axis=0)}
        # In the order of self.hyperparameters (the order of theta), free ones only.
        parts = [tied[h.name] for h in self.hyperparameters if not h.fixed]
        grad = np.stack(parts, axis=-1) if parts else np.empty(K.shape + (0,))
        return K, grad

    def diag(self, X):
        """K(x, x) for each row, in O(n·L)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self._compiled().diag(X, get=self._get)[self._get]

    def is_stationary(self):
        """The NNGP and NTK are not translation invariant."""
        return False


class NNGPKernel(_InfiniteWidthKernel):
    r"""The NNGP kernel Σ of an infinitely wide network as a scikit-learn GP kernel.

    Parameters
    ----------
    depth : int, default 1
        Number of hidden (Dense, activation) blocks before the Dense readout.
    activation : str, default "ReLU"
        A layer name of the text form.
    w_std, b_std : float
        Shared weight and bias scales of every Dense layer (the hyperparameters).
    w_std_bounds, b_std_bounds : pair of float or "fixed"

    Notes
    -----
    .. math::

        \Sigma \leftarrow \sigma_w^2 \Sigma + \sigma_b^2, \qquad \Sigma \leftarrow T(\Sigma)

    (Lee et al. 2018; Matthews et al. 2018).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> from ntk_infinite.solve.sklearn import NNGPKernel
    >>> X = np.random.default_rng(0).standard_normal((30, 2)); y = np.sin(X[:, 0])
    >>> gp = GaussianProcessRegressor(NNGPKernel(depth=2), alpha=1e-4).fit(X, y)
    >>> bool(gp.kernel_.w_std > 0)
    True
    """

    _get = "nngp"


class NTKKernel(_InfiniteWidthKernel):
    r"""The NTK Θ of an infinitely wide network as a scikit-learn GP kernel.

    Parameters are those of :class:`NNGPKernel`.

    Notes
    -----
    .. math::

        \Theta \leftarrow \sigma_w^2 \Theta + \Sigma, \qquad \Theta \leftarrow \dot T\,\Theta

    (Jacot et al. 2018; Lee et al. 2019).
    """

    _get = "ntk"
