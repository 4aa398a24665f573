r"""scikit-learn estimators: an infinitely wide network trained by gradient descent.

:class:`KernelRegressor` and :class:`KernelClassifier` wrap
:func:`ntk_infinite.solve.predict.gd_mse` in the estimator contract (``__init__`` only stores
its arguments, ``fit`` validates and returns ``self``, learned state ends in ``_``), so
they work in ``Pipeline`` and ``GridSearchCV``, including a grid over ``arch`` (an
:class:`~ntk_infinite.Architecture` or its text form) and ``ridge``.

The prediction is the mean over random initialisations of the network's output after
gradient flow on ½Σ‖f − y‖² for time ``t`` (η·t; Lee et al. 2019):

.. math::

    f_t(X^*) = \Theta_*(\Theta + \lambda I)^{-1}\left(I - e^{-(\Theta+\lambda I)t}\right) Y.

This module needs scikit-learn (``pip install ntk_infinite[sklearn]``); the rest of the
package does not.
"""

from __future__ import annotations

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
from .predict import gd_mse

__all__ = ["KernelRegressor", "KernelClassifier", "DEFAULT_ARCH"]

#: A small default network: one ReLU hidden layer, He-scaled weights, small biases.
DEFAULT_ARCH = "Dense(w_std=1.4142135623730951, b_std=0.1) > ReLU > Dense(w_std=1.4142135623730951, b_std=0.1)"


class _InfiniteNetwork(BaseEstimator):
    """Shared parameters, validation and prediction of the two estimators."""

    def __init__(self, arch=DEFAULT_ARCH, kernel="ntk", t=np.inf, ridge=0.0):
        self.arch = arch
        self.kernel = kernel
        self.t = t
        self.ridge = ridge

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
        return compiled, t, ridge

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

    def _fit_targets(self, X, Y):
        compiled, t, ridge = self._check_params()
        self.predictor_ = gd_mse(compiled, X, Y, ridge=ridge)
        self.t_ = t
        # Factorise now, so that warnings about the training matrix are raised by fit.
        self.predictor_.predict_train(t, get=self.kernel)
        return self

    def _outputs(self, X):
        check_is_fitted(self, "predictor_")
        X = _validate_data(self, X, reset=False, dtype=np.float64)
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

    Attributes
    ----------
    predictor_ : ntk_infinite.solve.predict.GDPredictor
        Holds the training Gram matrices and their factorisations.
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
    """

    def fit(self, X, y):
        """Compute the training Gram matrices and factorise them. Returns ``self``."""
        self._check_not_empty(X)
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        return self._fit_targets(X, y)

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
    predictor_ : ntk_infinite.solve.predict.GDPredictor
    n_features_in_ : int

    Notes
    -----
    With one-hot targets :math:`Y \in \{0, 1\}^{n\times k}`, the predicted class is
    :math:`\arg\max_j f_t(x^*)_j` (Arora et al. 2020; Lee et al. 2019).
    """

    def fit(self, X, y):
        """Encode the labels one-hot, compute and factorise the Gram matrices. Returns ``self``."""
        self._check_not_empty(X)
        X, y = _validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        Y = np.eye(self.classes_.size)[codes.ravel()]
        return self._fit_targets(X, Y)

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
