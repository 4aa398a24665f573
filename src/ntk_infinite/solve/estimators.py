r"""scikit-learn estimators: an infinitely wide network trained by gradient descent.

:class:`KernelRegressor` and :class:`KernelClassifier` wrap
:func:`ntk_infinite.solve.predict.gd_mse` in the estimator contract (``__init__`` only stores
its arguments, ``fit`` validates and returns ``self``, learned state ends in ``_``), so
they work in ``Pipeline`` and ``GridSearchCV``, including a grid over ``arch`` (an
:class:`~ntk_infinite.Architecture` or its text form) and ``ridge``. Convolutional
architectures take the flat rows scikit-learn passes around with ``input_shape`` (the shape
of one image, channels last), or images directly without it.

The prediction is the mean over random initialisations of the network's output after
gradient flow on ½Σ‖f − y‖² for time ``t`` (η·t; Lee et al. 2019):

.. math::

    f_t(X^*) = \Theta_*(\Theta + \lambda I)^{-1}\left(I - e^{-(\Theta+\lambda I)t}\right) Y.

Large training sets: ``solver="nystrom"`` (or ``"auto"`` once the n × n matrices would take
more than half the memory) solves the same t = ∞ problem with the coefficients on
``n_centers`` training points (:mod:`ntk_infinite.solve.nystrom`), never forming n × n.

This module needs scikit-learn (``pip install ntk_infinite[sklearn]``); the rest of the
package does not.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "nk.KernelRegressor / nk.KernelClassifier need scikit-learn; install it with "
        "`pip install ntk_infinite[sklearn]` (or `pip install scikit-learn`)."
    ) from exc

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6

    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from ..errors import InputError, ParameterError, check_param
from ..kernel import CompiledKernel, compile
from ..describe.layers import Architecture
from .nystrom import DEFAULT_N_CENTERS, nystrom_fit
from .predict import gd_mse

__all__ = ["KernelRegressor", "KernelClassifier", "DEFAULT_ARCH", "exact_memory_bytes", "exact_memory_budget"]

#: A small default network: one ReLU hidden layer, He-scaled weights, small biases.
DEFAULT_ARCH = "Dense(w_std=1.4142135623730951, b_std=0.1) > ReLU > Dense(w_std=1.4142135623730951, b_std=0.1)"
#: solver="auto" uses the exact solver while its n × n matrices take at most this fraction of
#: the physical memory ...
EXACT_MEMORY_FRACTION = 0.5
#: ... or this many bytes when the physical memory is unknown.
EXACT_MEMORY_FALLBACK = 8 * 2**30
_SOLVERS = ("auto", "exact", "nystrom")


def exact_memory_bytes(n: int) -> int:
    """Bytes of the exact solver's n × n float64 matrices: the NNGP and NTK training Gram
    matrices (both are computed for the NTK), the training matrix Θ + λI and its Cholesky factor."""
    return 4 * 8 * int(n) ** 2


def exact_memory_budget() -> int:
    """What ``solver="auto"`` lets the exact solver use: half the physical memory
    (``os.sysconf``), or 8 GiB when that is unknown."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return EXACT_MEMORY_FALLBACK
    return int(EXACT_MEMORY_FRACTION * physical)


class _InfiniteNetwork(BaseEstimator):
    """Shared parameters, validation and prediction of the two estimators."""

    def __init__(self, arch=DEFAULT_ARCH, kernel="ntk", t=np.inf, ridge=0.0, input_shape=None, solver="auto",
                 n_centers=None, random_state=0):
        self.arch = arch
        self.kernel = kernel
        self.t = t
        self.ridge = ridge
        self.input_shape = input_shape
        self.solver = solver
        self.n_centers = n_centers
        self.random_state = random_state

    def _check_params(self):
        owner = type(self).__name__
        if self.kernel not in ("ntk", "nngp"):
            raise ParameterError(
                f"The 'kernel' parameter of {owner} must be 'ntk' (train all layers) or 'nngp' (train the readout "
                f"only). Got {self.kernel!r} instead."
            )
        if isinstance(self.t, (str, bytes)) or np.ndim(self.t) != 0:
            raise TypeError(f"The 't' parameter of {owner} must be a float in the range [0, inf]. Got {self.t!r} instead.")
        t = float(self.t)
        if not t >= 0:
            raise ParameterError(
                f"The 't' parameter of {owner} must be a float in the range [0, inf] (learning rate times training "
                f"time; np.inf for the end of training). Got {self.t!r} instead."
            )
        ridge = check_param(owner, "ridge", self.ridge, low=0.0)
        if not isinstance(self.arch, (str, Architecture, CompiledKernel, list, tuple)):
            raise TypeError(
                f"The 'arch' parameter of {owner} must be an nk.Architecture (nk.serial(...)) or its text form, e.g. "
                f"{DEFAULT_ARCH!r}. Got {type(self.arch).__name__} instead."
            )
        compiled = self.arch if isinstance(self.arch, CompiledKernel) else compile(self.arch)
        return compiled, t, ridge, self._check_input_shape(compiled)

    def _check_input_shape(self, compiled):
        """``input_shape`` as a tuple (or None), checked against the architecture."""
        owner, shape = type(self).__name__, self.input_shape
        if shape is None:
            return None
        if not compiled.spatial:
            raise ParameterError(
                f"The 'input_shape' parameter of {owner} reshapes flat rows into images for a convolutional "
                f"architecture, but {compiled!r} is dense and reads the rows as they are. Got input_shape={shape!r}; "
                "pass input_shape=None, or a convolutional arch (Conv, ..., Flatten or GlobalAvgPool, Dense)."
            )
        k = compiled.program.n_spatial
        example = {1: "(L, C), e.g. (16, 1)", 2: "(H, W, C), e.g. (8, 8, 1)"}.get(k, f"(S1, ..., S{k}, C)")
        valid = (isinstance(shape, (tuple, list)) and len(shape) == k + 1
                 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in shape))
        if not valid:
            raise ParameterError(
                f"The 'input_shape' parameter of {owner} must be None or the shape of one input of this {k}-D "
                f"convolutional architecture, {k} spatial sizes then the channels: {example}. Got {shape!r} instead."
            )
        return tuple(int(v) for v in shape)

    def _kernel_inputs(self, X, kernel, shape):
        """The validated X as the kernel takes it: rows reshaped to ``(n, *input_shape)`` when given."""
        owner = type(self).__name__
        if not kernel.spatial:
            return X
        if shape is None:
            if X.ndim == 2:
                k = kernel.program.n_spatial
                raise InputError(
                    f"{owner} got X with 2 dimensions (shape {X.shape}), but {kernel!r} is a {k}-D convolutional "
                    f"architecture and needs images of shape (n, {', '.join(f'S{i + 1}' for i in range(k))}, C). "
                    f"scikit-learn passes flat rows: set input_shape to the shape of one image (e.g. "
                    f"{owner}(arch, input_shape=(8, 8, 1)) for 8x8 grey images) and {owner} reshapes each row."
                )
            return X
        size = int(np.prod(shape))
        if X.ndim != 2 or X.shape[1] != size:
            got = f"{X.shape[1]} columns" if X.ndim == 2 else f"an array of shape {X.shape}"
            raise InputError(
                f"{owner} with input_shape={shape} reshapes rows of {size} values ({' x '.join(map(str, shape))}, "
                f"channels last) into images, but X has {got}. Pass X.reshape(len(X), -1) of images of shape "
                f"{shape}, or set input_shape to the shape of your images."
            )
        return X.reshape((X.shape[0],) + shape)

    def _check_not_empty(self, X) -> None:
        # Checked before scikit-learn's validation so that the message names the fix.
        try:
            n = X.shape[0] if hasattr(X, "shape") else len(X)
        except TypeError:
            return  # not sized: scikit-learn's validation reports it
        if n == 0:
            raise InputError(
                f"{type(self).__name__}.fit needs at least one training sample; got X with 0 rows. Pass the "
                "training inputs with one row per example (and y with the same number of entries); if they come "
                "from a filter or a split, check that it kept some rows."
            )

    def _fit_data(self, X, y, **validation):
        """Check the parameters and (X, y); X reshaped into the kernel's inputs."""
        self._check_not_empty(X)
        params = self._check_params()
        compiled, shape = params[0], params[3]
        # Images pass scikit-learn's check; _kernel_inputs then says which rank this estimator expects.
        X, y = _validate_data(self, X, y, dtype=np.float64, allow_nd=compiled.spatial, **validation)
        return self._kernel_inputs(X, compiled, shape), y, params

    def _nystrom_seed(self):
        """``random_state`` as a seed of ``numpy.random.default_rng`` (scikit-learn's int / None /
        generator convention; a legacy ``RandomState`` is turned into a seed drawn from it)."""
        state = self.random_state
        if isinstance(state, np.random.RandomState):
            return int(state.randint(0, 2**31 - 1))
        if state is None or isinstance(state, np.random.Generator) or (
                isinstance(state, (int, np.integer)) and not isinstance(state, bool) and state >= 0):
            return state
        raise ParameterError(
            f"The 'random_state' parameter of {type(self).__name__} must be None, a non-negative integer, a "
            f"numpy.random.Generator or a numpy.random.RandomState (it seeds the Nystrom centre choice). Got "
            f"{state!r} instead."
        )

    def _solver_for(self, n: int, t: float) -> str:
        """The route ``fit`` takes for n training points: "exact" or "nystrom"."""
        owner = type(self).__name__
        if not isinstance(self.solver, str) or self.solver not in _SOLVERS:
            raise ParameterError(
                f"The 'solver' parameter of {owner} must be 'auto' (exact while its n x n matrices fit in memory, "
                f"else Nystrom), 'exact' or 'nystrom'. Got {self.solver!r} instead."
            )
        if self.n_centers is not None:
            check_param(owner, "n_centers", self.n_centers, low=1, integer=True)
        self._nystrom_seed()  # a bad random_state is an error whichever route fit takes
        if self.solver == "nystrom" and t != np.inf:
            raise ParameterError(
                f"{owner}(solver='nystrom') gives the end of training (t = inf) only; got t={self.t!r}. Use "
                "solver='exact' (or 'auto') for finite t, or t=np.inf."
            )
        if self.solver == "auto":
            return "exact" if t != np.inf or exact_memory_bytes(n) <= exact_memory_budget() else "nystrom"
        return self.solver

    def _fit_targets(self, X, Y, params):
        compiled, t, ridge, shape = params
        n = X.shape[0]
        self.solver_ = self._solver_for(n, t)
        self.input_shape_ = shape
        self.t_ = t
        if self.solver_ == "nystrom":
            m = min(n, DEFAULT_N_CENTERS) if self.n_centers is None else int(self.n_centers)
            if m > n:
                raise ParameterError(
                    f"The 'n_centers' parameter of {type(self).__name__} must be at most the number of training "
                    f"samples, {n} (the centres are training points). Got {self.n_centers!r} instead; pass "
                    f"n_centers <= {n}, or None for min(n, {DEFAULT_N_CENTERS})."
                )
            self.predictor_ = nystrom_fit(compiled, X, Y, ridge=ridge, n_centers=m, get=self.kernel,
                                          seed=self._nystrom_seed())
            return self
        self.predictor_ = gd_mse(compiled, X, Y, ridge=ridge)
        # Factorise now, so that warnings about the training matrix are raised by fit.
        self.predictor_.predict_train(t, get=self.kernel)
        return self

    def _outputs(self, X):
        check_is_fitted(self, "predictor_")
        kernel, shape = self.predictor_.kernel, self.input_shape_
        X = _validate_data(self, X, reset=False, dtype=np.float64, allow_nd=kernel.spatial)
        X = self._kernel_inputs(X, kernel, shape)
        return self.predictor_.predict(X, t=self.t_, get=self.kernel).mean

    def _tags_common(self, tags):
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


class KernelRegressor(RegressorMixin, _InfiniteNetwork):
    r"""Regression with the infinite-width network trained by gradient descent.

    Parameters
    ----------
    arch : Architecture or str, default: one ReLU hidden layer
        The network (its text form is accepted, so ``GridSearchCV`` can grid over strings).
    kernel : {"ntk", "nngp"}, default "ntk"
        ``"ntk"`` trains all layers; ``"nngp"`` trains only the readout (at t = ∞ the GP
        posterior mean with noise variance ``ridge``).
    t : float, default inf
        Learning rate times training time, η·t.
    ridge : float, default 0
        Absolute ridge λ: Θ + λI.
    input_shape : tuple of int, optional
        Convolutional architectures only: the shape of one image, channels last, e.g.
        ``(8, 8, 1)``. Each row of X (n, H·W·C) is reshaped C-order into an image (n, H, W, C)
        before the kernel sees it, so the estimator takes the 2-D X that scikit-learn's
        tools pass around. Without it a convolutional architecture takes images directly.
    solver : {"auto", "exact", "nystrom"}, default "auto"
        ``"exact"``: the n × n Gram matrices and their Cholesky factor (any t).
        ``"nystrom"``: Nyström centres and FALKON's preconditioned conjugate gradients
        (:func:`ntk_infinite.solve.nystrom.nystrom_fit`; t = inf only, memory n × n_centers).
        ``"auto"``: exact when t is finite or when :func:`exact_memory_bytes` (4·8·n² bytes)
        fits in :func:`exact_memory_budget` (half the physical memory), else Nyström.
    n_centers : int, optional
        Nyström centres (training points sampled uniformly, seeded by ``random_state``); default
        ``min(n, 5000)``. Used by the Nyström solver only; n_centers = n gives the exact prediction.
    random_state : int, numpy.random.Generator, RandomState or None, default 0
        Seeds the Nyström centre choice (the exact solver is deterministic and ignores it). The
        default 0 makes ``fit`` reproducible; None draws fresh centres on each fit.

    Attributes
    ----------
    predictor_ : ntk_infinite.solve.predict.GDPredictor or ntk_infinite.solve.nystrom.NystromPredictor
        Holds the training Gram matrices and their factorisations (and the reshaped inputs),
        or the Nyström centres and coefficients.
    solver_ : str
        The solver ``fit`` used, ``"exact"`` or ``"nystrom"``.
    input_shape_ : tuple of int or None
        The ``input_shape`` used by ``fit``.
    n_features_in_ : int

    Notes
    -----
    .. math::

        \hat f(X^*) = \Theta_*(\Theta+\lambda I)^{-1}(I - e^{-(\Theta+\lambda I)t})Y
        \quad \text{(Lee et al. 2019)}

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> X = np.random.default_rng(0).standard_normal((40, 3)); y = X[:, 0] ** 2
    >>> model = nk.KernelRegressor(ridge=1e-3).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
    >>> cnn = "Conv(filter_shape=(3, 3), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > Flatten > Dense"
    >>> rows = np.random.default_rng(1).standard_normal((10, 16))  # ten 4x4 grey images, flattened
    >>> nk.KernelRegressor(cnn, ridge=1e-3, input_shape=(4, 4, 1)).fit(rows, rows[:, 0]).predict(rows[:2]).shape
    (2,)
    """

    def fit(self, X, y):
        """Compute the training Gram matrices and factorise them. Returns ``self``."""
        X, y, params = self._fit_data(X, y, multi_output=True, y_numeric=True)
        return self._fit_targets(X, y, params)

    def predict(self, X):
        """Mean output of the trained network, (n,) or (n, k)."""
        return self._outputs(X)

    def __sklearn_tags__(self):
        tags = self._tags_common(super().__sklearn_tags__())
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class KernelClassifier(ClassifierMixin, _InfiniteNetwork):
    r"""Classification by regression on one-hot targets, predicting the argmax.

    Parameters are those of :class:`KernelRegressor`.

    Attributes
    ----------
    classes_ : ndarray
    predictor_ : ntk_infinite.solve.predict.GDPredictor or ntk_infinite.solve.nystrom.NystromPredictor
    solver_ : str
    input_shape_ : tuple of int or None
    n_features_in_ : int

    Notes
    -----
    With one-hot targets :math:`Y \in \{0, 1\}^{n\times k}`, the predicted class is
    :math:`\arg\max_j f_t(x^*)_j` (Arora et al. 2020; Lee et al. 2019).
    """

    def fit(self, X, y):
        """Encode the labels one-hot, compute and factorise the Gram matrices. Returns ``self``."""
        X, y, params = self._fit_data(X, y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        Y = np.eye(self.classes_.size)[codes.ravel()]
        return self._fit_targets(X, Y, params)

    def decision_function(self, X):
        """Network outputs: (n, n_classes), or for two classes f₁ − f₀ of shape (n,)."""
        out = self._outputs(X)
        if self.classes_.size == 2:
            return out[:, 1] - out[:, 0]
        if self.classes_.size == 1:
            return out[:, 0]
        return out

    def predict(self, X):
        """The class with the largest output."""
        out = self._outputs(X)
        return self.classes_[np.argmax(out, axis=1)]

    def __sklearn_tags__(self):
        return self._tags_common(super().__sklearn_tags__())
