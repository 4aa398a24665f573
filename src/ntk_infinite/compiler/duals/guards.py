r"""Checks on user activations: once at compile time, and on the values the numerical routes use.

A user activation (``nk.Activation(fn, dfn)`` or an ``ActivationLayer`` subclass) reaches the
Hermite-series or quadrature routes, which integrate ``fn`` and ``dfn`` against the Gaussian
N(0, q) of the pre-activation. Three things must hold, and each failure is an
:class:`~ntk_infinite.errors.ActivationError` saying what was wrong, where, and what to do:

* **At compile time** (:func:`probe_activation`), on the fixed grid :data:`PROBE_X`: ``fn`` and
  ``dfn`` accept a float64 array, return real finite values of the same shape, and act
  elementwise (a vector, its elements one by one, a permutation and a 2-D reshape give the
  same values).
* **At evaluation time** (:func:`check_node_values`): the values at the quadrature nodes the
  route actually uses, which depend on the input variance q, are finite.
* **Square integrability** (:func:`check_growth`): E[φ(√q z)²] < ∞ needs φ(√q z)² e^{−z²/2} to
  decay. It is tested far in the tail, at |z| = 30 and 35 (where the Gaussian weight is
  e^{−450} and e^{−612}, still representable): the log-integrand
  2 log|φ(√q z)| − z²/2 must decrease between them. exp(c x²) fails exactly when
  2cq ≥ 1/2, i.e. when it is not square-integrable; a polynomial fails only above degree ~500.
"""

from __future__ import annotations

import numpy as np

from ...errors import ActivationError

__all__ = ["PROBE_X", "probe_activation", "check_node_values", "check_moments", "check_growth"]

#: Fixed probe grid of the compile-time checks (step 0.25 on [−8, 8], 0 included).
PROBE_X = np.linspace(-8.0, 8.0, 65)
#: Tail points of the square-integrability test, in standard deviations.
GROWTH_Z = (30.0, 35.0)
#: Relative agreement required between a vectorised call and elementwise calls; well above
#: the few-ulp differences between SIMD and scalar paths of NumPy's own ufuncs.
ELEMENTWISE_RTOL = 1e-9


def _callables(layer):
    """[(name, raw callable)] to probe: what the user wrote, before the float64 cast of
    ``Activation.fn`` (which would hide complex output behind a ComplexWarning)."""
    out = [("fn", getattr(layer, "fn_", None) or layer.fn)]
    if hasattr(layer, "fn_"):
        if getattr(layer, "dfn_", None) is not None:
            out.append(("dfn", layer.dfn_))
    else:
        out.append(("dfn", layer.dfn))
    return out


def probe_activation(layer) -> None:
    """Raise :class:`ActivationError` unless ``fn`` (and ``dfn``, when given) are real, finite,
    shape-preserving and elementwise on :data:`PROBE_X`."""
    who = repr(layer)
    for name, g in _callables(layer):
        values = _call(who, name, g, PROBE_X)
        _check_finite(who, name, values, PROBE_X)
        _check_elementwise(who, name, g, values)


def _call(who, name, g, x):
    """g(x) as a real float64 array of x's shape, or an ActivationError saying why not."""
    try:
        with np.errstate(all="ignore"):
            out = g(x.copy())
    except Exception as exc:
        raise ActivationError(
            f"{who}: {name}(x) raised {type(exc).__name__}: {exc} when called on a float64 array of "
            f"shape {x.shape}. {name} must accept NumPy arrays and work elementwise: use NumPy functions "
            f"(np.tanh, not math.tanh), np.where instead of if/else on the array, or np.vectorize."
        ) from exc
    arr = np.asarray(out)
    if np.iscomplexobj(arr):
        bad = np.flatnonzero(arr.ravel().imag != 0)
        where = (f"e.g. {name}({float(x.ravel()[bad[0]]):g}) = {complex(arr.ravel()[bad[0]])}" if bad.size
                 else "with all imaginary parts zero")
        raise ActivationError(
            f"{who}: {name}(x) returned complex values (dtype {arr.dtype}, {where}); an activation "
            f"must be real. Return a real array, e.g. np.real(...) or np.abs(...) of the complex result."
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ActivationError(
            f"{who}: {name}(x) returned {type(out).__name__} of dtype {arr.dtype}; it must return a "
            "NumPy array of real numbers."
        )
    if arr.shape != x.shape:
        raise ActivationError(
            f"{who}: {name}(x) returned shape {arr.shape} for an input of shape {x.shape}; an "
            f"activation acts elementwise and must return an array of its input's shape (for a constant, "
            f"np.full_like(x, value); for a reduction such as a sum or mean, apply it elementwise instead)."
        )
    return arr.astype(np.float64)


def _check_finite(who, name, values, x, context=""):
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ActivationError(
            f"{who}: {name}(x) is {float(values.ravel()[i])!r} at x = {float(x.ravel()[i]):.6g}{context} "
            f"({int(bad.sum())} non-finite of {values.size} values checked). The kernel integrates {name} against a "
            f"Gaussian, so {name} must be finite at every real x: guard the singular points "
            f"(e.g. np.where, np.clip, np.nan_to_num) or pick an activation defined on the whole line."
        )


def _check_elementwise(who, name, g, values):
    """values must equal g on single elements, on a permutation and on a 2-D reshape."""
    x = PROBE_X
    perm = np.random.default_rng(0).permutation(x.size)
    with np.errstate(all="ignore"):
        single = np.array([np.asarray(g(x[i:i + 1].copy()), dtype=np.float64).reshape(-1)[0] for i in range(x.size)])
        permuted = np.empty_like(values)
        permuted[perm] = np.asarray(g(x[perm].copy()), dtype=np.float64).reshape(-1)
    # _call also checks the shape: a function that flattens its input passes on a vector.
    grid = _call(who, name, g, x.reshape(5, 13)).reshape(-1)
    scale = ELEMENTWISE_RTOL * max(1.0, float(np.max(np.abs(values))))
    for label, other in (("called on that element alone", single), ("called on a permuted array", permuted),
                         ("called on a 2-D array", grid)):
        diff = np.abs(other - values)
        if not np.all(diff <= scale + ELEMENTWISE_RTOL * np.abs(values)):
            i = int(np.argmax(np.where(np.isfinite(diff), diff, np.inf)))
            raise ActivationError(
                f"{who}: {name} is not elementwise: at x = {x[i]:g}, {name} on the probe vector gives "
                f"{float(values[i])!r} but {label} gives {float(other[i])!r}. An activation must map each entry on its own "
                f"(no sums, means, sorting, normalisation or random numbers across the array)."
            )


def check_node_values(fn, values, x, q=None, context: str = "") -> None:
    """Raise :class:`ActivationError` if ``values = fn(x)`` has a non-finite entry at a node
    ``x`` used for the input variance ``q`` (``q`` broadcasts against ``x``; or ``context``
    describes where the nodes come from)."""
    values = np.asarray(values)
    if np.isfinite(values).all():
        return
    who, name = _owner(fn)
    i = int(np.flatnonzero(~np.isfinite(values.ravel()))[0])
    if q is not None:
        qi = float(np.broadcast_to(q, np.shape(x)).ravel()[i])
        context = f", a quadrature node for the input variance q = {qi:.6g} reaching this layer"
    _check_finite(who, name, values, np.broadcast_to(x, values.shape), context)


def check_moments(fn, moments, q) -> None:
    """Raise :class:`ActivationError` where a Gaussian moment of ``fn`` overflowed float64."""
    bad = ~np.isfinite(np.asarray(moments))
    if bad.any():
        who, name = _owner(fn)
        qi = float(np.broadcast_to(q, np.shape(moments))[bad][0])
        raise ActivationError(
            f"{who}: E[{name}(x)²] under N(0, {qi:.6g}) overflows float64 (values of {name} near 1e154 or "
            f"above at the quadrature nodes). Reduce the variance reaching this layer (w_std/b_std of the "
            f"Dense layers before it) or rescale the activation."
        )


def check_growth(fn, q) -> None:
    """Raise :class:`ActivationError` where fn is not square-integrable under N(0, q)."""
    q = np.asarray(q, dtype=np.float64).ravel()
    q = q[q > 0]
    if not q.size:
        return
    z = np.array([-GROWTH_Z[1], -GROWTH_Z[0], GROWTH_Z[0], GROWTH_Z[1]])
    x = np.sqrt(q)[:, None] * z[None, :]
    with np.errstate(all="ignore"):
        v = np.abs(np.asarray(fn(x.ravel()), dtype=np.float64).reshape(x.shape))
        log_g = 2.0 * np.log(v) - 0.5 * z * z  # log of φ(√q z)² e^{−z²/2}; NaN values are not judged here
    if np.isinf(v).any():
        i, col = np.argwhere(np.isinf(v))[0]
        who, name = _owner(fn)
        _check_finite(who, name, v[i], x[i], f", {abs(z[col]):g} standard deviations into the tail of the "
                      f"Gaussian of the input variance q = {q[i]:.6g} reaching this layer")
    outer, inner = log_g[:, [0, 3]], log_g[:, [1, 2]]
    growing = (v[:, [1, 2]] > 0) & (outer >= inner)
    if growing.any():
        i, side = np.argwhere(growing)[0]
        who, name = _owner(fn)
        col = 3 if side else 0
        raise ActivationError(
            f"{who}: {name}(x)² e^(-x²/2q) still grows at x = {x[i, col]:.6g} (|{name}| = {v[i, col]:.3g}) "
            f"for the input variance q = {q[i]:.6g} reaching this layer: {name} is not square-integrable under "
            f"the Gaussian N(0, {q[i]:.6g}) (it grows like exp(c x²) with c >= 1/(4q) or faster), so the kernel "
            f"is infinite. Reduce the variance (w_std/b_std of the Dense layers before it) or use an activation "
            f"that grows more slowly."
        )


def _owner(fn):
    """(repr of the layer, 'fn' or 'dfn') of a bound activation method, for messages."""
    layer = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "fn")
    return (repr(layer) if layer is not None else name), (name if name in ("fn", "dfn") else "fn")
