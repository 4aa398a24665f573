r"""Mean-field signal propagation through deep random networks (infinite width).

A stack of ``Dense(σ_w, σ_b) > φ`` blocks maps the variance q of a pre-activation and the
correlation c of a pair of pre-activations with equal variance q* to (Poole et al. 2016, eqs. 3
and 5; Schoenholz et al. 2017, eqs. 3–4)

.. math::

    V(q) = \sigma_w^2\,T(q, q, q) + \sigma_b^2, \qquad
    C(c) = \frac{\sigma_w^2\,T(q^*, q^*, c\,q^*) + \sigma_b^2}{q^*}, \qquad q^* = V(q^*),

with T(q₁, q₂, c₁₂) = E[φ(u)φ(v)] the activation's dual, the same object the kernel engine
uses (closed form where one exists, else a series or quadrature with its error estimate). By
Price's theorem dC/dc = σ_w² Ṫ(q*, q*, c q*), so

.. math::

    \chi_1 = \sigma_w^2\,\dot T(q^*, q^*, q^*), \qquad
    \chi_c = \sigma_w^2\,\dot T(q^*, q^*, c^* q^*), \qquad
    \xi_q^{-1} = -\log V'(q^*), \qquad \xi_c^{-1} = -\log \chi_c

(Schoenholz et al. 2017, eqs. 5 and 9; their χ₁ + σ_w²∫Dz φ''φ is V'(q*) by Gaussian
integration by parts, computed here by differentiating the dual). χ₁ < 1: the ordered phase,
where c* = 1 is stable and χ_c = χ₁; χ₁ > 1: the chaotic phase, c* < 1; χ₁ = 1: the edge of
chaos, where ξ_c diverges.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from ..compiler.duals import resolve_dual
from ..describe.layers import ActivationLayer
from ..errors import ActivationError, ParameterError, check_param

__all__ = ["SignalPoint", "analyse", "variance_map", "correlation_map", "edge_of_chaos"]

#: A variance that passes this is reported as diverging (q* = inf), and χ₁ of such a point is
#: taken here: exact for homogeneous activations (ReLU), the large-q limit for asymptotically
#: linear ones (GELU, SiLU, ELU). Far beyond, a dual's own rounding at huge q could fake a
#: fixed point; a bounded activation's q* is at most σ_w² sup φ² + σ_b².
_Q_INFINITE = 1e8
_Q_LARGE = 1e8
#: Where a decaying variance is said to be zero (only when σ_b = 0 and φ(0) = 0).
_Q_ZERO = 1e-280
#: |χ₁ − 1| within this (or the dual's error estimate) is the edge of chaos.
CRITICAL_TOL = 1e-12


@dataclasses.dataclass(frozen=True)
class SignalPoint:
    r"""Mean-field quantities of one (activation, σ_w, σ_b).

    Attributes
    ----------
    q_star : float
        Fixed point of the variance map reached from ``q0`` (0 or ``inf`` when the variance
        vanishes or diverges with depth).
    c_star : float
        Stable fixed point of the correlation map (1 in the ordered phase).
    chi_1 : float
        σ_w² Ṫ(q*, q*, q*), the slope of the correlation map at c = 1 (also the growth per
        layer of the squared gradient norm).
    chi_c : float
        σ_w² Ṫ(q*, q*, c* q*), the slope at c*.
    slope_q : float
        V'(q*), the slope of the variance map at its fixed point.
    xi_q, xi_c : float
        Depth scales −1/log V'(q*) and −1/log χ_c of the approach to a stable fixed point;
        ``inf`` at criticality, and where there is no such approach (a slope ≥ 1: q* = inf, or
        c* = 1 reported for a diverging variance).
    phase : str
        "ordered", "chaotic" or "critical".
    error_estimate : float
        Estimated absolute error of the χ's and slopes (the dual's error and the numerical
        derivative's).
    """

    activation: ActivationLayer
    sigma_w: float
    sigma_b: float
    q_star: float
    c_star: float
    chi_1: float
    chi_c: float
    slope_q: float
    xi_q: float
    xi_c: float
    phase: str
    error_estimate: float

    def __str__(self) -> str:
        rows = [("activation", repr(self.activation)), ("sigma_w", self.sigma_w), ("sigma_b", self.sigma_b),
                ("q*", self.q_star), ("c*", self.c_star), ("chi_1", self.chi_1), ("chi_c", self.chi_c),
                ("V'(q*)", self.slope_q), ("xi_q", self.xi_q), ("xi_c", self.xi_c), ("phase", self.phase),
                ("error estimate", self.error_estimate)]
        return "\n".join(f"{k:>15}  {v:.12g}" if isinstance(v, float) else f"{k:>15}  {v}" for k, v in rows)


def _checked(activation, sigma_w, sigma_b, owner):
    if not isinstance(activation, ActivationLayer):
        raise TypeError(f"{owner} expects an activation layer such as nk.Tanh() or nk.Activation(np.sin); got "
                        f"{type(activation).__name__} ({activation!r}). For a whole architecture use "
                        "nk.signal.layerwise(arch).")
    w = check_param(owner, "sigma_w", sigma_w, low=0.0, low_open=True)
    b = check_param(owner, "sigma_b", sigma_b, low=0.0)
    return w, b


def _dual(activation, tol):
    return resolve_dual(activation, tol)


def variance_map(activation, sigma_w: float, sigma_b: float = 0.0, *, tol: float = 1e-10):
    """The variance map V(q) = σ_w² T(q, q, q) + σ_b² as a vectorised function of q ≥ 0."""
    w, b = _checked(activation, sigma_w, sigma_b, "variance_map")
    dual = _dual(activation, tol)

    def V(q):
        q = np.asarray(q, dtype=np.float64)
        return w * w * dual.point(np.atleast_1d(q).ravel()).q_out.reshape(q.shape) + b * b

    return V


def correlation_map(activation, sigma_w: float, sigma_b: float = 0.0, *, q=None, tol: float = 1e-10):
    """The correlation map C(c) at variance ``q`` (default: the fixed point q*), vectorised in c."""
    w, b = _checked(activation, sigma_w, sigma_b, "correlation_map")
    dual = _dual(activation, tol)
    if q is None:
        q = _variance_fixed_point(dual, w * w, b * b, 1.0)
    q = check_param("correlation_map", "q", q, low=0.0, low_open=True, high=_Q_INFINITE)
    q_out = w * w * float(dual.point(np.array([q])).q_out[0]) + b * b

    def C(c):
        c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
        flat = np.atleast_1d(c).ravel()
        full = np.full(flat.shape, q)
        return ((w * w * dual.T(full, full, flat * q) + b * b) / q_out).reshape(c.shape)

    return C


def _scalar_variance_map(dual, w2, b2):
    def V(q):
        return w2 * float(dual.point(np.array([q])).q_out[0]) + b2

    return V


def _variance_fixed_point(dual, w2, b2, q0):
    """The fixed point of V reached by iterating from q0, refined by Brent's method."""
    V = _scalar_variance_map(dual, w2, b2)
    q = q0
    # The orbit of a monotone V moves towards the attracting fixed point without passing it;
    # a few steps, then a geometric search from the last iterate (fine steps first, so that a
    # nearby pair of fixed points is not jumped), then Brent's method.
    for _ in range(40):
        nxt = V(q)
        if math.isnan(nxt):
            raise ActivationError(f"The variance map of {dual.layer!r} returned NaN at q = {q:.6g} (σ_w² = {w2:.6g}, "
                                  f"σ_b² = {b2:.6g}); check that the activation is finite and square-integrable "
                                  "under a Gaussian of that variance.")
        if nxt > _Q_INFINITE:
            return math.inf
        if nxt < _Q_ZERO:
            return 0.0
        if abs(nxt - q) <= 1e-15 * q:
            q = nxt
            break
        q = nxt

    def f(x):
        return V(x) - x

    fq = f(q)
    if fq == 0.0:
        return q
    lo = hi = q
    steps = 0
    if fq > 0.0:  # still growing: the attracting fixed point is above
        while f(hi) > 0.0:
            steps += 1
            lo, hi = hi, hi * (1.25 if steps <= 60 else 1e3)
            if hi > _Q_INFINITE:
                return math.inf
    else:
        # Without a bias V(q) = V'(0) q + O(q²) near 0: once V(q) < q at q = 1e-12 q0 it stays
        # below down to 0 (to 12 digits), so q* = 0 without walking down to _Q_ZERO.
        floor = 1e-12 * max(q0, 1.0) if b2 == 0.0 else _Q_ZERO
        while f(lo) < 0.0:
            steps += 1
            lo, hi = lo * (0.8 if steps <= 60 else 1e-3), lo
            if lo < floor:
                return 0.0
    return optimize.brentq(f, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


def _ridders_derivative(f, x, h):
    """f'(x) by Ridders' extrapolation of central differences (Press et al., Numerical
    Recipes, 3rd ed., §5.7); returns (derivative, error estimate)."""
    con, con2, big = 1.4, 1.96, 1e300
    a = [[0.0] * 10 for _ in range(10)]
    a[0][0] = (f(x + h) - f(x - h)) / (2.0 * h)
    best, err = a[0][0], big
    for i in range(1, 10):
        h /= con
        a[0][i] = (f(x + h) - f(x - h)) / (2.0 * h)
        fac = con2
        for j in range(1, i + 1):
            a[j][i] = (a[j - 1][i] * fac - a[j - 1][i - 1]) / (fac - 1.0)
            fac *= con2
            e = max(abs(a[j][i] - a[j - 1][i]), abs(a[j][i] - a[j - 1][i - 1]))
            if e <= err:
                err, best = e, a[j][i]
        if abs(a[i][i] - a[i - 1][i - 1]) >= 2.0 * err:
            break
    return best, err


def _slope_of_variance_map(dual, w2, b2, q_star, chi_1, chi_err):
    """V'(q*) and its error estimate. At q* = 0 (σ_b = 0 and φ(0) = 0, so T(q, q, q) =
    φ'(0)² q + O(q²) and Ṫ(0, 0, 0) = φ'(0)²) the slope is χ₁ itself."""
    if q_star == 0.0:
        return chi_1, chi_err
    return _ridders_derivative(_scalar_variance_map(dual, w2, b2), q_star, 0.1 * q_star)


def _correlation_fixed_point(dual, w2, b2, q_star):
    """c* < 1 of the chaotic phase: the largest root of C(c) − c below 1."""

    def g(c):
        qs = np.array([q_star])
        return (w2 * float(dual.T(qs, qs, np.array([c * q_star]))[0]) + b2) / q_star - c

    grid = np.linspace(-1.0, 1.0, 401)[:-1]
    qs = np.full(grid.shape, q_star)
    values = (w2 * dual.T(qs, qs, grid * q_star) + b2) / q_star - grid
    # C(c) − c < 0 just below 1 when χ₁ > 1; the fixed point is the last sign change below it.
    idx = np.nonzero((values[:-1] >= 0.0) & (values[1:] < 0.0))[0]
    if len(idx) == 0:
        return -1.0  # C(c) < c on all of [−1, 1): perfectly anti-correlated limit
    k = idx[-1]
    return optimize.brentq(g, grid[k], grid[k + 1], xtol=1e-16, rtol=1e-15)


def _chi_1(dual, w2, b2, q0):
    """(q*, χ₁, error estimate of χ₁); χ₁ of a diverging variance at q = _Q_LARGE."""
    q_star = _variance_fixed_point(dual, w2, b2, q0)
    pr = dual.point(np.array([_Q_LARGE if math.isinf(q_star) else q_star]))
    tdot = float(pr.tdot[0])
    return q_star, w2 * tdot, w2 * float(pr.error_estimate) * max(1.0, abs(tdot))


def _depth_scale(slope):
    if slope <= 0.0:
        return 0.0
    if slope >= 1.0:
        return math.inf
    return -1.0 / math.log(slope)


def analyse(activation, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0, tol: float = 1e-10) -> SignalPoint:
    r"""Fixed points, χ₁, χ_c, depth scales and phase of ``Dense(σ_w, σ_b) > activation`` repeated.

    See the module docstring for the formulas (Poole et al. 2016; Schoenholz et al. 2017).

    Parameters
    ----------
    activation : activation layer (``nk.Tanh()``, ``nk.ReLU()``, ``nk.Activation(fn)``, …)
    sigma_w : float > 0
    sigma_b : float ≥ 0
    q0 : float > 0
        The input variance whose orbit under V selects the fixed point q*.
    tol : float
        Accuracy asked of a numerical dual (series or quadrature route).

    >>> import ntk_infinite as nk
    >>> p = nk.signal.analyse(nk.ReLU(), sigma_w=1.2)  # χ₁ = σ_w²/2 for ReLU without bias
    >>> round(p.chi_1, 12), p.phase
    (0.72, 'ordered')
    """
    w, b = _checked(activation, sigma_w, sigma_b, "analyse")
    q0 = check_param("analyse", "q0", q0, low=0.0, low_open=True, high=_Q_INFINITE)
    dual = _dual(activation, tol)
    w2, b2 = w * w, b * b
    q_star, chi_1, err = _chi_1(dual, w2, b2, q0)
    if math.isinf(q_star):
        slope, serr = math.inf, 0.0
    else:
        slope, serr = _slope_of_variance_map(dual, w2, b2, q_star, chi_1, err)
    crit = max(CRITICAL_TOL, 10.0 * err)
    phase = "critical" if abs(chi_1 - 1.0) <= crit else ("ordered" if chi_1 < 1.0 else "chaotic")
    c_star, chi_c = 1.0, chi_1
    # C(c) divides by q*: with a vanishing or diverging variance it is not defined, and c* = 1
    # with χ_c = χ₁ is reported.
    if phase == "chaotic" and 0.0 < q_star < math.inf:
        c_star = _correlation_fixed_point(dual, w2, b2, q_star)
        qs = np.array([q_star])
        chi_c = w2 * float(dual.Tdot(qs, qs, np.array([c_star * q_star]))[0])
    xi_c = math.inf if phase == "critical" else _depth_scale(chi_c)
    return SignalPoint(activation, w, b, q_star, c_star, chi_1, chi_c, slope, _depth_scale(slope), xi_c, phase,
                       max(err, serr))


def edge_of_chaos(activation, sigma_b=0.0, *, bracket=(0.05, 20.0), q0: float = 1.0, tol: float = 1e-10):
    r"""σ_w on the edge of chaos, χ₁(σ_w, σ_b) = 1, for one σ_b or an array of them.

    Solved by Brent's method on σ_w ↦ χ₁ − 1 over ``bracket``, with q* recomputed at each σ_w.
    Raises :class:`~ntk_infinite.errors.ParameterError` when χ₁ − 1 does not change sign on the
    bracket (e.g. an activation whose χ₁ stays below 1), naming the values reached.

    >>> import ntk_infinite as nk
    >>> round(float(nk.signal.edge_of_chaos(nk.ReLU(), 0.0)) ** 2, 12)  # σ_w² = 2
    2.0
    """
    lo, hi = (check_param("edge_of_chaos", "bracket", v, low=0.0, low_open=True) for v in bracket)
    if not lo < hi:
        raise ParameterError(f"edge_of_chaos expects bracket=(low, high) with low < high; got {bracket!r}.")
    sb = np.asarray(sigma_b, dtype=np.float64)
    out = np.empty(sb.shape)
    for index, b in np.ndenumerate(sb):
        _checked(activation, 1.0, float(b), "edge_of_chaos")
        out[index] = _edge_at(activation, float(b), lo, hi, q0, tol)
    return out if out.ndim else float(out)


def _polished_edge(excess, lo, hi):
    """The root of χ₁ − 1 between lo (< 0) and hi (>= 0). Brent's method first; where χ₁ − 1 is
    flat on one side (σ_b = 0: it grows like (σ_w − σ_c)² above the edge, linearly below) it can
    stop inside the flat part, so the edge is then the sign change, found by bisection."""
    root = optimize.brentq(excess, lo, hi, xtol=1e-15, rtol=1e-15)
    step = 4e-15 * root
    if excess(root - step) < 0.0 <= excess(root + step):
        return root
    lo, hi = lo, root if excess(root) >= 0.0 else hi
    while hi - lo > 2e-15 * hi:
        mid = 0.5 * (lo + hi)
        if excess(mid) < 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _edge_at(activation, b, lo, hi, q0, tol):
    dual = _dual(activation, tol)

    def excess(w):
        return _chi_1(dual, w * w, b * b, q0)[1] - 1.0

    # Upwards from the low end, stopping at the first crossing: larger σ_w drive q* up, where
    # a numerical dual costs more (and a bounded activation's χ₁ falls again).
    grid = np.geomspace(lo, hi, 41)
    previous = excess(grid[0])
    first = previous
    for k in range(1, len(grid)):
        current = excess(grid[k])
        if previous <= 0.0 <= current:
            if previous == 0.0:
                return float(grid[k - 1])
            return _polished_edge(excess, grid[k - 1], grid[k])
        previous = current
    values = (first, previous)
    raise ParameterError(
        f"edge_of_chaos: χ₁ − 1 does not change sign for σ_w in [{lo:g}, {hi:g}] at σ_b = {b:g} "
        f"(from {values[0]:.3g} to {values[-1]:.3g}); pass a wider bracket=(low, high), or this activation "
        "has no edge of chaos at this σ_b.")
