"""``compile``: architecture description -> immutable kernel program, and its evaluation."""

from __future__ import annotations

import pickle

import numpy as np

from .compiler.duals import resolve_dual
from .evaluate.engine import DEFAULT_TILE, Affine, Program, check_range, input_variances, pair_pass, point_pass
from .errors import ArchitectureError, InputError, NotPicklableError, as_input_array, check_param
from .describe.layers import ActivationLayer, Architecture, Dense, Identity, Layer, serial
from .results import KernelDiag, Kernels, parse_get
from .describe.textform import parse_architecture

__all__ = ["compile", "CompiledKernel", "as_architecture"]


def compile(arch, *, tol: float = 1e-10) -> "CompiledKernel":  # noqa: A001 - the public name is fixed
    """Validate an architecture and compile it into an infinite-width kernel.

    Parameters
    ----------
    arch : Architecture, sequence of layers, or str
        A description built with :func:`~ntk_infinite.serial`, a list of layers, or the
        one-line text form (see :mod:`ntk_infinite.describe.textform`), e.g.
        ``"Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"``.
    tol : float
        Relative accuracy requested from numerical (non closed-form) duals.

    Returns
    -------
    CompiledKernel
        ``kernel(X1, X2)`` gives the NNGP and NTK Gram matrices.

    Examples
    --------
    >>> import numpy as np, ntk_infinite as nk
    >>> kernel = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
    >>> k = kernel(np.eye(3))
    >>> k.nngp.shape, bool(np.allclose(k.nngp, k.nngp.T))
    ((3, 3), True)
    """
    tol = check_param("compile", "tol", tol, low=0.0, low_open=True, high=1.0)
    arch = as_architecture(arch)
    steps = []
    for layer in arch:
        if isinstance(layer, Dense):
            steps.append(Affine(layer.w_std**2, layer.b_std**2))  # finite: Dense bounds both by MAX_STD
        elif isinstance(layer, Identity):
            continue
        else:
            steps.append(resolve_dual(layer, tol))
    return CompiledKernel(arch, Program(steps), tol)


def as_architecture(arch, owner: str = "compile()") -> Architecture:
    """A validated :class:`Architecture` from a description, a list of layers, one layer or the
    text form. Raises :class:`~ntk_infinite.errors.ArchitectureError` when it cannot be compiled."""
    if isinstance(arch, str):
        arch = parse_architecture(arch)
    elif isinstance(arch, (list, tuple)):
        arch = serial(*arch)
    elif isinstance(arch, Layer):
        arch = serial(arch)
    elif not isinstance(arch, Architecture):
        raise TypeError(
            f"{owner} expects an architecture (nk.serial(...)), a list of layers or its text form; "
            f"got {type(arch).__name__}."
        )
    _validate(arch)
    return arch


def _validate(arch: Architecture) -> None:
    if len(arch) == 0:
        raise ArchitectureError("The architecture is empty; it needs at least a Dense readout layer, e.g. serial(Dense()).")
    previous = None  # last non-identity layer
    for i, layer in enumerate(arch):
        if isinstance(layer, ActivationLayer) and not isinstance(layer, Identity):
            if not isinstance(previous, Dense):
                where = "at the start" if previous is None else f"right after {previous!r}"
                raise ArchitectureError(
                    f"{layer!r} at position {i} comes {where}, but an activation needs an affine layer "
                    "(Dense) before it: the infinite-width recursion acts on Gaussian pre-activations. "
                    "Insert a Dense layer before it (or merge consecutive activations into one Activation)."
                )
        if not isinstance(layer, Identity):
            previous = layer
    if not isinstance(previous, Dense):
        raise ArchitectureError(
            f"The architecture must end in a Dense readout layer; it ends in {arch[-1]!r}. "
            "Append nk.Dense(w_std=..., b_std=...) as the last layer."
        )


class CompiledKernel:
    """An architecture compiled into its NNGP/NTK recursion. Immutable; call it on data.

    Attributes
    ----------
    architecture : Architecture
    program : Program
        The resolved steps (``Affine`` and duals).
    tol : float

    Notes
    -----
    **Threads.** A compiled kernel is immutable and may be called from several threads at
    once (``__call__`` and :meth:`diag`): each call keeps its per-call quantities (series
    truncations, quadrature tables, the error estimate returned as
    ``Kernels.error_estimate``) in its own data, never in the kernel or its duals, and the
    generated code is built once, under a lock, by whichever call comes first. Concurrent
    calls give results identical to serial ones.

    Each call also runs its pair pass on ``numba.get_num_threads()`` worker threads (large
    problems only). Set that number with ``numba.set_num_threads(k)`` (per calling thread)
    or the ``NUMBA_NUM_THREADS`` environment variable (before numba is imported); when you
    run several calls in parallel yourself, lower it so that calls × threads does not
    exceed the cores.
    """

    def __init__(self, architecture: Architecture, program: Program, tol: float):
        self.architecture = architecture
        self.program = program
        self.tol = tol

    def __reduce__(self):
        # The program holds the loaded jitted module, which pickle cannot store. A kernel is
        # fully determined by its description, so it pickles as (architecture, tol) and is
        # compiled again on unpickling (the engine then comes from the disk cache).
        _check_picklable(self.architecture)
        return (_rebuild_kernel, (self.architecture, self.tol))

    def __repr__(self):
        return f"CompiledKernel({self.architecture.to_text() if _textual(self.architecture) else self.architecture!r})"

    def __call__(self, X1, X2=None, *, get=("nngp", "ntk"), tile: int = DEFAULT_TILE, progress=None) -> Kernels:
        r"""NNGP and NTK Gram matrices.

        .. math::

            \Sigma^0(x, x') = x\cdot x'/d, \quad \Theta^0 = 0, \quad
            \Sigma \leftarrow \sigma_w^2\Sigma + \sigma_b^2,\; \Theta \leftarrow \sigma_w^2\Theta + \Sigma
            \text{ (Dense)}, \quad
            \Sigma \leftarrow T,\; \Theta \leftarrow \dot T\,\Theta \text{ (activation)}.

        Parameters
        ----------
        X1 : (n1, d) array_like
        X2 : (n2, d) array_like, optional
            When omitted the kernel of X1 with itself is computed, one triangle only.
        get : {"nngp", "ntk"} or tuple of them
            Only what is asked for is computed (the NTK work is skipped for ``"nngp"``).
        tile : int
            Tile edge of the pair pass; results do not depend on it.
        progress : callable(done, total), optional
            Called after each chunk of tiles (used by the command line's progress bar).

        Returns
        -------
        Kernels
            ``.nngp`` and ``.ntk``, each (n1, n2) float64, or None when not requested, and
            ``.error_estimate``, the largest relative error estimate of this call's numerical
            duals (0.0 for exact routes).
        """
        want_nngp, want_ntk = parse_get(get)
        X1 = as_input_array(X1, "X1")
        if X2 is not None:
            X2 = as_input_array(X2, "X2")
            if X2.shape[1] != X1.shape[1]:
                raise InputError(
                    f"X2 has {X2.shape[1]} features but X1 has {X1.shape[1]}; pass arrays with the same "
                    "number of columns."
                )
        tile = check_param("kernel", "tile", tile, low=1, integer=True)
        total = {"done": 0}

        def report(k, n):
            total["done"] += k
            progress(total["done"], n)

        nngp, ntk, pts = pair_pass(
            self.program, X1, X2, want_nngp, want_ntk, tile=tile, progress=report if progress else None
        )
        return Kernels(nngp=nngp, ntk=ntk, error_estimate=pts.error_estimate)

    def formula(self):
        """The recursion layer by layer as sympy expressions (see :mod:`ntk_infinite.compiler.formula`)."""
        from .compiler.formula import kernel_formula

        return kernel_formula(self)

    def latex(self) -> str:
        """LaTeX rendering of :meth:`formula`."""
        from .compiler.formula import kernel_latex

        return kernel_latex(self)

    def diag(self, X, *, get=("nngp", "ntk")) -> KernelDiag:
        """Diagonals Σ(x, x) and Θ(x, x) for each row of X, in O(n·L).

        Raises :class:`~ntk_infinite.errors.KernelOverflowError` when a requested diagonal
        exceeds float64 and warns (:class:`~ntk_infinite.errors.KernelUnderflowWarning`) when
        it falls below float64's normal range, like ``__call__``.
        """
        want_nngp, want_ntk = parse_get(get)
        X = as_input_array(X, "X")
        _, q0, k = input_variances(X)
        pts = point_pass(self.program, q0, want_data=False, q0_exp=k)
        check_range(pts, want_nngp, want_ntk)
        return KernelDiag(nngp=pts.nngp_diag if want_nngp else None, ntk=pts.ntk_diag if want_ntk else None,
                          error_estimate=pts.error_estimate)


def _rebuild_kernel(architecture: Architecture, tol: float) -> CompiledKernel:
    """Unpickling target of :class:`CompiledKernel`: compile the description again."""
    return compile(architecture, tol=tol)


def _check_picklable(architecture: Architecture) -> None:
    """Raise :class:`NotPicklableError` naming the first layer that pickle cannot store."""
    for i, layer in enumerate(architecture):
        try:
            pickle.dumps(layer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise NotPicklableError(
                f"This kernel cannot be pickled: layer {i}, {layer!r}, holds an object pickle cannot store "
                f"({exc}). Define the activation function (and its derivative) with 'def' at module level "
                "of an importable module instead of a lambda or a nested function, so that it pickles by "
                "name (worker processes import it from there)."
            ) from exc


def _textual(arch) -> bool:
    return all(getattr(layer, "textual", True) for layer in arch)
