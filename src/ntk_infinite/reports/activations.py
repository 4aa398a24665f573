"""Every activation: its route, accuracy and speed: ``tables/activations.md``.

For each activation of the library (and a few given as sympy expressions or kinked
callables):

* **route** of its dual (closed form, Wick polynomial, Hermite series, kink-aware quadrature);
* **max error** of T and of Ṫ against a high-precision reference over pairs
  (q₁, q₂) ∈ {(0.5, 0.5), (0.5, 1.7), (1.7, 1.7)}, ρ ∈ {−0.999, −0.6, 0.05, 0.7, 0.999} (quick: one
  pair, one activation per route). The engine is
  run on inputs whose Σ⁰ is exactly that pair (Dense(1, 0) > φ > Dense(1, 0)), the reference is
  :func:`reference_dual` (adaptive ``scipy.integrate.quad`` at epsrel 1e-13 outside, 256-point
  Gauss–Legendre inside, both split at the kinks), written independently of the library. The error is relative to
  the pair's scale √(T(q₁,q₁,q₁)T(q₂,q₂,q₂)) (and the same for Ṫ), so it stays meaningful where
  T crosses 0; the reference's own accuracy (~1e-14) is the floor of this column;
* **truncation** used: Hermite terms (Ka for T, Kb for Ṫ) at the first layer of the speed run,
  table cells of the quadrature's interpolant, or "exact";
* **ns per entry-layer** in the engine: ``3*(Dense(1.5, 0.1) > φ) > Dense(1.5, 0.1)`` on n
  standard-normal inputs (d = 32), NNGP + NTK of X with itself, best of 3 runs after a warm-up
  (which compiles), divided by n(n+1)/2 · 3. n = 600 (quadrature: 120); quick: 150 and 40.

The last section times the issue's target: Tanh, depth 3, n = 1000, d = 64.
"""

from __future__ import annotations

import math
import pathlib
import sys
import time
import warnings

import numpy as np
from scipy import integrate

from ._common import generated_by

__all__ = ["write_table", "cases", "reference_dual"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def cases():
    """(label, layer) of every built-in activation plus sympy and callable ones."""
    import sympy as sp

    import ntk_infinite as nk

    x = sp.Symbol("x")
    return [
        ("ReLU()", nk.ReLU()),
        ("LeakyReLU(0.1)", nk.LeakyReLU(0.1)),
        ("ABReLU(-0.3, 1.2)", nk.ABReLU(-0.3, 1.2)),
        ("Abs()", nk.Abs()),
        ("Step()", nk.Step()),
        ("Sign()", nk.Sign()),
        ("RectifiedMonomial(2)", nk.RectifiedMonomial(2)),
        ("RectifiedMonomial(3)", nk.RectifiedMonomial(3)),
        ("Monomial(3)", nk.Monomial(3)),
        ("Polynomial((0.1, 1, 0.3))", nk.Polynomial((0.1, 1.0, 0.3))),
        ("Erf(1, 1.5, 0.1)", nk.Erf(1.0, 1.5, 0.1)),
        ("GELU()", nk.GELU()),
        ("Sin(1, 1.2, 0.3)", nk.Sin(1.0, 1.2, 0.3)),
        ("Cos(1, 0.8, 0)", nk.Cos(1.0, 0.8, 0.0)),
        ("Gaussian(1, -0.5)", nk.Gaussian(1.0, -0.5)),
        ("Exp(1, 0.3)", nk.Exp(1.0, 0.3)),
        ("RBF(0.5)", nk.RBF(0.5)),
        ("Tanh()", nk.Tanh()),
        ("Sigmoid()", nk.Sigmoid()),
        ("Softplus()", nk.Softplus()),
        ("SiLU()", nk.SiLU()),
        ("Mish()", nk.Mish()),
        ("ELU(1)", nk.ELU(1.0)),
        ("Activation(exp(-x²) + sin(x))", nk.Activation(sp.exp(-x**2) + sp.sin(x))),
        ("Activation(Max(x - 0.5, 0))", nk.Activation(sp.Max(x - 0.5, 0))),
    ]


# ---------------------------------------------------------------------- the reference
#: Inner rule of the reference: Gauss–Legendre nodes per kink-free segment of [−L, L]. The
#: integrand there is smooth (analytic in a strip), so 256 nodes leave < 1e-16 (checked
#: against nested adaptive quadrature at epsrel 1e-14: agreement 1e-15, 100× slower).
_INNER_NODES, _INNER_WEIGHTS = np.polynomial.legendre.leggauss(256)
#: Gaussian tails beyond |z| = 9 weigh < 1e-18.
_HALF_WIDTH = 9.0


def reference_dual(fn, dfn, kinks, q1, q2, c, epsrel=1e-13):
    """(T, Ṫ) by an adaptive outer quadrature of a Gauss–Legendre inner integral.

    z₁, z₂ ~ N(0, 1), u = √q₁ z₁, v = √q₂(ρz₁ + √(1−ρ²) z₂). The outer integral over z₁
    (``scipy.integrate.quad``, epsabs 1e-15, ``epsrel``) is split where u, or v at z₂ = 0,
    crosses a kink; for each z₁ the inner integral over z₂ is split where v crosses a kink and
    each piece is integrated by 256-point Gauss–Legendre. Written independently of the library.
    """
    a, b = math.sqrt(q1), math.sqrt(q2)
    rho = max(-1.0, min(1.0, c / (a * b)))
    s = math.sqrt(max(0.0, (1.0 - rho) * (1.0 + rho)))
    L = _HALF_WIDTH

    def expectation(f, g):
        def inner(z1):
            fu = f(np.array([a * z1]))[0]
            if s == 0.0:
                return fu * g(np.array([b * rho * z1]))[0]
            cuts = sorted({-L, L, *[(k / b - rho * z1) / s for k in kinks if abs((k / b - rho * z1) / s) < L]})
            total = 0.0
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                z2 = 0.5 * (hi - lo) * _INNER_NODES + 0.5 * (hi + lo)
                total += 0.5 * (hi - lo) * np.dot(_INNER_WEIGHTS, g(b * (rho * z1 + s * z2)) * np.exp(-0.5 * z2 * z2))
            return fu * total / _SQRT_2PI

        edges = sorted({-L, L, *[k / a for k in kinks if abs(k / a) < L],
                        *[k / (b * rho) for k in kinks if rho != 0 and abs(k / (b * rho)) < L]})
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            val, _ = integrate.quad(lambda z: inner(z) * math.exp(-0.5 * z * z) / _SQRT_2PI, lo, hi,
                                    epsabs=1e-15, epsrel=epsrel, limit=200)
            total += val
        return total

    return expectation(fn, fn), expectation(dfn, dfn)


def _one_pair(q1, q2, rho):
    return (np.array([[math.sqrt(2 * q1), 0.0]]),
            np.array([[math.sqrt(2 * q2) * rho, math.sqrt(2 * q2) * math.sqrt((1 - rho) * (1 + rho))]]))


def measure_error(layer, pairs):
    """Max scaled errors of T and Ṫ of the engine over ``pairs`` (q₁, q₂, ρ)."""
    import ntk_infinite as nk

    kernel = nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.0), layer, nk.Dense(w_std=1.0, b_std=0.0)))
    kinks = tuple(layer.kinks)
    worst_T = worst_Td = 0.0
    diagonals = {}

    def ref(q1, q2, c):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quad's roundoff notes: the floor of the column
            return reference_dual(layer.fn, layer.dfn, kinks, q1, q2, c)

    def ref_diag(q):
        if q not in diagonals:
            diagonals[q] = ref(q, q, q)
        return diagonals[q]

    for q1, q2, rho in pairs:
        X1, X2 = _one_pair(q1, q2, rho)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = kernel(X1, X2)
            diag = kernel.diag(np.vstack([X1, X2]))
        e1, e2 = float(X1[0] @ X1[0]) / 2, float(X2[0] @ X2[0]) / 2
        c = float(X1[0] @ X2[0]) / 2
        T, Td = ref(e1, e2, c)
        T11, Td11 = ref_diag(e1)
        T22, Td22 = ref_diag(e2)
        Td_engine = (k.ntk[0, 0] - k.nngp[0, 0]) / c
        worst_T = max(worst_T, abs(k.nngp[0, 0] - T) / math.sqrt(T11 * T22))
        if Td11 * Td22 > 0:
            worst_Td = max(worst_Td, abs(Td_engine - Td) / math.sqrt(Td11 * Td22))
        # the per-point pass against the same reference (diagonals)
        worst_T = max(worst_T, abs(diag.nngp[0] - T11) / T11)
    return worst_T, worst_Td


def measure_speed(layer, n, repeats=3, seed=0):
    """(ns per entry-layer, truncation description) for 3*(Dense(1.5, 0.1) > φ) > Dense."""
    import ntk_infinite as nk
    from ntk_infinite.evaluate.engine import point_pass

    arch = nk.serial(*(3 * [nk.Dense(w_std=1.5, b_std=0.1), layer]), nk.Dense(w_std=1.5, b_std=0.1))
    kernel = nk.compile(arch)
    X = np.random.default_rng(seed).standard_normal((n, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel(X)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            kernel(X)
            best = min(best, time.perf_counter() - t0)
    dual = kernel.program.duals[0]
    # The truncation is per call: read it from a point pass over the same inputs (step 1 is
    # the first activation).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pts = point_pass(kernel.program, np.einsum("ij,ij->i", X, X) / X.shape[1])
    if getattr(dual, "route", "") == "Hermite series":
        Ka, Kb = pts.terms[1]
        trunc = f"Ka={Ka}, Kb={Kb}"
    elif getattr(dual, "route", "") == "kink-aware quadrature":
        trunc = f"{int(pts.params[1, 3])} cells × {int(pts.params[1, 1])} coef."
    else:
        trunc = "exact"
    return best / (n * (n + 1) / 2 * 3) * 1e9, trunc, dual.route


def reference_kernels(arch, x1, x2):
    """(Σ, Θ) of one pair through the recursion with every activation by :func:`reference_dual`."""
    from ..compiler.steps import role_of

    d = x1.size
    q1, q2, c, th = float(x1 @ x1) / d, float(x2 @ x2) / d, float(x1 @ x2) / d, 0.0
    for layer in arch:
        role = role_of(layer)
        if role is None:  # Identity
            continue
        if role == "affine":  # a dense architecture: the only affine layers are Dense
            w2, b2 = layer.w_std**2, layer.b_std**2
            q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
            th = w2 * th + c
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                T, Td = reference_dual(layer.fn, layer.dfn, tuple(layer.kinks), q1, q2, c)
                q1 = reference_dual(layer.fn, layer.dfn, tuple(layer.kinks), q1, q1, q1)[0]
                q2 = reference_dual(layer.fn, layer.dfn, tuple(layer.kinks), q2, q2, q2)[0]
            th, c = Td * th, T
    return c, th


def tanh_target(quick: bool):
    """Time of Tanh, depth 3, n = 1000, d = 64 (NNGP + NTK), after the compiling call, and
    (full mode) the relative error of 4 entries against the recursion with every activation by
    :func:`reference_dual`."""
    import ntk_infinite as nk
    from ntk_infinite.evaluate.engine import point_pass

    n = 300 if quick else 1000
    X = np.random.default_rng(0).standard_normal((n, 64))
    arch = nk.serial(*(3 * [nk.Dense(w_std=1.5, b_std=0.1), nk.Tanh()]), nk.Dense(w_std=1.5, b_std=0.1))
    kernel = nk.compile(arch)
    t0 = time.perf_counter()
    k = kernel(X)
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        kernel(X)
        times.append(time.perf_counter() - t0)
    err = None
    if not quick:
        err = 0.0
        for i, j in [(0, 1), (2, 3), (4, 5), (6, 6)]:
            S, Th = reference_kernels(arch, X[i], X[j])
            err = max(err, abs(k.nngp[i, j] - S) / abs(S), abs(k.ntk[i, j] - Th) / abs(Th))
    pts = point_pass(kernel.program, np.einsum("ij,ij->i", X, X) / X.shape[1])
    terms = [t for t in pts.terms if t is not None]
    return n, first, min(times), k.error_estimate, terms, err


def write_table(out_dir: pathlib.Path, quick: bool = False, progress: bool = True) -> pathlib.Path:
    """Measure every activation and write ``out_dir/activations.md``."""
    out_dir = pathlib.Path(out_dir)
    qs = (0.5, 1.7)
    rhos = (0.7,) if quick else (-0.999, -0.6, 0.05, 0.7, 0.999)
    pairs = [(qs[0], qs[1], r) for r in rhos] if quick else \
        [(a, b, r) for a, b in ((qs[0], qs[0]), (qs[0], qs[1]), (qs[1], qs[1])) for r in rhos]
    selected = cases()
    if quick:  # one activation per route
        keep = {"ReLU()", "Step()", "Polynomial((0.1, 1, 0.3))", "Erf(1, 1.5, 0.1)", "Tanh()", "ELU(1)"}
        selected = [case for case in selected if case[0] in keep]
    rows = []
    started = time.perf_counter()
    for label, layer in selected:
        route_n = 40 if quick else 120
        speed_n = 150 if quick else 600
        t0 = time.perf_counter()
        err_T, err_Td = measure_error(layer, pairs)
        ns, trunc, route = measure_speed(layer, route_n if "quadrature" in _route_of(layer) else speed_n,
                                         repeats=1 if quick else 3)
        rows.append((label, route, err_T, err_Td, trunc, ns, time.perf_counter() - t0))
        if progress:  # the reference quadrature takes seconds to minutes per activation
            print(f"[{len(rows)}/{len(selected)}] {label}: {route}, error T {err_T:.1e}, "
                  f"Tdot {err_Td:.1e}, {ns:,.0f} ns ({rows[-1][-1]:.0f} s)", file=sys.stderr, flush=True)
    n, first, best, est, terms, tanh_err = tanh_target(quick)
    lines = [
        "# Activations: route, accuracy and speed",
        "",
        generated_by("activations", quick, time.perf_counter() - started) + " Method: `ntk_infinite.reports.activations`.",
        "",
        "Error = max over (q₁, q₂, ρ) of |engine − reference| / √(T(q₁,q₁,q₁) T(q₂,q₂,q₂)) (and the same for "
        "Ṫ), reference = `reference_dual` (adaptive quadrature at epsrel 1e-13 over z₁ of a 256-point "
        "Gauss–Legendre integral over z₂, both split at the kinks), whose accuracy (~1e-14) is the floor of this column. "
        f"Pairs: (q₁, q₂) ∈ {{(0.5, 0.5), (0.5, 1.7), (1.7, 1.7)}}, ρ ∈ {rhos}." if not quick else
        f"Pairs: (q₁, q₂) = (0.5, 1.7), ρ ∈ {rhos}.",
        "",
        "| activation | route | max error T | max error Ṫ | truncation | ns / entry-layer |",
        "|---|---|---|---|---|---|",
    ]
    for label, route, eT, eTd, trunc, ns, _ in rows:
        lines.append(f"| `{label}` | {route} | {eT:.1e} | {eTd:.1e} | {trunc} | {ns:,.0f} |")
    lines += [
        "",
        f"ns / entry-layer: `3*(Dense(1.5, 0.1) > φ) > Dense(1.5, 0.1)`, n = {150 if quick else 600} standard-normal "
        f"inputs in d = 32 (kink-aware quadrature: n = {40 if quick else 120}), NNGP + NTK of X with itself, best of "
        f"{1 if quick else 3} runs after the compiling call, divided by n(n+1)/2 · 3. Truncation: Hermite terms of "
        "T (Ka) and Ṫ (Kb) at the first activation layer for the default tolerance 1e-10.",
        "",
        "## Target: Tanh, depth 3, NNGP + NTK",
        "",
        f"`3*(Dense(1.5, 0.1) > Tanh) > Dense(1.5, 0.1)`, n = {n}, d = 64 standard-normal inputs, X with itself: "
        f"**{best:.2f} s** (best of 3 after the first call; the first call, which loads or compiles the engine, "
        f"took {first:.1f} s). Error estimate reported by the series: {est:.1e} (requested 1e-10); Hermite terms "
        f"(Ka, Kb) per layer: {terms}."
        + (f" Largest relative error of NNGP and NTK entries (0,1), (2,3), (4,5), (6,6) against the same "
           f"recursion with every T and Ṫ from the reference: {tanh_err:.1e}." if tanh_err is not None else ""),
        "",
    ]
    path = out_dir / "activations.md"
    path.write_text("\n".join(lines))
    return path


def _route_of(layer) -> str:
    from ..compiler.duals import resolve_dual

    return resolve_dual(layer, 1e-10).route
