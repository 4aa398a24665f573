r"""Predictions of infinitely wide networks trained by gradient descent on the MSE loss.

Conventions (docs/DESIGN.md, "Math conventions"): loss
:math:`L = \tfrac12\sum_i \lVert f(x_i) - y_i\rVert^2` (a sum), continuous-time gradient flow
with learning rate η, so time enters only as the product ``t`` = η·t; the ridge λ is absolute.

With the NTK Θ, the NNGP K, training inputs X, test inputs X* and
:math:`E_t = I - e^{-\Theta t}`, the outputs of the linearised network at time t are
Gaussian over random initialisations with (Lee et al. 2019, eqs. 15-16)

.. math::

    \mu_t(X^*) &= \Theta_* \Theta^{-1} E_t\, Y, \\
    \Sigma_t(X^*) &= K_{**} + \Theta_*\Theta^{-1}E_t\, K\, E_t\Theta^{-1}\Theta_*^\top
        - \left(\Theta_*\Theta^{-1}E_t K_*^\top + K_* E_t\Theta^{-1}\Theta_*^\top\right),

where :math:`\Theta_* = \Theta(X^*, X)`, :math:`K_* = K(X^*, X)`, :math:`K_{**} = K(X^*, X^*)`.
``get="nngp"`` trains only the readout, whose tangent kernel is K itself: Θ is replaced by
K in every role, and at t = ∞ this is the Bayesian posterior :math:`K_* K^{-1} Y`,
:math:`K_{**} - K_* K^{-1} K_*^\top`.

The ridge λ. Gradient flow is regularised: the trained kernel Θ becomes Θ + λI in the
dynamics, :math:`E_t = I - e^{-(\Theta + \lambda I)t}` and :math:`(\Theta + \lambda I)^{-1}`
above. Two models of what λ means for the covariance (``ridge_model``):

* ``"flow"`` (default; the values of neural-tangents' ``gradient_descent_mse_ensemble`` with
  ``diag_reg=λ, diag_reg_absolute_scale=True``): the initial outputs keep their prior
  covariance K, unregularised, in the middle of the NTK covariance,
  :math:`\Sigma_t = K_{**} + G^\top K G - (K_* G + G^\top K_*^\top)` with
  :math:`G = E_t(\Theta+\lambda I)^{-1}\Theta_*^\top`. For ``get="nngp"`` (readout only) λ is
  the observation-noise variance of Bayesian inference: at t = ∞ the GP posterior
  :math:`K_{**} - K_*(K+\lambda I)^{-1}K_*^\top`, and at finite t
  :math:`K_{**} - K_*(K+\lambda I)^{-1}(I - e^{-2(K+\lambda I)t})K_*^\top`.
* ``"offset"``: one more trainable parameter per training point, an output offset initialised
  as N(0, λ): both training blocks become Θ + λI and K + λI, in every role, so the prior
  covariance of the training outputs is K + λI also in the NTK covariance.

The means are the same in both models; so are the NNGP covariances. neural-tangents' loss
is the mean over the n·k training outputs, so its time is this module's t times n·k. Either way the
covariance is the covariance of a linear map of the jointly Gaussian initial outputs, hence
positive semi-definite for every λ and t.

Numerics. At t = ∞ the training matrix is Cholesky-factorised; at finite t it is
eigendecomposed, :math:`\Theta = V\,\mathrm{diag}(s)\,V^\top`, and
:math:`\Theta^{-1}E_t = V\,\mathrm{diag}(-\mathrm{expm1}(-s t)/s)\,V^\top`, finite as s → 0
(the limit is t). Both factorisations are cached per kernel. A training matrix that is
singular to working precision (duplicate points, ridge 0) gives an
:class:`~ntk_infinite.errors.IllConditionedWarning` with the condition estimate and the ridge
that would fix it, and the t = ∞ predictor becomes the pseudo-inverse one, which is the
t → ∞ limit of gradient flow started from zero output. A training matrix with clearly
negative eigenvalues (not a kernel) raises :class:`SingularKernelError` at t = ∞. No
result is ever NaN.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ..errors import IllConditionedWarning, InputError, ParameterError, check_param
from ..kernel import CompiledKernel, compile
from ..results import Kernels

__all__ = ["gd_mse", "gd_mse_from_gram", "GDPredictor", "GramPredictor", "Prediction", "SingularKernelError",
           "nystrom", "NystromPredictor"]

#: Condition numbers above this get the pseudo-inverse treatment and a warning (about
#: four correct digits are left at cond·eps ≈ 1e-4).
COND_WARN = 1e12
#: The ridge suggested in messages targets this condition number.
COND_TARGET = 1e10
#: Eigenvalues below max(1/COND_WARN, NULL_N_FACTOR·n·eps)·λ_max are rounding noise.
NULL_N_FACTOR = 10.0
#: e^{|s| t} beyond this exponent overflows float64.
_MAX_EXPONENT = 700.0

_GET = ("ntk", "nngp")
#: What the ridge means for the covariance (module docstring).
RIDGE_MODELS = ("flow", "offset")
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class SingularKernelError(np.linalg.LinAlgError):
    """The training kernel cannot give a finite prediction (not positive semi-definite,
    or an overflow). The message gives the eigenvalue range and a ridge that fixes it."""


@dataclass(frozen=True)
class Prediction:
    """Output distribution of the trained infinite network over random initialisations.

    Attributes
    ----------
    mean : ndarray
        (n_test,) for 1-D targets, (n_test, k) for k outputs; with an array of times a
        leading axis of length ``len(t)``.
    cov : ndarray or None
        (n_test, n_test) covariance, the same for every output (the full covariance is
        ``cov ⊗ I_k``); (len(t), n_test, n_test) for an array of times; None unless
        ``cov=True``.
    t : float or ndarray
        The times η·t.
    get : str
        ``"ntk"`` (all layers trained) or ``"nngp"`` (readout only / Bayesian posterior).
    """

    mean: np.ndarray
    cov: np.ndarray | None
    t: float | np.ndarray
    get: str


# --------------------------------------------------------------------------- validation
def _check_get(get) -> str:
    if get not in _GET:
        raise ParameterError(
            f"get must be 'ntk' (gradient descent on all layers) or 'nngp' (readout only, the Bayesian "
            f"posterior at t = inf); got {get!r}."
        )
    return get


def _check_ridge_model(ridge_model) -> str:
    if ridge_model not in RIDGE_MODELS:
        raise ParameterError(
            f"gd_mse: ridge_model must be one of {RIDGE_MODELS}; got {ridge_model!r}. Use 'flow' (regularised "
            "gradient flow, neural-tangents' convention) or 'offset' (an N(0, ridge) output offset per training point)."
        )
    return ridge_model


def _check_times(t):
    arr = np.asarray(t, dtype=np.float64) if not isinstance(t, (str, bytes)) else None
    if arr is None or arr.ndim > 1:
        raise ParameterError(f"t must be a non-negative number (np.inf allowed) or a 1-D array of them; got {t!r}.")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ParameterError(
            f"t must be >= 0 (it is the learning rate times the training time; np.inf for the end of "
            f"training); got {t!r}."
        )
    return arr.ndim == 0, np.atleast_1d(arr)


def _check_nonempty(n: int, what: str, owner: str, fix: str = "the training inputs with one row per example") -> None:
    """A predictor needs training data: with no rows there is nothing to fit."""
    if n == 0:
        raise InputError(
            f"{owner} needs at least one training point; got {what} with 0 rows. Pass {fix} (and y_train "
            "with the same number of rows); if the data come from a filter or a split, check that it kept some rows."
        )


def _check_targets(y, n: int):
    if y is None:
        raise TypeError("y_train must be an array of shape (n_train,) or (n_train, k); got None.")
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"y_train must contain real numbers; got dtype {arr.dtype}. Encode labels as numbers first.")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise InputError(f"y_train must have shape (n_train,) or (n_train, k); got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise InputError(
            f"y_train has {arr.shape[0]} rows but there are {n} training points; pass one target row per "
            "training input."
        )
    if not np.isfinite(arr).all():
        raise InputError("y_train contains NaN or infinite values; remove or impute them first.")
    return arr


def _as_matrix(value, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be a 2-D numeric array; got {type(value).__name__} with shape {arr.shape}.")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values; the Gram matrix must be finite.")
    return arr


def _gram_dict(value, name: str) -> dict:
    """Kernels / mapping / single array -> {"nngp": ..., "ntk": ...} (missing keys absent)."""
    if isinstance(value, Kernels):
        items = {"nngp": value.nngp, "ntk": value.ntk}
    elif isinstance(value, dict):
        unknown = set(value) - {"nngp", "ntk"}
        if unknown:
            raise InputError(f"{name} may only have the keys 'nngp' and 'ntk'; got {sorted(unknown)}.")
        items = dict(value)
    elif value is None:
        items = {}
    else:
        arr = _as_matrix(value, name)
        return {"nngp": arr, "ntk": arr}
    return {k: _as_matrix(v, f"{name}[{k!r}]") for k, v in items.items() if v is not None}


# --------------------------------------------------------------------------- factorisation
class _Factorization:
    """Cached factorisations of one symmetric training matrix A = G + λI."""

    def __init__(self, A: np.ndarray, label: str, ridge: float):
        self.A = A
        self.n = A.shape[0]
        self.label = label
        self.ridge = ridge
        self._chol = None
        self._eig = None
        self._pinv = None
        self._warned_psd = False

    # ---- eigendecomposition (finite t, pseudo-inverse, spectrum) -------------------
    def eig(self):
        if self._eig is None:
            s, V = np.linalg.eigh(self.A)
            lam_max = max(float(np.max(np.abs(s), initial=0.0)), np.finfo(float).tiny)
            cutoff = max(1.0 / COND_WARN, NULL_N_FACTOR * self.n * np.finfo(float).eps) * lam_max
            self._eig = (s, V, lam_max, cutoff)
        return self._eig

    def _suggest(self, s_min: float, lam_max: float) -> float:
        return self.ridge + max(lam_max / COND_TARGET - s_min, lam_max / COND_TARGET)

    def _not_psd_message(self, s_min, lam_max):
        return (
            f"The {self.label} training matrix ({self.n}x{self.n}, ridge {self.ridge:g}) has a negative eigenvalue "
            f"{s_min:.3e} (largest {lam_max:.3e}): it is not positive semi-definite, so gradient flow diverges "
            f"along that direction. Check the Gram matrix, or pass ridge >= {self._suggest(s_min, lam_max):.2e}."
        )

    # ---- t = inf ------------------------------------------------------------------------
    def solve(self, R: np.ndarray) -> np.ndarray:
        """A⁻¹R (or the pseudo-inverse solution when A is singular to working precision)."""
        if self._chol is None and self._pinv is None:
            self._factor_inf()
        if self._chol is not None:
            return sla.cho_solve(self._chol, R, check_finite=False)
        keep, V, inv_s = self._pinv
        return V[:, keep] @ (inv_s[:, None] * (V[:, keep].T @ R))

    def _factor_inf(self):
        cond = np.inf
        if self.n == 0:
            self._chol = (np.zeros((0, 0)), True)
            return
        try:
            c, lower = sla.cho_factor(self.A, lower=True, check_finite=False)
            anorm = float(np.max(np.sum(np.abs(self.A), axis=0)))
            rcond, info = lapack.dpocon(c, anorm, uplo="L")
            cond = 1.0 / rcond if rcond > 0 else np.inf
            if info == 0 and cond <= COND_WARN:
                self._chol = (c, lower)
                return
        except np.linalg.LinAlgError:
            pass
        s, V, lam_max, cutoff = self.eig()
        s_min = float(s[0]) if s.size else 0.0
        if s_min < -cutoff:
            raise SingularKernelError(self._not_psd_message(s_min, lam_max))
        keep = s > cutoff
        if not np.isfinite(cond):
            cond = lam_max / max(abs(s_min), np.finfo(float).tiny)
        warnings.warn(
            f"The {self.label} training matrix ({self.n}x{self.n}, ridge {self.ridge:g}) is singular to working "
            f"precision: condition number ~{cond:.1e}, {int(np.sum(~keep))} eigenvalue(s) below {cutoff:.1e} "
            f"(largest {lam_max:.3e}); duplicate or nearly collinear inputs do this. The t = inf predictor uses the "
            f"pseudo-inverse (the limit of gradient flow started at zero output), which is sensitive to rounding. "
            f"Pass ridge >= {self._suggest(s_min, lam_max):.2e} for a well-posed system.",
            IllConditionedWarning,
            stacklevel=user_stacklevel(),
        )
        self._pinv = (keep, V, 1.0 / s[keep])

    # ---- finite t -----------------------------------------------------------------------
    def apply(self, R: np.ndarray, times: np.ndarray) -> np.ndarray:
        """A⁻¹(I − e^{−A t})R for each t, shape (len(times), n, m)."""
        out = np.empty((times.size,) + R.shape)
        finite = np.isfinite(times)
        if (~finite).any():
            out[~finite] = self.solve(R)
        if finite.any():
            s, V, lam_max, cutoff = self.eig()
            s_min = float(s[0]) if s.size else 0.0
            if s_min < -cutoff and not self._warned_psd:
                self._warned_psd = True
                warnings.warn(self._not_psd_message(s_min, lam_max) + " Finite-t results grow like exp(|λ| t).",
                              IllConditionedWarning, stacklevel=user_stacklevel())
            s_eff = np.where(np.abs(s) <= cutoff, np.maximum(s, 0.0), s)
            Z = V.T @ R
            for i in np.nonzero(finite)[0]:
                t = times[i]
                if s.size and -s_min * t > _MAX_EXPONENT:
                    raise SingularKernelError(
                        self._not_psd_message(s_min, lam_max) + f" At t = {t:g} the growth exp({-s_min * t:.0f}) "
                        "overflows; use a smaller t."
                    )
                out[i] = V @ (_flow_factor(s_eff, t)[:, None] * Z)
        return out

    def lam_max(self) -> float:
        return self.eig()[2]


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the first frame outside this package."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame = frame.f_back
        level += 1
    return level


def _flow_factor(s: np.ndarray, t: float) -> np.ndarray:
    r""":math:`(1 - e^{-s t})/s = -\mathrm{expm1}(-st)/s`, with the limit t at s = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        f = -np.expm1(-s * t) / s
    return np.where(s == 0.0, t, f)


# --------------------------------------------------------------------------- predictors
class GramPredictor:
    r"""Gradient-descent predictor from precomputed Gram matrices (see :func:`gd_mse_from_gram`)."""

    def __init__(self, train, y_train, ridge: float = 0.0, ridge_model: str = "flow"):
        self._train = _gram_dict(train, "k_train_train")
        if not self._train:
            raise InputError("k_train_train is empty; pass the training Gram matrices (nk.Kernels, a dict or an array).")
        n = None
        for name, K in self._train.items():
            if K.shape[0] != K.shape[1]:
                raise InputError(f"k_train_train[{name!r}] must be square (n_train, n_train); got shape {K.shape}.")
            n = K.shape[0] if n is None else n
            if K.shape[0] != n:
                raise InputError("The training Gram matrices have different sizes; pass matrices of the same inputs.")
            _check_nonempty(K.shape[0], f"k_train_train[{name!r}] of shape {K.shape}", "gd_mse_from_gram",
                            "the Gram matrices kernel(X_train) of at least one training input")
            scale = float(np.max(np.abs(K), initial=0.0))
            if not np.allclose(K, K.T, rtol=0.0, atol=1e-10 * max(scale, np.finfo(float).tiny)):
                raise InputError(
                    f"k_train_train[{name!r}] is not symmetric (largest asymmetry "
                    f"{np.max(np.abs(K - K.T)):.2e}); a training Gram matrix K(X, X) must be. Pass kernel(X) for the "
                    "training inputs, not a test-train block."
                )
        self.n_train = n
        self.ridge = check_param("gd_mse", "ridge", ridge, low=0.0)
        self.ridge_model = _check_ridge_model(ridge_model)
        self._y = _check_targets(y_train, n)
        self._factors: dict[str, _Factorization] = {}

    # ---- training matrices ----------------------------------------------------------
    def _train_gram(self, name: str) -> np.ndarray:
        if name not in self._train:
            raise InputError(
                f"The {name!r} training Gram matrix was not given; pass it in k_train_train (e.g. "
                f"kernel(X_train, get=('nngp', 'ntk')))."
            )
        return self._train[name]

    def _has(self, name: str) -> bool:
        return name in self._train

    def _factor(self, name: str) -> _Factorization:
        if name not in self._factors:
            G = self._train_gram(name)
            A = G + self.ridge * np.eye(G.shape[0]) if self.ridge else G
            label = "NTK" if name == "ntk" else "NNGP"
            self._factors[name] = _Factorization(A, label, self.ridge)
        return self._factors[name]

    def _prior_train_covariance(self, role: str) -> np.ndarray:
        """Covariance of the initial training outputs in the middle of the covariance: K + λI
        under the offset model and for the readout-only (Bayesian, noise λ) role, K itself for
        the NTK under regularised flow (module docstring)."""
        if role == "ntk" and self.ridge_model == "flow":
            return self._train_gram("nngp")
        return self._factor("nngp").A

    @property
    def max_learning_rate(self) -> float:
        r"""Largest stable learning rate of discrete gradient descent, :math:`2/\lambda_{max}`.

        With the summed loss, f ← f − ηΘ(f − y) on the training points converges iff
        η < 2/λ_max(Θ + λI). Uses the NTK when it is available, else the NNGP.
        """
        name = "ntk" if self._has("ntk") else "nngp"
        return 2.0 / self._factor(name).lam_max()

    # ---- the predictor ------------------------------------------------------------------
    def _predict(self, test_train: dict, kss, t, get: str, cov: bool) -> Prediction:
        get = _check_get(get)
        scalar, times = _check_times(t)
        role = get  # the kernel that is trained with (Θ, or K for the readout only)
        fac = self._factor(role)
        Ts = test_train.get(role)
        if Ts is None:
            raise InputError(f"The {role!r} test-train Gram matrix is needed for get={get!r}; it was not given.")
        if Ts.shape[1] != self.n_train:
            raise InputError(
                f"The test-train Gram matrix has {Ts.shape[1]} columns but there are {self.n_train} training points; "
                "pass kernel(X_test, X_train)."
            )
        Y = self._y.reshape(self.n_train, -1)
        if not cov:
            mean = np.einsum("ij,tjk->tik", Ts, fac.apply(Y, times))
            C = None
        else:
            Ks = test_train.get("nngp")
            if Ks is None or kss is None:
                raise InputError(
                    "cov=True needs the NNGP blocks K(X_test, X_train) and K(X_test, X_test); pass them (get='nngp' "
                    "or both kernels)."
                )
            if kss.shape != (Ts.shape[0], Ts.shape[0]):
                raise InputError(
                    f"k_test_test must be ({Ts.shape[0]}, {Ts.shape[0]}) for {Ts.shape[0]} test points; got {kss.shape}."
                )
            Kl = self._prior_train_covariance(role)
            G = fac.apply(np.ascontiguousarray(Ts.T), times)  # (T, n, n*) = E_t A⁻¹ Θ*ᵀ
            mean = np.einsum("tji,jk->tik", G, Y)
            C = np.empty((times.size,) + kss.shape)
            for i in range(times.size):
                cross = Ks @ G[i]
                C[i] = kss + G[i].T @ (Kl @ G[i]) - cross - cross.T
                C[i] = 0.5 * (C[i] + C[i].T)
        _assert_finite(mean, C)
        if self._y.ndim == 1:
            mean = mean[..., 0]
        if scalar:
            return Prediction(mean[0], None if C is None else C[0], float(times[0]), get)
        return Prediction(mean, C, times, get)

    def predict(self, k_test_train, k_test_test=None, *, t=np.inf, get: str = "ntk", cov: bool = False) -> Prediction:
        r"""Mean (and covariance) of the trained network's outputs on test points.

        Parameters
        ----------
        k_test_train : Kernels, dict or (n_test, n_train) ndarray
            K(X*, X) and/or Θ(X*, X). A plain array plays both roles.
        k_test_test : Kernels, dict or (n_test, n_test) ndarray, optional
            K(X*, X*); only its NNGP is used, and only when ``cov=True``.
        t : float or 1-D array
            Learning rate times time, η·t ≥ 0; ``np.inf`` for the end of training.
        get : {"ntk", "nngp"}
        cov : bool
            Also return the covariance over initialisations.

        Returns
        -------
        Prediction

        Notes
        -----
        .. math::

            \mu_t = \Theta_*\Theta^{-1}(I - e^{-\Theta t})Y

        (Lee et al. 2019, eq. 16), with Θ + λI for Θ; see the module docstring for the
        covariance.
        """
        tt = _gram_dict(k_test_train, "k_test_train")
        kss = _gram_dict(k_test_test, "k_test_test").get("nngp") if k_test_test is not None else None
        return self._predict(tt, kss, t, get, cov)

    def predict_train(self, t=np.inf, *, get: str = "ntk", cov: bool = False) -> Prediction:
        """The network's outputs at the training inputs along the flow (the test formula at X* = X).

        Same parameters and return value as :meth:`predict`, without the test matrices.
        """
        get = _check_get(get)
        grams = {get: self._train_gram(get)}
        if cov:
            grams["nngp"] = self._train_gram("nngp")
        return self._predict(grams, grams.get("nngp") if cov else None, t, get, cov)


def _assert_finite(mean, C):
    if not np.isfinite(mean).all() or (C is not None and not np.isfinite(C).all()):
        raise SingularKernelError(
            "The prediction overflowed (non-finite values) although the inputs are finite; the training kernel is "
            "too ill-conditioned or its scale too large. Rescale the kernel or pass a larger ridge."
        )


class GDPredictor(GramPredictor):
    """Gradient-descent predictor of a compiled kernel on training data (see :func:`gd_mse`).

    The training Gram matrices are computed on first use and cached, together with their
    factorisations.
    """

    def __init__(self, kernel, X_train, y_train, ridge: float = 0.0, ridge_model: str = "flow"):
        if isinstance(kernel, CompiledKernel):
            self.kernel = kernel
        else:
            self.kernel = compile(kernel)
        # (n, d) rows for a dense kernel, (n, S₁, …, S_k, C) images for a convolutional one.
        self.X_train = self.kernel.check_inputs(X_train, "X_train")
        n = self.X_train.shape[0]
        _check_nonempty(n, f"X_train of shape {self.X_train.shape}", "gd_mse")
        self.n_train = n
        self.ridge = check_param("gd_mse", "ridge", ridge, low=0.0)
        self.ridge_model = _check_ridge_model(ridge_model)
        self._y = _check_targets(y_train, n)
        self._train = {}
        self._factors = {}

    def _has(self, name: str) -> bool:
        return True  # computed on demand

    def _train_gram(self, name: str) -> np.ndarray:
        if name not in self._train:
            get = ("nngp", "ntk") if name == "ntk" else ("nngp",)
            k = self.kernel(self.X_train, get=get)
            self._train.update({g: getattr(k, g) for g in get})
        return self._train[name]

    def _test_grams(self, X_test, get: str, cov: bool):
        X_test = self.kernel.check_inputs(X_test, "X_test", like=self.X_train, like_name="X_train")
        names = tuple(sorted({get} | ({"nngp"} if cov else set())))
        k = self.kernel(X_test, self.X_train, get=names)
        tt = {g: getattr(k, g) for g in names}
        kss = self.kernel(X_test, get="nngp").nngp if cov else None
        return tt, kss

    def predict(self, X_test, t=np.inf, *, get: str = "ntk", cov: bool = False) -> Prediction:
        r"""Mean (and covariance) of the trained infinite network's outputs at ``X_test``.

        Parameters
        ----------
        X_test : (n_test, d) array_like, or (n_test, S₁, …, S_k, C) images of X_train's shape
            for a convolutional kernel
        t : float or 1-D array
            Learning rate times time, η·t ≥ 0; ``np.inf`` (default) for the end of training.
        get : {"ntk", "nngp"}
            ``"ntk"``: all layers trained; ``"nngp"``: readout only (the GP posterior at t = ∞).
        cov : bool
            Also compute the covariance over random initialisations (needs K(X*, X*)).

        Returns
        -------
        Prediction

        Notes
        -----
        .. math::

            \mu_t = \Theta_*\Theta^{-1}(I - e^{-\Theta t})Y, \qquad
            \Sigma_t = K_{**} + \Theta_*\Theta^{-1}E_t K E_t\Theta^{-1}\Theta_*^\top
                - (\Theta_*\Theta^{-1}E_t K_*^\top + \text{transpose})

        (Lee et al. 2019), with Θ + λI for Θ and, in the middle term, K (``ridge_model="flow"``)
        or K + λI (``"offset"``; always for ``get="nngp"``).

        Examples
        --------
        >>> import numpy as np, ntk_infinite as nk
        >>> X = np.random.default_rng(0).standard_normal((20, 3)); y = np.sin(X[:, 0])
        >>> pred = nk.predict.gd_mse("Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", X, y, ridge=1e-6)
        >>> out = pred.predict(X[:5], t=np.inf)
        >>> bool(np.allclose(out.mean, y[:5], atol=1e-4))
        True
        """
        get = _check_get(get)
        _check_times(t)
        tt, kss = self._test_grams(X_test, get, cov)
        return self._predict(tt, kss, t, get, cov)


def gd_mse(kernel, X_train, y_train, ridge: float = 0.0, *, ridge_model: str = "flow") -> GDPredictor:
    r"""Predictor of an infinitely wide network trained by gradient flow on the MSE loss.

    Parameters
    ----------
    kernel : CompiledKernel, Architecture or str
        What :func:`~ntk_infinite.compile` returns or accepts.
    X_train : (n, d) array_like, or (n, S₁, …, S_k, C) images (channels last) for a
        convolutional architecture
    y_train : (n,) or (n, k) array_like
    ridge : float, >= 0
        Absolute ridge λ of regularised gradient flow: Θ + λI in the dynamics (neural-tangents'
        ``diag_reg`` with ``diag_reg_absolute_scale=True``).
    ridge_model : {"flow", "offset"}
        What λ means for the covariance: ``"flow"`` keeps the prior K of the initial outputs
        (neural-tangents' values), ``"offset"`` adds an N(0, λ) output offset per training
        point (K + λI); see :mod:`ntk_infinite.solve.predict`. The mean is the same.

    Returns
    -------
    GDPredictor
        ``.predict(X_test, t=np.inf, get="ntk", cov=False)``, ``.predict_train(t)``,
        ``.max_learning_rate``. Gram matrices and factorisations are cached.

    Notes
    -----
    .. math::

        f_t(X^*) = \Theta_*\Theta^{-1}(I - e^{-\Theta t})Y \quad \text{(mean over initialisations)}

    for the summed loss ½Σ‖f − y‖² and time η·t (Lee et al. 2019).
    """
    return GDPredictor(kernel, X_train, y_train, ridge, ridge_model)


def gd_mse_from_gram(k_train_train, y_train, ridge: float = 0.0, *, ridge_model: str = "flow") -> GramPredictor:
    r"""The same predictor as :func:`gd_mse` from precomputed Gram matrices.

    Parameters
    ----------
    k_train_train : Kernels, dict or (n, n) ndarray
        Training Gram matrices: ``kernel(X_train)`` (an :class:`~ntk_infinite.Kernels`), a dict
        with keys ``"nngp"``/``"ntk"``, or one array used in both roles (a kernel whose only
        trained layer is the readout).
    y_train : (n,) or (n, k) array_like
    ridge : float, >= 0
    ridge_model : {"flow", "offset"}
        As in :func:`gd_mse`.

    Returns
    -------
    GramPredictor
        ``.predict(k_test_train, k_test_test=None, t=np.inf, get="ntk", cov=False)``.

    Notes
    -----
    .. math::

        \mu_t = \Theta_*(\Theta + \lambda I)^{-1}\left(I - e^{-(\Theta + \lambda I)t}\right)Y

    (Lee et al. 2019, with the absolute ridge λ).
    """
    return GramPredictor(k_train_train, y_train, ridge, ridge_model)


# Last: the Nyström solver imports this module's Prediction and checks.
from .nystrom import NystromPredictor, nystrom_fit as nystrom  # noqa: E402,F401
