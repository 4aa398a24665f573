r"""Model selection for kernel regression with the NNGP or NTK.

* :func:`loo_ridge`: closed-form leave-one-out errors of kernel ridge regression for a
  whole grid of ridges from one eigendecomposition.
* :func:`log_marginal_likelihood`: the GP log marginal likelihood with the NNGP or NTK as
  covariance, and its exact gradient with respect to every Dense and Conv layer's w_std and
  b_std (forward mode through the recursion, :mod:`ntk_infinite.evaluate.gradients`) and the ridge.
* :func:`select`: the best architecture and ridge over a grid, by either criterion.

The ridge λ is absolute: the regularised training matrix is K + λI.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ..errors import ArchitectureError, IllConditionedWarning, InputError, ParameterError, check_param
from ..kernel import CompiledKernel, compile
from ..describe.layers import Dense, ReLU, serial
from .predict import COND_TARGET, COND_WARN, NULL_N_FACTOR, SingularKernelError, gd_mse, user_stacklevel

__all__ = [
    "LOOResult",
    "MarginalLikelihood",
    "Selection",
    "loo_ridge",
    "ridge_path",
    "log_marginal_likelihood",
    "log_marginal_likelihood_path",
    "select",
    "relu_architectures",
]

_CRITERIA = ("loo", "ml")
_TASKS = ("regression", "classification")


# --------------------------------------------------------------------------- helpers
def _ridges(ridges) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(ridges, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all() or (arr < 0).any():
        raise ParameterError(
            f"ridges must be a non-empty 1-D sequence of finite numbers >= 0 (absolute ridges λ in K + λI); "
            f"got {ridges!r}."
        )
    return arr


def _square(K, name="gram") -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise InputError(f"{name} must be a square (n, n) Gram matrix; got shape {K.shape}.")
    if not np.isfinite(K).all():
        raise InputError(f"{name} contains NaN or infinite values; the Gram matrix must be finite.")
    return K


def _targets(y, n: int) -> np.ndarray:
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim not in (1, 2) or Y.shape[0] != n:
        raise InputError(f"y must have shape ({n},) or ({n}, k) for {n} training points; got shape {Y.shape}.")
    if not np.isfinite(Y).all():
        raise InputError("y contains NaN or infinite values; remove or impute them first.")
    return Y.reshape(n, -1)


def _spectrum(K: np.ndarray):
    s, V = np.linalg.eigh(K)
    lam_max = max(float(np.max(np.abs(s), initial=0.0)), np.finfo(float).tiny)
    cutoff = max(1.0 / COND_WARN, NULL_N_FACTOR * K.shape[0] * np.finfo(float).eps) * lam_max
    return s, V, lam_max, cutoff


def _warn_singular(what: str, bad: np.ndarray, s_min: float, lam_max: float):
    suggest = max(lam_max / COND_TARGET - s_min, lam_max / COND_TARGET)
    warnings.warn(
        f"{what}: K + λI is singular to working precision for the ridge(s) {np.array2string(bad, precision=3)} "
        f"(smallest eigenvalue of K {s_min:.3e}, largest {lam_max:.3e}); their scores are set to the worst value. "
        f"Use ridges >= {suggest:.2e}.",
        IllConditionedWarning,
        stacklevel=user_stacklevel(),
    )


# --------------------------------------------------------------------------- LOO
@dataclass(frozen=True)
class LOOResult:
    """Leave-one-out errors of kernel ridge regression over a grid of ridges.

    Attributes
    ----------
    ridges : (r,) ndarray
    mse : (r,) ndarray
        Mean over points and outputs of the squared LOO residual; ``inf`` where K + λI is
        singular to working precision.
    predictions : (r, n) or (r, n, k) ndarray
        The LOO predictions ŷ₍₋ᵢ₎(xᵢ) (NaN-free; set to 0 where the system is singular).
    """

    ridges: np.ndarray
    mse: np.ndarray
    predictions: np.ndarray

    @property
    def best_ridge(self) -> float:
        """The ridge with the smallest LOO error."""
        return float(self.ridges[int(np.argmin(self.mse))])


def loo_ridge(gram, y, ridges) -> LOOResult:
    r"""Closed-form leave-one-out errors of kernel ridge regression for many ridges.

    Parameters
    ----------
    gram : (n, n) array_like
        Training Gram matrix K (NNGP or NTK).
    y : (n,) or (n, k) array_like
    ridges : sequence of float
        Absolute ridges λ.

    Returns
    -------
    LOOResult

    Notes
    -----
    With :math:`A = K + \lambda I` and :math:`\alpha = A^{-1}y`, the residual of the model
    refitted without point i is (Rifkin & Lippert 2007, "Notes on regularized least
    squares", eq. for LOO; Allen 1974)

    .. math::

        y_i - \hat y_{(-i)}(x_i) = \frac{\alpha_i}{(A^{-1})_{ii}}.

    One eigendecomposition :math:`K = V\,\mathrm{diag}(s)\,V^\top` serves every λ:
    :math:`\alpha = V\,\mathrm{diag}(1/(s+\lambda))V^\top y` and
    :math:`(A^{-1})_{ii} = \sum_j V_{ij}^2/(s_j+\lambda)`, O(n²) per ridge.
    """
    K = _square(gram)
    n = K.shape[0]
    Y = _targets(y, n)
    lam = _ridges(ridges)
    if n < 2:
        raise InputError(f"Leave-one-out needs at least 2 training points; got {n}.")
    s, V, lam_max, cutoff = _spectrum(K)
    Z = V.T @ Y
    V2 = V * V
    mse = np.empty(lam.size)
    preds = np.zeros((lam.size, n, Y.shape[1]))
    singular = []
    for i, r in enumerate(lam):
        shifted = s + r
        if shifted[0] <= cutoff:
            mse[i] = np.inf
            singular.append(r)
            continue
        d = 1.0 / shifted
        alpha = V @ (d[:, None] * Z)
        h = V2 @ d
        resid = alpha / h[:, None]
        mse[i] = float(np.mean(resid**2))
        preds[i] = Y - resid
    if singular:
        _warn_singular("loo_ridge", np.array(singular), float(s[0]), lam_max)
    if np.ndim(y) == 1:
        preds = preds[..., 0]
    return LOOResult(lam, mse, preds)


def ridge_path(gram_train, gram_test_train, y, ridges) -> np.ndarray:
    r"""Kernel ridge predictions :math:`K_*(K + \lambda I)^{-1}Y` for every ridge, from one
    eigendecomposition of the training Gram matrix.

    Returns an array of shape (r, n_test) for 1-D y or (r, n_test, k). Ridges for which
    K + λI is singular to working precision give the pseudo-inverse solution and an
    :class:`~ntk_infinite.errors.IllConditionedWarning`.
    """
    K = _square(gram_train, "gram_train")
    Ks = np.asarray(gram_test_train, dtype=np.float64)
    if Ks.ndim != 2 or Ks.shape[1] != K.shape[0]:
        raise InputError(f"gram_test_train must have shape (n_test, {K.shape[0]}); got {Ks.shape}.")
    Y = _targets(y, K.shape[0])
    lam = _ridges(ridges)
    s, V, lam_max, cutoff = _spectrum(K)
    B = Ks @ V
    Z = V.T @ Y
    out = np.empty((lam.size, Ks.shape[0], Y.shape[1]))
    singular = []
    for i, r in enumerate(lam):
        shifted = s + r
        keep = shifted > cutoff
        if not keep.all():
            singular.append(r)
        inv = np.where(keep, 1.0 / np.where(keep, shifted, 1.0), 0.0)
        out[i] = B @ (inv[:, None] * Z)
    if singular:
        _warn_singular("ridge_path", np.array(singular), float(s[0]), lam_max)
    return out[..., 0] if np.ndim(y) == 1 else out


# --------------------------------------------------------------------------- marginal likelihood
@dataclass(frozen=True)
class MarginalLikelihood:
    """GP log marginal likelihood and (optionally) its gradient.

    Attributes
    ----------
    value : float
        log p(y | X), summed over independent outputs.
    gradient : (P + 1,) ndarray or None
        ∂/∂p for each name in ``parameters``.
    parameters : tuple of str
        ``"layers[i].w_std"``, ``"layers[i].b_std"`` for each Dense and Conv layer, then ``"ridge"``.
    """

    value: float
    gradient: np.ndarray | None
    parameters: tuple

    def as_dict(self) -> dict:
        """``{name: derivative}``."""
        if self.gradient is None:
            raise ValueError("The gradient was not computed; pass eval_gradient=True.")
        return dict(zip(self.parameters, self.gradient.tolist()))


def log_marginal_likelihood(kernel, X, y, *, ridge: float = 1e-6, get: str = "nngp",
                            eval_gradient: bool = False) -> MarginalLikelihood:
    r"""GP log marginal likelihood with the NNGP (or NTK) as covariance, and its gradient.

    Parameters
    ----------
    kernel : CompiledKernel, Architecture or str
    X : (n, d) array_like, or (n, S₁, …, S_k, C) images for a convolutional architecture
    y : (n,) or (n, k) array_like
        Each column is an independent GP sample.
    ridge : float, >= 0
        Absolute noise variance λ (covariance K + λI).
    get : {"nngp", "ntk"}
    eval_gradient : bool
        Also return the derivatives with respect to every Dense and Conv layer's w_std and b_std
        (exact, forward mode through the recursion) and the ridge.

    Returns
    -------
    MarginalLikelihood

    Notes
    -----
    With :math:`A = K + \lambda I`, :math:`\alpha = A^{-1}y` (Rasmussen & Williams 2006,
    eqs. 5.8 and 5.9):

    .. math::

        \log p(y) = -\tfrac12 y^\top\alpha - \tfrac12\log|A| - \tfrac n2\log 2\pi, \qquad
        \frac{\partial \log p}{\partial p} = \tfrac12\,\mathrm{tr}\!\left((\alpha\alpha^\top - A^{-1})
            \frac{\partial A}{\partial p}\right).
    """
    if get not in ("nngp", "ntk"):
        raise ParameterError(f"get must be 'nngp' or 'ntk'; got {get!r}.")
    ridge = check_param("log_marginal_likelihood", "ridge", ridge, low=0.0)
    compiled = kernel if isinstance(kernel, CompiledKernel) else compile(kernel)
    X = compiled.check_inputs(X, "X")
    Y = _targets(y, X.shape[0])
    n, k = Y.shape
    if eval_gradient:
        from ..evaluate.gradients import kernel_gradients

        g = kernel_gradients(compiled, X, get=get)
        K, dK, names = getattr(g, get), getattr(g, f"d_{get}"), g.parameters
    else:
        from ..evaluate.gradients import parameter_names

        K, dK, names = getattr(compiled(X, get=get), get), None, parameter_names(compiled.architecture)
    A = K + ridge * np.eye(n)
    try:
        L = sla.cholesky(A, lower=True, check_finite=False)
        rcond, info = lapack.dpocon(L, float(np.max(np.sum(np.abs(A), axis=0))), uplo="L")
        if info != 0 or not rcond * COND_WARN >= 1.0:
            raise np.linalg.LinAlgError("ill-conditioned")
    except np.linalg.LinAlgError:
        s = np.linalg.eigvalsh(A)
        lam_max = float(np.max(np.abs(s)))
        suggest = ridge + max(lam_max / COND_TARGET - float(s[0]), lam_max / COND_TARGET)
        raise SingularKernelError(
            f"The {get.upper()} covariance K + λI ({n}x{n}, ridge {ridge:g}) is not positive definite to working "
            f"precision (eigenvalues from {s[0]:.3e} to {lam_max:.3e}, condition "
            f"~{lam_max / max(abs(s[0]), 1e-300):.1e}); the marginal likelihood is undefined or dominated by "
            f"rounding. Pass ridge >= {suggest:.2e}."
        ) from None
    alpha = sla.cho_solve((L, True), Y, check_finite=False)
    value = float(-0.5 * np.sum(Y * alpha) - k * np.sum(np.log(np.diag(L))) - 0.5 * n * k * math.log(2 * math.pi))
    grad = None
    if eval_gradient:
        Ainv = sla.cho_solve((L, True), np.eye(n), check_finite=False)
        W = alpha @ alpha.T - k * Ainv  # Σ_k α_k α_kᵀ − k A⁻¹
        grad = np.array([0.5 * np.sum(W * dK[p]) for p in range(dK.shape[0])] + [0.5 * np.trace(W)])
    return MarginalLikelihood(value, grad, tuple(names) + ("ridge",))


def log_marginal_likelihood_path(gram, y, ridges) -> np.ndarray:
    r"""GP log marginal likelihood for many ridges from one eigendecomposition.

    .. math::

        \log p(y\mid\lambda) = -\tfrac12\sum_j \frac{(v_j^\top y)^2}{s_j + \lambda}
            - \tfrac12\sum_j \log(s_j + \lambda) - \tfrac n2 \log 2\pi

    (summed over outputs). Ridges where K + λI is singular to working precision give
    ``-inf`` and an :class:`~ntk_infinite.errors.IllConditionedWarning`.
    """
    K = _square(gram)
    n = K.shape[0]
    Y = _targets(y, n)
    lam = _ridges(ridges)
    s, V, lam_max, cutoff = _spectrum(K)
    Z2 = np.sum((V.T @ Y) ** 2, axis=1)
    out = np.empty(lam.size)
    singular = []
    for i, r in enumerate(lam):
        shifted = s + r
        if shifted[0] <= cutoff:
            out[i] = -np.inf
            singular.append(r)
            continue
        out[i] = -0.5 * np.sum(Z2 / shifted) - 0.5 * Y.shape[1] * np.sum(np.log(shifted)) \
            - 0.5 * n * Y.shape[1] * math.log(2 * math.pi)
    if singular:
        _warn_singular("log_marginal_likelihood_path", np.array(singular), float(s[0]), lam_max)
    return out


# --------------------------------------------------------------------------- select
@dataclass(frozen=True)
class Selection:
    """Result of :func:`select`.

    Attributes
    ----------
    architecture : Architecture
        The best architecture.
    ridge : float
        The best absolute ridge.
    score : float
        Its score (larger is better): −LOO MSE (regression), LOO accuracy
        (classification), or the log marginal likelihood.
    criterion, get, task : str
    results : tuple of dict
        One record per (architecture, ridge): ``{"arch", "ridge", "score"}``.
    """

    architecture: object
    ridge: float
    score: float
    criterion: str
    get: str
    task: str
    results: tuple

    def predictor(self, X_train, y_train):
        """:func:`~ntk_infinite.solve.predict.gd_mse` with the selected architecture and ridge."""
        return gd_mse(compile(self.architecture), X_train, y_train, ridge=self.ridge)


def relu_architectures(depths=(1, 2, 3, 4, 5), w_std=(math.sqrt(2.0),), b_std=(0.1,)) -> list:
    """Dense/ReLU architectures for every (depth, w_std, b_std): depth hidden layers and a readout."""
    archs = []
    for depth in depths:
        depth = check_param("relu_architectures", "depth", depth, low=0, integer=True)
        for w in w_std:
            for b in b_std:
                layers = []
                for _ in range(depth):
                    layers += [Dense(w_std=w, b_std=b), ReLU()]
                archs.append(serial(*layers, Dense(w_std=w, b_std=b)))
    return archs


def select(X, y, archs, ridges=None, *, criterion: str = "loo", get: str = "ntk",
           task: str = "regression") -> Selection:
    r"""Pick the architecture and ridge of the t = ∞ kernel regressor.

    Parameters
    ----------
    X : (n, d) array_like, or (n, S₁, …, S_k, C) images for a convolutional architecture
    y : (n,) or (n, k) array_like
        Targets; class labels when ``task="classification"`` (one-hot encoded inside).
    archs : sequence of Architecture or str
        Candidates, e.g. :func:`relu_architectures` (depths, scales). They all read the same
        ``X``: all dense, or all convolutional with the same number of spatial axes.
    ridges : sequence of float, optional
        Absolute ridges. Default: for each architecture, ``mean(diag K)·10^k`` for
        k = −8, −7.5, …, 1 (the reported ridge is absolute).
    criterion : {"loo", "ml"}
        Closed-form leave-one-out (:func:`loo_ridge`) or the GP log marginal likelihood
        (:func:`log_marginal_likelihood_path`); both from one eigendecomposition per
        architecture.
    get : {"ntk", "nngp"}
    task : {"regression", "classification"}
        For classification the LOO score is the accuracy of the argmax of the LOO
        predictions of one-hot targets.

    Returns
    -------
    Selection

    Notes
    -----
    .. math::

        y_i - \hat y_{(-i)} = \frac{[(K+\lambda I)^{-1}y]_i}{[(K+\lambda I)^{-1}]_{ii}}

    (Rifkin & Lippert 2007); the marginal likelihood as in Rasmussen & Williams (2006, eq. 5.8).
    """
    if criterion not in _CRITERIA:
        raise ParameterError(f"criterion must be 'loo' (leave-one-out) or 'ml' (marginal likelihood); got {criterion!r}.")
    if get not in ("ntk", "nngp"):
        raise ParameterError(f"get must be 'ntk' or 'nngp'; got {get!r}.")
    if task not in _TASKS:
        raise ParameterError(f"task must be 'regression' or 'classification'; got {task!r}.")
    archs = list(archs) if not isinstance(archs, (str, CompiledKernel)) and not hasattr(archs, "layers") else [archs]
    if not archs:
        raise ParameterError("archs is empty; pass at least one architecture (e.g. nk.solve.selection.relu_architectures()).")
    compiled_archs = [arch if isinstance(arch, CompiledKernel) else compile(arch) for arch in archs]
    X = _common_inputs(compiled_archs, X)
    if task == "classification":
        labels = np.asarray(y).ravel()
        if labels.shape[0] != X.shape[0]:
            raise InputError(f"y has {labels.shape[0]} labels but X has {X.shape[0]} rows.")
        classes, codes = np.unique(labels, return_inverse=True)
        Y = np.eye(classes.size)[codes]
    else:
        Y = _targets(y, X.shape[0])
        codes = None
    grid = None if ridges is None else _ridges(ridges)
    records, best = [], None
    for compiled in compiled_archs:
        K = getattr(compiled(X, get=get), get)
        lam = grid if grid is not None else float(np.mean(np.diag(K))) * 10.0 ** np.arange(-8.0, 1.01, 0.5)
        scores = _scores(K, Y, lam, criterion, codes)
        text = compiled.architecture.to_text() if _textual(compiled.architecture) else repr(compiled.architecture)
        for r, sc in zip(lam, scores):
            records.append({"arch": text, "ridge": float(r), "score": float(sc)})
            if best is None or sc > best[2]:
                best = (compiled.architecture, float(r), float(sc))
    if best is None or not np.isfinite(best[2]):
        raise SingularKernelError(
            "Every (architecture, ridge) candidate gave a singular system; include larger ridges (e.g. "
            "mean(diag K)·1e-6 and above)."
        )
    return Selection(best[0], best[1], best[2], criterion, get, task, tuple(records))


def _scores(K, Y, lam, criterion, codes):
    """Score of each ridge in ``lam`` (higher is better): the log marginal likelihood, or the
    leave-one-out accuracy (classification, ``codes`` the class indices) or −MSE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        if criterion == "ml":
            return log_marginal_likelihood_path(K, Y, lam)
        loo = loo_ridge(K, Y, lam)
    if codes is not None:
        return np.where(np.isfinite(loo.mse), np.mean(np.argmax(loo.predictions, axis=-1) == codes, axis=-1), -np.inf)
    return -loo.mse


def _common_inputs(kernels, X) -> np.ndarray:
    """``X`` checked by every candidate kernel; candidates that read different kinds of input
    (rows vs images, or images with different numbers of axes) cannot share one ``X``."""
    kinds = {(k.spatial, k.program.n_spatial if k.spatial else 0) for k in kernels}
    if len(kinds) > 1:
        shown = ", ".join(f"{i}: {_describe_inputs(k)}" for i, k in enumerate(kernels))
        raise ArchitectureError(
            f"The candidate architectures read different inputs ({shown}), but select() evaluates every candidate on "
            "one X. Run select() once per kind of input, e.g. once with the convolutional candidates on the images "
            "and once with the dense ones on X.reshape(len(X), -1), and compare their scores."
        )
    return kernels[0].check_inputs(X, "X")


def _describe_inputs(kernel) -> str:
    if not kernel.spatial:
        return "dense, (n, d) rows"
    k = kernel.program.n_spatial
    return f"{k}-D convolutional, (n, {', '.join(f'S{i + 1}' for i in range(k))}, C) images"


def _textual(arch) -> bool:
    return all(getattr(layer, "textual", True) for layer in arch)
