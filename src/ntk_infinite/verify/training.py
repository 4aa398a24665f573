r"""Full-batch training of finite networks, and the analytic predictor it is compared with.

Loss convention of the solvers (:mod:`ntk_infinite.solve.predict`): the sum
:math:`L(\theta) = \tfrac12\sum_i \|f(x_i;\theta) - y_i\|^2`, and time enters as η·t.

* ``method="gd"``: gradient descent, :math:`\theta \leftarrow \theta - \eta\nabla L(\theta)`,
  ``t`` steps (step s is time s).
* ``method="flow"``: gradient flow :math:`\dot\theta = -\eta\nabla L(\theta)` up to time ``t``,
  integrated by the classical fourth-order Runge–Kutta method with a step chosen from the
  largest eigenvalue of the empirical NTK, so the integration error is far below the
  finite-width effects being measured. In function space the linearised dynamics are
  :math:`\dot f = -\eta\hat\Theta(f - y)` (Jacot et al. 2018), which the analytic predictor
  (:func:`ntk_infinite.solve.predict.gd_mse_from_gram`) solves exactly.

An *output scale* α (Chizat, Oyallon & Bach 2019) trains
:math:`g(x;\theta) = \alpha\,(f(x;\theta) - f(x;\theta_0))` (centred with ``center=True``) on the
loss :math:`\tfrac1{\alpha^2}\cdot\tfrac12\sum_i\|g(x_i) - y_i\|^2`; its function-space dynamics do
not depend on α while the parameters move by O(1/α): large α is the lazy regime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .empirical import as_network_input, thin_blas
from ..errors import InputError, ParameterError, check_param

__all__ = ["TrainingResult", "train"]

#: RK4 step in units of 1/(η λ_max(Θ̂₀)); the stiffest mode then has a per-step relative
#: error ≈ 0.25⁵/120 ≈ 1e-5 and decays, the others far less.
RK4_STEP = 0.25


@dataclass(frozen=True)
class TrainingResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    theta : (P,) ndarray
        Final parameters.
    train_outputs : (n, k) ndarray
        Model outputs on the training inputs at the final time (scaled/centred model
        when an output scale is used).
    test_outputs : (m, k) ndarray or None
        Outputs on ``X_test`` at the final time.
    t : float
        Final time (η·t is what enters the analytic predictor).
    n_steps : int
        Gradient-descent steps, or RK4 steps (4 gradient evaluations each).
    """

    theta: np.ndarray
    train_outputs: np.ndarray
    test_outputs: np.ndarray | None
    t: float
    n_steps: int


def train(model, theta0, X, Y, *, learning_rate: float, t: float, method: str = "flow",
          step_size: float | None = None, X_test=None, output_scale: float = 1.0,
          center: bool = False) -> TrainingResult:
    r"""Train a :class:`~ntk_infinite.verify.empirical.FiniteNetwork` (or a ``LinearizedModel``) on MSE.

    Parameters
    ----------
    model : FiniteNetwork or LinearizedModel
    theta0 : (P,) ndarray
        Initial parameters (not modified).
    X : (n, d) or (n, S₁, …, S_k, C) array_like
        Inputs of the model (spatial ones channels last).
    Y : (n,) or (n, k) array_like
    learning_rate : float
        η > 0.
    t : float
        Training time; for ``method="gd"`` the (whole) number of steps.
    method : {"flow", "gd"}
    step_size : float, optional
        RK4 time step for ``"flow"``; default ``RK4_STEP / (η λ_max(Θ̂₀))``.
    X_test : array_like, optional
        Test inputs, shaped like ``X``.
    output_scale : float
        α > 0 of Chizat et al. (2019).
    center : bool
        Subtract the initial function, :math:`g = \alpha(f - f_0)`.

    Returns
    -------
    TrainingResult

    Notes
    -----
    .. math::

        \frac{d\theta}{dt} = -\eta\nabla_\theta \frac{1}{2\alpha^2}\sum_i \|g(x_i;\theta) - y_i\|^2
        = -\frac{\eta}{\alpha} J(\theta)^\top (g - y).
    """
    if method not in ("flow", "gd"):
        raise ParameterError(f"method must be 'flow' (gradient flow, RK4) or 'gd' (gradient descent); got {method!r}.")
    eta = check_param("train", "learning_rate", learning_rate, low=0.0, low_open=True)
    t = check_param("train", "t", t, low=0.0)
    alpha = check_param("train", "output_scale", output_scale, low=0.0, low_open=True)
    X = as_network_input(X, "X")
    Y = _targets(Y, X.shape[0], model.n_outputs)
    theta0 = np.array(theta0, dtype=np.float64, copy=True)
    if theta0.shape != (model.n_params,):
        raise InputError(f"theta0 must have shape ({model.n_params},); got {theta0.shape}. Use net.init(seed).")
    if step_size is not None:
        step_size = check_param("train", "step_size", step_size, low=0.0, low_open=True)
    if method == "gd" and not float(t).is_integer():
        raise ParameterError(
            f"For method='gd', t is the number of gradient-descent steps and must be a whole number; got {t}."
        )
    with thin_blas():
        return _train(model, theta0, X, Y, eta, t, method, step_size, X_test, alpha, center)


def _train(model, theta0, X, Y, eta, t, method, step_size, X_test, alpha, center):
    f0 = model.apply(theta0, X) if center else 0.0

    def residual(out):
        return (alpha * (out - f0) - Y) / alpha  # (1/α²)·α·(g − y)

    def grad(theta):
        return model.value_and_vjp(theta, X, residual)[1]

    theta = theta0
    if method == "gd":
        n_steps = int(t)
        for _ in range(n_steps):
            theta -= eta * grad(theta)
    else:
        if step_size is None:
            lam = float(np.linalg.eigvalsh(model.ntk(theta0, X))[-1])
            step_size = RK4_STEP / (eta * max(lam, 1e-300))
        n_steps = int(np.ceil(t / step_size)) if t > 0 else 0
        h = t / n_steps if n_steps else 0.0
        for _ in range(n_steps):
            theta = _rk4_step(grad, theta, -eta * h)
    out = model.apply(theta, X)
    train_out = alpha * (out - f0) if center or alpha != 1.0 else out
    test_out = None
    if X_test is not None:
        Xt = as_network_input(X_test, "X_test")
        ft = model.apply(theta, Xt)
        if center or alpha != 1.0:
            ft = alpha * (ft - (model.apply(theta0, Xt) if center else 0.0))
        test_out = ft
    return TrainingResult(theta, train_out, test_out, float(t), n_steps)


def _rk4_step(grad, theta, h):
    """One classical RK4 step of dθ/dt = grad(θ)·(h / dt), low storage (4 vectors)."""
    k = grad(theta)
    acc = theta + (h / 6.0) * k
    stage = theta + (h / 2.0) * k
    k = grad(stage)
    acc += (h / 3.0) * k
    np.add(theta, (h / 2.0) * k, out=stage)
    k = grad(stage)
    acc += (h / 3.0) * k
    np.add(theta, h * k, out=stage)
    k = grad(stage)
    acc += (h / 6.0) * k
    return acc


def _targets(Y, n, k) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape != (n, k):
        raise InputError(
            f"Y must have shape ({n},) or ({n}, {k}) to match X and the network's {k} output(s); got {Y.shape}."
        )
    if not np.isfinite(Y).all():
        raise InputError("Y contains NaN or infinite values; pass finite targets.")
    return Y
