"""ntk_infinite: an analytic infinite-width kernel compiler.

Describe a network, compile it into its NNGP (Σ) and NTK (Θ) recursions, and evaluate
exact Gram matrices fast. For an input with Σ⁰ = x·x/d = 1/3, the first layer gives
Σ¹ = 2.25/3 + 0.01 = 0.76, ReLU halves it (T(q, q, q) = q/2, Ṫ = 1/2; Cho & Saul 2009), so
Σ = 2.25·0.38 + 0.01 = 0.865 and Θ = Σ + 2.25·Σ¹·½ = 1.72 (Jacot et al. 2018):

>>> import numpy as np, ntk_infinite as nk
>>> arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
>>> k = nk.compile(arch)(np.eye(3))  # k.nngp, k.ntk: (3, 3) Gram matrices
>>> round(float(k.nngp[0, 0]), 12), round(float(k.ntk[0, 0]), 12)
(0.865, 1.72)
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AccuracyWarning,
    ActivationError,
    ArchitectureError,
    CacheWarning,
    IllConditionedWarning,
    InputError,
    NotPicklableError,
    KeywordOnlyError,
    KernelOverflowError,
    KernelUnderflowWarning,
    ParameterError,
)
from .compiler.cache import cache_info, clear_cache  # noqa: E402
from .kernel import CompiledKernel, compile  # noqa: E402
from .describe.layers import Activation, Architecture, Dense, Identity, ReLU, serial  # noqa: E402
from .describe.spatial import AvgPool, Conv, Flatten, GlobalAvgPool  # noqa: E402
from .describe.branching import FanInConcat, FanInSum, FanOut, LayerNorm, Residual, parallel  # noqa: E402
from .results import KernelDiag, Kernels  # noqa: E402
from .describe.textform import parse_architecture  # noqa: E402
from .solve import predict  # noqa: E402
from .verify import empirical  # noqa: E402
from .solve.selection import select  # noqa: E402
from . import signal  # noqa: E402
from .describe.activations import (  # noqa: E402
    ABReLU, Abs, Cos, ELU, Erf, Exp, GELU, Gaussian, LeakyReLU, Mish, Monomial, Polynomial, RBF,
    RectifiedMonomial, SiLU, Sigmoid, Sign, Sin, Softplus, Step, Tanh,
)

__all__ = [
    "__version__",
    "compile",
    "CompiledKernel",
    "Kernels",
    "KernelDiag",
    "serial",
    "Architecture",
    "Dense",
    "ReLU",
    "Identity",
    "Activation",
    "Conv",
    "AvgPool",
    "GlobalAvgPool",
    "Flatten",
    "FanOut",
    "parallel",
    "FanInSum",
    "FanInConcat",
    "Residual",
    "LayerNorm",
    "parse_architecture",
    "ArchitectureError",
    "InputError",
    "KernelOverflowError",
    "KernelUnderflowWarning",
    "ParameterError",
    "NotPicklableError",
    "KeywordOnlyError",
    "ActivationError",
    "AccuracyWarning",
    "IllConditionedWarning",
    "CacheWarning",
    "cache_info",
    "clear_cache",
    "predict",
    "empirical",
    "select",
    "signal",
    # activations (ntk_infinite.describe.activations)
    "LeakyReLU", "ABReLU", "Abs", "Step", "Sign", "RectifiedMonomial", "Monomial", "Polynomial", "Erf",
    "GELU", "Sin", "Cos", "Gaussian", "Exp", "RBF", "Tanh", "Sigmoid", "Softplus", "SiLU", "ELU", "Mish",
]


def __getattr__(name):
    """Optional parts, imported on first use: ``nk.KernelRegressor``, ``nk.KernelClassifier``
    and the ``nk.sklearn`` GP kernels (scikit-learn), ``nk.distributed`` (Dask)."""
    if name in ("KernelRegressor", "KernelClassifier"):
        from .solve import estimators

        return getattr(estimators, name)
    if name in ("sklearn", "distributed"):
        import importlib

        where = {"sklearn": "solve.sklearn", "distributed": "evaluate.distributed"}[name]
        return importlib.import_module(f"{__name__}.{where}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
