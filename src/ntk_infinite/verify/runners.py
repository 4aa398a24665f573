r"""Verification of the analytic kernels against finite networks, and ``ntk-infinite verify``.

Three properties, each measured on real finite networks (:mod:`ntk_infinite.verify.empirical`):

1. **Kernel convergence.** The per-network relative Frobenius error of the empirical NNGP and
   NTK, :math:`\|\hat K_\theta - K\|_F/\|K\|_F`, is a Monte-Carlo fluctuation of variance
   O(1/n) (Jacot et al. 2018; Hanin & Nica 2020), so its root mean square over seeds falls
   as :math:`n^{-1/2}`: the fitted log-log slope must be −0.5 ± 0.1. The mean over S seeds
   must agree with the analytic kernel to within its standard error: the statistic
   :math:`z = \|\bar K - K\|_F / \mathrm{SE}_F` with :math:`\mathrm{SE}_F^2 = \sum_{ij}
   \hat\sigma^2_{ij}/S` is compared with a Student-t critical value for S − 1 degrees of
   freedom at a false-alarm rate of 1e-3 (a single dominant mode is the worst case).
2. **Trained networks.** A network trained by gradient flow matches the analytic predictor
   given its own initial function,
   :math:`f_t = f_0 - \Theta_*\Theta^{-1}(I - e^{-\eta\Theta t})(f_0 - Y)` (Lee et al. 2019),
   with a deviation that falls at least as fast as :math:`n^{-1/2}`, and the mean over seeds
   matches :math:`\mu_t = \Theta_*\Theta^{-1}(I - e^{-\eta\Theta t})Y` within the standard error
   given by the analytic covariance over initialisations (Bonferroni over test points).
3. **Lazy training.** :math:`\|\hat\Theta_T - \hat\Theta_0\|_F/\|\hat\Theta_0\|_F` and
   :math:`\|\theta_T-\theta_0\|/\|\theta_0\|` fall at least as fast as :math:`n^{-1/2}` (the bound of
   Lee et al. 2019, Theorem 2.1); measured slopes are steeper (about −1 for the parameters of
   networks with a hidden-to-hidden layer, whose norm grows like n, and between −0.75 and −1
   for the kernel, cf. Dyer & Gur-Ari 2019). With an output scale α (Chizat, Oyallon &
   Bach 2019) the same changes fall like 1/α.

Slopes are least-squares fits of log RMS error on log width; their standard errors come
from a bootstrap over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..describe.layers import Dense
from ..describe.spatial import Conv
from .empirical import FiniteNetwork, as_architecture, as_network_input, input_shape_of, thin_blas
from ..errors import InputError, ParameterError, check_param
from ..solve.predict import gd_mse_from_gram
from .data import digit_images, sample_data
from .training import train

__all__ = [
    "SlopeFit",
    "fit_slope",
    "KernelConvergence",
    "kernel_convergence",
    "TrainingAgreement",
    "training_agreement",
    "OutputScaleSweep",
    "output_scale_sweep",
    "sample_data",
    "digit_images",
    "register",
]

#: Expected log-log slope of a Monte-Carlo fluctuation of variance O(1/width).
EXPECTED_SLOPE = -0.5
#: Allowed deviation of a fitted slope from EXPECTED_SLOPE (the acceptance band for the width^-1/2 rate).
SLOPE_TOL = 0.1
#: False-alarm rate of the agreement tests (two-sided, per test).
FALSE_ALARM = 1e-3
#: Outcomes of a check: within the stated tolerance; outside it by more than the statistical
#: uncertainty allows; or neither (too few samples to tell).
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
#: Bootstrap resamples for slope standard errors.
BOOTSTRAP = 400
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_TRAIN_WIDTHS = (64, 128, 256, 512, 1024)
#: Convolutional architectures: a Conv layer of w channels after one of w has |k|·w² weights,
#: applied at every position, so the dense sweep up to 4096 would take hours on 8×8 images.
DEFAULT_CONV_WIDTHS = (32, 64, 128, 256, 512)
DEFAULT_CONV_TRAIN_WIDTHS = (32, 64, 128, 256)
DEFAULT_ARCH = "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)"


# ---------------------------------------------------------------------- slopes
@dataclass(frozen=True)
class SlopeFit:
    """A least-squares fit log y = a + slope·log x, with a bootstrap standard error."""

    slope: float
    intercept: float
    stderr: float

    def check(self, target: float, tol: float, *, upper_only: bool = False) -> str:
        """PASS within ``tol`` of ``target``; FAIL beyond ``tol`` plus z·stderr (z at
        FALSE_ALARM); INCONCLUSIVE in between (more seeds would decide).

        With ``upper_only`` only slopes above ``target + tol`` count (falling faster is fine).
        """
        dev = self.slope - target if upper_only else abs(self.slope - target)
        if not np.isfinite(dev):
            return INCONCLUSIVE
        if dev <= tol:
            return PASS
        return FAIL if dev > tol + _z_normal() * self.stderr else INCONCLUSIVE

    def __str__(self):
        return f"{self.slope:+.3f} ± {self.stderr:.3f}"


def fit_slope(x, samples, *, seed: int = 0, bootstrap: int = BOOTSTRAP) -> SlopeFit:
    r"""Fit the log-log slope of the root mean square of ``samples`` against ``x``.

    Parameters
    ----------
    x : (W,) array_like
        Widths (or output scales).
    samples : (W, S) array_like
        Per-seed values (e.g. relative errors); the fitted quantity is
        :math:`\sqrt{\overline{v^2}}` per row.

    .. math::

        \log \mathrm{rms}_w = a + s \log x_w, \qquad s = \frac{\sum (u - \bar u)(v - \bar v)}{\sum (u-\bar u)^2}.

    The standard error is the spread of ``s`` over bootstrap resamples of the seeds.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(samples, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != x.size or x.size < 2:
        raise ParameterError(f"fit_slope needs samples of shape (len(x) >= 2, S); got x {x.shape}, samples {v.shape}.")
    u = np.log(x)
    uc = u - u.mean()

    def slope_of(vals):
        y = np.log(np.sqrt(np.mean(vals**2, axis=-1)))
        return (y - y.mean(axis=-1, keepdims=True)) @ uc / (uc @ uc), y

    s, y = slope_of(v)
    a = float(y.mean() - s * u.mean())
    S = v.shape[1]
    se = 0.0
    if S > 1 and bootstrap:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, S, size=(bootstrap, v.shape[0], S))
        boot = np.take_along_axis(v[None, :, :].repeat(bootstrap, axis=0), idx, axis=2)
        se = float(np.std(slope_of(boot)[0], ddof=1))
    return SlopeFit(float(s), a, se)


def _z_normal(alpha: float = FALSE_ALARM) -> float:
    from scipy import stats

    return float(stats.norm.isf(alpha / 2))


def _combine(*outcomes) -> str:
    if FAIL in outcomes:
        return FAIL
    return INCONCLUSIVE if INCONCLUSIVE in outcomes else PASS


def _t_critical(dof: int, alpha: float = FALSE_ALARM) -> float:
    from scipy import stats

    return float(stats.t.isf(alpha / 2, max(dof, 1)))


def _rng_seed(*key) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(k) for k in key])


# ---------------------------------------------------------------------- property 1
@dataclass(frozen=True)
class KernelConvergence:
    """Empirical vs analytic kernel over widths (property 1), for one kernel.

    Attributes
    ----------
    kernel : str
        ``"nngp"`` or ``"ntk"``.
    widths : tuple of int
    errors : (W, S) ndarray
        Relative Frobenius error of each seed's network.
    mean_error : (W,) ndarray
        Relative error of the mean over seeds.
    z : (W,) ndarray
        :math:`\\|\\bar K - K\\|_F / \\mathrm{SE}_F`.
    resolution : (W,) ndarray
        Smallest relative discrepancy the test detects: ``z_critical · SE_F / ‖K‖_F``.
    z_critical : float
    fit : SlopeFit
    """

    kernel: str
    widths: tuple
    errors: np.ndarray
    mean_error: np.ndarray
    z: np.ndarray
    resolution: np.ndarray
    z_critical: float
    fit: SlopeFit
    exact: bool = False

    @property
    def rms_error(self) -> np.ndarray:
        return np.sqrt(np.mean(self.errors**2, axis=1))

    @property
    def slope_verdict(self) -> str:
        """Fitted slope within −0.5 ± 0.1 (PASS), or significantly outside (FAIL)."""
        return PASS if self.exact else self.fit.check(EXPECTED_SLOPE, SLOPE_TOL)

    @property
    def agreement_verdict(self) -> str:
        """Mean over seeds at the largest width within z_critical standard errors."""
        return PASS if self.exact or self.z[-1] <= self.z_critical else FAIL

    @property
    def verdict(self) -> str:
        return _combine(self.slope_verdict, self.agreement_verdict)


def kernel_convergence(arch, X, *, widths=DEFAULT_WIDTHS, samples: int = 16, analytic=None,
                       seed: int = 0, progress=None) -> dict:
    """Property 1 on inputs ``X``: ``{"nngp": KernelConvergence, "ntk": KernelConvergence}``.

    Parameters
    ----------
    arch : architecture, list of layers or str
    X : (n, d) or (n, S₁, …, S_k, C) array_like
        Dense inputs, or spatial ones (channels last) for a convolutional architecture.
    widths : sequence of int
        Hidden widths (channels of every Conv; at least 2).
    samples : int
        Networks per width (S >= 2).
    analytic : Kernels, optional
        The analytic kernels on ``X`` to check (default ``nk.compile(arch)(X)``). Ignored for a
        standard-parameterisation network, whose kernels depend on the width: each width is
        checked against ``nk.compile(at_width(arch, width))(X)``.
    seed : int
        Root of the seeds; network s at width w uses ``SeedSequence([seed, w, s])``.
    progress : callable(done, total), optional
    """
    from ..kernel import compile as compile_kernel

    arch = as_architecture(arch)
    X = as_network_input(X, "X")
    widths = _check_widths(widths)
    samples = check_param("kernel_convergence", "samples", samples, low=2, integer=True)
    if width_dependent(arch):
        analytic = None  # standard parameterisation: each width has its own analytic kernels
    elif analytic is None:
        analytic = compile_kernel(arch)(X)
    per = {name: np.empty((len(widths), samples)) for name in ("nngp", "ntk")}
    mean_err = {name: np.empty(len(widths)) for name in per}
    rel_se = {name: np.empty(len(widths)) for name in per}
    total, done = len(widths) * samples, 0
    with thin_blas():
        for wi, width in enumerate(widths):
            targets = _convergence_targets(_analytic_at(arch, X, width, analytic), X.shape[0])
            net = FiniteNetwork(arch, input_shape_of(X), width=width)
            stacks = {name: [] for name in targets}
            for s in range(samples):
                theta = net.init(_rng_seed(seed, width, s))
                stacks["nngp"].append(net.nngp(theta, X))
                stacks["ntk"].append(net.ntk_per_output(theta, X))
                del theta
                done += 1
                if progress:
                    progress(done, total)
            for name, K in targets.items():
                st = np.stack(stacks[name])
                norm = np.linalg.norm(K)
                per[name][wi] = np.linalg.norm(st - K, axis=(1, 2)) / norm
                mean_err[name][wi] = np.linalg.norm(st.mean(axis=0) - K) / norm
                rel_se[name][wi] = math.sqrt(float(np.sum(st.var(axis=0, ddof=1))) / samples) / norm
    zc = _t_critical(samples - 1)
    out = {}
    for name in per:
        exact = bool(np.all(per[name] <= 1e-12))  # no random hidden layer: nothing to converge
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(exact, 0.0, mean_err[name] / rel_se[name])
        fit = SlopeFit(float("nan"), float("nan"), 0.0) if exact else fit_slope(widths, per[name], seed=seed)
        out[name] = KernelConvergence(name, widths, per[name], mean_err[name], z, zc * rel_se[name], zc, fit, exact)
    return out


def _convergence_targets(analytic, n: int) -> dict:
    """The analytic NNGP and NTK on the n inputs, refused when a relative error is undefined."""
    targets = {"nngp": np.asarray(analytic.nngp), "ntk": np.asarray(analytic.ntk)}
    for name, K in targets.items():
        if K.shape != (n, n) or not np.isfinite(K).all() or not np.any(K):
            raise InputError(
                f"The analytic {name.upper()} on X must be a finite, non-zero ({n}, {n}) matrix to "
                f"measure relative errors; got shape {K.shape} with norm {np.linalg.norm(K):.3g}. Check that the "
                "architecture has non-zero w_std or b_std and that X is not all zeros."
            )
    return targets


def width_dependent(arch) -> bool:
    """True when the analytic kernels depend on the hidden widths (standard parameterisation:
    the NTK of a layer grows with its fan-in), so each width needs its own analytic kernels."""
    return any(getattr(layer, "parameterization", "ntk") == "standard" for layer in arch.walk())


def at_width(arch, width: int):
    """``arch`` with every Dense width and Conv channel count set to ``width`` (the analytic
    counterpart of ``FiniteNetwork(arch, ..., width=width)``; the readout's width does not enter
    the kernels)."""
    from ..describe.branching import Parallel
    from ..describe.layers import Architecture

    def rebuild(a):
        out = []
        for layer in a.layers:
            if isinstance(layer, Parallel):
                layer = Parallel(tuple(rebuild(b) for b in layer.branches))
            elif isinstance(layer, Dense):
                layer = dataclasses.replace(layer, width=width)
            elif isinstance(layer, Conv):
                layer = dataclasses.replace(layer, channels=width)
            out.append(layer)
        return Architecture(tuple(out))

    return rebuild(arch)


def _analytic_at(arch, X, width, given):
    """The analytic kernels on X that a network of hidden width ``width`` approaches."""
    from ..kernel import compile as compile_kernel

    if width_dependent(arch):
        return compile_kernel(at_width(arch, width))(X)
    return given if given is not None else compile_kernel(arch)(X)


def _check_widths(widths) -> tuple:
    widths = tuple(check_param("verify", "widths", w, low=1, integer=True) for w in widths)
    if len(set(widths)) < 2:
        raise ParameterError(
            f"A slope needs at least two different widths; got {widths!r}. Pass e.g. widths=(64, 256, 1024)."
        )
    return tuple(sorted(set(widths)))


# ---------------------------------------------------------------------- properties 2 and 3
@dataclass(frozen=True)
class TrainingAgreement:
    r"""Trained finite networks vs the analytic predictor (property 2) and laziness (property 3).

    All per-seed arrays are (W, S).

    Attributes
    ----------
    widths : tuple of int
    eta_t : float
        η·t of the training.
    deviation : ndarray
        ‖f_net − f_t‖ on the test points relative to the RMS norm of the trained outputs over
        initialisations, :math:`(\|\mu_t\|^2 + \mathrm{tr}\,\Sigma_t)^{1/2}`; f_t is the
        analytic predictor (analytic Θ) given the network's initial function.
    linearized_deviation : ndarray
        The same against the network's own linearisation (empirical Θ̂₀).
    mean_z : (W,) ndarray
        max over test points of |mean_s f_net − μ_t| / SE, SE from the analytic covariance.
    z_critical : float
    ntk_change, param_change : ndarray
        ‖Θ̂_T − Θ̂₀‖_F/‖Θ̂₀‖_F (training inputs) and ‖θ_T − θ₀‖/‖θ₀‖.
    layer_change : (W, L, S) ndarray
        ‖θ_T − θ₀‖/‖θ₀‖ restricted to each Conv/Dense layer's weights.
    """

    widths: tuple
    eta_t: float
    deviation: np.ndarray
    linearized_deviation: np.ndarray
    mean_z: np.ndarray
    z_critical: float
    ntk_change: np.ndarray
    param_change: np.ndarray
    layer_change: np.ndarray
    fits: dict = field(default_factory=dict)

    def slope_verdict(self, name: str) -> str:
        """The fitted slope of ``name`` is at most −0.5 + 0.1 (falls at least like width^−1/2)."""
        return self.fits[name].check(EXPECTED_SLOPE, SLOPE_TOL, upper_only=True)

    @property
    def mean_verdict(self) -> str:
        return PASS if self.mean_z[-1] <= self.z_critical else FAIL

    @property
    def agreement_verdict(self) -> str:
        """Property 2: deviation from the analytic predictor shrinks; the ensemble mean matches."""
        return _combine(self.slope_verdict("deviation"), self.mean_verdict)

    @property
    def lazy_verdict(self) -> str:
        """Property 3: kernel and parameter changes fall at least like width^−1/2."""
        return _combine(self.slope_verdict("ntk_change"), self.slope_verdict("param_change"))


def default_training_time(ntk_train) -> float:
    """η·t long enough to fit the slowest direction (η t λ_min = 1), capped at 50/λ_max."""
    lam = np.linalg.eigvalsh(ntk_train)
    lo = max(float(lam[0]), 1e-12 * float(lam[-1]))
    return min(1.0 / lo, 50.0 / float(lam[-1]))


def training_agreement(arch, X, Y, X_test, *, widths=DEFAULT_TRAIN_WIDTHS, samples: int = 4, eta_t=None,
                       analytic=None, seed: int = 0, progress=None) -> TrainingAgreement:
    r"""Properties 2 and 3: train networks by gradient flow and compare with the analytic predictor.

    Parameters
    ----------
    arch : architecture, list of layers or str
    X, Y : (n, d) or (n, S₁, …, S_k, C), and (n,) or (n, k) array_like
        Training data (spatial inputs channels last).
    X_test : (m, d) or (m, S₁, …, S_k, C) array_like
    widths : sequence of int
    samples : int
        Networks per width (S >= 2).
    eta_t : float, optional
        Training time η·t (η = 1); default :func:`default_training_time`.
    analytic : Kernels, optional
        Analytic kernels on the stacked inputs ``[X; X_test]``.
    """
    from ..kernel import compile as compile_kernel

    arch = as_architecture(arch)
    X = as_network_input(X, "X")
    Xt = as_network_input(X_test, "X_test")
    if Xt.shape[1:] != X.shape[1:]:
        what = "features" if X.ndim == 2 else "per-sample shape"
        got = (Xt.shape[1], X.shape[1]) if X.ndim == 2 else (Xt.shape[1:], X.shape[1:])
        raise InputError(f"X_test has {got[0]} {what} but X has {got[1]}; pass test inputs of the same shape.")
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    widths = _check_widths(widths)
    samples = check_param("training_agreement", "samples", samples, low=2, integer=True)
    n = X.shape[0]
    XA = np.vstack([X, Xt])
    if width_dependent(arch):
        analytic = None  # standard parameterisation: each width has its own analytic kernels
    elif analytic is None:
        analytic = compile_kernel(arch)(XA)
    if eta_t is not None:
        eta_t = check_param("verify", "eta_t", eta_t, low=0.0, low_open=True)
    W, S = len(widths), samples
    eta_used = []
    dev, lin, dntk, dpar = (np.empty((W, S)) for _ in range(4))
    layers = None
    mean_z = np.empty(W)
    total, done = W * S, 0
    for wi, width in enumerate(widths):
        Th, Kn, eta_w, mu, se, scale = _training_targets(_analytic_at(arch, XA, width, analytic), Y, n, eta_t, samples)
        eta_used.append(eta_w)
        net = FiniteNetwork(arch, input_shape_of(X), width=width, n_outputs=Y.shape[1])
        if layers is None:
            layers = np.empty((W, len(net.widths), S))
        outs = []
        for s in range(S):
            theta0 = net.init(_rng_seed(seed, width, s))
            with thin_blas():
                f0 = net.apply(theta0, XA)
                ntk0_full = net.ntk(theta0, XA)  # (N·k, N·k): a finite network couples its outputs
                ntk0 = _per_output(ntk0_full, Y.shape[1])
            res = train(net, theta0, X, Y, learning_rate=1.0, t=eta_w, X_test=Xt)
            f_ana = _analytic_mean(Th, f0, Y, n, eta_w)
            k = Y.shape[1]
            f_lin = _analytic_mean(ntk0_full, f0.reshape(-1, 1), Y.reshape(-1, 1), n * k, eta_w).reshape(-1, k)
            dev[wi, s] = np.linalg.norm(res.test_outputs - f_ana) / scale
            lin[wi, s] = np.linalg.norm(res.test_outputs - f_lin) / scale
            with thin_blas():
                ntkT = net.ntk_per_output(res.theta, X)
            dntk[wi, s] = np.linalg.norm(ntkT - ntk0[:n, :n]) / np.linalg.norm(ntk0[:n, :n])
            dpar[wi, s] = np.linalg.norm(res.theta - theta0) / np.linalg.norm(theta0)
            for li, (ws, _) in enumerate(net.layer_slices()):
                layers[wi, li, s] = np.linalg.norm(res.theta[ws] - theta0[ws]) / np.linalg.norm(theta0[ws])
            outs.append(res.test_outputs)
            del theta0, res
            done += 1
            if progress:
                progress(done, total)
        mean_z[wi] = float(np.max(np.abs(np.mean(outs, axis=0) - mu) / se))
    n_tests = Xt.shape[0] * Y.shape[1]
    from scipy import stats

    zc = float(stats.norm.isf(FALSE_ALARM / (2 * n_tests)))
    fits = {name: fit_slope(widths, arr, seed=seed) for name, arr in
            (("deviation", dev), ("linearized_deviation", lin), ("ntk_change", dntk), ("param_change", dpar))}
    return TrainingAgreement(widths, eta_used[0], dev, lin, mean_z, zc, dntk, dpar, layers, fits)


def _training_targets(analytic, Y, n, eta_t, samples):
    """(Θ, K, η·t, ensemble mean, its standard error over ``samples`` networks, output scale) of
    the analytic predictor; η·t defaults to :func:`default_training_time` of Θ (for kernels that
    depend on the width, each width's own: in standard parameterisation Θ grows with the width,
    and the time scale of training shrinks with it)."""
    Th, Kn = np.asarray(analytic.ntk), np.asarray(analytic.nngp)
    eta_t = default_training_time(Th[:n, :n]) if eta_t is None else eta_t
    ensemble = gd_mse_from_gram({"ntk": Th[:n, :n], "nngp": Kn[:n, :n]}, Y).predict(
        {"ntk": Th[n:, :n], "nngp": Kn[n:, :n]}, {"nngp": Kn[n:, n:]}, t=eta_t, cov=True)
    mu = ensemble.mean
    var = np.maximum(np.diag(ensemble.cov), 0.0)
    se = np.sqrt(var / samples)[:, None]
    # RMS norm of the trained test outputs over initialisations: a seed-independent scale.
    scale = math.sqrt(float(np.sum(mu**2)) + float(np.sum(var)) * Y.shape[1])
    return Th, Kn, eta_t, mu, se, scale


def _per_output(full, k):
    """Mean of the k diagonal output blocks of a sample-major (N·k, N·k) kernel."""
    N = full.shape[0] // k
    return np.einsum("iaja->ij", full.reshape(N, k, N, k)) / k


def _analytic_mean(ntk, f0, Y, n, eta_t):
    r"""Test outputs of the linearised dynamics with kernel ``ntk`` on [X; X_test], given f0.

    .. math::

        f_t(X_*) = f_0(X_*) + \Theta_*\Theta^{-1}(I - e^{-\eta\Theta t})(Y - f_0(X))

    (Lee et al. 2019): the ensemble-mean predictor applied to the residual targets Y − f₀.
    """
    pred = gd_mse_from_gram({"ntk": ntk[:n, :n]}, Y - f0[:n]).predict({"ntk": ntk[n:, :n]}, t=eta_t)
    return f0[n:] + pred.mean


@dataclass(frozen=True)
class OutputScaleSweep:
    """Lazy training as the output scale α grows (Chizat, Oyallon & Bach 2019), at fixed width.

    ``ntk_change``, ``param_change`` and ``train_loss`` are (A, S) arrays over scales and seeds.
    """

    alphas: tuple
    width: int
    eta_t: float
    ntk_change: np.ndarray
    param_change: np.ndarray
    train_loss: np.ndarray
    fits: dict = field(default_factory=dict)


def output_scale_sweep(arch, X, Y, *, width: int = 64, alphas=(0.5, 1, 2, 4, 8, 16, 32), samples: int = 4,
                       eta_t=None, seed: int = 0, large_alpha: float = 2.0) -> OutputScaleSweep:
    r"""Train :math:`g = \alpha(f - f_0)` on :math:`\tfrac{1}{2\alpha^2}\sum\|g - y\|^2` for each α.

    The function-space dynamics do not depend on α, while parameters move by O(1/α), so
    :math:`\|\hat\Theta_T - \hat\Theta_0\|/\|\hat\Theta_0\|` and :math:`\|\theta_T-\theta_0\|/\|\theta_0\|`
    fall like 1/α: the slopes fitted over α ≥ ``large_alpha`` are close to −1.
    """
    arch = as_architecture(arch)
    X = as_network_input(X, "X")
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    alphas = tuple(float(check_param("output_scale_sweep", "alphas", a, low=0.0, low_open=True)) for a in alphas)
    net = FiniteNetwork(arch, input_shape_of(X), width=width, n_outputs=Y.shape[1])
    if eta_t is None:
        from ..kernel import compile as compile_kernel

        eta_t = default_training_time(compile_kernel(arch)(X).ntk)
    A, S = len(alphas), samples
    dntk, dpar, loss = (np.empty((A, S)) for _ in range(3))
    for s in range(S):
        theta0 = net.init(_rng_seed(seed, width, s))
        with thin_blas():
            ntk0 = net.ntk_per_output(theta0, X)
        for ai, alpha in enumerate(alphas):
            res = train(net, theta0, X, Y, learning_rate=1.0, t=eta_t, output_scale=alpha, center=True)
            with thin_blas():
                ntkT = net.ntk_per_output(res.theta, X)
            dntk[ai, s] = np.linalg.norm(ntkT - ntk0) / np.linalg.norm(ntk0)
            dpar[ai, s] = np.linalg.norm(res.theta - theta0) / np.linalg.norm(theta0)
            loss[ai, s] = 0.5 * float(np.sum((res.train_outputs - Y) ** 2))
    big = np.array(alphas) >= large_alpha
    fits = {}
    if big.sum() >= 2:
        fits = {name: fit_slope(np.array(alphas)[big], arr[big], seed=seed)
                for name, arr in (("ntk_change", dntk), ("param_change", dpar))}
    return OutputScaleSweep(alphas, width, eta_t, dntk, dpar, loss, fits)


# ---------------------------------------------------------------------- command line
def _fmt_widths(widths) -> str:
    return ", ".join(str(w) for w in widths)


def convergence_markdown(results: dict, samples: int) -> str:
    """Markdown tables of :func:`kernel_convergence` results."""
    nngp, ntk = results["nngp"], results["ntk"]
    lines = [
        f"Relative Frobenius error ‖K̂ − K‖_F/‖K‖_F: RMS over {samples} networks per width, and of their mean.",
        "",
        "| width | NNGP (RMS) | NTK (RMS) | NNGP (mean) | NTK (mean) | z NNGP | z NTK |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, w in enumerate(nngp.widths):
        lines.append(
            f"| {w} | {nngp.rms_error[i]:.3e} | {ntk.rms_error[i]:.3e} | {nngp.mean_error[i]:.3e} | "
            f"{ntk.mean_error[i]:.3e} | {nngp.z[i]:.2f} | {ntk.z[i]:.2f} |"
        )
    lines += ["", "| kernel | fitted slope | expected | z at largest width | critical z | resolution | verdict |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in (nngp, ntk):
        slope = "exact (no random hidden layer)" if r.exact else str(r.fit)
        lines.append(
            f"| {r.kernel.upper()} | {slope} | {EXPECTED_SLOPE:+.1f} ± {SLOPE_TOL} | {r.z[-1]:.2f} | "
            f"{r.z_critical:.2f} | {100 * r.resolution[-1]:.2f}% | {r.verdict} |"
        )
    return "\n".join(lines)


def training_markdown(res: TrainingAgreement, samples: int) -> str:
    """Markdown tables of a :func:`training_agreement` result."""
    def rms(a):
        return np.sqrt(np.mean(a**2, axis=-1))

    lines = [
        f"Gradient flow to η·t = {res.eta_t:.4g}; RMS over {samples} networks per width. "
        "f_t: analytic predictor given the network's initial function; f_lin: the network's own linearisation. "
        "Deviations on the test points are relative to s = (‖μ_t‖² + tr Σ_t)^½, the RMS norm of the trained "
        "outputs over initialisations.",
        "",
        "| width | ‖f − f_t‖/s | ‖f − f_lin‖/s | mean z | ‖ΔΘ‖/‖Θ₀‖ | ‖Δθ‖/‖θ₀‖ |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for i, w in enumerate(res.widths):
        lines.append(
            f"| {w} | {rms(res.deviation[i]):.3e} | {rms(res.linearized_deviation[i]):.3e} | {res.mean_z[i]:.2f} | "
            f"{rms(res.ntk_change[i]):.3e} | {rms(res.param_change[i]):.3e} |"
        )
    f = res.fits
    bound = EXPECTED_SLOPE + SLOPE_TOL
    lines += [
        "",
        "| quantity | fitted slope | criterion | verdict |",
        "|---|---:|---|---|",
        f"| trained net vs analytic f_t | {f['deviation']} | ≤ {bound:+.1f} (shrinks at least like width^−1/2) | "
        f"{res.slope_verdict('deviation')} |",
        f"| mean over seeds vs μ_t (largest width) | z = {res.mean_z[-1]:.2f} | ≤ {res.z_critical:.2f} | "
        f"{res.mean_verdict} |",
        f"| trained net vs its linearisation | {f['linearized_deviation']} | (reported) | |",
        f"| NTK change ‖Θ_T − Θ₀‖_F/‖Θ₀‖_F | {f['ntk_change']} | ≤ {bound:+.1f} | {res.slope_verdict('ntk_change')} |",
        f"| parameter change ‖θ_T − θ₀‖/‖θ₀‖ | {f['param_change']} | ≤ {bound:+.1f} | "
        f"{res.slope_verdict('param_change')} |",
    ]
    return "\n".join(lines)


def _cmd_verify(args) -> int:
    import time

    from ..cli import ProgressBar
    from ..kernel import compile as compile_kernel

    from ..cli import as_kernel_inputs, check_output_path, parse_shape

    arch = as_architecture(args.arch)
    kernel = compile_kernel(arch)  # validation only: the engine is built by the first call
    default_widths = DEFAULT_CONV_WIDTHS if kernel.spatial else DEFAULT_WIDTHS
    widths = _parse_ints(args.widths, "--widths") if args.widths else default_widths
    input_shape = parse_shape(args.input_shape)
    if args.output:
        check_output_path(args.output)  # before the minutes of Monte Carlo, not after
    if args.target is not None and args.data is None:
        raise InputError("--target names a column of the --data file; pass --data FILE with it, or drop --target "
                         "to use the built-in sample.")
    if args.labels is not None and args.data is None:
        raise InputError("--labels gives the targets of the --data file; pass --data FILE with it (e.g. --data "
                         "images.npy --labels y.npy), or drop --labels to use the built-in sample.")
    X, y, Xt, yt, source = _verify_data(args, kernel)
    X, Xt = (as_kernel_inputs(kernel, A, args.data or "the built-in sample", input_shape) for A in (X, Xt))
    XA = np.concatenate([X, Xt])
    analytic = _analytic_kernels(kernel, XA)
    title = arch.to_text() if all(getattr(layer, "textual", True) for layer in arch) else repr(arch)
    parts = [
        f"# ntk-infinite verify: `{title}`",
        "",
        f"Data: {source}; {X.shape[0]} training and {Xt.shape[0]} test points, "
        f"{f'{X.shape[1]} features' if X.ndim == 2 else f'images of shape {X.shape[1:]}'}. Seed {args.seed}.",
        "",
        "## 1. Empirical NNGP and NTK converge to the analytic kernels",
        "",
    ]
    t0 = time.perf_counter()
    bar = None if args.quiet else ProgressBar("kernels")
    conv = kernel_convergence(arch, XA, widths=widths, samples=args.samples, analytic=analytic, seed=args.seed,
                              progress=bar)
    parts.append(convergence_markdown(conv, args.samples))
    outcomes = [conv["nngp"].verdict, conv["ntk"].verdict]
    if not args.skip_training:
        largest = max(DEFAULT_CONV_TRAIN_WIDTHS if kernel.spatial else DEFAULT_TRAIN_WIDTHS)
        train_widths = _parse_ints(args.train_widths, "--train-widths") if args.train_widths else tuple(
            w for w in widths if w <= largest) or widths[:2]
        bar = None if args.quiet else ProgressBar("training")
        tr = training_agreement(arch, X, y, Xt, widths=train_widths, samples=args.train_samples,
                                analytic=analytic, seed=args.seed, progress=bar)
        parts += ["", "## 2–3. Trained networks match the analytic predictor; training is lazy", "",
                  training_markdown(tr, args.train_samples)]
        outcomes += [tr.agreement_verdict, tr.lazy_verdict]
    seconds = time.perf_counter() - t0
    overall = _combine(*outcomes)
    advice = {
        PASS: "the analytic kernels agree with the finite networks.",
        FAIL: "the analytic kernels disagree with the finite networks beyond the statistical tolerance.",
        INCONCLUSIVE: "no significant disagreement, but the slopes are too uncertain to confirm; increase "
        "--samples/--train-samples or widen --widths.",
    }[overall]
    parts += ["", f"Overall: **{overall}**: {advice} ({seconds:.1f} s). Slopes: least squares of log RMS error on log "
              "width, ± bootstrap standard error over seeds. Critical values: Student t (kernels) and Bonferroni "
              f"normal (means) at a false-alarm rate of {FALSE_ALARM:g}."]
    text = "\n".join(parts) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        print(f"wrote {args.output}")
    return 1 if overall == FAIL else 0


def _verify_data(args, kernel):
    """(X, y, X_test, y_test, description) from --data/--target/--labels or the built-in sample
    that fits the architecture: breast cancer for dense networks, 8×8 digits for 2-D CNNs."""
    if args.data is None and kernel.spatial and kernel.program.n_spatial != 2:
        k = kernel.program.n_spatial
        raise InputError(
            f"The built-in image sample (8x8 digits) has 2 spatial axes, but {kernel!r} is a {k}-D convolutional "
            f"architecture; pass your own inputs with --data FILE.npy (shape (n, {', '.join(['S'] * k)}, C)) and "
            "--labels FILE."
        )
    X, y, Xt, yt = sample_data(args.n_train, args.n_test, seed=args.seed, path=args.data, target=args.target,
                               labels=args.labels, images=kernel.spatial and args.data is None)
    if args.data is None:
        source = ("8x8 handwritten digits (scikit-learn; pixels standardised, y = +1 for 0-4, -1 for 5-9)"
                  if kernel.spatial else "Breast Cancer Wisconsin (shipped sample, standardised, y = ±1)")
    elif args.labels is not None:
        source = f"{args.data} (targets from {args.labels})"
    else:
        source = f"{args.data} (target column {args.target})"
    return X, y, Xt, yt, source


def _analytic_kernels(kernel, X):
    """The analytic kernels under test (a seam for tests that inject a wrong kernel)."""
    return kernel(X)


def _parse_ints(text: str, flag: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ParameterError(f"{flag} expects comma-separated whole numbers such as 64,256,1024; got {text!r}.") from None
    if not values:
        raise ParameterError(f"{flag} expects comma-separated whole numbers such as 64,256,1024; got {text!r}.")
    return values


def register(subparsers) -> None:
    """Add ``ntk-infinite verify``."""
    p = subparsers.add_parser(
        "verify",
        help="check the analytic kernels against finite networks (Monte Carlo, training, laziness)",
        description="Build finite networks from ARCH, compare their empirical NNGP/NTK and their trained "
        "predictions with the analytic kernels, print a markdown report with fitted slopes and verdicts, "
        "and exit with status 1 when the analytic kernel disagrees beyond the statistical tolerance.",
    )
    p.add_argument("arch", nargs="?", default=DEFAULT_ARCH, help=f"architecture in text form (default: {DEFAULT_ARCH!r})")
    p.add_argument("--widths", default=None,
                   help="hidden widths (channels of every Conv) of the kernel sweep (default 64,...,4096; "
                   "32,...,512 for convolutional architectures)")
    p.add_argument("--samples", type=int, default=16, help="networks per width for the kernels (default 16)")
    p.add_argument("--train-widths", default=None,
                   help="widths for training (default: the --widths up to 1024; up to 256 for convolutional ones)")
    p.add_argument("--train-samples", type=int, default=4, help="trained networks per width (default 4)")
    p.add_argument("--skip-training", action="store_true", help="check the kernels only (property 1)")
    p.add_argument("--data", default=None, help="a .csv/.npy table, one sample per row: the --target column and the "
                   "features; or with --labels an array of inputs, e.g. images (n, H, W, C) for a convolutional "
                   "architecture (default: the shipped breast-cancer sample, or the 8x8 digits for a 2-D CNN)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="targets of the --data inputs (.npy/.csv, one per sample), for data with no target column")
    p.add_argument("--input-shape", default=None, metavar="H,W,C",
                   help="convolutional architectures: reshape each row of the --data features into an image of this "
                   "shape, channels last (C order), e.g. 8,8,1")
    p.add_argument("--target", default=None, metavar="COLUMN",
                   help="target column of --data: a header name or a 0-based index (-1: the last column); required "
                   "with --data")
    p.add_argument("--n-train", type=int, default=20, help="training points drawn from the data (default 20)")
    p.add_argument("--n-test", type=int, default=10, help="test points drawn from the data (default 10)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the networks and the data split")
    p.add_argument("-o", "--output", default="verify.md", help="markdown report (default verify.md; '' for none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_verify)
