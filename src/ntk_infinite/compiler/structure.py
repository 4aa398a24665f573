"""The architecture rules, and the layout of a (possibly branched) architecture as one sequence
of steps in data-flow order.

:func:`validate` walks the tree once, carrying what the infinite-width recursion needs to know
of the state flowing through each layer (:class:`_Stream`):

* an activation or LayerNorm acts on zero-mean Gaussian pre-activations: an affine layer
  (Dense, Conv) since the last activation, possibly followed by linear layers (AvgPool, a
  readout, LayerNorm, sums of such);
* FanInSum adds covariances, which is the covariance of the sum only for independent branches:
  every summed branch must be Gaussian, and all but at most one must end in a *fresh* affine
  layer of its own (independent zero-mean weights make the cross-covariances vanish; Novak et
  al. 2020 make the same assumption);
* after FanInConcat the channels of different branches have different covariances, so an
  affine layer must mix them before any activation or LayerNorm;
* a standard-parameterisation layer needs its fan-in: the previous affine layer's width, or
  the data for the first one;
* spatial layers come before the one readout of a spatial network, Dense layers after it,
  pooling and readouts stay outside parallel branches, and the network ends in a Dense readout.

:func:`layout_steps` turns the tree into the flat step sequence the evaluation runs:
``FanOut(n), parallel(b₁ … bₙ), FanIn…`` becomes ``Fork, b₁ steps, Join₀, b₂ steps, Join₁, …``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..describe.branching import FAN_INS, FanInConcat, FanOut, Parallel
from ..describe.layers import Architecture, Dense
from ..describe.spatial import AvgPool, Conv, Flatten, GlobalAvgPool, SpatialLayer
from ..errors import ArchitectureError
from .steps import FAN_IN_DATA, ForkStep, JoinStep, compile_step, role_of

__all__ = ["validate", "layout_steps", "is_branched"]

#: Fan-in marker of the data (the first layer's inputs).
_DATA = "data"


@dataclass(frozen=True)
class _Stream:
    """What the rules know of the state at one point of the network.

    ``fresh`` is the nesting level of the last affine layer not followed by a nonlinearity
    (−1: none): a branch of a fork at level k is independent of its siblings when fresh > k.
    ``width`` is the declared channel count (``_DATA`` for the inputs, None when unknown)."""

    gaussian: bool = False
    fresh: int = -1
    mixed: bool = False
    width: object = _DATA
    readout_at: object = None
    last: object = None


def is_branched(arch: Architecture) -> bool:
    return any(isinstance(layer, (FanOut, Parallel) + FAN_INS) for layer in arch.walk()) or arch.branched


def validate(arch: Architecture) -> None:
    """Raise :class:`~ntk_infinite.errors.ArchitectureError` when ``arch`` breaks a rule (see
    the module docstring); the message says which layer, why, and how to restructure."""
    if len(arch) == 0:
        raise ArchitectureError("The architecture is empty; it needs at least a Dense readout layer, e.g. serial(Dense()).")
    spatial = any(isinstance(layer, SpatialLayer) for layer in arch.walk())
    stream = _walk(arch, _Stream(), spatial, level=0, where="")
    if spatial and stream.readout_at is None:
        raise ArchitectureError(
            "This convolutional architecture has no readout: add nk.Flatten() or nk.GlobalAvgPool() after the last "
            "spatial layer and before the Dense readout."
        )
    if not isinstance(arch[-1], Dense):
        raise ArchitectureError(
            f"The architecture must end in a Dense readout layer; it ends in {arch[-1]!r}. "
            "Append nk.Dense(w_std=..., b_std=...) as the last layer."
        )
    ranks = {layer.ndim for layer in arch.walk() if isinstance(layer, (Conv, AvgPool))}
    if len(ranks) > 1:
        raise ArchitectureError(
            f"The convolution and pooling layers disagree on the number of spatial axes ({sorted(ranks)}); give every "
            "filter_shape and window_shape the same length (e.g. (3, 3) for images)."
        )


def _walk(arch: Architecture, stream: _Stream, spatial: bool, level: int, where: str) -> _Stream:
    layers = arch.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        at = f"{where}position {i}"
        if isinstance(layer, FanOut):
            stream = _walk_block(layers, i, stream, spatial, level, where)
            i += 3
            continue
        if isinstance(layer, Parallel) or isinstance(layer, FAN_INS):
            raise ArchitectureError(
                f"{layer!r} at {at} has no FanOut before it: a parallel block is written "
                "FanOut(n) > [branch | ... | branch] > FanInSum (or FanInConcat), with n branches."
            )
        stream = _layer_rule(layer, stream, spatial, level, at)
        i += 1
    return stream


def _walk_block(layers, i, stream, spatial, level, where) -> _Stream:
    """The rules of ``FanOut(n), parallel(...), FanIn...`` starting at ``layers[i]``."""
    fan_out = layers[i]
    block = layers[i + 1] if i + 1 < len(layers) else None
    fan_in = layers[i + 2] if i + 2 < len(layers) else None
    at = f"{where}position {i}"
    if not isinstance(block, Parallel) or not isinstance(fan_in, FAN_INS):
        raise ArchitectureError(
            f"{fan_out!r} at {at} must be followed by a parallel block and a fan-in: "
            f"FanOut({fan_out.num}) > [branch | ... | branch] > FanInSum (or FanInConcat); got "
            f"{'nothing' if block is None else repr(block)}"
            f"{'' if block is None else ' then ' + ('nothing' if fan_in is None else repr(fan_in))}."
        )
    if len(block.branches) != fan_out.num:
        raise ArchitectureError(
            f"{fan_out!r} at {at} makes {fan_out.num} copies but the parallel block after it has "
            f"{len(block.branches)} branches; give FanOut the number of branches."
        )
    start = replace(stream, fresh=min(stream.fresh, level))
    ends = [_walk(branch, start, spatial, level + 1, f"{where}branch {b} at position {i + 1}, ")
            for b, branch in enumerate(block.branches)]
    if isinstance(fan_in, FanInConcat):
        return _concat_rule(ends, fan_in, stream, f"{where}position {i + 2}")
    return _sum_rule(ends, fan_in, stream, level, f"{where}position {i + 2}")


def _sum_rule(ends, fan_in, stream, level, at) -> _Stream:
    not_gaussian = [b for b, end in enumerate(ends) if not end.gaussian or end.mixed]
    if not_gaussian:
        b = not_gaussian[0]
        raise ArchitectureError(
            f"FanInSum at {at} sums branch {b}, whose output is not a zero-mean Gaussian pre-activation (it ends "
            f"after {ends[b].last!r}): the infinite-width sum needs Gaussian branches. End every branch with a Dense "
            "or Conv (followed only by pooling or LayerNorm), or move the activation after the FanInSum."
        )
    shared = [b for b, end in enumerate(ends) if end.fresh <= level]
    if len(shared) > 1:
        raise ArchitectureError(
            f"FanInSum at {at} sums branches {shared}, which have no Dense or Conv of their own since the FanOut: "
            "they carry the same pre-activations, and the sum of their kernels is not the kernel of their sum. "
            "Put a Dense/Conv at the end of each branch but one (as in Residual(block): the block and the identity)."
        )
    widths = {end.width for end in ends if isinstance(end.width, int)}
    if len(widths) > 1:
        raise ArchitectureError(
            f"FanInSum at {at} adds branches of different declared widths {sorted(widths)}: a sum needs equal shapes. "
            "Give the last Dense/Conv of every branch the same width/channels."
        )
    width = widths.pop() if widths else (_DATA if any(end.width == _DATA for end in ends) else None)
    return replace(ends[0], gaussian=True, fresh=min(end.fresh for end in ends), mixed=False, width=width,
                   last=fan_in)


def _concat_rule(ends, fan_in, stream, at) -> _Stream:
    widths = [end.width for end in ends]
    known = [w for w in widths if isinstance(w, int)]
    if known and len(known) < len(widths):
        shown = [w if isinstance(w, int) else None for w in widths]
        raise ArchitectureError(
            f"FanInConcat at {at} joins branches of widths {shown}: the weights of a concatenation are the channel "
            "shares, so either every branch declares its width (its last Dense/Conv's width/channels) or none does "
            "(then all count alike, the limit of equal widths)."
        )
    width = sum(known) if len(known) == len(widths) else None
    return replace(ends[0], gaussian=all(end.gaussian for end in ends), fresh=min(end.fresh for end in ends),
                   mixed=len(ends) > 1, width=width, last=fan_in)


def _layer_rule(layer, stream: _Stream, spatial: bool, level: int, at: str) -> _Stream:
    """The stream after one (non-branching) layer, or an ArchitectureError."""
    role = role_of(layer)
    if role is None:
        return stream
    affine_name = "Conv or Dense" if spatial else "Dense"
    if role in ("activation", "norm") and stream.mixed:
        raise ArchitectureError(
            f"{layer!r} at {at} comes right after a FanInConcat: the concatenated channels have different covariances, "
            f"so the infinite-width recursion needs an affine layer ({affine_name}) to mix them first. Insert a "
            f"{affine_name} after FanInConcat."
        )
    if role in ("activation", "norm") and not stream.gaussian:
        where = "at the start" if stream.last is None else f"right after {stream.last!r}"
        raise ArchitectureError(
            f"{layer!r} at {at} comes {where}, but {'an activation' if role == 'activation' else 'LayerNorm'} needs "
            f"an affine layer ({affine_name}) before it: the infinite-width recursion acts on Gaussian "
            f"pre-activations. Insert a {affine_name} layer before it (or merge consecutive activations into one "
            "Activation)."
        )
    if level > 0 and isinstance(layer, (AvgPool, GlobalAvgPool, Flatten)):
        raise ArchitectureError(
            f"{layer!r} at {at} is inside a parallel branch: pooling and readouts of a convolutional network act on "
            "the whole state, outside branches. Move it before the FanOut or after the FanIn (or use a strided Conv "
            "in the branch)."
        )
    if isinstance(layer, SpatialLayer) and stream.readout_at is not None:
        raise ArchitectureError(
            f"{layer!r} at {at} comes after the readout {stream.readout_at[1]!r} at {stream.readout_at[0]}, "
            "where the state has no spatial axes left. Put convolutions and pooling before Flatten/GlobalAvgPool."
        )
    if isinstance(layer, Dense) and spatial and stream.readout_at is None:
        raise ArchitectureError(
            f"Dense at {at} is applied to a spatial state (it comes before any Flatten or GlobalAvgPool). "
            "Insert nk.Flatten() or nk.GlobalAvgPool() before it, or use a Conv with filter_shape of ones "
            "for a per-position dense layer."
        )
    if role == "affine":
        _check_fan_in(layer, stream, at)
        width = layer.width if isinstance(layer, Dense) else layer.channels
        return replace(stream, gaussian=True, fresh=level, mixed=False, width=width, last=layer)
    readout_at = (at, layer) if role == "readout" else stream.readout_at
    if role == "activation":
        return replace(stream, gaussian=False, fresh=-1, readout_at=readout_at, last=layer)
    return replace(stream, readout_at=readout_at, last=layer)


def _check_fan_in(layer, stream: _Stream, at: str) -> None:
    if getattr(layer, "parameterization", "ntk") != "standard" or stream.width is not None:
        return
    prev = stream.last
    raise ArchitectureError(
        f"{layer!r} at {at} uses standard parameterisation, whose NTK depends on the layer's fan-in, but the width "
        f"of its input is not declared (it comes after {prev!r}). Give the previous Dense a width (Dense(..., "
        "width=512)) or the previous Conv its channels, or use parameterization='ntk'."
    )


def layout_steps(arch: Architecture, tol: float) -> list:
    """The compiled steps of ``arch`` in data-flow order (Identity compiles to nothing)."""
    steps: list = []
    _layout(arch, tol, steps, level=0, width=FAN_IN_DATA)
    return steps


def _layout(arch, tol, steps, level, width):
    """Append the steps of ``arch``; returns the declared width of its output (FAN_IN_DATA for
    the inputs, 0 when unknown), which a standard-parameterisation layer reads as its fan-in."""
    layers = arch.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, FanOut):
            block, fan_in = layers[i + 1], layers[i + 2]
            num = len(block.branches)
            steps.append(ForkStep(level, num))
            widths, joins = [], []
            for b, branch in enumerate(block.branches):
                widths.append(_layout(branch, tol, steps, level + 1, width))
                joins.append(len(steps))
                steps.append(None)  # the join, once every branch's width is known
            mode = "concat" if isinstance(fan_in, FanInConcat) else "sum"
            weights = _concat_weights(widths) if mode == "concat" else [1.0] * num
            for b, (pos, w) in enumerate(zip(joins, weights)):
                steps[pos] = JoinStep(level, b, num, mode, w)
            width = _joined_width(widths, mode)
            i += 3
            continue
        step = compile_step(layer, tol) if not isinstance(layer, (Dense, Conv)) else _affine_step(layer, tol, width)
        if step is not None:
            steps.append(step)
        if isinstance(layer, Dense):
            width = layer.width or 0
        elif isinstance(layer, Conv):
            width = layer.channels or 0
        i += 1
    return width


def _affine_step(layer, tol, width):
    step = compile_step(layer, tol)
    return replace(step, fan_in=width) if layer.parameterization == "standard" else step


def _concat_weights(widths) -> list:
    known = [w for w in widths if w > 0]
    if len(known) == len(widths) and len(set(known)) > 1:
        total = float(sum(known))
        return [w / total for w in known]
    return [1.0 / len(widths)] * len(widths)


def _joined_width(widths, mode):
    if mode == "concat":
        return sum(widths) if all(w > 0 for w in widths) else 0
    known = [w for w in widths if w > 0]
    return known[0] if known else (FAN_IN_DATA if FAN_IN_DATA in widths else 0)
