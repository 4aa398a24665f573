r"""Derivatives of the NNGP and NTK Gram matrices with respect to every Dense and Conv layer's
``w_std`` and ``b_std``, in forward mode through the recursion.

Each layer ``l`` with trainable parameters (its step's ``trainable``: Dense and Conv)
contributes two, :math:`\sigma_{w,l}` and :math:`\sigma_{b,l}`. The recursion of
docs/DESIGN.md (Lee et al. 2018; Jacot et al. 2018; Lee et al. 2019) is carried together with
its tangents, one per parameter p:

.. math::

    \text{Dense: } & dc \leftarrow \sigma_w^2\, dc + 2\sigma_w c\,[p = \sigma_w]
        + 2\sigma_b\,[p = \sigma_b], \quad
        d\Theta \leftarrow \sigma_w^2\, d\Theta + 2\sigma_w \Theta\,[p = \sigma_w] + dc_{\text{new}},\\
    \text{activation: } & dc \leftarrow T_{q_1} dq_1 + T_{q_2} dq_2 + T_c\, dc, \quad
        d\Theta \leftarrow \dot T\, d\Theta + (\dot T_{q_1} dq_1 + \dot T_{q_2} dq_2 + \dot T_c\, dc)\,\Theta,

with the per-point variances q and their tangents dq from the per-point recursion
q ← V(q), dq ← V'(q) dq. The partials of each dual come from
:mod:`ntk_infinite.compiler.duals.partials`. The work is O(P·n₁·n₂·L) for P = 2·(number of
trainable layers); rows are processed in blocks so memory stays bounded. Convolutional
architectures go through the same recursion on position-pair states
(:mod:`ntk_infinite.evaluate.spatial_gradients`; Novak et al. 2019, Arora et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..compiler.duals.partials import dual_partials
from ..compiler.steps import is_trainable
from ..errors import ArchitectureError
from ..kernel import CompiledKernel, compile
from ..results import parse_get

__all__ = ["KernelGradients", "kernel_gradients", "parameter_names", "trainable_layers", "dense_layers"]

#: Elements per (P, rows, n2) tangent block (about 32 MB of float64 per array).
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KernelGradients:
    """Gram matrices and their derivatives with respect to the Dense and Conv layers' parameters.

    Attributes
    ----------
    nngp, ntk : (n1, n2) ndarray or None
        Σ and Θ, from the same recursion as the derivatives.
    d_nngp, d_ntk : (P, n1, n2) ndarray or None
        ∂Σ/∂p and ∂Θ/∂p for each parameter p, in the order of ``parameters``.
    parameters : tuple of str
        ``"layers[i].w_std"`` and ``"layers[i].b_std"`` for each Dense or Conv layer i of the
        architecture (its index in the architecture), in order.
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    d_nngp: np.ndarray | None
    d_ntk: np.ndarray | None
    parameters: tuple

    def derivative(self, name: str, get: str = "ntk") -> np.ndarray:
        """∂K/∂p for one parameter name, e.g. ``derivative("layers[0].w_std", "nngp")``."""
        if name not in self.parameters:
            raise KeyError(f"Unknown parameter {name!r}; the parameters are {list(self.parameters)}.")
        arr = self.d_nngp if get == "nngp" else self.d_ntk
        if arr is None:
            raise KeyError(f"The derivatives of {get!r} were not computed; pass get={get!r}.")
        return arr[self.parameters.index(name)]


def trainable_layers(arch) -> list:
    """Indices of the layers with trainable w_std and b_std (Dense and Conv), in order."""
    return [i for i, layer in enumerate(arch) if is_trainable(layer)]


#: The former name, from when Dense was the only layer with parameters.
dense_layers = trainable_layers


def parameter_names(arch) -> tuple:
    """Names of the differentiable parameters: w_std and b_std of each Dense and Conv layer."""
    names = []
    for i in trainable_layers(arch):
        names += [f"layers[{i}].w_std", f"layers[{i}].b_std"]
    return tuple(names)


def _step_params(steps) -> list:
    """Per step (w_std, b_std, index of ∂/∂w_std, index of ∂/∂b_std), or None without parameters.
    Trainable steps come in the order of :func:`trainable_layers` (compile keeps the order)."""
    out, j = [], 0
    for step in steps:
        if step.trainable:
            out.append((step.w_std, step.b_std, 2 * j, 2 * j + 1))
            j += 1
        else:
            out.append(None)
    return out


def _row_ids(X1: np.ndarray, X2: np.ndarray | None):
    """Integer ids such that two rows have the same id iff they are identical."""
    stacked = X1 if X2 is None else np.concatenate([X1, X2])
    view = np.ascontiguousarray(stacked + 0.0)  # + 0.0 maps -0.0 to 0.0
    _, ids = np.unique(view, axis=0, return_inverse=True)
    ids = ids.ravel()
    n1 = X1.shape[0]
    return ids[:n1], (ids[:n1] if X2 is None else ids[n1:])


def _point_states(steps, partials, dense_params, q0: np.ndarray, P: int):
    """Per-point (q, dq) entering each step; dq has shape (P, n)."""
    q = q0.copy()
    dq = np.zeros((P, q.size))
    states = []
    for step, part, params in zip(steps, partials, dense_params):
        states.append((q, dq))
        if params is not None:
            w, b, pw, pb = params
            dq = step.w2 * dq
            dq[pw] += 2.0 * w * q
            dq[pb] += 2.0 * b
            q = step.w2 * q + step.b2
        else:
            pp = part.point(q)
            dq = pp.dV[None, :] * dq
            q = pp.V
    return states


def kernel_gradients(kernel, X1, X2=None, *, get=("nngp", "ntk")) -> KernelGradients:
    r"""Σ, Θ and their derivatives with respect to each Dense and Conv layer's w_std and b_std.

    Parameters
    ----------
    kernel : CompiledKernel, Architecture or str
        A compiled kernel or a description that :func:`~ntk_infinite.compile` accepts.
    X1 : (n1, d) array_like, or (n1, S₁, …, S_k, C) images for a convolutional architecture
    X2 : (n2, d) array_like or images, optional
        Defaults to X1.
    get : {"nngp", "ntk"} or tuple of them

    Returns
    -------
    KernelGradients

    Notes
    -----
    Forward mode, one tangent per parameter, through the recursion

    .. math::

        dc \leftarrow T_{q_1} dq_1 + T_{q_2} dq_2 + T_c\, dc, \qquad
        d\Theta \leftarrow \dot T\, d\Theta + d\dot T\, \Theta,

    (chain rule on the recursion of Lee et al. 2019). Pairs of identical inputs follow
    the per-point recursion, where ∂Ṫ/∂c is singular.

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> from ntk_infinite.evaluate.gradients import kernel_gradients
    >>> g = kernel_gradients("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)", np.eye(3))
    >>> g.parameters
    ('layers[0].w_std', 'layers[0].b_std', 'layers[2].w_std', 'layers[2].b_std')
    >>> g.d_ntk.shape
    (4, 3, 3)
    """
    want_nngp, want_ntk = parse_get(get)
    compiled = kernel if isinstance(kernel, CompiledKernel) else compile(kernel)
    _check_differentiable(compiled)
    X1 = compiled.check_inputs(X1, "X1")  # (n, d) rows or (n, S₁, …, S_k, C) images
    X2 = None if X2 is None else compiled.check_inputs(X2, "X2", like=X1)
    if compiled.spatial:
        return _spatial_kernel_gradients(compiled, X1, X2, want_nngp, want_ntk)
    return _dense_kernel_gradients(compiled, X1, X2, want_nngp, want_ntk)


def _check_differentiable(compiled) -> None:
    """The derivative recursion covers serial NTK-parameterised Dense/Conv networks."""
    for step in compiled.program.steps:
        if step.role in ("fork", "join", "norm") or getattr(step, "fan_in", 0):
            raise ArchitectureError(
                "Kernel derivatives with respect to w_std and b_std cover serial, NTK-parameterised networks; this "
                "architecture has parallel branches, LayerNorm or standard parameterisation. Select its "
                "hyperparameters by a grid search (nk.select with method='grid'), or differentiate by finite "
                "differences of nk.compile(...)(X)."
            )


def _dense_kernel_gradients(compiled, X1, X2, want_nngp, want_ntk) -> KernelGradients:
    """:func:`kernel_gradients` of a dense architecture, rows in blocks of bounded memory."""
    symmetric = X2 is None
    Xb = X1 if symmetric else X2
    d = X1.shape[1]
    steps = compiled.program.steps
    names = parameter_names(compiled.architecture)
    P = len(names)
    dense_params = _step_params(steps)
    partials = [dual_partials(step) if step.role == "activation" else None for step in steps]
    ids1, ids2 = _row_ids(X1, None if symmetric else X2)
    q01 = np.einsum("ij,ij->i", X1, X1) / d
    q02 = q01 if symmetric else np.einsum("ij,ij->i", Xb, Xb) / d
    pts1 = _point_states(steps, partials, dense_params, q01, P)
    pts2 = pts1 if symmetric else _point_states(steps, partials, dense_params, q02, P)

    n1, n2 = X1.shape[0], Xb.shape[0]
    S = np.empty((n1, n2))
    dS = np.empty((P, n1, n2)) if want_nngp else None
    Th = np.empty((n1, n2)) if want_ntk else None
    dTh = np.empty((P, n1, n2)) if want_ntk else None
    block = max(1, _BLOCK_ELEMENTS // max(1, P * n2))
    for start in range(0, n1, block):
        rows = slice(start, min(n1, start + block))
        res = _pair_block(X1[rows], Xb, d, ids1[rows], ids2, steps, partials, dense_params,
                          [(q[rows], dq[:, rows]) for q, dq in pts1], pts2, P, want_ntk)
        S[rows] = res[0]
        if want_nngp:
            dS[:, rows] = res[1]
        if want_ntk:
            Th[rows], dTh[:, rows] = res[2], res[3]
    return _result(S, dS, Th, dTh, names, want_nngp)


def _result(S, dS, Th, dTh, names, want_nngp) -> KernelGradients:
    for arr in (S, dS, Th, dTh):
        if arr is not None and not np.isfinite(arr).all():  # pragma: no cover - defensive
            raise FloatingPointError(
                "The kernel derivatives overflowed or are undefined for these inputs; check for huge inputs or "
                "parameters (the recursion stays finite for moderate scales)."
            )
    return KernelGradients(S if want_nngp else None, Th, dS if want_nngp else None, dTh, names)


def _spatial_kernel_gradients(compiled, X1, X2, want_nngp, want_ntk) -> KernelGradients:
    """:func:`kernel_gradients` of a convolutional architecture (:mod:`.spatial_gradients`)."""
    from .spatial_gradients import _Recursion, spatial_gradients

    symmetric = X2 is None
    n1, C = X1.shape[0], X1.shape[-1]
    F1 = X1.reshape(n1, -1, C)
    F2 = F1 if symmetric else X2.reshape(X2.shape[0], -1, C)
    plan = compiled.program.plan(X1.shape[1:-1])
    steps = compiled.program.steps
    names = parameter_names(compiled.architecture)
    rec = _Recursion(steps, plan.maps, _step_params(steps), len(names))
    ids1, ids2 = _row_ids(F1.reshape(n1, -1), None if symmetric else F2.reshape(F2.shape[0], -1))
    p_max = max(math.prod(shape) for shape in plan.shapes)
    S, dS, Th, dTh = spatial_gradients(rec, F1, F2, ids1, ids2, symmetric, want_ntk, p_max)
    return _result(S, dS, Th, dTh, names, want_nngp)


def _pair_block(X1, X2, d, id1, id2, steps, partials, dense_params, pts1, pts2, P, want_ntk):
    same = id1[:, None] == id2[None, :]
    c = X1 @ X2.T / d
    q1_0 = pts1[0][0]
    c[same] = np.broadcast_to(q1_0[:, None], c.shape)[same]
    dc = np.zeros((P,) + c.shape)
    theta = np.zeros(c.shape) if want_ntk else None
    dtheta = np.zeros((P,) + c.shape) if want_ntk else None
    for s, step in enumerate(steps):
        q1, dq1 = pts1[s]
        q2, dq2 = pts2[s]
        if dense_params[s] is not None:
            w, b, pw, pb = dense_params[s]
            dc *= step.w2
            dc[pw] += 2.0 * w * c
            dc[pb] += 2.0 * b
            c = step.w2 * c + step.b2
            if want_ntk:
                dtheta *= step.w2
                dtheta[pw] += 2.0 * w * theta
                dtheta += dc
                theta = step.w2 * theta + c
        else:
            pp = partials[s].pair(step, q1, q2, c, same)
            dT = pp.T_q1 * dq1[:, :, None] + pp.T_q2 * dq2[:, None, :] + pp.T_c * dc
            if want_ntk:
                dTd = pp.Td_q1 * dq1[:, :, None] + pp.Td_q2 * dq2[:, None, :] + pp.Td_c * dc
                dtheta = pp.Td * dtheta + dTd * theta
                theta = pp.Td * theta
            dc, c = dT, pp.T
    return c, dc, theta, dtheta
