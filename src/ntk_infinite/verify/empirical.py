r"""Finite-width networks built from an architecture description: the ground truth.

A :class:`FiniteNetwork` is the plain NumPy network that the analytic kernels describe in
the infinite-width limit, with the same layers and the NTK parameterisation of docs/DESIGN.md
(Jacot et al. 2018; Lee et al. 2019): for a ``Dense(w_std=σ_w, b_std=σ_b)`` layer with
``n_in`` inputs,

.. math::

    z = \frac{\sigma_w}{\sqrt{n_{in}}} W h + \sigma_b b, \qquad W_{ij}, b_i \sim N(0, 1),

so the first layer sees :math:`\Sigma^0(x, x') = x\cdot x'/d`. Convolutional networks take
inputs (n, S₁, …, S_k, C), channels last, and scale a ``Conv`` by
:math:`\sigma_w/\sqrt{C_{in}|k|}` (:mod:`ntk_infinite.verify.spatial_ops`). All parameters live
in one flat float64 vector ``theta`` (the layers' ``W`` and ``b`` are views into it), which
makes gradient descent, norms and perturbations plain vector operations.

Each layer is one small *op* built for its input shape (``_DenseOp``, ``_ActivationOp``, and
the spatial ``ConvOp``, ``PoolOp``, ``FlattenOp``, ``GlobalAvgPoolOp``), with ``forward``,
``backward`` and ``tangent``; parametrised ops add ``grad``, ``jacobian`` and ``ntk``. A new
layer kind is written in one place. Everything is computed by explicit forward and backward
passes in NumPy (no autodiff framework):

* :meth:`FiniteNetwork.apply`: forward pass, outputs (n, k);
* :meth:`FiniteNetwork.jacobian`: the exact Jacobian (n·k, P), for small networks;
* :meth:`FiniteNetwork.ntk`: :math:`J J^\top` *without* forming ``J``, contracted layer by
  layer from the forward features and the backpropagated output sensitivities,

  .. math::

      \hat\Theta_{(x,a),(x',b)} = \sum_{l} \Big(\frac{\sigma_{w,l}^2}{n_{l-1}} h_{l-1}(x)\cdot h_{l-1}(x')
      + \sigma_{b,l}^2\Big)\, \delta_{l,a}(x)\cdot\delta_{l,b}(x'),
      \qquad \delta_{l,a} = \partial f_a / \partial z_l,

  (for a convolution, summed over position pairs with its patches in place of ``h``), which
  costs O(n·Σ n_l) memory instead of O(n·P) (P ≈ 16.8 million at width 4096 with two
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
from ..describe.branching import FanInConcat, FanOut, LayerNorm
from ..describe.layers import ActivationLayer, Dense, Identity
from ..describe.spatial import AvgPool, Conv, Flatten, GlobalAvgPool, SpatialLayer
from .branches import LayerNormOp, ParallelOp, backward_sequence, forward_sequence, tangent_sequence
from .spatial_ops import ConvOp, FlattenOp, GlobalAvgPoolOp, PoolOp, as_spatial_input

__all__ = [
    "FiniteNetwork",
    "LinearizedModel",
    "MonteCarloKernels",
    "monte_carlo_kernels",
    "as_architecture",
    "as_network_input",
    "input_shape_of",
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


def as_network_input(X, name: str = "X") -> np.ndarray:
    """Inputs of a finite network: (n, d) for dense networks (checked by ``as_input_array``),
    or (n, S₁, …, S_k, C) for spatial ones; a float64, C-contiguous, finite array."""
    arr = np.asarray(X) if X is not None else None
    if arr is not None and arr.ndim > 2:
        return as_spatial_input(arr, name, arr.shape[1:])
    return as_input_array(X, name)


def input_shape_of(X: np.ndarray):
    """The ``in_features`` of inputs ``X``: ``d`` for (n, d), ``(S₁, …, S_k, C)`` otherwise."""
    return X.shape[1] if X.ndim == 2 else tuple(X.shape[1:])


# ---------------------------------------------------------------------- layer ops
class _DenseOp:
    """A Dense layer on flat states: (n, n_in) → (n, n_out), weights (n_out, n_in)."""

    def __init__(self, index: int, n_in: int, n_out: int, layer: Dense, offset: int):
        self.index, self.n_in, self.n_out = index, n_in, n_out
        self.in_shape, self.out_shape = (n_in,), (n_out,)
        self.w_std, self.b_std = layer.w_std, layer.b_std
        self.w_slice = slice(offset, offset + n_out * n_in)
        self.b_slice = slice(self.w_slice.stop, self.w_slice.stop + n_out)
        self.n_params = self.b_slice.stop - offset
        self.w_shape = (n_out, n_in)
        if layer.parameterization == "standard":
            # The parameters are the weights themselves, W ~ N(0, σw²/n_in), b ~ N(0, σb²); b_std = 0
            # means no bias (its coefficient is 0, so it never moves and adds nothing to the NTK).
            self.scale, self.bias_scale = 1.0, (1.0 if self.b_std > 0 else 0.0)
            self.init_scales = (self.w_std / np.sqrt(n_in), self.b_std)
        else:
            self.scale, self.bias_scale = self.w_std / np.sqrt(n_in), self.b_std
            self.init_scales = (1.0, 1.0)

    def nngp_gram(self, h1, h2):
        """The covariance of this layer's outputs over its initialisation, given its inputs:
        σw²/n_in h·h' + σb² (both parameterisations)."""
        return (self.w_std**2 / self.n_in) * (h1 @ h2.T) + self.b_std**2

    def weights(self, theta):
        return theta[self.w_slice].reshape(self.n_out, self.n_in)

    def forward(self, theta, h):
        z = h @ self.weights(theta).T
        z *= self.scale
        if self.bias_scale:
            z += self.bias_scale * theta[self.b_slice]
        return z

    def backward(self, theta, h, delta):
        n, m, _ = delta.shape
        out = (delta.reshape(n * m, self.n_out) @ self.weights(theta)).reshape(n, m, self.n_in)
        out *= self.scale
        return out

    def tangent(self, theta, v, h, dh):
        W, dW = self.weights(theta), v[self.w_slice].reshape(self.n_out, self.n_in)
        z = self.scale * (h @ W.T) + self.bias_scale * theta[self.b_slice]
        return z, self.scale * (h @ dW.T + dh @ W.T) + self.bias_scale * v[self.b_slice]

    def grad(self, h, delta, out):
        d2 = delta[:, 0, :]
        np.matmul((self.scale * d2).T, h, out=out[self.w_slice].reshape(self.n_out, self.n_in))
        out[self.b_slice] = self.bias_scale * d2.sum(axis=0)

    def jacobian(self, h, delta, J):
        n, k = delta.shape[:2]
        J[:, :, self.w_slice] = self.scale * np.einsum("nai,nj->naij", delta, h).reshape(n, k, -1)
        J[:, :, self.b_slice] = self.bias_scale * delta

    def ntk(self, h1, d1, h2, d2):
        n1, k = d1.shape[:2]
        n2 = d2.shape[0]
        G = (self.scale**2) * (h1 @ h2.T) + self.bias_scale**2
        D = d1.reshape(n1 * k, self.n_out) @ d2.reshape(n2 * k, self.n_out).T
        if k > 1:
            G = np.repeat(np.repeat(G, k, axis=0), k, axis=1)
        return G * D


class _ActivationOp:
    """An elementwise activation: φ on every entry, φ' in the backward and tangent passes."""

    n_params = 0

    def __init__(self, index: int, shape: tuple, layer: ActivationLayer):
        self.index, self.layer = index, layer
        self.in_shape = self.out_shape = tuple(shape)

    def forward(self, theta, h):
        return self.layer.fn(h)

    def backward(self, theta, h, delta):
        return delta * self.layer.dfn(h)[:, None]

    def tangent(self, theta, v, h, dh):
        return self.layer.fn(h), self.layer.dfn(h) * dh


def _input_shape(in_features) -> tuple:
    """(d,) for an int, (S₁, …, S_k, C) for a tuple of positive ints."""
    if isinstance(in_features, (tuple, list)):
        if len(in_features) == 0:
            raise ParameterError("in_features is an empty tuple; pass d for (n, d) inputs or (S1, ..., Sk, C) for "
                                 "spatial inputs, e.g. (8, 8, 3).")
        return tuple(check_param("FiniteNetwork", "in_features", v, low=1, integer=True) for v in in_features)
    if isinstance(in_features, np.ndarray) and in_features.ndim == 1:
        return _input_shape(tuple(in_features.tolist()))
    return (check_param("FiniteNetwork", "in_features", in_features, low=1, integer=True),)


class FiniteNetwork:
    r"""A finite-width network built from an architecture description.

    Parameters
    ----------
    arch : Architecture, list of layers or str
        The same description :func:`ntk_infinite.compile` accepts (and validated by the same
        rules): Dense and activation layers, and for spatial inputs Conv, AvgPool and one
        Flatten or GlobalAvgPool readout before the Dense head.
    in_features : int or tuple of int
        Input dimension ``d`` of (n, d) inputs, or the per-sample shape ``(S₁, …, S_k, C)``
        of spatial inputs (n, S₁, …, S_k, C), channels last (e.g. ``(8, 8, 3)``).
    width : int or sequence of int, optional
        Output width of every hidden layer, i.e. every Conv and every Dense except the readout
        (or one width per hidden layer, in order). When given it overrides ``Dense(width=...)``
        and ``Conv(channels=...)``; when omitted every hidden layer must carry its own.
    n_outputs : int, optional
        Width of the readout (the last ``Dense``). Default: its ``width`` if set, else 1.

    Attributes
    ----------
    architecture : Architecture
    in_features : int or tuple of int
    input_shape : tuple of int
        Per-sample input shape: ``(d,)`` or ``(S₁, …, S_k, C)``.
    widths : tuple of int
        Output width (channels) of each Conv and Dense layer, readout last.
    n_params : int
        Number of parameters P (all weights and biases, including those multiplied by a
        zero ``b_std``).

    Notes
    -----
    Parameterisation (NTK; Jacot et al. 2018; docs/DESIGN.md, "Math conventions" and
    "Spatial layers"):

    .. math::

        z_l = \frac{\sigma_{w,l}}{\sqrt{n_{l-1}}} W_l h_{l-1} + \sigma_{b,l} b_l, \quad
        h_l = \phi_l(z_l), \quad h_0 = x,

    with standard normal entries of every :math:`W_l` and :math:`b_l`; a Conv has
    :math:`n_{l-1} = C_{in}|k|` and ``W`` of shape (*filter_shape, C_in, C_out).

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> net = nk.empirical.FiniteNetwork("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)", 3, width=8)
    >>> theta = net.init(0)
    >>> net.apply(theta, np.ones((2, 3))).shape, net.n_params
    ((2, 1), 41)
    >>> cnn = nk.serial(nk.Conv(filter_shape=(3, 3), padding="SAME", w_std=1.5), nk.ReLU(),
    ...                 nk.GlobalAvgPool(), nk.Dense(w_std=1.5))
    >>> net = nk.empirical.FiniteNetwork(cnn, (8, 8, 3), width=16)
    >>> net.apply(net.init(0), np.ones((2, 8, 8, 3))).shape, net.widths
    ((2, 1), (16, 1))
    """

    def __init__(self, arch, in_features, width=None, n_outputs: int | None = None):
        self.architecture = as_architecture(arch, owner="FiniteNetwork")
        self.input_shape = _input_shape(in_features)
        self.in_features = self.input_shape[0] if len(self.input_shape) == 1 else self.input_shape
        arch = self.architecture
        param_layers = [layer for layer in arch.walk() if isinstance(layer, (Dense, Conv))]
        hidden = param_layers[:-1]
        readout = param_layers[-1]
        hidden_widths = self._hidden_widths(width, hidden)
        if n_outputs is None:
            n_outputs = readout.width if readout.width is not None else 1
        n_outputs = check_param("FiniteNetwork", "n_outputs", n_outputs, low=1, integer=True)
        widths = (*hidden_widths, n_outputs)
        self._params = []
        self._widths = iter(widths)
        self._ops, _, self.n_params = self._build_sequence(arch, self.input_shape, 0, "")
        self.widths = widths
        self.n_outputs = n_outputs

    def _build_sequence(self, arch, shape, offset, where):
        """(ops, output shape, next parameter offset) of an architecture or branch; parametrised
        ops are appended to ``self._params`` in data-flow order (the order of ``theta``)."""
        ops, layers, i = [], arch.layers, 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, FanOut):
                branches = []
                for b, branch in enumerate(layers[i + 1].branches):
                    seq, _, offset = self._build_sequence(branch, shape, offset, f"{where}branch {b} at {i + 1}, ")
                    branches.append(seq)
                op = ParallelOp(i, shape, branches, concat=isinstance(layers[i + 2], FanInConcat))
                self._check_sum_shapes(op, layers[i + 2], where, i + 2)
                i += 3
            else:
                op = self._build_op(i, layer, shape, next(self._widths) if isinstance(layer, (Dense, Conv)) else None,
                                    offset)
                if op.n_params:
                    self._params.append(op)
                    offset += op.n_params
                i += 1
            if not isinstance(layer, Identity):
                ops.append(op)
            shape = op.out_shape
        return ops, shape, offset

    @staticmethod
    def _check_sum_shapes(op, fan_in, where, i):
        outs = [seq[-1].out_shape if seq else op.in_shape for seq in op.branches]
        if op.concat:
            if len({shape[:-1] for shape in outs}) > 1:
                raise ArchitectureError(f"{fan_in!r} at {where}position {i} concatenates channels of branches with "
                                        f"different spatial shapes {outs}; give every branch the same spatial shape.")
            return
        if len(set(outs)) > 1:
            raise ArchitectureError(
                f"{fan_in!r} at {where}position {i} adds branch outputs of different shapes {outs} (per sample): a sum "
                "needs equal widths. Give the last Dense of every branch the width of the block's input (or pass "
                "width= with one value for all hidden layers and a matching input)."
            )

    def _build_op(self, i, layer, shape, n_out, offset):
        spatial = len(shape) > 1
        if isinstance(layer, Dense):
            if spatial:  # only a dense architecture gets here (compile's rules put a readout first)
                raise ArchitectureError(
                    f"in_features={self.in_features} describes spatial inputs (n, S1, ..., Sk, C), but {layer!r} at "
                    f"position {i} would act on a spatial state: this architecture has no Flatten or GlobalAvgPool. "
                    f"Pass in_features={int(np.prod(shape))} with X.reshape(len(X), -1) for a dense network, or "
                    "describe a convolutional one (Conv, ..., Flatten or GlobalAvgPool, Dense)."
                )
            return _DenseOp(i, shape[0], n_out, layer, offset)
        if isinstance(layer, ActivationLayer):
            return _ActivationOp(i, shape, layer)
        if isinstance(layer, LayerNorm):
            return LayerNormOp(i, shape, layer)
        if isinstance(layer, SpatialLayer) and not spatial:
            raise ArchitectureError(
                f"{layer!r} at position {i} acts on spatial inputs (n, S1, ..., Sk, C), but the network was built "
                f"for flat inputs of {shape[0]} features (in_features={self.in_features}); pass "
                "in_features=(S1, ..., Sk, C), e.g. (8, 8, 3) for 8×8 images with 3 channels."
            )
        if isinstance(layer, Conv):
            return ConvOp(i, shape, layer, n_out, offset)
        if isinstance(layer, AvgPool):
            return PoolOp(i, shape, layer)
        if isinstance(layer, Flatten):
            return FlattenOp(i, shape)
        if isinstance(layer, GlobalAvgPool):
            return GlobalAvgPoolOp(i, shape)
        raise ArchitectureError(  # pragma: no cover - every layer kind has an op
            f"{layer!r} has no finite-network implementation; FiniteNetwork supports Dense, Conv, AvgPool, Flatten, "
            "GlobalAvgPool and elementwise activation layers."
        )

    def _hidden_widths(self, width, hidden) -> tuple:
        layers = hidden
        kind = "Dense" if not any(isinstance(layer, Conv) for layer in layers) else "Conv/Dense"
        if width is None:
            own = [layer.channels if isinstance(layer, Conv) else layer.width for layer in layers]
            missing = [layer for layer, w in zip(layers, own) if w is None]
            if missing:
                what = "channels" if isinstance(missing[0], Conv) else "width"
                raise ParameterError(
                    f"The hidden layer {missing[0]!r} has no {what}, and no width= argument was given; "
                    f"pass FiniteNetwork(..., width=512) or give every hidden layer its own (Dense(..., width=512), "
                    "Conv(..., channels=64))."
                )
            return tuple(own)
        if isinstance(width, (list, tuple, np.ndarray)):
            if len(width) != len(hidden):
                raise ParameterError(
                    f"width has {len(width)} entries but the architecture has {len(hidden)} hidden {kind} "
                    "layer(s); pass one width per hidden layer, or a single int for all."
                )
            return tuple(check_param("FiniteNetwork", "width", w, low=1, integer=True) for w in width)
        w = check_param("FiniteNetwork", "width", width, low=1, integer=True)
        return tuple(w for _ in hidden)

    def __repr__(self):
        return f"FiniteNetwork({self.architecture!r}, in_features={self.in_features}, widths={self.widths})"

    # ------------------------------------------------------------------ parameters
    def init(self, seed=None) -> np.ndarray:
        """Draw all parameters: a flat (P,) float64 vector, i.i.d. standard normal (a
        standard-parameterisation Dense layer's weights and biases scaled to N(0, σw²/n_in)
        and N(0, σb²)).

        ``seed`` is anything :func:`numpy.random.default_rng` accepts (an int, a
        ``SeedSequence`` or a ``Generator``).
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        theta = rng.standard_normal(self.n_params)
        for op in self._params:
            w_scale, b_scale = getattr(op, "init_scales", (1.0, 1.0))
            if (w_scale, b_scale) != (1.0, 1.0):
                theta[op.w_slice] *= w_scale
                theta[op.b_slice] *= b_scale
        return theta

    def unflatten(self, theta: np.ndarray) -> list:
        """Views ``[(W_1, b_1), …]`` into ``theta``, one per Conv/Dense layer: a Dense W_l is
        (n_l, n_{l-1}), a Conv W_l is (*filter_shape, C_in, C_out); b_l is (n_l,)."""
        theta = self._check_theta(theta)
        return [(theta[op.w_slice].reshape(op.w_shape), theta[op.b_slice]) for op in self._params]

    def layer_slices(self) -> list:
        """``[(w_slice, b_slice), …]``: where each Conv/Dense layer's parameters sit in ``theta``."""
        return [(op.w_slice, op.b_slice) for op in self._params]

    def _check_theta(self, theta) -> np.ndarray:
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,) or theta.dtype != np.float64:
            raise InputError(
                f"theta must be a float64 vector of shape ({self.n_params},) for {self!r}; got "
                f"{theta.dtype} of shape {theta.shape}. Create it with net.init(seed)."
            )
        return theta

    def _check_x(self, X, name="X") -> np.ndarray:
        if len(self.input_shape) > 1:
            return as_spatial_input(X, name, self.input_shape)
        X = as_input_array(X, name)
        if X.shape[1] != self.in_features:
            raise InputError(
                f"{name} has {X.shape[1]} features but the network was built for in_features="
                f"{self.in_features}; pass arrays with {self.in_features} columns."
            )
        return X

    # ------------------------------------------------------------------ passes
    def _forward(self, theta, X, keep: bool, stop=None):
        """Outputs and, with ``keep``, each op's input (the cache its backward pass reads).
        With ``stop`` (a top-level op), the input of that op instead of the outputs."""
        return forward_sequence(self._ops, theta, X, keep, stop)

    def apply(self, theta, X) -> np.ndarray:
        """Forward pass: outputs (n, k) for inputs ``X`` (n, d) or (n, S₁, …, S_k, C)."""
        theta = self._check_theta(theta)
        return self._forward(theta, self._check_x(X), keep=False)[0]

    def _backward(self, theta, cache, delta):
        """Backpropagate ``delta`` (n, m, k) = ∂(outputs)/∂z_L through the network.

        Yields, for each parametrised op from the readout backwards, ``(op, h_in, delta_out)``
        with ``delta_out`` (n, m, *op.out_shape) the sensitivity of its outputs. ``m`` indexes
        whatever is propagated (output components for the Jacobian, 1 for a cotangent).
        """
        yield from backward_sequence(self._ops, theta, cache, delta, need_input=False)

    def _features(self, theta, X):
        """Per parametrised op: (op, h_in, delta (n, k, *out_shape)) for the NTK contraction."""
        out, cache = self._forward(theta, X, keep=True)
        n, k = out.shape
        seed = np.broadcast_to(np.eye(k), (n, k, k)).copy()
        return [(op, h, d) for op, h, d in self._backward(theta, cache, seed)], out

    def jacobian(self, theta, X, *, max_bytes: int = JACOBIAN_MAX_BYTES) -> np.ndarray:
        r"""The exact Jacobian :math:`J = \partial f / \partial\theta`, (n·k, P).

        Rows are ordered like ``apply(theta, X).reshape(-1)`` (sample-major), columns like
        ``theta``. Built by backpropagation:
        :math:`\partial f_a/\partial W_{l,ij} = \frac{\sigma_{w,l}}{\sqrt{n_{l-1}}}\delta_{l,ia}h_{l-1,j}`,
        :math:`\partial f_a/\partial b_{l,i} = \sigma_{b,l}\delta_{l,ia}` (a Conv sums these over
        output positions, with its input patches in place of :math:`h_{l-1}`).
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
            op.jacobian(h, d, J)
        return J.reshape(n * k, self.n_params)

    def ntk(self, theta, X1, X2=None) -> np.ndarray:
        r"""Empirical NTK :math:`\hat\Theta = J(X_1) J(X_2)^\top`, (n1·k, n2·k), without forming J.

        .. math::

            \hat\Theta_{(x,a),(x',b)} = \sum_l \Big(\frac{\sigma_{w,l}^2}{n_{l-1}}
            h_{l-1}(x)\cdot h_{l-1}(x') + \sigma_{b,l}^2\Big)\,
            \delta_{l,a}(x)\cdot\delta_{l,b}(x')

        (Jacot et al. 2018; for a Conv summed over output position pairs, with patch Grams).
        Rows and columns are sample-major (``(x, a)``); with one output this is the (n1, n2)
        kernel. See :meth:`ntk_per_output` for the k-output average.
        """
        theta = self._check_theta(theta)
        X1 = self._check_x(X1, "X1")
        f1, _ = self._features(theta, X1)
        f2 = f1 if X2 is None else self._features(theta, self._check_x(X2, "X2"))[0]
        n1, n2, k = X1.shape[0], (X1 if X2 is None else X2).shape[0], self.n_outputs
        out = np.zeros((n1 * k, n2 * k))
        for (op, h1, d1), (_, h2, d2) in zip(f1, f2):
            out += op.ntk(h1, d1, h2, d2)
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
        of the outputs across initialisations. After a Flatten, :math:`n_{L-1} = P·C` and this
        is :math:`\frac1P\sum_p` of the per-position covariances (docs/DESIGN.md).
        """
        theta = self._check_theta(theta)
        X1 = self._check_x(X1, "X1")
        op = self._params[-1]
        h1 = self._forward(theta, X1, keep=False, stop=op)[0]
        h2 = h1 if X2 is None else self._forward(theta, self._check_x(X2, "X2"), keep=False, stop=op)[0]
        return op.nngp_gram(h1, h2)

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
            op.grad(h, d, grad)
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
        return tangent_sequence(self._ops, theta, v, X, np.zeros_like(X))[1]


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
    X1 : (n1, d) or (n1, S₁, …, S_k, C) array_like
        Dense or spatial (channels-last) inputs; the network is built for ``X1.shape[1:]``.
    X2 : (n2, d) or (n2, S₁, …, S_k, C) array_like, optional
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
    X1 = as_network_input(X1, "X1")
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = tuple(range(check_param("monte_carlo_kernels", "seeds", seeds, low=1, integer=True)))
    else:
        seeds = tuple(seeds)
        if not seeds:
            raise ParameterError("seeds is empty; pass a positive number of seeds or a non-empty list of them.")
    net = FiniteNetwork(arch, input_shape_of(X1), width=width, n_outputs=n_outputs)
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
