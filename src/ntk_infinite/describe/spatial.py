r"""Spatial layers: convolution, pooling and the readouts that end a spatial network.

Inputs of a spatial network are shaped as in neural-tangents, channels last:
``(n, L, C)`` in 1-D, ``(n, H, W, C)`` (NHWC) in 2-D, ``(n, S₁, …, S_k, C)`` in k-D. The
conventions (docs/DESIGN.md, "Spatial layers"; Novak et al. 2019, Arora et al. 2019) are
neural-tangents 0.6.5's, so values are comparable:

* :class:`Conv` sums the same filter offset on both positions and divides by the filter
  size; SAME pads as XLA does (the smaller half before), CIRCULAR wraps around.
* :class:`AvgPool` averages a window on each position independently (divisor: the window
  size, also at SAME-padded edges).
* :class:`Flatten` and :class:`GlobalAvgPool` turn the position-pair state into one number
  per pair: the mean of the same-position entries, and the mean over all position pairs.

Like every layer these are frozen values; :func:`ntk_infinite.compile` does the work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ArchitectureError, ParameterError, check_param
from .layers import MAX_STD, Layer, check_parameterization, register_layer

__all__ = ["SpatialLayer", "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "PADDINGS", "MAX_WINDOW"]

#: Padding modes of Conv and AvgPool (neural-tangents' names; CIRCULAR wraps around).
PADDINGS = ("VALID", "SAME", "CIRCULAR")
#: Largest filter/window edge and stride: far beyond any image, small enough that index
#: tables stay tiny.
MAX_WINDOW = 4096


class SpatialLayer(Layer):
    """Base class of the layers that act on (or end) the spatial axes."""

    #: True for the layers that turn the spatial state into one number per pair.
    readout: ClassVar[bool] = False


def _shape_tuple(owner: str, name: str, value, *, allow_none: bool = False):
    """A tuple of positive ints (one per spatial axis) from an int or a sequence of them."""
    if value is None and allow_none:
        return None
    expected = (f"The {name!r} parameter of {owner} must be a positive integer or a tuple of them, one per "
                "spatial axis")
    if isinstance(value, bool):
        raise TypeError(f"{expected}. Got {value!r} of type bool instead.")
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{expected}, e.g. (3, 3). Got {value!r} of type {type(value).__name__} instead.")
    if len(value) == 0:
        raise ParameterError(f"{expected}; got an empty tuple. Pass e.g. (3, 3) for a 2-D layer.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{expected}. Got {tuple(value)!r}, whose entry {v!r} is a {type(v).__name__}.")
        if not 1 <= v <= MAX_WINDOW:
            raise ParameterError(f"{expected}, each in [1, {MAX_WINDOW}]. Got {tuple(value)!r} instead; "
                                 "every filter, window and stride must be at least 1.")
        out.append(int(v))
    return tuple(out)


def _padding(owner: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"The 'padding' parameter of {owner} must be one of {PADDINGS}. Got {value!r} of type "
                        f"{type(value).__name__} instead.")
    upper = value.upper()
    if upper not in PADDINGS:
        raise ParameterError(f"The 'padding' parameter of {owner} must be one of {PADDINGS}. Got {value!r} instead.")
    return upper


def _normalise_window(layer, window_field: str) -> None:
    """Validate and store a window layer's window, strides and padding as canonical values."""
    owner = type(layer).__name__
    window = _shape_tuple(owner, window_field, getattr(layer, window_field))
    strides = _shape_tuple(owner, "strides", layer.strides, allow_none=True)
    _check_strides(owner, window, strides)
    object.__setattr__(layer, window_field, window)
    object.__setattr__(layer, "strides", strides)
    object.__setattr__(layer, "padding", _padding(owner, layer.padding))


def _check_strides(owner: str, window: tuple, strides):
    if strides is not None and len(strides) != len(window):
        raise ParameterError(
            f"{owner} has {len(window)} spatial axes in its window {window} but {len(strides)} in strides={strides}; "
            "give one stride per axis (or strides=None for all ones)."
        )


@register_layer
@dataclass(frozen=True, kw_only=True)
class Conv(SpatialLayer):
    r"""Convolution in NTK parameterisation (Novak et al. 2019; Arora et al. 2019).

    Finite network: :math:`z = \frac{\sigma_w}{\sqrt{C_{in}\,|k|}}\,\mathrm{conv}(h, W) + \sigma_b b`
    with standard normal ``W`` (filter…, C_in, C_out) and ``b``. In the infinite-width limit,
    for each output position pair (a, a') and filter offsets o:

    .. math::

        \tilde K[a, a'] = \frac{1}{|k|}\sum_o K[a s + o - p_{lo},\; a' s + o - p_{lo}],
        \qquad \Sigma \leftarrow \sigma_w^2 \tilde K(\Sigma) + \sigma_b^2,
        \qquad \Theta \leftarrow \sigma_w^2 \tilde K(\Theta) + \Sigma_{\text{new}},

    entries outside the input being 0 (SAME) or wrapped around (CIRCULAR).

    Parameters
    ----------
    filter_shape : int or tuple of int
        Filter size per spatial axis; its length sets the number of spatial axes.
    strides : tuple of int or None
        Stride per axis (None: all ones).
    padding : {"VALID", "SAME", "CIRCULAR"}
    w_std, b_std : float in [0, MAX_STD]
    channels : int or None
        Output channels of a finite network built from this description. The analytic kernels
        ignore it in NTK parameterisation; in standard parameterisation the next layer's NTK
        depends on it.
    parameterization : {"ntk", "standard"}
        ``"standard"``: the weights themselves are trained, :math:`W \sim N(0, \sigma_w^2/(C_{in}|k|))`,
        :math:`b \sim N(0, \sigma_b^2)`; Σ is unchanged and
        :math:`\Theta \leftarrow C_{in}|k|\,\tilde K(\Sigma_{in}) + \sigma_w^2\tilde K(\Theta) + [\sigma_b > 0]`
        (neural-tangents' ``parameterization="standard"``; ``b_std = 0`` means no bias), with
        :math:`C_{in}` the previous Conv's ``channels`` or the data's channel count.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> nk.Conv(filter_shape=(3, 3), padding="same", w_std=1.5)
    Conv(filter_shape=(3, 3), strides=None, padding='SAME', w_std=1.5, b_std=0.0, channels=None)
    """

    filter_shape: tuple = (3, 3)
    strides: tuple | None = None
    padding: str = "VALID"
    w_std: float = 1.0
    b_std: float = 0.0
    channels: int | None = None
    parameterization: str = "ntk"

    def __post_init__(self):
        _normalise_window(self, "filter_shape")
        for name in ("w_std", "b_std"):
            object.__setattr__(self, name, check_param("Conv", name, getattr(self, name), low=0.0, high=MAX_STD))
        if self.channels is not None:
            object.__setattr__(self, "channels", check_param("Conv", "channels", self.channels, low=1, integer=True))
        object.__setattr__(self, "parameterization", check_parameterization("Conv", self.parameterization))

    def __repr__(self):
        extra = "" if self.parameterization == "ntk" else f", parameterization={self.parameterization!r}"
        return (f"Conv(filter_shape={self.filter_shape!r}, strides={self.strides!r}, padding={self.padding!r}, "
                f"w_std={self.w_std!r}, b_std={self.b_std!r}, channels={self.channels!r}{extra})")

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.filter_shape)


@register_layer
@dataclass(frozen=True, kw_only=True)
class AvgPool(SpatialLayer):
    r"""Average pooling over a window (Novak et al. 2019): a fixed linear map, applied to
    each position of the pair independently,

    .. math::

        \tilde K[a, a'] = \frac{1}{|w|^2}\sum_{o, o'} K[a s + o - p_{lo},\; a' s + o' - p_{lo}],

    for Σ and Θ alike. The divisor is the full window size, also where a SAME window
    overhangs the edge (neural-tangents' ``normalize_edges=False``).

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> nk.AvgPool(window_shape=(2, 2), strides=(2, 2))
    AvgPool(window_shape=(2, 2), strides=(2, 2), padding='VALID')
    """

    window_shape: tuple = (2, 2)
    strides: tuple | None = None
    padding: str = "VALID"

    def __post_init__(self):
        _normalise_window(self, "window_shape")

    @property
    def ndim(self) -> int:
        return len(self.window_shape)


@register_layer
@dataclass(frozen=True)
class GlobalAvgPool(SpatialLayer):
    r"""Readout: the mean over all positions, :math:`K \leftarrow \frac{1}{P^2}\sum_{p, p'} K[p, p']`
    (Novak et al. 2019; Arora et al. 2019's CNTK-GAP)."""

    readout: ClassVar[bool] = True


@register_layer
@dataclass(frozen=True)
class Flatten(SpatialLayer):
    r"""Readout: the positions become features, :math:`K \leftarrow \frac{1}{P}\sum_p K[p, p]`
    (a Dense layer after it sees P·C inputs; Novak et al. 2019's CNN-GP without pooling)."""

    readout: ClassVar[bool] = True


def output_size(n_in: int, window: int, stride: int, padding: str) -> int:
    """Output length of one spatial axis (XLA's rule): VALID ⌊(n − k)/s⌋ + 1, SAME and
    CIRCULAR ⌈n/s⌉; 0 when a VALID window is larger than the input."""
    if padding == "VALID":
        return max((n_in - window) // stride + 1, 0)
    return -(-n_in // stride)


def pad_low(n_in: int, window: int, stride: int, padding: str) -> int:
    """Padding before the first input position: ⌊pad_total/2⌋ (XLA places the smaller half first)."""
    if padding == "VALID":
        return 0
    out = output_size(n_in, window, stride, padding)
    return max((out - 1) * stride + window - n_in, 0) // 2


def spatial_output_shape(layer, shape: tuple) -> tuple:
    """Spatial shape after a Conv or AvgPool on inputs of spatial shape ``shape``.

    Raises :class:`ArchitectureError` when the layer's axes do not match, or when a VALID
    window is larger than the input (the output would be empty).
    """
    window = layer.filter_shape if isinstance(layer, Conv) else layer.window_shape
    if len(window) != len(shape):
        raise ArchitectureError(
            f"{layer!r} has {len(window)} spatial axes but its input has {len(shape)} (spatial shape {shape}); "
            f"give it a {len(shape)}-D {'filter_shape' if isinstance(layer, Conv) else 'window_shape'}."
        )
    strides = layer.strides or (1,) * len(window)
    out = tuple(output_size(n, k, s, layer.padding) for n, k, s in zip(shape, window, strides))
    if any(o == 0 for o in out):
        raise ArchitectureError(
            f"{layer!r} on spatial shape {shape} gives an empty output {out}: a VALID window of {window} does not "
            "fit. Use padding='SAME', a smaller window, or larger inputs."
        )
    return out


def positions(shape: tuple) -> int:
    return math.prod(shape)
