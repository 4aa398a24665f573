"""Slow, obviously correct references, written independently of the engine.

* :func:`naive_kernels`: plain loops over pairs and layers, the recursion exactly as in
  docs/DESIGN.md, with each activation's expectation from a textbook closed form (ReLU, typed
  here from Cho & Saul 2009 / Jacot et al. 2018) or from ``scipy.integrate.dblquad``.
* :func:`dblquad_T`, :func:`dblquad_Tdot`: E[φ(u)φ(v)] and E[φ'(u)φ'(v)] by adaptive 2-D
  quadrature over the bivariate normal, written with a Cholesky factor.
* :func:`mp_relu_kernels`: the ReLU recursion in mpmath at 50 significant digits, from the
  exact binary values of the inputs.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
from scipy import integrate

import ntk_infinite as nk


# ---------------------------------------------------------------- bivariate expectations
def dblquad_expectation(f, g, q1, q2, c, epsabs=1e-13, epsrel=1e-12, limit=8.0, splits=(0.0,)):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]), by dblquad in standard coordinates.

    u = √q1 z1, v = √q2 (ρ z1 + √(1-ρ²) z2). The z1 range is split at the kinks of f (in u)
    so the adaptive rule sees smooth pieces.
    """
    if q1 == 0 or q2 == 0:
        u0 = 0.0
        if q1 == 0 and q2 == 0:
            return float(f(np.array([0.0]))[0] * g(np.array([0.0]))[0])
        if q1 == 0:
            val, _ = integrate.quad(lambda z: g(np.array([math.sqrt(q2) * z]))[0] * _phi(z), -limit, limit,
                                    epsabs=epsabs, epsrel=epsrel, limit=200)
            return float(f(np.array([u0]))[0] * val)
        val, _ = integrate.quad(lambda z: f(np.array([math.sqrt(q1) * z]))[0] * _phi(z), -limit, limit,
                                epsabs=epsabs, epsrel=epsrel, limit=200)
        return float(g(np.array([u0]))[0] * val)
    rho = max(-1.0, min(1.0, c / math.sqrt(q1 * q2)))
    s = math.sqrt(max(0.0, 1.0 - rho * rho))
    a, b = math.sqrt(q1), math.sqrt(q2)
    if s < 1e-13:  # degenerate: v = sign(ρ) (b/a) u
        val, _ = integrate.quad(
            lambda z: f(np.array([a * z]))[0] * g(np.array([math.copysign(b, rho) * z]))[0] * _phi(z),
            -limit, limit, epsabs=epsabs, epsrel=epsrel, limit=400, points=[0.0])
        return float(val)

    def inner(z1):
        fu = f(np.array([a * z1]))[0]
        if fu == 0.0:
            return 0.0
        # split z2 where v crosses a kink of g
        pts = sorted({(k / b - rho * z1) / s for k in splits if abs((k / b - rho * z1) / s) < limit})
        val, _ = integrate.quad(lambda z2: g(np.array([b * (rho * z1 + s * z2)]))[0] * _phi(z2), -limit, limit,
                                epsabs=epsabs * 1e-2, epsrel=epsrel * 1e-2, limit=400, points=pts or None)
        return fu * val * _phi(z1)

    edges = sorted({-limit, limit, *[k / a for k in splits if abs(k / a) < limit]})
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        val, _ = integrate.quad(inner, lo, hi, epsabs=epsabs, epsrel=epsrel, limit=400)
        total += val
    return float(total)


def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def dblquad_T(fn, q1, q2, c, **kw):
    return dblquad_expectation(fn, fn, q1, q2, c, **kw)


def dblquad_Tdot(dfn, q1, q2, c, **kw):
    return dblquad_expectation(dfn, dfn, q1, q2, c, **kw)


# ---------------------------------------------------------------- textbook ReLU dual
def relu_T(q1, q2, c):
    """Arc-cosine kernel of order 1 (Cho & Saul 2009), typed independently of the library."""
    r = math.sqrt(q1 * q2)
    if r == 0:
        return 0.0
    th = math.acos(max(-1.0, min(1.0, c / r)))
    return r * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)


def relu_Tdot(q1, q2, c):
    r = math.sqrt(q1 * q2)
    if r == 0:
        return 0.5
    th = math.acos(max(-1.0, min(1.0, c / r)))
    return (math.pi - th) / (2 * math.pi)


# ---------------------------------------------------------------- the naive recursion
def _pair_recursion(layers, x1, x2, expectation):
    d = x1.shape[0]
    q1 = float(np.dot(x1, x1)) / d
    q2 = float(np.dot(x2, x2)) / d
    c = float(np.dot(x1, x2)) / d
    theta = 0.0
    for layer in layers:
        if isinstance(layer, nk.Dense):
            w2, b2 = layer.w_std**2, layer.b_std**2
            q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
            theta = w2 * theta + c
        elif isinstance(layer, nk.Identity):
            continue
        else:
            T, Td = expectation(layer, q1, q2, c)
            Tq1, _ = expectation(layer, q1, q1, q1)
            Tq2, _ = expectation(layer, q2, q2, q2)
            theta = Td * theta
            q1, q2, c = Tq1, Tq2, T
    return c, theta


def default_expectation(layer, q1, q2, c):
    if isinstance(layer, nk.ReLU):
        return relu_T(q1, q2, c), relu_Tdot(q1, q2, c)
    return dblquad_T(layer.fn, q1, q2, c, splits=layer.kinks or (0.0,)), dblquad_Tdot(
        layer.dfn, q1, q2, c, splits=layer.kinks or (0.0,))


def naive_kernels(arch, X1, X2=None, expectation=default_expectation):
    """(nngp, ntk) by a double loop over pairs; slow, for small inputs only."""
    X1 = np.asarray(X1, dtype=float)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=float)
    n1, n2 = X1.shape[0], X2.shape[0]
    S, T = np.empty((n1, n2)), np.empty((n1, n2))
    for i in range(n1):
        for j in range(n2):
            S[i, j], T[i, j] = _pair_recursion(list(arch), X1[i], X2[j], expectation)
    return S, T


# ---------------------------------------------------------------- mpmath ReLU reference
def mp_relu_dual(layer, q1, q2, c, dps=50):
    """(T, Ṫ) of ReLU in mpmath, typed from Cho & Saul (2009) (arccos of the clipped ρ)."""
    if not isinstance(layer, nk.ReLU):
        raise TypeError(f"mp_relu_kernels handles Dense/ReLU only, not {layer!r}")
    r = mp.sqrt(q1 * q2)
    if r == 0:
        return mp.mpf(0), mp.mpf(1) / 2
    ang = mp.acos(max(mp.mpf(-1), min(mp.mpf(1), c / r)))
    return r * (mp.sin(ang) + (mp.pi - ang) * mp.cos(ang)) / (2 * mp.pi), (mp.pi - ang) / (2 * mp.pi)


def mp_relu_kernels(arch, x1, x2, dps=50):
    """(Σ, Θ) for one pair through a Dense/ReLU network in mpmath, exact from the float inputs."""
    S, Th = mp_kernels(arch, x1, x2, dps=dps, dual=mp_relu_dual)
    return float(S), float(Th)


# ================================================================ kernel regression
# Dense linear algebra exactly as the formulas read: explicit inverses, scipy.linalg.expm,
# explicit refits. Slow and obvious; for a few dozen points only.
def naive_gd_mse(ntk_tt, ntk_st, nngp_tt, nngp_st, nngp_ss, Y, t, ridge=0.0, get="ntk", ridge_model="flow"):
    """(mean, cov) of Lee et al. (2019), eqs. 15-16, with Θ + λI for the trained kernel.

    The prior covariance of the training outputs in the middle of the covariance is K under
    ridge_model="flow" (the initial outputs are not regularised), K + λI under "offset" and
    whenever get="nngp" (Bayesian inference with noise variance λ). get="nngp" uses the NNGP
    in both roles. t = inf uses the plain inverse.
    """
    from scipy.linalg import expm

    n = ntk_tt.shape[0] if ntk_tt is not None else nngp_tt.shape[0]
    K_reg = nngp_tt + ridge * np.eye(n)
    if get == "nngp":
        Th, Ths, K_mid = K_reg, nngp_st, K_reg
    else:
        Th, Ths = ntk_tt + ridge * np.eye(n), ntk_st
        K_mid = nngp_tt if ridge_model == "flow" else K_reg
    inv = np.linalg.inv(Th)
    E = np.eye(n) if np.isinf(t) else np.eye(n) - expm(-Th * t)
    A = Ths @ inv @ E
    mean = A @ Y
    cov = nngp_ss + A @ K_mid @ A.T - (A @ nngp_st.T + nngp_st @ A.T)
    return mean, cov


def linear_model_gd(Phi_train, Phi_test, Y, lr, steps, ridge=0.0):
    """Discrete gradient descent on the linear model f(x) = φ(x)·w (+ a per-training-point
    offset √λ·u), loss ½‖f(X) − Y‖², from w = u = 0, for ``steps`` (a power of two) steps.

    The affine update of (w, u) is applied by repeated squaring of its matrix, which is
    exactly ``steps`` plain steps. Returns f(X_test) after training.
    """
    n, p = Phi_train.shape
    D = np.hstack([Phi_train, math.sqrt(ridge) * np.eye(n)])  # all trainable features on the train set
    P = D.shape[1]
    k = Y.shape[1]
    # state z = (params; 1): z <- M z with M = [[I - lr DᵀD, lr DᵀY], [0, I]]
    M = np.zeros((P + k, P + k))
    M[:P, :P] = np.eye(P) - lr * D.T @ D
    M[:P, P:] = lr * D.T @ Y
    M[P:, P:] = np.eye(k)
    assert steps & (steps - 1) == 0, "steps must be a power of two"
    for _ in range(int(round(math.log2(steps)))):
        M = M @ M
    params = M[:P, P:]  # started from zero parameters and the constant block I
    return Phi_test @ params[:p]


def naive_loo(K, Y, ridge):
    """Leave-one-out residuals of kernel ridge regression by n explicit refits."""
    n = K.shape[0]
    Y = np.asarray(Y, dtype=float).reshape(n, -1)
    res = np.empty_like(Y)
    for i in range(n):
        keep = np.arange(n) != i
        alpha = np.linalg.solve(K[np.ix_(keep, keep)] + ridge * np.eye(n - 1), Y[keep])
        res[i] = Y[i] - K[i, keep] @ alpha
    return res


def naive_log_marginal(K, Y, ridge):
    """Σ over output columns of log N(y; 0, K + λI), by scipy.stats."""
    from scipy.stats import multivariate_normal

    n = K.shape[0]
    Y = np.asarray(Y, dtype=float).reshape(n, -1)
    dist = multivariate_normal(mean=np.zeros(n), cov=K + ridge * np.eye(n))
    return float(sum(dist.logpdf(Y[:, j]) for j in range(Y.shape[1])))


# ================================================================ finite networks
# Plain loops over neurons, typed from the parameterisation in docs/DESIGN.md, independent of
# ntk_infinite.verify.empirical: z_i = σ_w/√n_in Σ_j W_ij h_j + σ_b b_i with standard normal W, b.
def naive_finite_forward(arch, weights, x):
    """Outputs (k,) of a finite network for one input ``x`` (d,), neuron by neuron.

    ``weights`` lists one ``(W, b)`` pair per Dense layer, W of shape (n_out, n_in).
    """
    h = [float(v) for v in x]
    dense = iter(weights)
    for layer in arch:
        if isinstance(layer, nk.Dense):
            W, b = next(dense)
            n_in = len(h)
            scale = layer.w_std / math.sqrt(n_in)
            h = [scale * sum(float(W[i, j]) * h[j] for j in range(n_in)) + layer.b_std * float(b[i])
                 for i in range(W.shape[0])]
        else:
            h = [float(layer.fn(np.array([v]))[0]) for v in h]
    return np.array(h)


def naive_linear_gd_outputs(ntk_train, f0_train, Y, lr, steps):
    """Training outputs of a linear model after ``steps`` discrete gradient-descent steps on
    ½Σ‖f − y‖², by explicit iteration of f ← f − lr·Θ(f − y)."""
    f = np.array(f0_train, dtype=float)
    for _ in range(steps):
        f = f - lr * ntk_train @ (f - Y)
    return f


# ================================================================ activation duals
# High-precision references for the duals of the built-in activations, independent of
# ntk_infinite's derivations. T = E[φ(u)φ(v)] is written as a 1-D integral over z₁ of
# φ(√q₁ z₁)·G(μ, σ), with v = μ + σZ, μ = √q₂ ρ z₁, σ = √q₂ √(1−ρ²) and G(μ, σ) = E[φ(μ + σZ)]
# from textbook Gaussian-convolution identities typed below (each is one line of calculus:
# e.g. E[Φ(μ+σZ)] = Φ(μ/√(1+σ²)), E[(μ+σZ)₊] = μΦ(μ/σ) + σN(μ/σ)); the outer integral is
# mpmath's tanh-sinh quadrature at 20 digits, split at the kinks.
def _mp_trunc_moments(n, t):
    """E[Z^j 1{Z > t}] for j = 0..n, by M_j = t^{j-1} N(t) + (j-1) M_{j-2}."""
    M = [1 - mp.ncdf(t), mp.npdf(t)]
    for j in range(2, n + 1):
        M.append(t ** (j - 1) * mp.npdf(t) + (j - 1) * M[j - 2])
    return M[: n + 1]


def _mp_rect_monomial(n, mu, sigma):
    """E[max(Y, 0)^n], Y ~ N(μ, σ²)."""
    if sigma == 0:
        return mu**n if mu > 0 else (mp.mpf(1) if n == 0 and mu > 0 else mp.mpf(0))
    M = _mp_trunc_moments(n, -mu / sigma)
    return mp.fsum(mp.binomial(n, j) * mu ** (n - j) * sigma**j * M[j] for j in range(n + 1))


def _mp_gaussian_moment(k, mu, sigma):
    """E[Y^k], Y ~ N(μ, σ²)."""
    return mp.fsum(mp.binomial(k, 2 * j) * mu ** (k - 2 * j) * sigma ** (2 * j) * mp.fac2(2 * j - 1)
                   for j in range(k // 2 + 1))


def _mp_activation(layer):
    """(φ, φ', G, G', kinks) in mpmath for a built-in activation; G(μ, σ) = E[φ(μ + σZ)]."""
    name = type(layer).__name__
    if name in ("ReLU", "LeakyReLU", "ABReLU", "Abs", "Step", "Sign", "RectifiedMonomial"):
        n = {"Step": 0, "Sign": 0, "RectifiedMonomial": getattr(layer, "degree", 1)}.get(name, 1)
        # φ = b·max(x,0)^n + a'·max(-x,0)^n
        a_neg, b_pos = {"ReLU": (0, 1), "LeakyReLU": (-getattr(layer, "alpha", 0), 1), "Abs": (1, 1),
                        "Step": (0, 1), "Sign": (-1, 1), "RectifiedMonomial": (0, 1)}.get(
            name, (-getattr(layer, "a", 0), getattr(layer, "b", 1)))
        a_neg, b_pos = mp.mpf(a_neg), mp.mpf(b_pos)

        def phi(x):
            return b_pos * (x**n if x > 0 else 0) + a_neg * ((-x) ** n if x < 0 else 0) if n else \
                (b_pos if x > 0 else (a_neg if x < 0 else 0))

        def dphi(x):
            if n == 0:
                return mp.mpf(0)
            return n * (b_pos * (x ** (n - 1) if x > 0 else 0) - a_neg * ((-x) ** (n - 1) if x < 0 else 0))

        def G(mu, s):
            return b_pos * _mp_rect_monomial(n, mu, s) + a_neg * _mp_rect_monomial(n, -mu, s)

        def dG(mu, s):
            if n == 0:
                return mp.mpf(0)
            return n * (b_pos * _mp_rect_monomial(n - 1, mu, s) - a_neg * _mp_rect_monomial(n - 1, -mu, s))

        return phi, dphi, G, dG, (0.0,)
    if name in ("Monomial", "Polynomial"):
        coef = [mp.mpf(c) for c in layer.coef]

        def phi(x):
            return mp.fsum(c * x**k for k, c in enumerate(coef))

        def dphi(x):
            return mp.fsum(k * c * x ** (k - 1) for k, c in enumerate(coef) if k)

        def G(mu, s):
            return mp.fsum(c * _mp_gaussian_moment(k, mu, s) for k, c in enumerate(coef))

        def dG(mu, s):
            return mp.fsum(k * c * _mp_gaussian_moment(k - 1, mu, s) for k, c in enumerate(coef) if k)

        return phi, dphi, G, dG, ()
    if name == "Erf":
        a, b, c = (mp.mpf(v) for v in (layer.a, layer.b, layer.c))

        def G(mu, s):
            return a * mp.erf(b * mu / mp.sqrt(1 + 2 * b * b * s * s)) + c

        def dG(mu, s):
            m = 1 + 2 * b * b * s * s
            return a * b * 2 / mp.sqrt(mp.pi) * mp.exp(-b * b * mu * mu / m) / mp.sqrt(m)

        return (lambda x: a * mp.erf(b * x) + c, lambda x: a * b * 2 / mp.sqrt(mp.pi) * mp.exp(-(b * x) ** 2), G, dG, ())
    if name == "GELU":
        def G(mu, s):
            r = mp.sqrt(1 + s * s)
            return mu * mp.ncdf(mu / r) + s * s * mp.npdf(mu / r) / r

        def dG(mu, s):
            r = mp.sqrt(1 + s * s)
            return mp.ncdf(mu / r) + mu * mp.npdf(mu / r) / r**3

        return (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x), G, dG, ())
    if name in ("Sin", "Cos", "RBF"):
        if name == "RBF":
            a, b, c, trig = mp.sqrt(2), mp.sqrt(2 * mp.mpf(layer.gamma)), mp.pi / 4, mp.sin
        else:
            a, b, c, trig = mp.mpf(layer.a), mp.mpf(layer.b), mp.mpf(layer.c), (mp.sin if name == "Sin" else mp.cos)
        dtrig = (lambda x: mp.cos(x)) if trig is mp.sin else (lambda x: -mp.sin(x))
        return (lambda x: a * trig(b * x + c), lambda x: a * b * dtrig(b * x + c),
                lambda mu, s: a * mp.exp(-b * b * s * s / 2) * trig(b * mu + c),
                lambda mu, s: a * b * mp.exp(-b * b * s * s / 2) * dtrig(b * mu + c), ())
    if name == "Gaussian":
        a, b = mp.mpf(layer.a), mp.mpf(layer.b)

        def G(mu, s):
            m = 1 - 2 * b * s * s
            return a * mp.exp(b * mu * mu / m) / mp.sqrt(m)

        def dG(mu, s):
            m = 1 - 2 * b * s * s
            return 2 * a * b * mu / m * mp.exp(b * mu * mu / m) / mp.sqrt(m)

        return (lambda x: a * mp.exp(b * x * x), lambda x: 2 * a * b * x * mp.exp(b * x * x), G, dG, ())
    if name == "Exp":
        a, b = mp.mpf(layer.a), mp.mpf(layer.b)
        return (lambda x: a * mp.exp(b * x), lambda x: a * b * mp.exp(b * x),
                lambda mu, s: a * mp.exp(b * mu + b * b * s * s / 2),
                lambda mu, s: a * b * mp.exp(b * mu + b * b * s * s / 2), ())
    if name == "ELU":
        al = mp.mpf(layer.alpha)

        def phi(x):
            return x if x > 0 else al * mp.expm1(x)

        def dphi(x):
            return mp.mpf(1) if x > 0 else al * mp.exp(x)

        def G(mu, s):
            if s == 0:
                return phi(mu)
            return (_mp_rect_monomial(1, mu, s) + al * (mp.exp(mu + s * s / 2) * mp.ncdf(-(mu + s * s) / s)
                                                       - mp.ncdf(-mu / s)))

        def dG(mu, s):
            if s == 0:
                return dphi(mu)
            return mp.ncdf(mu / s) + al * mp.exp(mu + s * s / 2) * mp.ncdf(-(mu + s * s) / s)

        return phi, dphi, G, dG, (0.0,)
    raise TypeError(f"no mpmath reference for {layer!r}")


def mp_hinge_parts(a_neg, b_pos, kink):
    """(φ, φ', G, G', kinks) of the hinge φ(x) = b·max(x − k, 0) + a'·max(k − x, 0), for
    :func:`mp_dual`'s ``parts``: G(μ, σ) = b·E[(μ − k + σZ)₊] + a'·E[(k − μ − σZ)₊]."""
    a_neg, b_pos, k = mp.mpf(a_neg), mp.mpf(b_pos), mp.mpf(kink)

    def phi(x):
        return b_pos * max(x - k, 0) + a_neg * max(k - x, 0)

    def dphi(x):
        return b_pos if x > k else (-a_neg if x < k else (b_pos - a_neg) / 2)

    def G(mu, s):
        return b_pos * _mp_rect_monomial(1, mu - k, s) + a_neg * _mp_rect_monomial(1, k - mu, s)

    def dG(mu, s):
        return b_pos * _mp_rect_monomial(0, mu - k, s) - a_neg * _mp_rect_monomial(0, k - mu, s)

    return phi, dphi, G, dG, (float(kink),)


def mp_dual(layer, q1, q2, c, dps=20, parts=None):
    """(T, Ṫ) of a built-in activation at (q1, q2, c) as mpf, 1-D tanh-sinh quadrature of the
    inner Gaussian convolution (see the section comment). q1, q2, c may be mpf. ``parts``
    (φ, φ', G, G', kinks) replaces the layer's own, e.g. :func:`mp_hinge_parts`."""
    with mp.workdps(dps):
        phi, dphi, G, dG, kinks = parts or _mp_activation(layer)
        q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        a, b = mp.sqrt(q1), mp.sqrt(q2)
        if a == 0 or b == 0:
            return phi(0) * G(0, b) if a == 0 else G(0, a) * phi(0), dphi(0) * dG(0, b) if a == 0 else dG(0, a) * dphi(0)
        rho = max(mp.mpf(-1), min(mp.mpf(1), c / (a * b)))
        s = mp.sqrt(max(mp.mpf(0), (1 - rho) * (1 + rho)))
        points = {mp.mpf(0)}
        for k in kinks:
            points.add(mp.mpf(k) / a)
            if rho != 0:
                # the inner convolution smooths the kink of φ(v) over a width s/|ρ| around
                # z = k/(bρ): graded points resolve it for nearly parallel pairs
                zc, w = mp.mpf(k) / (b * rho), s / abs(rho)
                points.add(zc)
                while 0 < w < 10:
                    points.update((zc - w, zc + w))
                    w *= 4
        # |z| <= 10: the Gaussian tail beyond is e^{-50} ~ 2e-22 of the total, below dps=20.
        edges = [mp.mpf(-10), *sorted(p for p in points if abs(p) < 10), mp.mpf(10)]

        def outer(f, g):
            return mp.quad(lambda z: f(a * z) * g(b * rho * z, b * s) * mp.npdf(z), edges, method="gauss-legendre")

        return outer(phi, G), outer(dphi, dG)


def mp_kernels(arch, x1, x2, dps=20, dual=None):
    """(Σ, Θ) for one pair through Dense layers and built-in activations, in mpmath from the
    exact binary values of the inputs (each activation by ``dual``, default :func:`mp_dual`)."""
    dual = dual or mp_dual
    with mp.workdps(dps):
        x1 = [mp.mpf(float(v)) for v in x1]
        x2 = [mp.mpf(float(v)) for v in x2]
        d = len(x1)
        q1 = mp.fsum(u * u for u in x1) / d
        q2 = mp.fsum(v * v for v in x2) / d
        c = mp.fsum(u * v for u, v in zip(x1, x2)) / d
        th = mp.mpf(0)
        for layer in arch:
            if isinstance(layer, nk.Dense):
                w2, b2 = mp.mpf(layer.w_std) ** 2, mp.mpf(layer.b_std) ** 2
                q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
                th = w2 * th + c
            elif isinstance(layer, nk.Identity):
                continue
            else:
                T, Td = dual(layer, q1, q2, c, dps)
                q1 = dual(layer, q1, q1, q1, dps)[0]
                q2 = dual(layer, q2, q2, q2, dps)[0]
                th = Td * th
                c = T
        return c, th


def mp_arccos_dual(layer, q1, q2, c, dps=30):
    """(T, Ṫ) of the arc-cosine family of order n <= 2 in mpmath, typed from Cho & Saul
    (2009, eq. 6): J₀ = π − θ, J₁ = sin θ + (π − θ) cos θ, J₂ = 3 sin θ cos θ + (π − θ)(1 + 2cos²θ),
    E[max(u,0)ⁿ max(v,0)ⁿ] = (q₁q₂)^{n/2} Jₙ(θ)/(2π); the cross terms of the two-sided
    φ = b·max(x,0)ⁿ + a'·max(−x,0)ⁿ are the same kernel at the angle π − θ (the pair (u, −v))."""
    name = type(layer).__name__
    if name not in ("ReLU", "LeakyReLU", "ABReLU", "Abs", "Step", "Sign", "RectifiedMonomial"):
        raise TypeError(f"{name} is not in the arc-cosine family")
    n = {"Step": 0, "Sign": 0, "RectifiedMonomial": getattr(layer, "degree", 1)}.get(name, 1)
    a_neg, b_pos = {"ReLU": (0, 1), "LeakyReLU": (-getattr(layer, "alpha", 0), 1), "Abs": (1, 1), "Step": (0, 1),
                    "Sign": (-1, 1), "RectifiedMonomial": (0, 1)}.get(name, (-getattr(layer, "a", 0), getattr(layer, "b", 1)))
    if n > 2:
        raise TypeError("Cho & Saul give J_n explicitly for n <= 2 only")
    with mp.workdps(dps):
        a_neg, b_pos = mp.mpf(a_neg), mp.mpf(b_pos)
        q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        r = mp.sqrt(q1 * q2)
        th = mp.acos(max(mp.mpf(-1), min(mp.mpf(1), c / r))) if r > 0 else mp.pi / 2
        J = [lambda t: mp.pi - t,
             lambda t: mp.sin(t) + (mp.pi - t) * mp.cos(t),
             lambda t: 3 * mp.sin(t) * mp.cos(t) + (mp.pi - t) * (1 + 2 * mp.cos(t) ** 2)]

        def kern(m, sign):  # b²K(θ) + a'²K(θ) + 2 sign a'b K(π − θ)
            return ((a_neg**2 + b_pos**2) * J[m](th) + sign * 2 * a_neg * b_pos * J[m](mp.pi - th)) / (2 * mp.pi)

        T = r**n * kern(n, 1)
        Td = n * n * r ** (n - 1) * kern(n - 1, -1) if n else mp.mpf(0)
        return T, Td


def mp_dual_fast(layer, q1, q2, c, dps=20):
    """:func:`mp_arccos_dual` where it applies (milliseconds), else :func:`mp_dual`."""
    try:
        return mp_arccos_dual(layer, q1, q2, c, dps=max(dps, 30))
    except (TypeError, KeyError):
        return mp_dual(layer, q1, q2, c, dps)


# ================================================================ spatial (convolutional) kernels
# ---- begin: naive CNN-GP / CNTK reference (docs/DESIGN.md, "Spatial layers") ----------
# Written before the fast spatial engine and independently of it: plain Python loops over
# positions and filter offsets, per pair of inputs. An architecture is a list of tuples:
#
#   ("conv", filter_shape, strides, padding, w_std, b_std)   padding: "VALID" | "SAME" | "CIRCULAR"
#   ("dense", w_std, b_std)       on a spatial state: per position (a 1×1 convolution)
#   ("relu",), ("erf",)           φ = max(x, 0), φ = erf(x)
#   ("avgpool", window, strides, padding)    a fixed average, divided by |window|
#   ("flatten",), ("gap",)        readouts: (1/P) Σ_p K[p, p] and (1/P²) Σ_{p,p'} K[p, p']
#
# filter_shape / strides / window are tuples, one entry per spatial axis (strides may be None:
# all ones). Inputs are (n, S₁, …, S_k, C), channels last; a state is a NumPy array of shape
# (S₁, …, S_k, S₁, …, S_k) indexed [p, p'] (shape () after a readout).
#
# ReLU uses relu_T/relu_Tdot above (arccos of the clipped ρ): exact for identical inputs
# (ρ = 1 bitwise, since √(q²) = q in IEEE arithmetic), but ~1e-8 off in Ṫ for distinct,
# nearly collinear position pairs; compare away from those.
import itertools as _it

from scipy import special as _special


def _out_and_pad(n_in, k, s, padding):
    """(out, pad_lo) along one axis: VALID ⌊(in − k)/s⌋ + 1 and 0; SAME and CIRCULAR ⌈in/s⌉ and
    ⌊pad_total/2⌋ with pad_total = max((out − 1)s + k − in, 0) (XLA's placement)."""
    if padding == "VALID":
        if n_in < k:
            raise ValueError(f"VALID window {k} larger than the input {n_in}")
        return (n_in - k) // s + 1, 0
    if padding in ("SAME", "CIRCULAR"):
        out = -(-n_in // s)
        pad_total = max((out - 1) * s + k - n_in, 0)
        return out, pad_total // 2
    raise ValueError(f"unknown padding {padding!r}")


def _source(a, o, s, pad_lo, n_in, padding):
    """The input index that output index a reads at offset o, or None (outside, SAME zero)."""
    i = a * s + o - pad_lo
    if padding == "CIRCULAR":
        return i % n_in
    return i if 0 <= i < n_in else None


def _source_pos(a, o, strides, pads, shape, padding):
    """Multi-axis :func:`_source`: a position tuple, or None if any axis falls outside."""
    pos = []
    for ai, oi, si, pi, ni in zip(a, o, strides, pads, shape):
        i = _source(ai, oi, si, pi, ni, padding)
        if i is None:
            return None
        pos.append(i)
    return tuple(pos)


def _window_geometry(shape, window, strides, padding):
    strides = tuple(strides) if strides is not None else (1,) * len(window)
    if not (len(shape) == len(window) == len(strides)):
        raise ValueError(f"spatial rank {len(shape)} but window {window} and strides {strides}")
    outs, pads = zip(*(_out_and_pad(n, k, s, padding) for n, k, s in zip(shape, window, strides)))
    return tuple(outs), tuple(pads), strides


def naive_conv_cov(K, filter_shape, strides, padding):
    """K̃[a, a'] = (1/|k|) Σ_o K[a·s + o − pad_lo, a'·s + o − pad_lo]: one offset o for both
    positions (shared weights); SAME's outside entries count as 0 with the divisor kept at |k|."""
    k = K.ndim // 2
    shape = K.shape[:k]
    outs, pads, strides = _window_geometry(shape, filter_shape, strides, padding)
    size = math.prod(filter_shape)
    out = np.zeros(outs + outs)
    for a in _it.product(*map(range, outs)):
        for b in _it.product(*map(range, outs)):
            acc = 0.0
            for o in _it.product(*map(range, filter_shape)):
                p = _source_pos(a, o, strides, pads, shape, padding)
                pp = _source_pos(b, o, strides, pads, shape, padding)
                if p is not None and pp is not None:
                    acc += K[p + pp]
            out[a + b] = acc / size
    return out


def naive_pool_cov(K, window, strides, padding):
    """K̃[a, a'] = (1/|w|²) Σ_{o, o'} K[a·s + o − pad_lo, a'·s + o' − pad_lo]: independent offsets."""
    k = K.ndim // 2
    shape = K.shape[:k]
    outs, pads, strides = _window_geometry(shape, window, strides, padding)
    size = math.prod(window)
    offsets = list(_it.product(*map(range, window)))
    out = np.zeros(outs + outs)
    for a in _it.product(*map(range, outs)):
        for b in _it.product(*map(range, outs)):
            acc = 0.0
            for o in offsets:
                p = _source_pos(a, o, strides, pads, shape, padding)
                if p is None:
                    continue
                for oo in offsets:
                    pp = _source_pos(b, oo, strides, pads, shape, padding)
                    if pp is not None:
                        acc += K[p + pp]
            out[a + b] = acc / (size * size)
    return out


def naive_flatten_cov(K):
    """(1/P) Σ_p K[p, p]."""
    k = K.ndim // 2
    positions = list(_it.product(*map(range, K.shape[:k])))
    return np.array(sum(K[p + p] for p in positions) / len(positions))


def naive_gap_cov(K):
    """(1/P²) Σ_{p, p'} K[p, p']."""
    k = K.ndim // 2
    positions = list(_it.product(*map(range, K.shape[:k])))
    return np.array(sum(K[p + pp] for p in positions for pp in positions) / len(positions) ** 2)


def erf_T(q1, q2, c):
    """E[erf(u) erf(v)] = (2/π) arcsin(2c / √((1 + 2q₁)(1 + 2q₂))) (Williams 1997)."""
    return (2 / math.pi) * math.asin(2 * c / math.sqrt((1 + 2 * q1) * (1 + 2 * q2)))


def erf_Tdot(q1, q2, c):
    """E[erf'(u) erf'(v)] = (4/π) E[e^{−u²−v²}] = (4/π) / √((1 + 2q₁)(1 + 2q₂) − 4c²)."""
    return (4 / math.pi) / math.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c)


_SPATIAL_DUALS = {"relu": (relu_T, relu_Tdot), "erf": (erf_T, erf_Tdot)}


def _diag(K):
    """q[p] = K[p, p] as an array over positions (a scalar state is its own diagonal)."""
    if K.ndim == 0:
        return K
    k = K.ndim // 2
    q = np.empty(K.shape[:k])
    for p in _it.product(*map(range, K.shape[:k])):
        q[p] = K[p + p]
    return q


def naive_activation_cov(name, K, q1, q2, theta=None):
    """Σ[p, p'] ← T(q₁[p], q₂[p'], Σ[p, p']); Θ[p, p'] ← Ṫ(…)·Θ[p, p'] (entry by entry)."""
    T, Td = _SPATIAL_DUALS[name]
    S = np.empty_like(K)
    Th = None if theta is None else np.empty_like(theta)
    if K.ndim == 0:
        S[()] = T(float(q1), float(q2), float(K))
        if theta is not None:
            Th[()] = Td(float(q1), float(q2), float(K)) * theta
        return S, Th
    k = K.ndim // 2
    positions = list(_it.product(*map(range, K.shape[:k])))
    for p in positions:
        for pp in positions:
            args = (float(q1[p]), float(q2[pp]), float(K[p + pp]))
            S[p + pp] = T(*args)
            if theta is not None:
                Th[p + pp] = Td(*args) * theta[p + pp]
    return S, Th


def naive_input_cov(x1, x2):
    """Σ⁰[p, p'] = Σ_c x[p, c] x'[p', c] / C, by loops."""
    shape, C = x1.shape[:-1], x1.shape[-1]
    K = np.zeros(shape + shape)
    for p in _it.product(*map(range, shape)):
        for pp in _it.product(*map(range, shape)):
            K[p + pp] = sum(float(x1[p + (c,)]) * float(x2[pp + (c,)]) for c in range(C)) / C
    return K


def _spatial_step(layer, K12, K11, K22, theta):
    """One layer on the pair state (Σ(x,x'), Σ(x,x), Σ(x',x'), Θ(x,x')): the four new values.
    Σ(x,x) and Σ(x',x') are carried in full (pooling reads their off-diagonal entries)."""
    kind = layer[0]
    if kind == "conv":
        _, filt, strides, padding, w, b = layer
        conv = lambda M: naive_conv_cov(M, filt, strides, padding)  # noqa: E731
        new = [w * w * conv(M) + b * b for M in (K12, K11, K22)]
        return new[0], new[1], new[2], w * w * conv(theta) + new[0]
    if kind == "dense":
        _, w, b = layer
        new = [w * w * M + b * b for M in (K12, K11, K22)]
        return new[0], new[1], new[2], w * w * theta + new[0]
    if kind == "conv_std":  # standard parameterisation, fan-in c_in·|k| (Sohl-Dickstein et al. 2020)
        _, filt, strides, padding, w, b, c_in = layer
        conv = lambda M: naive_conv_cov(M, filt, strides, padding)  # noqa: E731
        new = [w * w * conv(M) + b * b for M in (K12, K11, K22)]
        return new[0], new[1], new[2], w * w * conv(theta) + c_in * math.prod(filt) * conv(K12) + (b > 0)
    if kind == "dense_std":
        _, w, b, n_in = layer
        new = [w * w * M + b * b for M in (K12, K11, K22)]
        return new[0], new[1], new[2], w * w * theta + n_in * K12 + (b > 0)
    if kind == "layernorm":  # per position pair: K[p, p'] / √((q(x)[p] + ε)(q(x')[p'] + ε))
        eps = layer[1]
        q1, q2 = _diag(K11), _diag(K22)
        s12 = np.sqrt(np.multiply.outer(q1 + eps, q2 + eps))
        s11 = np.sqrt(np.multiply.outer(q1 + eps, q1 + eps))
        s22 = np.sqrt(np.multiply.outer(q2 + eps, q2 + eps))
        return K12 / s12, K11 / s11, K22 / s22, theta / s12
    if kind in ("fork_sum", "fork_concat"):  # ("fork_sum", [branch items, ...]) or ("fork_concat", branches, weights)
        ends = []
        for branch in layer[1]:
            state = (K12, K11, K22, theta)
            for item in branch:
                state = _spatial_step(tuple(item), *state)
            ends.append(state)
        weights = layer[2] if kind == "fork_concat" else [1.0] * len(ends)
        return tuple(sum(w * end[j] for w, end in zip(weights, ends)) for j in range(4))
    if kind in _SPATIAL_DUALS:
        q1, q2 = _diag(K11), _diag(K22)
        S12, Th = naive_activation_cov(kind, K12, q1, q2, theta)
        S11, _ = naive_activation_cov(kind, K11, q1, q1)
        S22, _ = naive_activation_cov(kind, K22, q2, q2)
        return S12, S11, S22, Th
    if kind == "avgpool":
        _, window, strides, padding = layer
        return tuple(naive_pool_cov(M, window, strides, padding) for M in (K12, K11, K22, theta))
    if kind == "flatten":
        return tuple(naive_flatten_cov(M) for M in (K12, K11, K22, theta))
    if kind == "gap":
        return tuple(naive_gap_cov(M) for M in (K12, K11, K22, theta))
    raise ValueError(f"unknown layer {layer!r}")


def naive_spatial_pair(layers, x1, x2):
    """(Σ, Θ) for one pair of spatial inputs (S₁, …, S_k, C) through ``layers``."""
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    K12, K11, K22 = naive_input_cov(x1, x2), naive_input_cov(x1, x1), naive_input_cov(x2, x2)
    theta = np.zeros_like(K12)
    for layer in layers:
        K12, K11, K22, theta = _spatial_step(tuple(layer), K12, K11, K22, theta)
    if K12.ndim != 0:
        raise ValueError("the network must end in a readout (flatten or gap) and Dense layers")
    return float(K12), float(theta)


def naive_spatial_kernels(layers, X1, X2=None):
    """(nngp, ntk), each (n1, n2), by a double loop over pairs of :func:`naive_spatial_pair`."""
    X1 = np.asarray(X1, dtype=np.float64)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=np.float64)
    nngp, ntk = np.empty((len(X1), len(X2))), np.empty((len(X1), len(X2)))
    for i in range(len(X1)):
        for j in range(len(X2)):
            nngp[i, j], ntk[i, j] = naive_spatial_pair(layers, X1[i], X2[j])
    return nngp, ntk


# ---- finite-width CNN (NumPy), for Monte-Carlo checks ------------------------------------
# NTK parameterisation: z = w_std/√(C_in·|k|) · conv(h, W) + b_std·b with standard normal W
# (filter…, C_in, C_out) and b (C_out,); padding by np.pad (zeros for SAME, wrap for CIRCULAR)
# with XLA's placement (the smaller half before), then a VALID strided window.
def _np_pads(n_in, k, s, padding):
    if padding == "VALID":
        return 0, 0
    n_out = (n_in + s - 1) // s
    total = max(0, (n_out - 1) * s + k - n_in)
    return total // 2, total - total // 2


def _windows(h, window, strides, padding):
    """Yield (offset, view) where view[n, a…, c] = padded h at a·s + o along each spatial axis."""
    window = tuple(window)
    strides = tuple(strides) if strides is not None else (1,) * len(window)
    pads = [(0, 0)] + [_np_pads(n, k, s, padding) for n, k, s in zip(h.shape[1:-1], window, strides)] + [(0, 0)]
    hp = np.pad(h, pads, mode="wrap" if padding == "CIRCULAR" else "constant")
    outs = [(n - k) // s + 1 for n, k, s in zip(hp.shape[1:-1], window, strides)]
    for o in _it.product(*map(range, window)):
        idx = (slice(None),) + tuple(slice(oi, oi + (m - 1) * s + 1, s) for oi, m, s in zip(o, outs, strides))
        yield o, np.ascontiguousarray(hp[idx])  # strided views would miss BLAS in matmul


def naive_conv_network(layers, X, width, rng, n_out=1):
    """Outputs (n, n_out) of one random finite network (fresh standard normal parameters from
    ``rng``): every conv and hidden Dense layer has ``width`` channels, the last Dense ``n_out``."""
    h = np.asarray(X, dtype=np.float64)
    last = max(i for i, layer in enumerate(layers) if layer[0] == "dense")
    for i, layer in enumerate(layers):
        kind = layer[0]
        if kind == "conv":
            _, filt, strides, padding, w, b = layer
            c_in, c_out = h.shape[-1], width
            W = rng.standard_normal(tuple(filt) + (c_in, c_out))
            bias = rng.standard_normal(c_out)
            z = 0.0
            for o, view in _windows(h, filt, strides, padding):
                z = z + view @ W[o]
            h = w / math.sqrt(c_in * math.prod(filt)) * z + b * bias
        elif kind == "dense":
            _, w, b = layer
            c_in, c_out = h.shape[-1], (n_out if i == last else width)
            W = rng.standard_normal((c_in, c_out))
            bias = rng.standard_normal(c_out)
            h = w / math.sqrt(c_in) * (h @ W) + b * bias
        elif kind == "relu":
            h = np.maximum(h, 0.0)
        elif kind == "erf":
            h = _special.erf(h)
        elif kind == "avgpool":
            _, window, strides, padding = layer
            h = sum(view for _, view in _windows(h, window, strides, padding)) / math.prod(window)
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif kind == "gap":
            h = h.mean(axis=tuple(range(1, h.ndim - 1)))
        else:
            raise ValueError(f"unknown layer {layer!r}")
    return h


def naive_conv_empirical_nngp(layers, X1, X2, width, n_seeds, seed=0, n_out=1):
    """(mean, standard error), each (n1, n2), of f(x)·f(x')/n_out over ``n_seeds`` independent
    networks (one per seed; X1 and X2 through the same draw). The seeds are i.i.d., so the
    standard error of the mean is the sample standard deviation over √n_seeds."""
    X1, X2 = np.asarray(X1, dtype=np.float64), np.asarray(X2, dtype=np.float64)
    n1 = len(X1)
    X = np.concatenate([X1, X2])
    draws = []
    for s in range(n_seeds):
        f = naive_conv_network(layers, X, width, np.random.default_rng([seed, s]), n_out=n_out)
        draws.append(f[:n1] @ f[n1:].T / n_out)
    draws = np.array(draws)
    return draws.mean(axis=0), draws.std(axis=0, ddof=1) / math.sqrt(n_seeds)
# ---- end: naive CNN-GP / CNTK reference ---------------------------------------------------


# ---------------------------------------------------------------- branched and normalised networks
def _tree_pair(layers, state, dual, width, sqrt):
    """(q1, q2, c, θ) and the declared width after ``layers`` (a list), following the
    definitions layer by layer: FanOut copies the state into each branch, FanInSum adds the
    branch states, FanInConcat takes their channel-weighted mean, LayerNorm divides by
    √((q1+ε)(q2+ε)); a standard-parameterisation Dense adds n_in·Σ_in + [σb > 0] to σw²Θ.
    ``dual(layer, q1, q2, c) -> (T, Ṫ)``; works for floats and mpmath numbers alike."""
    q1, q2, c, th = state
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nk.FanOut):
            block, fan_in = layers[i + 1], layers[i + 2]
            ends = [_tree_pair(list(b.layers), (q1, q2, c, th), dual, width, sqrt) for b in block.branches]
            widths = [w for _, w in ends]
            if isinstance(fan_in, nk.FanInSum):
                weights = [1] * len(ends)
            elif None not in widths and len(set(widths)) > 1:
                weights = [w / sum(widths) for w in widths]
            else:
                weights = [1 / len(ends)] * len(ends)
            q1, q2, c, th = (sum(wt * e[0][k] for wt, e in zip(weights, ends)) for k in range(4))
            if isinstance(fan_in, nk.FanInConcat):
                width = None if None in widths else sum(widths)
            else:
                width = next((w for w in widths if w is not None), None)
            i += 3
            continue
        if isinstance(layer, nk.Dense):
            w2, b2 = layer.w_std ** 2, layer.b_std ** 2
            c_in = c
            q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
            if layer.parameterization == "standard":
                th = width * c_in + w2 * th + (1 if layer.b_std > 0 else 0)
            else:
                th = w2 * th + c
            width = layer.width
        elif isinstance(layer, nk.LayerNorm):
            s = sqrt((q1 + layer.eps) * (q2 + layer.eps))
            c, th = c / s, th / s
            q1, q2 = q1 / (q1 + layer.eps), q2 / (q2 + layer.eps)
        elif not isinstance(layer, nk.Identity):
            T, Td = dual(layer, q1, q2, c)
            q1, q2 = dual(layer, q1, q1, q1)[0], dual(layer, q2, q2, q2)[0]
            c, th = T, Td * th
        i += 1
    return (q1, q2, c, th), width


def naive_tree_kernels(arch, X1, X2=None, expectation=default_expectation):
    """(nngp, ntk) of a branched / normalised / standard-parameterisation dense network, by a
    double loop over pairs (each activation by ``expectation``, default ReLU in closed form and
    dblquad otherwise)."""
    X1 = np.asarray(X1, dtype=float)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=float)
    S, T = np.empty((len(X1), len(X2))), np.empty((len(X1), len(X2)))
    d = X1.shape[1]
    for i, x in enumerate(X1):
        for j, y in enumerate(X2):
            start = (x @ x / d, y @ y / d, x @ y / d, 0.0)
            (_, _, S[i, j], T[i, j]), _ = _tree_pair(list(arch.layers), start, expectation, d, math.sqrt)
    return S, T


def mp_tree_kernels(arch, x1, x2, dps=40, dual=None):
    """(Σ, Θ) of one pair through a branched / normalised dense network in mpmath, from the
    exact binary values of the inputs (activations by ``dual``, default :func:`mp_dual`)."""
    dual = dual or mp_dual
    with mp.workdps(dps):
        x1 = [mp.mpf(float(v)) for v in x1]
        x2 = [mp.mpf(float(v)) for v in x2]
        d = len(x1)
        start = (mp.fsum(u * u for u in x1) / d, mp.fsum(v * v for v in x2) / d,
                 mp.fsum(u * v for u, v in zip(x1, x2)) / d, mp.mpf(0))
        (_, _, c, th), _ = _tree_pair(list(arch.layers), start, lambda l, a, b, cc: dual(l, a, b, cc, dps), d,
                                      mp.sqrt)
        return float(c), float(th)
