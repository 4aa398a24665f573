"""ntk_infinite: an analytic infinite-width kernel compiler.

Describe a network, compile it into its NNGP (Σ) and NTK (Θ) recursions, and evaluate
exact Gram matrices fast::

    import ntk_infinite as nk
    arch = nk.serial(nk.Dense(1.5, 0.1), nk.ReLU(), nk.Dense(1.5, 0.1))
    k = nk.compile(arch)(X)          # k.nngp, k.ntk
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AccuracyWarning,
    ArchitectureError,
    CacheWarning,
    IllConditionedWarning,
    InputError,
    ParameterError,
)
from .cache import cache_info, clear_cache  # noqa: E402
from .kernel import CompiledKernel, compile  # noqa: E402
from .layers import Activation, Architecture, Dense, Identity, ReLU, serial  # noqa: E402
from .results import KernelDiag, Kernels  # noqa: E402
from .textform import parse_architecture  # noqa: E402
from . import predict  # noqa: E402
from . import empirical  # noqa: E402
from .selection import select  # noqa: E402
from .activations import (  # noqa: E402
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
    "parse_architecture",
    "ArchitectureError",
    "InputError",
    "ParameterError",
    "AccuracyWarning",
    "IllConditionedWarning",
    "CacheWarning",
    "cache_info",
    "clear_cache",
    "predict",
    "empirical",
    "select",
    # activations (ntk_infinite.activations)
    "LeakyReLU", "ABReLU", "Abs", "Step", "Sign", "RectifiedMonomial", "Monomial", "Polynomial", "Erf",
    "GELU", "Sin", "Cos", "Gaussian", "Exp", "RBF", "Tanh", "Sigmoid", "Softplus", "SiLU", "ELU", "Mish",
]


def __getattr__(name):
    """Optional scikit-learn parts, imported on first use: ``nk.KernelRegressor``,
    ``nk.KernelClassifier`` and the ``nk.sklearn`` GP kernels."""
    if name in ("KernelRegressor", "KernelClassifier"):
        from . import estimators

        return getattr(estimators, name)
    if name == "sklearn":
        import importlib

        return importlib.import_module(f"{__name__}.sklearn")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
