r"""Finite-width networks built from an architecture description: the ground truth.

A :class:`FiniteNetwork` is the plain NumPy network that the analytic kernels describe in
the infinite-width limit, with the same layers and the NTK parameterisation of docs/DESIGN.md
(Jacot et al. 2018; Lee et al. 2019): for a ``Dense(w_std=σ_w, b_std=σ_b)`` layer with
``n_in`` inputs,

.. math::

    z = \frac{\sigma_w}{\sqrt{n_{in}}} W h + \sigma_b b, \qquad W_{ij}, b_i \sim N(0, 1),

so the first layer sees :math:`\Sigma^0(x, x') = x\cdot x'/d`. All parameters live in one
flat float64 vector ``theta`` (the layers' ``W`` and ``b`` are views into it), which makes
gradient descent, norms and perturbations plain vector operations.

Everything is computed by explicit forward and backward passes in NumPy (no autodiff
framework):

* :meth:`FiniteNetwork.apply`: forward pass, outputs (n, k);
* :meth:`FiniteNetwork.jacobian`: the exact Jacobian (n·k, P), for small networks;
* :meth:`FiniteNetwork.ntk`: :math:`J J^\top` *without* forming ``J``, contracted layer by
  layer from the forward features and the backpropagated output sensitivities,

  .. math::

      \hat\Theta_{(x,a),(x',b)} = \sum_{l} \Big(\frac{\sigma_{w,l}^2}{n_{l-1}} h_{l-1}(x)\cdot h_{l-1}(x')
      + \sigma_{b,l}^2\Big)\, \delta_{l,a}(x)\cdot\delta_{l,b}(x'),
      \qquad \delta_{l,a} = \partial f_a / \partial z_l,

  which costs O(n·Σ n_l) memory instead of O(n·P) (P ≈ 16.8 million at width 4096 with two
  hidden layers, where ``J`` of 20 inputs would take 2.7 GB);
* :meth:`FiniteNetwork.nngp`: the covariance of the outputs over the readout's random
  initialisation given the hidden layers, :math:`\sigma_w^2 h(x)\cdot h(x')/n + \sigma_b^2`
  (the empirical NNGP of Lee et al. 2018, as in neural-tangents' ``empirical_nngp_fn``);
* :meth:`FiniteNetwork.jvp` / :meth:`FiniteNetwork.vjp`: Jacobian-vector products by forward
  tangents and by backpropagation;
* :func:`monte_carlo_kernels`: averages of the empirical kernels over seeds, one network in
  memory at a time, with the per-seed kernels for standard errors;
* :class:`LinearizedModel`: :math:`f_{lin}(\theta) = f(\theta_0) + J(\theta_0)(\theta-\theta_0)`.

Training lives in :mod:`ntk_infinite.verify.training`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ArchitectureError, InputError, ParameterError, as_input_array, check_param
from ..kernel import as_architecture
from ..describe.layers import ActivationLayer, Dense

__all__ = [
    "FiniteNetwork",
    "LinearizedModel",
    "MonteCarloKernels",
    "monte_carlo_kernels",
    "as_architecture",
    "thin_blas",
]

#: Largest explicit Jacobian :meth:`FiniteNetwork.jacobian` builds by default (bytes).
JACOBIAN_MAX_BYTES = 1 << 30


@contextmanager
def thin_blas():
    """Single-threaded BLAS for the duration (when ``threadpoolctl`` is installed).

    The products of a finite network on a few inputs are thin (n ≪ width); multithreaded
    BLAS only adds synchronisation to them, and on a loaded machine it slows them down by
    an order of magnitude or more.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class _DenseOp:
    index: int  # position in the architecture
    n_in: int
    n_out: int
    w_std: float
    b_std: float
    w_slice: slice
    b_slice: slice

    @property
    def scale(self) -> float:
        return self.w_std / np.sqrt(self.n_in)


class FiniteNetwork:
    r"""A finite-width network built from an architecture description.

    Parameters
    ----------
    arch : Architecture, list of layers or str
        The same description :func:`ntk_infinite.compile` accepts.
    in_features : int
        Input dimension ``d``.
    width : int or sequence of int, optional
        Width of every hidden ``Dense`` layer (or one width per hidden ``Dense``). When
        given it overrides ``Dense(width=...)``; when omitted every hidden ``Dense`` must
        carry its ``width``.
    n_outputs : int, optional
        Width of the readout (the last ``Dense``). Default: its ``width`` if set, else 1.

    Attributes
    ----------
    architecture : Architecture
    widths : tuple of int
        Output width of each ``Dense`` layer, readout last.
    n_params : int
        Number of parameters P (all weights and biases, including those multiplied by a
        zero ``b_std``).

    Notes
    -----
    Parameterisation (NTK; Jacot et al. 2018; docs/DESIGN.md, "Math conventions"):

    .. math::

        z_l = \frac{\sigma_{w,l}}{\sqrt{n_{l-1}}} W_l h_{l-1} + \sigma_{b,l} b_l, \quad
        h_l = \phi_l(z_l), \quad h_0 = x,

    with standard normal entries of every :math:`W_l` and :math:`b_l`.

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> net = nk.empirical.FiniteNetwork("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)", 3, width=8)
    >>> theta = net.init(0)
    >>> net.apply(theta, np.ones((2, 3))).shape, net.n_params
    ((2, 1), 41)
    """

    def __init__(self, arch, in_features: int, width=None, n_outputs: int | None = None):
        self.architecture = as_architecture(arch, owner="FiniteNetwork")
        self.in_features = check_param("FiniteNetwork", "in_features", in_features, low=1, integer=True)
        dense_pos = [i for i, layer in enumerate(self.architecture) if isinstance(layer, Dense)]
        hidden = dense_pos[:-1]
        readout = self.architecture[dense_pos[-1]]
        hidden_widths = self._hidden_widths(width, hidden)
        if n_outputs is None:
            n_outputs = readout.width if readout.width is not None else 1
        n_outputs = check_param("FiniteNetwork", "n_outputs", n_outputs, low=1, integer=True)
        widths = (*hidden_widths, n_outputs)
        self._ops = []
        self._dense = []
        offset, n_in, k = 0, self.in_features, 0
        for i, layer in enumerate(self.architecture):
            if isinstance(layer, Dense):
                n_out = widths[k]
                w = slice(offset, offset + n_out * n_in)
                b = slice(w.stop, w.stop + n_out)
                op = _DenseOp(i, n_in, n_out, layer.w_std, layer.b_std, w, b)
                self._ops.append(op)
                self._dense.append(op)
                offset, n_in, k = b.stop, n_out, k + 1
            elif isinstance(layer, ActivationLayer):
                self._ops.append(layer)
            else:  # pragma: no cover - no other layer kinds exist yet
                raise ArchitectureError(
                    f"{layer!r} has no finite-network implementation; FiniteNetwork supports Dense and "
                    "elementwise activation layers."
                )
        self.widths = widths
        self.n_outputs = n_outputs
        self.n_params = offset

    def _hidden_widths(self, width, hidden) -> tuple:
        if width is None:
            missing = [self.architecture[i] for i in hidden if self.architecture[i].width is None]
            if missing:
                raise ParameterError(
                    f"The hidden layer {missing[0]!r} has no width, and no width= argument was given; "
                    "pass FiniteNetwork(..., width=512) or give every hidden layer Dense(..., width=512)."
                )
            return tuple(self.architecture[i].width for i in hidden)
        if isinstance(width, (list, tuple, np.ndarray)):
            if len(width) != len(hidden):
                raise ParameterError(
                    f"width has {len(width)} entries but the architecture has {len(hidden)} hidden Dense "
                    "layer(s); pass one width per hidden Dense layer, or a single int for all."
                )
            return tuple(check_param("FiniteNetwork", "width", w, low=1, integer=True) for w in width)
        w = check_param("FiniteNetwork", "width", width, low=1, integer=True)
        return tuple(w for _ in hidden)

    def __repr__(self):
        return f"FiniteNetwork({self.architecture!r}, in_features={self.in_features}, widths={self.widths})"

    # ------------------------------------------------------------------ parameters
    def init(self, seed=None) -> np.ndarray:
        """Draw all parameters i.i.d. standard normal: a flat (P,) float64 vector.

        ``seed`` is anything :func:`numpy.random.default_rng` accepts (an int, a
        ``SeedSequence`` or a ``Generator``).
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return rng.standard_normal(self.n_params)

    def unflatten(self, theta: np.ndarray) -> list:
        """Views ``[(W_1, b_1), …]`` into ``theta``: W_l is (n_l, n_{l-1}), b_l is (n_l,)."""
        theta = self._check_theta(theta)
        return [(theta[op.w_slice].reshape(op.n_out, op.n_in), theta[op.b_slice]) for op in self._dense]

    def layer_slices(self) -> list:
        """``[(w_slice, b_slice), …]``: where each Dense layer's parameters sit in ``theta``."""
        return [(op.w_slice, op.b_slice) for op in self._dense]

    def _check_theta(self, theta) -> np.ndarray:
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,) or theta.dtype != np.float64:
            raise InputError(
                f"theta must be a float64 vector of shape ({self.n_params},) for {self!r}; got "
                f"{theta.dtype} of shape {theta.shape}. Create it with net.init(seed)."
            )
        return theta

    def _check_x(self, X, name="X") -> np.ndarray:
        X = as_input_array(X, name)
        if X.shape[1] != self.in_features:
            raise InputError(
                f"{name} has {X.shape[1]} features but the network was built for in_features="
                f"{self.in_features}; pass arrays with {self.in_features} columns."
            )
        return X

    # ------------------------------------------------------------------ passes
    def _forward(self, theta, X, keep: bool):
        """Outputs and, with ``keep``, per-op caches (Dense input, activation pre-activation)."""
        h = X
        cache = []
        for op in self._ops:
            if isinstance(op, _DenseOp):
                W = theta[op.w_slice].reshape(op.n_out, op.n_in)
                z = h @ W.T
                z *= op.scale
                if op.b_std:
                    z += op.b_std * theta[op.b_slice]
                if keep:
                    cache.append(h)
                h = z
            else:
                if keep:
                    cache.append(h)
                h = op.fn(h)
        return h, cache

    def apply(self, theta, X) -> np.ndarray:
        """Forward pass: outputs (n, k) for inputs ``X`` (n, d)."""
        theta = self._check_theta(theta)
        return self._forward(theta, self._check_x(X), keep=False)[0]

    def _backward(self, theta, cache, delta):
        """Backpropagate ``delta`` (n, m, k) = ∂(outputs)/∂z_L through the network.

        Yields, for each Dense op from the readout backwards, ``(op, h_in, delta_out)`` with
        ``delta_out`` (n, m, n_out) the sensitivity of its outputs. ``m`` indexes whatever
        is propagated (output components for the Jacobian, 1 for a cotangent).
        """
        for op, stored in zip(reversed(self._ops), reversed(cache)):
            if isinstance(op, _DenseOp):
                yield op, stored, delta
                if op is self._dense[0]:
                    return
                W = theta[op.w_slice].reshape(op.n_out, op.n_in)
                n, m, _ = delta.shape
                delta = (delta.reshape(n * m, op.n_out) @ W).reshape(n, m, op.n_in)
                delta *= op.scale
            else:
                delta = delta * op.dfn(stored)[:, None, :]

    def _features(self, theta, X):
        """Per Dense layer: (op, h_in (n, n_in), delta (n, k, n_out)) for the NTK contraction."""
        out, cache = self._forward(theta, X, keep=True)
        n, k = out.shape
        seed = np.broadcast_to(np.eye(k), (n, k, k)).copy()
        return [(op, h, d) for op, h, d in self._backward(theta, cache, seed)], out

    def jacobian(self, theta, X, *, max_bytes: int = JACOBIAN_MAX_BYTES) -> np.ndarray:
        r"""The exact Jacobian :math:`J = \partial f / \partial\theta`, (n·k, P).

        Rows are ordered like ``apply(theta, X).reshape(-1)`` (sample-major), columns like
        ``theta``. Built by backpropagation:
        :math:`\partial f_a/\partial W_{l,ij} = \frac{\sigma_{w,l}}{\sqrt{n_{l-1}}}\delta_{l,ia}h_{l-1,j}`,
        :math:`\partial f_a/\partial b_{l,i} = \sigma_{b,l}\delta_{l,ia}`.
        For wide networks use :meth:`ntk`, :meth:`jvp` and :meth:`vjp`, which never form it.
        """
        theta = self._check_theta(theta)
        X = self._check_x(X)
        n, k = X.shape[0], self.n_outputs
        need = n * k * self.n_params * 8
        if need > max_bytes:
            raise ParameterError(
                f"The explicit Jacobian of {n} inputs would take {need / 2**30:.2f} GiB (limit "
                f"{max_bytes / 2**30:.2f} GiB); use net.ntk(), net.jvp() or net.vjp(), which contract "
                "without forming it, or raise max_bytes."
            )
        J = np.zeros((n, k, self.n_params))
        feats, _ = self._features(theta, X)
        for op, h, d in feats:
            J[:, :, op.w_slice] = op.scale * np.einsum("nai,nj->naij", d, h).reshape(n, k, -1)
            J[:, :, op.b_slice] = op.b_std * d
        return J.reshape(n * k, self.n_params)

    def ntk(self, theta, X1, X2=None) -> np.ndarray:
        r"""Empirical NTK :math:`\hat\Theta = J(X_1) J(X_2)^\top`, (n1·k, n2·k), without forming J.

        .. math::

            \hat\Theta_{(x,a),(x',b)} = \sum_l \Big(\frac{\sigma_{w,l}^2}{n_{l-1}}
            h_{l-1}(x)\cdot h_{l-1}(x') + \sigma_{b,l}^2\Big)\,
            \delta_{l,a}(x)\cdot\delta_{l,b}(x')

        (Jacot et al. 2018). Rows and columns are sample-major (``(x, a)``); with one output
        this is the (n1, n2) kernel. See :meth:`ntk_per_output` for the k-output average.
        """
        theta = self._check_theta(theta)
        X1 = self._check_x(X1, "X1")
        f1, _ = self._features(theta, X1)
        f2 = f1 if X2 is None else self._features(theta, self._check_x(X2, "X2"))[0]
        n1, n2, k = X1.shape[0], (X1 if X2 is None else X2).shape[0], self.n_outputs
        out = np.zeros((n1 * k, n2 * k))
        for (op, h1, d1), (_, h2, d2) in zip(f1, f2):
            G = (op.scale**2) * (h1 @ h2.T) + op.b_std**2
            D = d1.reshape(n1 * k, op.n_out) @ d2.reshape(n2 * k, op.n_out).T
            if k > 1:
                G = np.repeat(np.repeat(G, k, axis=0), k, axis=1)
            out += G * D
        return out

    def ntk_per_output(self, theta, X1, X2=None) -> np.ndarray:
        """The per-output empirical NTK (n1, n2): the mean of the k diagonal output blocks.

        The analytic kernel is per output (the full one is K ⊗ I), so this is what compares
        with ``nk.compile(arch)(X1, X2).ntk``.
        """
        full = self.ntk(theta, X1, X2)
        k = self.n_outputs
        n1, n2 = full.shape[0] // k, full.shape[1] // k
        return np.einsum("iajb->ij", full.reshape(n1, k, n2, k) * np.eye(k)[None, :, None, :]) / k

    def nngp(self, theta, X1, X2=None) -> np.ndarray:
        r"""Empirical NNGP (n1, n2): the output covariance over the readout's initialisation.

        Given the hidden layers, each output is Gaussian over the readout's standard normal
        weights and bias, with covariance

        .. math::

            \hat\Sigma(x, x') = \frac{\sigma_w^2}{n_{L-1}} h_{L-1}(x)\cdot h_{L-1}(x') + \sigma_b^2

        (Lee et al. 2018; Matthews et al. 2018); its average over seeds is the covariance
        of the outputs across initialisations.
        """
        theta = self._check_theta(theta)
        X1 = self._check_x(X1, "X1")
        h1 = self._readout_input(theta, X1)
        h2 = h1 if X2 is None else self._readout_input(theta, self._check_x(X2, "X2"))
        op = self._dense[-1]
        return (op.scale**2) * (h1 @ h2.T) + op.b_std**2

    def _readout_input(self, theta, X):
        h = X
        for op in self._ops:
            if op is self._dense[-1]:
                return h
            if isinstance(op, _DenseOp):
                W = theta[op.w_slice].reshape(op.n_out, op.n_in)
                h = op.scale * (h @ W.T)
                if op.b_std:
                    h += op.b_std * theta[op.b_slice]
            else:
                h = op.fn(h)
        raise AssertionError("unreachable: the architecture ends in a Dense readout")  # pragma: no cover

    def vjp(self, theta, X, cotangent) -> np.ndarray:
        r"""Vector-Jacobian product :math:`J^\top r`, (P,), by backpropagation.

        ``cotangent`` is (n, k) like the outputs; with ``r = f - y`` this is the gradient of
        the loss :math:`\tfrac12\sum_i\|f(x_i)-y_i\|^2`.
        """
        theta = self._check_theta(theta)
        X = self._check_x(X)
        r = np.asarray(cotangent, dtype=np.float64)
        if r.shape != (X.shape[0], self.n_outputs):
            raise InputError(
                f"cotangent must have the outputs' shape ({X.shape[0]}, {self.n_outputs}); got {r.shape}."
            )
        _, cache = self._forward(theta, X, keep=True)
        return self._vjp_from_cache(theta, cache, r)

    def _vjp_from_cache(self, theta, cache, r) -> np.ndarray:
        grad = np.empty(self.n_params)
        seed = r[:, None, :]  # (n, 1, k): the cotangent contracted into one propagated row
        for op, h, d in self._backward(theta, cache, seed):
            d2 = d[:, 0, :]
            np.matmul((op.scale * d2).T, h, out=grad[op.w_slice].reshape(op.n_out, op.n_in))
            grad[op.b_slice] = op.b_std * d2.sum(axis=0)
        return grad

    def value_and_vjp(self, theta, X, residual_fn):
        """Outputs ``f`` and ``J^T residual_fn(f)`` from one forward and one backward pass."""
        theta = self._check_theta(theta)
        out, cache = self._forward(theta, self._check_x(X), keep=True)
        return out, self._vjp_from_cache(theta, cache, residual_fn(out))

    def jvp(self, theta, X, tangent) -> np.ndarray:
        r"""Jacobian-vector product :math:`J v`, (n, k), by forward tangent propagation.

        .. math::

            \dot z_l = \frac{\sigma_{w,l}}{\sqrt{n_{l-1}}}(\dot W_l h_{l-1} + W_l \dot h_{l-1})
            + \sigma_{b,l}\dot b_l, \qquad \dot h_l = \phi_l'(z_l)\,\dot z_l.
        """
        theta = self._check_theta(theta)
        X = self._check_x(X)
        v = np.asarray(tangent, dtype=np.float64)
        if v.shape != theta.shape:
            raise InputError(f"tangent must have theta's shape {theta.shape}; got {v.shape}.")
        h, dh = X, np.zeros_like(X)
        for op in self._ops:
            if isinstance(op, _DenseOp):
                W = theta[op.w_slice].reshape(op.n_out, op.n_in)
                dW = v[op.w_slice].reshape(op.n_out, op.n_in)
                z = op.scale * (h @ W.T) + op.b_std * theta[op.b_slice]
                dh = op.scale * (h @ dW.T + dh @ W.T) + op.b_std * v[op.b_slice]
                h = z
            else:
                dh = op.dfn(h) * dh
                h = op.fn(h)
        return dh


class LinearizedModel:
    r"""The first-order Taylor expansion of a network around ``theta0`` (Lee et al. 2019):

    .. math::

        f_{lin}(x; \theta) = f(x; \theta_0) + J(x; \theta_0)\,(\theta - \theta_0).

    It exposes the same ``apply`` / ``vjp`` / ``ntk`` interface as :class:`FiniteNetwork`, so
    :func:`ntk_infinite.verify.training.train` trains it the same way; its NTK is constant.
    """

    def __init__(self, network: FiniteNetwork, theta0):
        self.network = network
        self.theta0 = network._check_theta(theta0).copy()
        self.n_params = network.n_params
        self.n_outputs = network.n_outputs

    def apply(self, theta, X) -> np.ndarray:
        """f(x; θ₀) + J(x; θ₀)(θ − θ₀), (n, k)."""
        f0 = self.network.apply(self.theta0, X)
        return f0 + self.network.jvp(self.theta0, X, np.asarray(theta) - self.theta0)

    def vjp(self, theta, X, cotangent) -> np.ndarray:
        """J(θ₀)ᵀ r (the Jacobian does not depend on θ)."""
        return self.network.vjp(self.theta0, X, cotangent)

    def value_and_vjp(self, theta, X, residual_fn):
        out = self.apply(theta, X)
        return out, self.vjp(theta, X, residual_fn(out))

    def ntk(self, theta, X1, X2=None) -> np.ndarray:
        """Θ̂(θ₀): constant along training."""
        return self.network.ntk(self.theta0, X1, X2)


# ---------------------------------------------------------------------- Monte Carlo
@dataclass(frozen=True)
class MonteCarloKernels:
    """Empirical kernels of independently initialised networks.

    Attributes
    ----------
    nngp, ntk : (n1, n2) ndarray or None
        Means over seeds (per output).
    nngp_samples, ntk_samples : (S, n1, n2) ndarray or None
        The kernel of each seed, for standard errors and per-network errors.
    width : tuple of int
        Hidden widths of the networks.
    seeds : tuple
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    nngp_samples: np.ndarray | None
    ntk_samples: np.ndarray | None
    width: tuple
    seeds: tuple

    def standard_error(self, name: str) -> np.ndarray:
        """Entrywise standard error of the mean over seeds, (n1, n2)."""
        samples = getattr(self, f"{name}_samples")
        if samples is None:
            raise KeyError(f"{name!r} was not computed; pass get={name!r}.")
        S = samples.shape[0]
        if S < 2:
            raise ParameterError("A standard error needs at least 2 seeds; pass more seeds.")
        return samples.std(axis=0, ddof=1) / np.sqrt(S)


def monte_carlo_kernels(arch, X1, X2=None, *, width=None, seeds: int | Sequence = 16, get=("nngp", "ntk"),
                        n_outputs: int | None = None) -> MonteCarloKernels:
    r"""Empirical NNGP and NTK averaged over independently initialised networks.

    One network is in memory at a time (at width 4096 with two hidden layers, 134 MB of
    parameters), and no Jacobian is formed.

    .. math::

        \bar K = \frac{1}{S}\sum_{s=1}^S \hat K_{\theta_s}, \qquad
        \hat K_{\theta} \to K \text{ as } n \to\infty \text{ (Jacot et al. 2018)}.

    Parameters
    ----------
    arch : architecture, list of layers or str
    X1 : (n1, d) array_like
    X2 : (n2, d) array_like, optional
    width : int or sequence of int, optional
        Hidden widths (see :class:`FiniteNetwork`).
    seeds : int or sequence
        Number of networks (seeds 0 … S−1) or the explicit seeds.
    get : {"nngp", "ntk"} or tuple of them
    n_outputs : int, optional

    Returns
    -------
    MonteCarloKernels
    """
    from ..results import parse_get

    want_nngp, want_ntk = parse_get(get)
    X1 = as_input_array(X1, "X1")
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = tuple(range(check_param("monte_carlo_kernels", "seeds", seeds, low=1, integer=True)))
    else:
        seeds = tuple(seeds)
        if not seeds:
            raise ParameterError("seeds is empty; pass a positive number of seeds or a non-empty list of them.")
    net = FiniteNetwork(arch, X1.shape[1], width=width, n_outputs=n_outputs)
    nngp, ntk = [], []
    with thin_blas():
        for seed in seeds:
            theta = net.init(seed)
            if want_nngp:
                nngp.append(net.nngp(theta, X1, X2))
            if want_ntk:
                ntk.append(net.ntk_per_output(theta, X1, X2))
            del theta
    ns = np.stack(nngp) if want_nngp else None
    ts = np.stack(ntk) if want_ntk else None
    return MonteCarloKernels(
        nngp=ns.mean(axis=0) if want_nngp else None,
        ntk=ts.mean(axis=0) if want_ntk else None,
        nngp_samples=ns,
        ntk_samples=ts,
        width=net.widths[:-1],
        seeds=seeds,
    )
