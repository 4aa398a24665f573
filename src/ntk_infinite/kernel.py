"""``compile``: architecture description -> immutable kernel program, and its evaluation."""

from __future__ import annotations

import pickle

import numpy as np

from .compiler.structure import layout_steps, validate
from .describe.spatial import AvgPool, Conv, SpatialLayer
from .evaluate.blocked import check_output_dtype, gram_rounded
from .evaluate.engine import DEFAULT_TILE, Program, check_range, input_variances, pair_pass, point_pass
from .evaluate.spatial import SpatialProgram, check_images
from .errors import InputError, NotPicklableError, as_input_array, check_param
from .describe.layers import Architecture, Layer, serial
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
    steps = layout_steps(arch, tol)
    n_spatial = _spatial_rank(arch)
    program = SpatialProgram(steps, n_spatial) if n_spatial else Program(steps)
    return CompiledKernel(arch, program, tol)


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
    validate(arch)
    return arch


def _spatial_rank(arch) -> int:
    """Number of spatial axes of the inputs (0 for a dense network)."""
    for layer in arch.walk():
        if isinstance(layer, (Conv, AvgPool)):
            return layer.ndim
    return 1 if any(isinstance(layer, SpatialLayer) for layer in arch.walk()) else 0


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
        text = self.architecture.to_text() if _textual(self.architecture) else repr(self.architecture)
        return f"CompiledKernel({text}, layout={self.layout!r})" if self.spatial else f"CompiledKernel({text})"

    def explain(self, input_shape=None) -> str:
        """What the kernel computes, step by step, with each activation's route and the
        pair-state layout and why; with ``input_shape`` (e.g. ``(32, 32, 3)``) also the
        positions per step and the entries per pair of images. See
        :func:`ntk_infinite.compiler.explain.explain`."""
        from .compiler.explain import explain

        return explain(self, input_shape)

    def __call__(self, X1, X2=None, *, get=("nngp", "ntk"), tile: int = DEFAULT_TILE, dtype=np.float64,
                 progress=None) -> Kernels:
        r"""NNGP and NTK Gram matrices.

        .. math::

            \Sigma^0(x, x') = x\cdot x'/d, \quad \Theta^0 = 0, \quad
            \Sigma \leftarrow \sigma_w^2\Sigma + \sigma_b^2,\; \Theta \leftarrow \sigma_w^2\Theta + \Sigma
            \text{ (Dense)}, \quad
            \Sigma \leftarrow T,\; \Theta \leftarrow \dot T\,\Theta \text{ (activation)}.

        Parameters
        ----------
        X1 : (n1, d) array_like, or (n1, S₁, …, S_k, C) for a convolutional architecture
            (see :meth:`check_inputs`).
        X2 : (n2, d) or (n2, S₁, …, S_k, C) array_like, optional
            When omitted the kernel of X1 with itself is computed, one triangle only.
        get : {"nngp", "ntk"} or tuple of them
            Only what is asked for is computed (the NTK work is skipped for ``"nngp"``).
        tile : int
            Tile edge (in inputs) of the pair pass; results do not depend on it. Spatial
            networks cap it so that one tile's state stays near 24 MiB per thread.
        dtype : np.float64 (default) or np.float32
            Storage type of the outputs. Values are always computed in float64; float32 rounds
            them once (relative error ≤ 6e-8) and halves the memory of big Gram matrices: the
            matrices are then computed in row blocks (:func:`~ntk_infinite.evaluate.blocked.gram_rounded`),
            so no n1 × n2 float64 array is held.
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
        tile = check_param("kernel", "tile", tile, low=1, integer=True)
        dtype = check_output_dtype(dtype)
        total = {"done": 0}

        def report(k, n):
            total["done"] += k
            progress(total["done"], n)

        X1 = self.check_inputs(X1, "X1")
        if X2 is not None:
            X2 = self.check_inputs(X2, "X2", like=X1, like_name="X1")
        if dtype != np.float64:
            nngp, ntk, err = gram_rounded(self, X1, X2, get=get, dtype=dtype, progress=progress)
            return Kernels(nngp=nngp, ntk=ntk, error_estimate=err)
        if self.spatial:
            nngp, ntk, pts = self.program.pair_pass(X1, X2, want_nngp, want_ntk, tile=tile,
                                                    progress=report if progress else None)
            return Kernels(nngp=nngp, ntk=ntk, error_estimate=pts["error_estimate"])
        nngp, ntk, pts = pair_pass(
            self.program, X1, X2, want_nngp, want_ntk, tile=tile,
            progress=report if progress else None
        )
        return Kernels(nngp=nngp, ntk=ntk, error_estimate=pts.error_estimate)

    def gram_to(self, store, X1, X2=None, *, get=("nngp", "ntk"), block=None, dtype=np.float64, resume=True,
                overwrite=False, format=None, progress=None):  # noqa: A002 - public keyword
        """Write the Gram matrices block by block into an on-disk, resumable store (zarr ``.zarr``
        group or a folder of .npy memmaps) in O(block²) memory; returns a
        :class:`~ntk_infinite.evaluate.store.GramStore`. See
        :func:`ntk_infinite.evaluate.blocked.gram_to` for the parameters and the block-size rule."""
        from .evaluate.blocked import gram_to

        return gram_to(self, store, X1, X2, get=get, block=block, dtype=dtype, resume=resume, overwrite=overwrite,
                       format=format, progress=progress)

    @property
    def spatial(self) -> bool:
        """True for convolutional architectures (inputs (n, S₁, …, S_k, C))."""
        return isinstance(self.program, SpatialProgram)

    @property
    def layout(self) -> str:
        """The pair-state layout the compiler chose: "dense" (one number per pair), "diagonal"
        (one per position) or "full" (one per position pair)."""
        return self.program.layout if self.spatial else "dense"

    def check_inputs(self, X, name: str = "X", *, like=None, like_name: str = "X1") -> np.ndarray:
        """``X`` validated and coerced to what this kernel takes, or an :class:`~ntk_infinite.errors.InputError`.

        Dense architectures take (n, d) arrays; convolutional ones (n, S₁, …, S_k, C) with k
        spatial axes, channels last. The result is C-contiguous, finite float64. With ``like``
        (inputs already checked, named ``like_name`` in messages) ``X`` must also have the same
        per-sample shape, so that a predictor can check test inputs against its training inputs.

        Examples
        --------
        >>> import numpy as np, ntk_infinite as nk
        >>> cnn = nk.compile("Conv(filter_shape=(3, 3), padding='SAME') > ReLU > Flatten > Dense")
        >>> cnn.check_inputs(np.zeros((2, 8, 8, 1))).shape
        (2, 8, 8, 1)
        """
        if not self.spatial:
            X = as_input_array(X, name)
            if like is not None and X.shape[1] != like.shape[1]:
                raise InputError(
                    f"{name} has {X.shape[1]} features but {like_name} has {like.shape[1]}; pass arrays with the same "
                    "number of columns."
                )
            return X
        X = check_images(X, name, self.program.n_spatial)
        if like is not None:
            if X.shape[-1] != like.shape[-1]:
                raise InputError(
                    f"{name} has {X.shape[-1]} channels but {like_name} has {like.shape[-1]}; pass images with the "
                    "same number of channels (the last axis)."
                )
            if X.shape[1:-1] != like.shape[1:-1]:
                raise InputError(
                    f"{name}'s images have spatial shape {X.shape[1:-1]} but {like_name}'s have {like.shape[1:-1]}; "
                    "the kernel compares images of one size. Resize or crop them to a common shape."
                )
        return X

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
        X = self.check_inputs(X, "X")
        if self.spatial:
            nngp, ntk, err = self.program.diag(X, want_ntk)
            return KernelDiag(nngp=nngp if want_nngp else None, ntk=ntk if want_ntk else None, error_estimate=err)
        _, q0, k = input_variances(X)
        pts = point_pass(self.program, q0, want_data=False, q0_exp=k, n_features=X.shape[1])
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
