r"""Large-n kernel regression without an n × n matrix: Nyström centres and FALKON's PCG.

The t = ∞ predictor of :func:`~ntk_infinite.solve.predict.gd_mse` needs the n × n training
Gram matrix and its Cholesky factor, O(n²) memory and O(n³) time. Restricting the
coefficients to M centres C ⊂ X (Nyström; Williams & Seeger 2001) gives the problem

.. math::

    \hat\alpha = \arg\min_{\alpha\in\mathbb R^{M}} \lVert Y - K_{nM}\alpha\rVert^2
        + \lambda\,\alpha^\top K_{MM}\,\alpha, \qquad
    \hat f(X^*) = K(X^*, C)\,\hat\alpha,

with :math:`K_{nM} = K(X, C)`, :math:`K_{MM} = K(C, C)` and the absolute ridge λ of
:func:`gd_mse`. Its normal equations are

.. math::

    H\alpha = K_{nM}^\top Y, \qquad H = K_{nM}^\top K_{nM} + \lambda K_{MM}.

With M = n (every training point a centre) :math:`H = K(K + \lambda I)`, so
:math:`\hat\alpha = (K+\lambda I)^{-1}Y` and :math:`\hat f` is exactly the ridge solution
:math:`K_*(K+\lambda I)^{-1}Y`; with M < n it converges to it as M grows (Rudi, Camoriano &
Rosasco 2015 bound the statistical cost of M ≈ √n log n uniform centres).

**Solver** (Rudi, Carratino & Rosasco 2017, "FALKON", Alg. 1; Meanti et al. 2020).
Uniform centres give :math:`K_{nM}^\top K_{nM} \approx \tfrac nM K_{MM}^2`, so
:math:`P = \tfrac nM K_{MM}^2 + \lambda K_{MM}` approximates H. With the upper Cholesky
factors

.. math::

    K_{MM} + \delta I = T^\top T, \qquad \tfrac nM\,T T^\top + \lambda I = A^\top A,
    \qquad B = T^{-1}A^{-1},

:math:`BB^\top = (T^\top A^\top A T)^{-1} = (\tfrac nM (K_{MM}+\delta I)^2 + \lambda(K_{MM}+\delta I))^{-1}
\approx P^{-1}` (FALKON's λ is ours divided by n, since it scales the loss by 1/n). Conjugate
gradients on :math:`B^\top H B\,\beta = B^\top K_{nM}^\top Y` (symmetric positive definite,
close to I) then :math:`\alpha = B\beta`. The jitter δ = M·ε·max diag(K_MM) (raised ×10 until
the factorisation succeeds) changes only the preconditioner, never H, so the solution is that of
the problem above. One CG iteration costs one product with :math:`K_{nM}` and one with its
transpose, O(nM) per output; building B costs O(M³).

**Storage** of :math:`K_{nM}` (the only large array, n·M·8 bytes): ``"stored"`` computes it
once, in row blocks from the compiled kernel, and keeps it; ``"streamed"`` keeps nothing and
recomputes each row block in every CG iteration (one kernel pass over n × M entries per
iteration, memory O(block·M + M²)). ``"auto"`` stores it when n·M·8 bytes fit in
``memory_budget`` (default :data:`DEFAULT_MEMORY_BUDGET`: a quarter of the physical memory,
at most 4 GiB) and streams otherwise. The choice is reported in ``predictor.info.storage``.

**Centres.** ``"uniform"``: M distinct training points drawn uniformly without replacement.
``"leverage"``: drawn without replacement with probabilities proportional to approximate
ridge leverage scores :math:`\ell_i(\lambda) = [K(K+\lambda I)^{-1}]_{ii}` (Alaoui & Mahoney
2015; Rudi, Calandriello, Carratino & Rosasco 2018), which favour points the rest of the data
does not explain. With a uniform pilot set S of s points and the reweighted feature
covariance :math:`\Phi^\top\Phi \approx \tfrac ns \Phi_S^\top\Phi_S`, the Woodbury identity gives

.. math::

    \ell_i(\lambda) = \varphi_i^\top(\Phi^\top\Phi + \lambda I)^{-1}\varphi_i
    \approx \frac1\lambda\left(K_{ii} - K_{iS}\left(K_{SS} + \tfrac{s\lambda}{n} I\right)^{-1}K_{Si}\right),

the pilot's Nyström residual variance of point i over λ, at O(n s²) cost. The scores use the
regression ridge λ, or when it is 0 the floor :data:`LEVERAGE_RIDGE_FLOOR` × mean K_ii, where
they become proportional to the residual variance (the sampling step of randomly pivoted
Cholesky; Chen, Epperly, Tropp & Webber 2022). Sampling without replacement is done with
exponential keys (Efraimidis & Spirakis 2006). An array of training indices is also accepted.

No result is NaN: a CG run that does not reach ``tol`` warns
(:class:`NystromConvergenceWarning`) with the residual reached and what to change, and a
non-finite solution raises :class:`~ntk_infinite.solve.predict.SingularKernelError`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ..errors import AccuracyWarning, ParameterError, check_param
from ..kernel import CompiledKernel, compile
from .predict import Prediction, SingularKernelError, _check_get, _check_nonempty, _check_targets, user_stacklevel

__all__ = ["nystrom_fit", "NystromPredictor", "NystromInfo", "NystromConvergenceWarning", "DEFAULT_N_CENTERS",
           "DEFAULT_MEMORY_BUDGET", "default_memory_budget"]

#: Default number of centres, capped at n. FALKON's theory asks for M ≈ √n·log n uniform
#: centres (3,640 at n = 100,000); 5,000 covers that up to n ≈ 130,000 and keeps the stored
#: K_nM at 4.0 GB for n = 100,000.
DEFAULT_N_CENTERS = 5000
#: Upper end of the default budget for keeping K_nM in memory (bytes).
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Row blocks of K(X, C) hold about this many entries (32 MiB of float64).
BLOCK_ENTRIES = 2**22
#: Jitter of the preconditioner's Cholesky factors, in units of M·ε·max diag.
JITTER_START = 1.0
#: Give up (the matrix is not positive semi-definite) when the jitter passes this × max diag.
JITTER_MAX = 1e-4
#: Leverage-score pilot set: at most this many uniform points (cost O(n·s²)).
LEVERAGE_PILOT = 2000
#: Ridge of the leverage scores when the regression ridge is 0, relative to mean K_ii.
LEVERAGE_RIDGE_FLOOR = 1e-6

_CENTER_RULES = ("uniform", "leverage")
_STORAGE = ("auto", "stored", "streamed")


class NystromConvergenceWarning(AccuracyWarning):
    """Preconditioned conjugate gradients stopped before reaching the requested tolerance."""


def default_memory_budget() -> int:
    """Bytes allowed for the stored K_nM: a quarter of the physical memory, at most
    :data:`DEFAULT_MEMORY_BUDGET` (4 GiB); 4 GiB when the physical memory is unknown."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MEMORY_BUDGET
    return int(min(DEFAULT_MEMORY_BUDGET, physical // 4))


@dataclass(frozen=True)
class NystromInfo:
    """What :func:`nystrom_fit` did.

    Attributes
    ----------
    n_train, n_centers : int
    centers : str
        ``"uniform"``, ``"leverage"`` or ``"given"`` (an index array was passed).
    storage : str
        ``"stored"`` (K_nM kept, n·M·8 bytes) or ``"streamed"`` (recomputed every iteration).
    iterations : int
        CG iterations run (the largest over the outputs).
    relative_residual : float
        Largest over the outputs of ‖r‖/‖b‖ of the preconditioned system at the end (the
        recursively updated residual).
    converged : bool
        Every output reached ``tol``.
    jitter : float
        δ added to K_MM inside the preconditioner (not in the system that is solved).
    kernel_entries : int
        Entries of K(·, C) the fit evaluated (n·M once when stored, n·M per iteration when streamed).
    seconds : float
        Wall time of the fit.
    """

    n_train: int
    n_centers: int
    centers: str
    storage: str
    iterations: int
    relative_residual: float
    converged: bool
    jitter: float
    kernel_entries: int
    seconds: float


# --------------------------------------------------------------------------- K(X, C) in row blocks
class _CrossKernel:
    """K(X, C) as row blocks: kept in memory (``stored``) or recomputed on every pass."""

    def __init__(self, kernel, get, X, C, block, stored, progress):
        self.kernel, self.get, self.X, self.C = kernel, get, X, C
        self.n, self.m = X.shape[0], C.shape[0]
        self.block = block
        self.progress = progress
        self.entries = 0
        self.full = None
        if stored:
            self.full = np.empty((self.n, self.m))
            for start, stop in self._ranges():
                self.full[start:stop] = self._compute(start, stop)
                self._report("K_nM", stop)

    def _ranges(self):
        for start in range(0, self.n, self.block):
            yield start, min(start + self.block, self.n)

    def _compute(self, start, stop):
        self.entries += (stop - start) * self.m
        return getattr(self.kernel(self.X[start:stop], self.C, get=self.get), self.get)

    def _report(self, stage, done):
        if self.progress is not None:
            self.progress(stage, done, self.n)

    def blocks(self):
        """(start, stop, K(X[start:stop], C)) for every row block."""
        for start, stop in self._ranges():
            yield start, stop, (self.full[start:stop] if self.full is not None else self._compute(start, stop))

    def rmatvec(self, Y):
        """K_nMᵀ Y, (M, k)."""
        out = np.zeros((self.m, Y.shape[1]))
        for start, stop, Kb in self.blocks():
            out += Kb.T @ Y[start:stop]
        return out

    def gram_matvec(self, V):
        """K_nMᵀ K_nM V, (M, k), in one pass (each block is used twice while in cache)."""
        out = np.zeros_like(V)
        for _, _, Kb in self.blocks():
            out += Kb.T @ (Kb @ V)
        return out


# --------------------------------------------------------------------------- preconditioner
def _jittered_cholesky(S, scale, what):
    """Upper Cholesky factor of S + δI with the smallest δ = JITTER_START·M·ε·scale·10^j that works."""
    m = S.shape[0]
    jitter = JITTER_START * m * np.finfo(float).eps * scale
    while True:
        try:
            return sla.cholesky(S + jitter * np.eye(m), lower=False, check_finite=False), jitter
        except np.linalg.LinAlgError:
            jitter *= 10.0
            if not jitter <= JITTER_MAX * scale:
                raise SingularKernelError(
                    f"The {what} ({m}x{m}) is not positive semi-definite: its Cholesky factorisation fails even "
                    f"with {jitter / 10:.1e} added to the diagonal (largest diagonal entry {scale:.3e}). The kernel "
                    "of the centres must be a Gram matrix; check for non-finite or huge inputs."
                ) from None


class _FalkonPreconditioner:
    r"""B = T⁻¹A⁻¹ with Tᵀ T = K_MM + δI and Aᵀ A = (n/M) T Tᵀ + λI, so that
    B Bᵀ = ((n/M) K_MM² + λ K_MM)⁻¹ up to δ (Rudi et al. 2017, Alg. 1)."""

    def __init__(self, K_mm, n, ridge):
        m = K_mm.shape[0]
        scale = max(float(np.max(np.diag(K_mm), initial=0.0)), np.finfo(float).tiny)
        self.T, self.jitter = _jittered_cholesky(K_mm, scale, "kernel matrix of the centres K(C, C)")
        inner = (n / m) * (self.T @ self.T.T)
        if ridge:
            inner[np.diag_indices(m)] += ridge
        inner_scale = max(float(np.max(np.diag(inner), initial=0.0)), np.finfo(float).tiny)
        self.A, _ = _jittered_cholesky(inner, inner_scale, "FALKON preconditioner matrix (n/M) T Tᵀ + λI")

    def apply(self, V):
        """B V = T⁻¹ A⁻¹ V."""
        W = sla.solve_triangular(self.A, V, lower=False, check_finite=False)
        return sla.solve_triangular(self.T, W, lower=False, check_finite=False)

    def apply_t(self, V):
        """Bᵀ V = A⁻ᵀ T⁻ᵀ V."""
        W = sla.solve_triangular(self.T, V, lower=False, trans="T", check_finite=False)
        return sla.solve_triangular(self.A, W, lower=False, trans="T", check_finite=False)


# --------------------------------------------------------------------------- conjugate gradients
def _pcg(apply_system, b, tol, maxiter, report=None):
    """Conjugate gradients on S x = b for each column of b (S symmetric positive semi-definite),
    the columns advancing together but each with its own step. Returns x, iterations, the
    relative residuals and whether a column broke down (pᵀSp ≤ 0: rounding or not PSD)."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = np.einsum("ij,ij->j", r, r)
    rs0 = rs.copy()
    target = tol**2 * rs0
    active = rs > target
    breakdown = False
    iterations = 0
    while active.any() and iterations < maxiter:
        cols = np.nonzero(active)[0]
        Sp = apply_system(p[:, cols])
        curvature = np.einsum("ij,ij->j", p[:, cols], Sp)
        bad = ~(curvature > 0)
        if bad.any():  # no descent left along p: stop these columns where they are
            breakdown = True
            active[cols[bad]] = False
            cols, Sp, curvature = cols[~bad], Sp[:, ~bad], curvature[~bad]
            if cols.size == 0:
                break
        step = rs[cols] / curvature
        x[:, cols] += step * p[:, cols]
        r[:, cols] -= step * Sp
        rs_new = np.einsum("ij,ij->j", r[:, cols], r[:, cols])
        p[:, cols] = r[:, cols] + (rs_new / rs[cols]) * p[:, cols]
        rs[cols] = rs_new
        active[cols] = rs_new > target[cols]
        iterations += 1
        if report is not None:
            report(iterations)
    rel = np.sqrt(rs / np.where(rs0 > 0, rs0, 1.0))  # a zero right-hand side is solved by x = 0
    return x, iterations, rel, breakdown


# --------------------------------------------------------------------------- centres
def _uniform_centers(n, m, rng):
    return np.sort(rng.choice(n, size=m, replace=False))


def _leverage_scores(kernel, get, X, ridge, rng, block):
    r"""Approximate ridge leverage scores from a uniform pilot set S (module docstring):
    :math:`\tilde\ell_i = (K_{ii} - \lVert L^{-1}K_{Si}\rVert^2)/\lambda` with
    :math:`LL^\top = K_{SS} + \tfrac{s\lambda}{n}I`."""
    n = X.shape[0]
    s = min(n, LEVERAGE_PILOT)
    pilot = _uniform_centers(n, s, rng)
    diag = getattr(kernel.diag(X, get=get), get)
    lam = ridge if ridge > 0 else LEVERAGE_RIDGE_FLOOR * float(np.mean(diag))
    K_ss = getattr(kernel(X[pilot], get=get), get)
    K_ss[np.diag_indices(s)] += s * lam / n
    U, _ = _jittered_cholesky(K_ss, max(float(np.max(np.diag(K_ss))), np.finfo(float).tiny),
                              "kernel matrix of the leverage-score pilot set")
    residual = np.empty(n)
    block = block or _default_block(s)
    for start in range(0, n, block):
        stop = min(start + block, n)
        K_bs = getattr(kernel(X[start:stop], X[pilot], get=get), get)
        R = sla.solve_triangular(U, K_bs.T, lower=False, trans="T", check_finite=False)  # U⁻ᵀ K_Sb
        residual[start:stop] = diag[start:stop] - np.einsum("ij,ij->j", R, R)
    return np.maximum(residual, 0.0) / lam


def _leverage_centers(kernel, get, X, m, ridge, rng, block):
    """m distinct indices drawn without replacement with probabilities ∝ the leverage scores:
    the m smallest exponential keys E_i / ℓ_i (Efraimidis & Spirakis 2006)."""
    scores = _leverage_scores(kernel, get, X, ridge, rng, block)
    # Points explained exactly by the pilot (score 0) stay eligible, at the lowest weight.
    floor = max(float(scores.max()) * 1e-12, np.finfo(float).tiny)
    keys = rng.exponential(size=scores.size) / np.maximum(scores, floor)
    return np.sort(np.argpartition(keys, m - 1)[:m])


def _given_centers(centers, n, n_centers):
    idx = np.asarray(centers)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ParameterError(
            f"The 'centers' parameter of nystrom_fit must be 'uniform', 'leverage' or a 1-D array of training-row "
            f"indices; got an array of dtype {idx.dtype} and shape {idx.shape}. Pass e.g. np.arange(100) for the "
            "first 100 training points."
        )
    if idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
        raise ParameterError(
            f"The 'centers' indices of nystrom_fit must be distinct training-row indices in [0, {n - 1}]; got values "
            f"from {idx.min()} to {idx.max()} with {idx.size - np.unique(idx).size} repeat(s). Remove repeats and "
            "out-of-range entries."
        )
    if n_centers is not None and n_centers != idx.size:
        raise ParameterError(
            f"nystrom_fit got {idx.size} centre indices but n_centers={n_centers!r}; pass n_centers=None (or "
            f"{idx.size}) together with an index array."
        )
    return idx.astype(np.intp)


def _choose_centers(kernel, get, X, centers, n_centers, ridge, rng, block):
    """(rule, sorted or given centre indices) from the ``centers`` and ``n_centers`` arguments."""
    n = X.shape[0]
    if not isinstance(centers, str):
        return "given", _given_centers(centers, n, n_centers)
    rule = _check_choice("nystrom_fit", "centers", centers, _CENTER_RULES)
    m = _check_n_centers(n_centers, n)
    if m == n:
        return rule, np.arange(n)
    if rule == "uniform":
        return rule, _uniform_centers(n, m, rng)
    return rule, _leverage_centers(kernel, get, X, m, ridge, rng, block)


# --------------------------------------------------------------------------- validation
def _check_n_centers(n_centers, n):
    if n_centers is None:
        return min(n, DEFAULT_N_CENTERS)
    try:
        return check_param("nystrom_fit", "n_centers", n_centers, low=1, high=n, integer=True)
    except ParameterError as exc:
        raise ParameterError(
            f"{exc} The centres are training points, so there can be 1 to n_train = {n} of them; n_centers = "
            f"{n} gives the exact solver's prediction, fewer trade accuracy for memory n_train * n_centers * 8 bytes."
        ) from None


def _check_choice(owner, name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be one of {', '.join(map(repr, choices))}. Got {value!r} instead."
        )
    return value


def _default_block(m):
    return max(1, BLOCK_ENTRIES // m)


def _check_options(ridge, get, maxiter, tol, storage, memory_budget):
    ridge = check_param("nystrom_fit", "ridge", ridge, low=0.0)
    get = _check_get(get)
    maxiter = check_param("nystrom_fit", "maxiter", maxiter, low=1, integer=True)
    tol = check_param("nystrom_fit", "tol", tol, low=0.0, low_open=True, high=1.0, high_open=True)
    storage = _check_choice("nystrom_fit", "storage", storage, _STORAGE)
    budget = default_memory_budget() if memory_budget is None else check_param(
        "nystrom_fit", "memory_budget", memory_budget, low=0.0)
    return ridge, get, maxiter, tol, storage, budget


# --------------------------------------------------------------------------- fit and predict
def nystrom_fit(kernel, X_train, y_train, *, ridge: float, n_centers=None, centers="uniform", get: str = "ntk",
                maxiter: int = 100, tol: float = 1e-8, seed=0, block=None, storage: str = "auto",
                memory_budget=None, progress=None) -> "NystromPredictor":
    r"""Nyström kernel ridge regression solved by FALKON's preconditioned conjugate gradients.

    The t = ∞ mean of the trained infinite network (:func:`~ntk_infinite.solve.predict.gd_mse`)
    with the coefficients restricted to M centres; equal to it when M = n. Memory
    O(n·M) stored or O(block·M + M²) streamed, never n × n.

    Parameters
    ----------
    kernel : CompiledKernel, Architecture or str
    X_train : (n, d) array_like, or (n, S₁, …, S_k, C) images for a convolutional kernel
    y_train : (n,) or (n, k) array_like
    ridge : float, >= 0
        Absolute ridge λ, as in :func:`gd_mse` (Θ + λI).
    n_centers : int in [1, n], optional
        M; default ``min(n, DEFAULT_N_CENTERS)`` = min(n, 5000).
    centers : {"uniform", "leverage"} or 1-D int array
        How the centres are chosen (module docstring), or their training-row indices.
    get : {"ntk", "nngp"}
        The kernel regressed with: ``"ntk"`` (all layers trained) or ``"nngp"`` (readout only,
        the GP posterior mean with noise variance λ).
    maxiter : int
        Largest number of CG iterations.
    tol : float in (0, 1)
        Stop when ‖r‖ ≤ tol·‖b‖ in the preconditioned system, per output.
    seed : int, Generator or None
        Randomness of the centre choice.
    block : int, optional
        Rows per block of K(X, C) (default about 2²² entries per block).
    storage : {"auto", "stored", "streamed"}
        Keep K(X, C) or recompute it every iteration; ``"auto"`` keeps it when n·M·8 bytes
        fit in ``memory_budget``.
    memory_budget : float, optional
        Bytes; default :func:`default_memory_budget` (a quarter of RAM, at most 4 GiB).
    progress : callable(stage, done, total), optional
        Called with stage ``"K_nM"`` (rows computed), ``"cg"`` (iterations) as the fit goes.

    Returns
    -------
    NystromPredictor
        ``.predict(X_test)`` → :class:`~ntk_infinite.solve.predict.Prediction` (t = ∞, no
        covariance); ``.info`` (:class:`NystromInfo`), ``.alpha``, ``.center_index``.

    Notes
    -----
    .. math::

        \hat\alpha = \arg\min_\alpha \lVert Y - K_{nM}\alpha\rVert^2 + \lambda\alpha^\top K_{MM}\alpha,
        \quad \hat f(X^*) = K(X^*, C)\hat\alpha

    (Rudi, Carratino & Rosasco 2017; Meanti et al. 2020).

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> from ntk_infinite.solve.nystrom import nystrom_fit
    >>> X = np.random.default_rng(0).standard_normal((60, 3)); y = np.sin(X[:, 0])
    >>> arch = "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)"
    >>> exact = nk.predict.gd_mse(arch, X, y, ridge=1e-2).predict(X[:5]).mean
    >>> approx = nystrom_fit(arch, X, y, ridge=1e-2, n_centers=60, tol=1e-12).predict(X[:5]).mean
    >>> bool(np.allclose(approx, exact, rtol=1e-8, atol=1e-10))
    True
    """
    t0 = time.perf_counter()
    kernel = kernel if isinstance(kernel, CompiledKernel) else compile(kernel)
    X, Y, block = _check_data(kernel, X_train, y_train, block)
    n = X.shape[0]
    ridge, get, maxiter, tol, storage, budget = _check_options(ridge, get, maxiter, tol, storage, memory_budget)
    rule, index = _choose_centers(kernel, get, X, centers, n_centers, ridge, np.random.default_rng(seed), block)
    m = index.size
    block = block or _default_block(m)
    C = np.ascontiguousarray(X[index])
    keep = storage == "stored" or (storage == "auto" and 8.0 * n * m <= budget)
    cross = _CrossKernel(kernel, get, X, C, block, keep, progress)
    K_mm = getattr(kernel(C, get=get), get)
    alpha, cg = _solve(cross, K_mm, Y.reshape(n, -1), ridge, maxiter, tol, progress)
    info = NystromInfo(n_train=n, n_centers=m, centers=rule, storage="stored" if keep else "streamed",
                       iterations=cg["iterations"], relative_residual=cg["residual"], converged=cg["converged"],
                       jitter=cg["jitter"], kernel_entries=cross.entries, seconds=time.perf_counter() - t0)
    if not info.converged:
        _warn_not_converged(info, tol, maxiter, ridge, cg["breakdown"])
    return NystromPredictor(kernel, get, ridge, C, index, alpha if Y.ndim == 2 else alpha[:, 0], info)


def _check_data(kernel, X_train, y_train, block):
    """(X, Y, block) checked: inputs for the kernel, targets of matching length, a positive block or None."""
    X = kernel.check_inputs(X_train, "X_train")
    _check_nonempty(X.shape[0], f"X_train of shape {X.shape}", "nystrom_fit")
    Y = _check_targets(y_train, X.shape[0])
    if block is not None:
        block = check_param("nystrom_fit", "block", block, low=1, integer=True)
    return X, Y, block


def _solve(cross, K_mm, Y, ridge, maxiter, tol, progress):
    """α = Bβ with β from CG on Bᵀ H B β = Bᵀ K_nMᵀ Y (module docstring)."""
    pre = _FalkonPreconditioner(K_mm, cross.n, ridge)

    def system(V):
        U = pre.apply(V)
        HU = cross.gram_matvec(U)
        if ridge:
            HU += ridge * (K_mm @ U)
        return pre.apply_t(HU)

    report = None if progress is None else (lambda it: progress("cg", it, maxiter))
    beta, iterations, rel, breakdown = _pcg(system, pre.apply_t(cross.rmatvec(Y)), tol, maxiter, report)
    alpha = pre.apply(beta)
    if not np.isfinite(alpha).all():
        raise SingularKernelError(
            f"The Nyström coefficients overflowed (non-finite values) with ridge {ridge:g}: the normal equations "
            f"K_nMᵀK_nM + λK_MM of {K_mm.shape[0]} centres are too ill-conditioned at this scale. Pass a larger ridge "
            "or fewer centres."
        )
    return alpha, {"iterations": iterations, "residual": float(rel.max(initial=0.0)),
                   "converged": bool((rel <= tol).all()) and not breakdown, "jitter": pre.jitter,
                   "breakdown": breakdown}


def _warn_not_converged(info, tol, maxiter, ridge, breakdown):
    why = ("conjugate gradients broke down (no descent direction left: rounding in a nearly singular system)"
           if breakdown else f"it stopped at maxiter = {maxiter} iterations")
    advice = (f"pass a larger ridge (now {ridge:g}; the condition number of the system grows like "
              "λ_max(K)/ridge), a larger maxiter")
    if info.storage == "streamed":
        advice += " (each iteration recomputes K(X, C) here)"
    warnings.warn(
        f"nystrom_fit did not reach tol = {tol:g}: {why}, relative residual {info.relative_residual:.2e} after "
        f"{info.iterations} iteration(s) with {info.n_centers} centres. The predictions are those of the last "
        f"iterate (finite, but less accurate than asked); {advice}, or a looser tol.",
        NystromConvergenceWarning, stacklevel=user_stacklevel(),
    )


class NystromPredictor:
    r"""The fitted Nyström predictor :math:`\hat f(X^*) = K(X^*, C)\hat\alpha` (see :func:`nystrom_fit`).

    Attributes
    ----------
    kernel : CompiledKernel
    get : str
    ridge : float
    centers : ndarray
        The centres C, rows of X_train, (M, d) or (M, S₁, …, S_k, C).
    center_index : (M,) ndarray of int
        Their rows in X_train.
    alpha : (M,) or (M, k) ndarray
    info : NystromInfo
    """

    def __init__(self, kernel, get, ridge, centers, center_index, alpha, info):
        self.kernel, self.get, self.ridge = kernel, get, ridge
        self.centers, self.center_index, self.alpha, self.info = centers, center_index, alpha, info

    def __repr__(self):
        i = self.info
        return (f"NystromPredictor({self.kernel!r}, get={self.get!r}, n_train={i.n_train}, n_centers={i.n_centers}, "
                f"storage={i.storage!r}, iterations={i.iterations}, converged={i.converged})")

    def predict(self, X_test, t=np.inf, *, get=None, block=None) -> "Prediction":
        """Mean at ``X_test`` at the end of training (t = ∞), computed in row blocks.

        Parameters
        ----------
        X_test : array_like of X_train's per-sample shape
        t : float
            Only ``np.inf``: the Nyström solver gives the end of training.
        get : str, optional
            Must equal the ``get`` of the fit (the coefficients belong to that kernel).
        block : int, optional
            Test rows per block.

        Returns
        -------
        Prediction
            ``mean`` (n_test,) or (n_test, k), ``cov`` None, ``t`` inf.
        """
        if get is not None and get != self.get:
            raise ParameterError(
                f"This Nyström predictor was fitted with get={self.get!r}; got get={get!r}. Fit again with "
                f"nystrom_fit(..., get={get!r}) for the other kernel."
            )
        if isinstance(t, (str, bytes)) or np.ndim(t) != 0 or not float(t) == math.inf:
            raise ParameterError(
                f"The Nyström solver gives the t = inf predictor only; got t={t!r}. Use "
                "nk.predict.gd_mse(kernel, X_train, y_train, ridge=...).predict(X_test, t=t) for finite t."
            )
        X = self.kernel.check_inputs(X_test, "X_test", like=self.centers, like_name="X_train")
        m = self.centers.shape[0]
        block = _default_block(m) if block is None else check_param("predict", "block", block, low=1, integer=True)
        mean = np.empty((X.shape[0],) + self.alpha.shape[1:])
        for start in range(0, X.shape[0], block):
            stop = min(start + block, X.shape[0])
            mean[start:stop] = getattr(self.kernel(X[start:stop], self.centers, get=self.get), self.get) @ self.alpha
        return Prediction(mean, None, math.inf, self.get)
