"""Exceptions, warnings and the one place where user input is checked.

Every user mistake raises a subclass of :class:`ValueError` or :class:`TypeError`
whose message says what was expected, what was received and what to do.
Accuracy problems are warnings (subclasses of :class:`UserWarning`), never silent.
"""

from __future__ import annotations

import math
import numbers
import pickle
import warnings

import numpy as np

__all__ = [
    "ArchitectureError",
    "InputError",
    "KernelOverflowError",
    "ParameterError",
    "NotPicklableError",
    "KeywordOnlyError",
    "ActivationError",
    "AccuracyWarning",
    "KernelUnderflowWarning",
    "IllConditionedWarning",
    "CacheWarning",
    "check_param",
    "as_input_array",
    "warn_accuracy",
]


class ArchitectureError(ValueError):
    """An architecture description that cannot be compiled (bad order, unknown layer, ...)."""


class ParameterError(ValueError):
    """A layer or function parameter outside its allowed range."""


class KeywordOnlyError(TypeError):
    """A layer that takes keyword arguments only was given positional ones."""


class InputError(ValueError):
    """Input data of the wrong shape, dtype or with non-finite values."""


class NotPicklableError(TypeError, pickle.PicklingError):
    """An object that cannot be pickled because it holds something pickle cannot store
    (a lambda or a function defined inside another function).

    A :class:`TypeError` and a :class:`pickle.PicklingError`, so code catching either sees it.
    """


class ActivationError(ValueError):
    """A user activation whose ``fn``/``dfn`` cannot be integrated: not finite, not real, not
    elementwise, or not square-integrable under the Gaussian of its input variance."""


class KernelOverflowError(InputError):
    """Kernel values (or a variance an activation needs) exceed the largest float64, ~1.8e308."""


class AccuracyWarning(UserWarning):
    """A numerical route did not reach the requested tolerance."""


class KernelUnderflowWarning(AccuracyWarning):
    """Kernel values fall below float64's normal range (~2.2e-308) and are returned as
    subnormal numbers or exact zeros."""


class IllConditionedWarning(UserWarning):
    """A linear system is too ill-conditioned for the requested accuracy."""


class CacheWarning(UserWarning):
    """The on-disk cache was damaged or unusable; results are still correct (entries rebuilt)."""


def warn_accuracy(message: str, stacklevel: int = 3) -> None:
    """Issue an :class:`AccuracyWarning` pointing at the caller's caller."""
    warnings.warn(message, AccuracyWarning, stacklevel=stacklevel)


def check_param(
    owner: str,
    name: str,
    value,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
):
    """Validate one scalar parameter and return it as ``float`` (or ``int``).

    Message template (one for the whole library)::

        The 'w_std' parameter of Dense must be a float in the range [0, inf). Got -1.0 instead.
    """
    kind = "an integer" if integer else "a float"
    lo_b = "(" if low_open else "["
    hi_b = ")" if (high_open or math.isinf(high)) else "]"
    lo_s = "-inf" if math.isinf(low) else _fmt(low)
    hi_s = "inf" if math.isinf(high) else _fmt(high)
    expected = f"The {name!r} parameter of {owner} must be {kind} in the range {lo_b}{lo_s}, {hi_s}{hi_b}."
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{expected} Got {_show(value)} of type {type(value).__name__} instead.")
    if integer:
        if not isinstance(value, numbers.Integral) and not float(value).is_integer():
            raise ParameterError(f"{expected} Got {_show(value)} instead; pass a whole number.")
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range: out of range, not a crash
            raise ParameterError(f"{expected} Got {_show(value)} instead.") from None
    if math.isnan(value):
        raise ParameterError(f"{expected} Got nan instead; pass a finite number.")
    too_low = value < low or (low_open and value == low)
    too_high = value > high or (high_open and value == high)
    if too_low or too_high or (not integer and math.isinf(value)):
        raise ParameterError(f"{expected} Got {_show(value)} instead.")
    return value


def _show(value) -> str:
    """``repr`` of a received value, bounded: an int past Python's digit limit becomes its size."""
    try:
        text = repr(value)
    except ValueError:  # int with more than sys.get_int_max_str_digits() digits
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"


def _fmt(x: float) -> str:
    if isinstance(x, numbers.Integral):
        return str(int(x))
    # Whole numbers print without ".0" up to 1e15; larger bounds as 1e+150, not 151 digits.
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def as_input_array(X, name: str = "X") -> np.ndarray:
    """Coerce ``X`` to a 2-D, C-contiguous, finite float64 array or raise :class:`InputError`."""
    if X is None:
        raise TypeError(f"{name} must be a 2-D array of shape (n_samples, n_features); got None.")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic array-likes
        raise TypeError(f"{name} must be array-like of numbers; got {type(X).__name__} ({exc}).") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(
            f"{name} must contain real numbers; got dtype {arr.dtype}. Convert it with "
            f"np.asarray({name}, dtype=float)."
        )
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real; got complex dtype {arr.dtype}. Pass the real part explicitly.")
    if arr.ndim != 2:
        hint = f" Use {name}.reshape(-1, 1) for one feature or {name}.reshape(1, -1) for one sample." if arr.ndim == 1 else ""
        if arr.ndim > 2:
            hint = (f" This architecture is dense: flatten images with {name}.reshape(len({name}), -1), or describe a "
                    "convolutional network (Conv, ..., Flatten or GlobalAvgPool, Dense) to use their spatial structure.")
        raise InputError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); got an array with "
            f"{arr.ndim} dimension(s) and shape {arr.shape}.{hint}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.shape[1] == 0:
        raise InputError(f"{name} must have at least one feature; got shape {arr.shape}.")
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(
            f"{name} contains NaN or infinite values (first at row {bad[0]}, column {bad[1]}: "
            f"{float(arr[bad[0], bad[1]])!r}); the kernels need finite inputs. Remove or impute them first."
        )
    return arr
