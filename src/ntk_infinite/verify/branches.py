r"""Finite-network ops for branches and normalisation, and the passes over a sequence of ops.

A network is a *sequence* of ops; a parallel block (``FanOut(n), parallel(…), FanIn…``) is one
:class:`ParallelOp` holding a sequence per branch. The passes recurse into it:

* forward: every branch runs on the same input; FanInSum adds the outputs, FanInConcat
  concatenates their channels (the last axis);
* backward: the output sensitivity goes to every branch (FanInSum) or is split by channels
  (FanInConcat), and the input sensitivity is the sum over branches;
* tangent: the same for forward tangents.

:class:`LayerNormOp` normalises each sample (and position) over its channels,
:math:`y = (h - \bar h)/\sqrt{\operatorname{var} h + \epsilon}` (Ba et al. 2016), with the exact
backward map :math:`\delta_h = (\delta_y - \overline{\delta_y} - y\,\overline{\delta_y y})/\sqrt{\operatorname{var} h+\epsilon}`
(the Jacobian is symmetric, so the tangent map is the same).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ParallelOp", "LayerNormOp", "forward_sequence", "backward_sequence", "tangent_sequence"]


class LayerNormOp:
    """LayerNorm over the last (channel) axis."""

    n_params = 0

    def __init__(self, index: int, shape: tuple, layer):
        self.index, self.layer = index, layer
        self.in_shape = self.out_shape = tuple(shape)
        self.eps = layer.eps

    def _normalised(self, h):
        mean = h.mean(axis=-1, keepdims=True)
        centred = h - mean
        inv = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.eps)
        return centred * inv, inv

    def forward(self, theta, h):
        return self._normalised(h)[0]

    def _pullback(self, y, inv, d):
        """The Jacobian of LayerNorm at (y, inv) applied to d (same trailing shape as y)."""
        d_mean = d.mean(axis=-1, keepdims=True)
        proj = (d * y).mean(axis=-1, keepdims=True)
        return (d - d_mean - y * proj) * inv

    def backward(self, theta, h, delta):
        y, inv = self._normalised(h)
        return self._pullback(y[:, None], inv[:, None], delta)

    def tangent(self, theta, v, h, dh):
        y, inv = self._normalised(h)
        return y, self._pullback(y, inv, dh)


class ParallelOp:
    """FanOut(n), parallel(b₁ … bₙ), FanInSum/FanInConcat: ``branches`` are op sequences."""

    n_params = 0

    def __init__(self, index: int, in_shape: tuple, branches: list, concat: bool):
        self.index, self.branches, self.concat = index, branches, concat
        self.in_shape = tuple(in_shape)
        outs = [seq[-1].out_shape if seq else self.in_shape for seq in branches]
        self._splits = None
        if concat:
            widths = [shape[-1] for shape in outs]
            self.out_shape = (*outs[0][:-1], sum(widths))
            self._splits = np.cumsum(widths)[:-1]
        else:
            self.out_shape = outs[0]

    def forward_keep(self, theta, h, keep: bool):
        """(output, cache): the cache holds each branch's own cache."""
        results = [forward_sequence(seq, theta, h, keep) for seq in self.branches]
        outs = [out for out, _ in results]
        out = np.concatenate(outs, axis=-1) if self.concat else sum(outs[1:], outs[0].copy())
        return out, [cache for _, cache in results]

    def backward_all(self, theta, caches, delta):
        """Generator over the branches' parametrised ops (see :func:`backward_sequence`);
        returns the sensitivity of the block's input."""
        parts = np.split(delta, self._splits, axis=-1) if self.concat else [delta] * len(self.branches)
        total = None
        for seq, cache, part in zip(self.branches, caches, parts):
            d_in = yield from backward_sequence(seq, theta, cache, part)
            total = d_in if total is None else total + d_in
        return total

    def tangent(self, theta, v, h, dh):
        results = [tangent_sequence(seq, theta, v, h, dh) for seq in self.branches]
        if self.concat:
            return (np.concatenate([r[0] for r in results], axis=-1), np.concatenate([r[1] for r in results], axis=-1))
        return sum(r[0] for r in results), sum(r[1] for r in results)


def forward_sequence(ops, theta, h, keep: bool, stop=None):
    """Outputs of ``ops`` on ``h`` and, with ``keep``, per op the cache its backward pass
    reads (its input; for a parallel block, its branches' caches). With ``stop`` (an op of
    this sequence), the input of that op instead of the outputs."""
    cache = []
    for op in ops:
        if op is stop:
            return h, cache
        if isinstance(op, ParallelOp):
            h, inner = op.forward_keep(theta, h, keep)
            if keep:
                cache.append(inner)
            continue
        if keep:
            cache.append(h)
        h = op.forward(theta, h)
    return h, cache


def backward_sequence(ops, theta, cache, delta, need_input: bool = True):
    """Backpropagate ``delta`` (n, m, *out_shape) through ``ops``: yields ``(op, h_in,
    delta_out)`` for each parametrised op, from the output backwards, and returns the
    sensitivity of the sequence's input (None when ``need_input`` is False and the first op
    is reached: the network's inputs need none)."""
    for i in range(len(ops) - 1, -1, -1):
        op, stored = ops[i], cache[i]
        if isinstance(op, ParallelOp):
            delta = yield from op.backward_all(theta, stored, delta)
            continue
        if op.n_params:
            yield op, stored, delta
        if i == 0 and not need_input:
            return None
        delta = op.backward(theta, stored, delta)
    return delta


def tangent_sequence(ops, theta, v, h, dh):
    for op in ops:
        h, dh = op.tangent(theta, v, h, dh)
    return h, dh
