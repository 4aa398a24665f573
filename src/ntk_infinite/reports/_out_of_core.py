r"""Exact kernel regression from an on-disk Gram store, in O(M·n + block·n) memory (the ``blocked``
route of ``tables/scale.md``).

The t = ∞ mean of gradient-descent training with ridge λ is Θ(X*, X) α with (Θ + λI) α = y. Θ is
written once to a ``.npy`` store with :meth:`CompiledKernel.gram_to`; the system is then solved by
preconditioned conjugate gradients whose products Θ v read the store in row panels with explicit
``readinto`` calls into one reused buffer, so the process never maps the n × n file (the operating
system's page cache may hold it; it is not part of the process's resident set).

Preconditioner: the subset-of-regressors approximation Θ ≈ Θ_nM Θ_MM⁻¹ Θ_Mn with M uniform centres,
whose rows Θ_Mn are read from the store (Θ is symmetric). By the Woodbury identity
(Θ_nM Θ_MM⁻¹ Θ_Mn + λI)⁻¹ = λ⁻¹ [I − Θ_nM (λ Θ_MM + Θ_Mn Θ_nM)⁻¹ Θ_Mn], applied with one Cholesky
factor of an M × M matrix (Rasmussen & Williams 2006, §8.3; the same low-rank preconditioner
idea as FALKON, Rudi et al. 2017).
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.linalg as sla

from ..solve.nystrom import _jittered_cholesky

PANEL_BYTES = 256 * 2**20


class _NpyRows:
    """Row panels of a C-ordered float64 ``.npy`` file, read into a reused buffer."""

    def __init__(self, path):
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        version = np.lib.format.read_magic(self._fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(self._fh)
        if fortran or dtype != np.float64 or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered float64 matrix, got {dtype} {shape}")
        self.shape = shape
        self._offset = self._fh.tell()
        n = shape[1]
        self.panel = max(1, min(shape[0], PANEL_BYTES // (8 * n)))
        self._buffer = np.empty((self.panel, n))

    def rows(self, start, stop):
        """Rows start:stop (at most one panel), a view of the reused buffer."""
        out = self._buffer[: stop - start]
        self._fh.seek(self._offset + 8 * start * self.shape[1])
        if self._fh.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise OSError("short read from the Gram store")
        return out

    def close(self):
        self._fh.close()


def _matvec(reader, V):
    out = np.empty_like(V)
    n = reader.shape[0]
    for start in range(0, n, reader.panel):
        stop = min(n, start + reader.panel)
        out[start:stop] = reader.rows(start, stop) @ V
    return out


def _preconditioner(reader, centres, ridge):
    """V ↦ (Θ_nM Θ_MM⁻¹ Θ_Mn + λI)⁻¹ V by the Woodbury identity."""
    K_mn = np.empty((centres.size, reader.shape[1]))
    for i, c in enumerate(centres):
        K_mn[i] = reader.rows(int(c), int(c) + 1)[0]
    K_mm = K_mn[:, centres]
    inner = ridge * K_mm + K_mn @ K_mn.T
    scale = max(float(np.max(np.diag(inner))), np.finfo(float).tiny)
    R, _ = _jittered_cholesky(inner, scale, "preconditioner matrix λ Θ_MM + Θ_Mn Θ_nM")

    def apply(V):
        W = sla.cho_solve((R, False), K_mn @ V, check_finite=False)
        return (V - K_mn.T @ W) / ridge

    return apply


def store_regression(kernel, X, y, X_test, ridge, store, *, n_centers=1000, tol=1e-8, maxiter=500, seed=0):
    """(prediction at X_test, info dict): the exact t = ∞ NTK mean, Θ from the store at ``store``."""
    t0 = time.perf_counter()
    kernel.gram_to(store, X, get="ntk", format="npy")
    gram_s = time.perf_counter() - t0
    reader = _NpyRows(os.path.join(os.fspath(store), "ntk.npy"))
    try:
        n = reader.shape[0]
        centres = np.sort(np.random.default_rng(seed).choice(n, size=min(n, n_centers), replace=False))
        precondition = _preconditioner(reader, centres, ridge)
        alpha, its, residual = _pcg_preconditioned(lambda V: _matvec(reader, V) + ridge * V, precondition,
                                                 np.asarray(y, float)[:, None], tol, maxiter)
    finally:
        reader.close()
    fit_s = time.perf_counter() - t0
    pred = np.zeros(len(X_test))
    step = max(1, PANEL_BYTES // (8 * len(X_test)))
    for start in range(0, n, step):  # Θ(X*, X) α in column panels
        pred += kernel(X_test, X[start:start + step], get="ntk").ntk @ alpha[start:start + step, 0]
    return pred, {"fit_s": fit_s, "gram_s": gram_s, "iterations": its, "converged": residual <= tol,
                  "residual": residual, "n_centers": int(centres.size), "storage": "npy store"}


def _pcg_preconditioned(apply_system, precondition, b, tol, maxiter):
    """Preconditioned CG on S x = b (one column): x, iterations, relative residual ‖r‖/‖b‖."""
    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = float(np.sum(r * z))
    norm_b = float(np.linalg.norm(b)) or 1.0
    its = 0
    while its < maxiter and np.linalg.norm(r) > tol * norm_b:
        Sp = apply_system(p)
        step = rz / float(np.sum(p * Sp))
        x += step * p
        r -= step * Sp
        z = precondition(r)
        rz_new = float(np.sum(r * z))
        p = z + (rz_new / rz) * p
        rz = rz_new
        its += 1
    return x, its, float(np.linalg.norm(r)) / norm_b
