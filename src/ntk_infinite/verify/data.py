"""Data for ``ntk-infinite verify``: a random train/test split of a user's file or of a built-in
sample (the shipped Breast Cancer Wisconsin table for dense networks, scikit-learn's 8×8
digits as images for convolutional ones)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_param
from .empirical import as_network_input

__all__ = ["sample_data", "digit_images"]


def sample_data(n_train: int = 20, n_test: int = 10, seed: int = 0, path: str | None = None, target=None, *,
                labels: str | None = None, images: bool = False):
    """(X_train, y_train, X_test, y_test): a random split of ``path`` or of the built-in data.

    Parameters
    ----------
    n_train, n_test : int
    seed : int
        Seed of the random split.
    path : str, optional
        A .csv (optional header line) or .npy file with one sample per row, or with ``labels``
        a .npy of any rank, e.g. images (n, H, W, C). Without it: the Breast Cancer Wisconsin
        data shipped with the package (standardised, y = ±1), or with ``images`` the digits.
    target : str or int
        For a table without ``labels``: the target column, by header name or 0-based index
        (negative counts from the end); all other columns are the features. There is no
        default, so that a table is never split at a guessed column.
    labels : str, optional
        A .npy/.csv file of targets, one per sample of ``path`` (one value or one row each);
        then every entry of ``path`` is an input (image arrays have no target column).
    images : bool
        Without ``path``: scikit-learn's 8×8 handwritten digits as images (n, 8, 8, 1), pixels
        standardised with one mean and one standard deviation (label-free), y = +1 for the
        digits 0–4 and −1 for 5–9 (:func:`digit_images`).

    The inputs are returned in the rank they were read (rows or images); the command line
    checks that rank against the architecture.
    """
    n_train = check_param("sample_data", "n_train", n_train, low=1, integer=True)
    n_test = check_param("sample_data", "n_test", n_test, low=1, integer=True)
    if labels is not None and path is None:
        raise InputError("--labels gives the targets of the --data file; pass --data FILE with it (e.g. --data "
                         "images.npy --labels y.npy), or drop --labels to use the built-in sample.")
    if path is None and images:
        X, y, name = *digit_images(), "y"
    elif path is None:
        from ..datasets import load_breast_cancer

        data = load_breast_cancer()
        X, y, name = data.X, 2.0 * data.y - 1.0, "y"
    elif labels is not None:
        X, y, name = _inputs_and_labels(path, labels, target)
    else:
        X, y, name = _split_target(path, target)
    X = as_network_input(X, "data features" if np.ndim(X) == 2 else f"the images of {path}")
    if not np.isfinite(y).all():
        raise InputError(f"The target column {name} of {path} contains NaN or infinite values; pass finite targets.")
    if X.shape[0] < n_train + n_test:
        raise InputError(
            f"The data have {X.shape[0]} rows but n_train + n_test = {n_train + n_test}; pass a larger file "
            "or smaller --n-train/--n-test."
        )
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    return X[tr], y[tr], X[te], y[te]


def digit_images():
    """(X, y): scikit-learn's 1797 handwritten digits as images (n, 8, 8, 1), standardised with
    one mean and one standard deviation over all pixels (a per-pixel scale would distort the
    translation structure a convolution assumes), and y = +1 for 0–4, −1 for 5–9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - exercised only without scikit-learn
        raise InputError("The built-in image sample is scikit-learn's 8x8 digits; install scikit-learn (pip install "
                         "ntk_infinite[sklearn]) or pass your images with --data images.npy --labels y.npy.") from None
    pixels, digit = load_digits(return_X_y=True)
    X = (pixels - pixels.mean()) / pixels.std()
    return np.ascontiguousarray(X.reshape(-1, 8, 8, 1)), np.where(digit < 5, 1.0, -1.0)


def _inputs_and_labels(path: str, labels: str, target):
    """(inputs, targets, description): every entry of ``path`` is an input, ``labels`` the targets."""
    from ..cli import load_matrix

    if target is not None:
        raise InputError(f"Pass either --target (a column of the {path} table) or --labels (a file of targets), "
                         "not both.")
    X = load_matrix(path)
    y = np.asarray(load_matrix(labels), dtype=np.float64)
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()  # a one-column CSV or a (1, n) row
    if y.ndim != 1 or y.shape[0] != np.shape(X)[0]:
        raise InputError(
            f"--labels {labels} must hold one target per sample of {path}, {np.shape(X)[0]} values; got an array of "
            f"shape {y.shape}. Save them with np.save(path, y) for y of shape (n,)."
        )
    if not np.isfinite(y).all():
        raise InputError(f"--labels {labels} contains NaN or infinite values; pass finite targets.")
    return X, y, f"from {labels}"


def _split_target(path: str, target):
    """(features, target column, its description) of a data table; ``target`` by name or index."""
    from ..cli import read_table

    table, names = read_table(path)
    table = np.asarray(table, dtype=np.float64)
    columns = f"its columns are {', '.join(repr(n) for n in names)}" if names else "it has no header line"
    if table.ndim > 2:
        raise InputError(
            f"{path} holds a {table.ndim}-D array of shape {table.shape} (images?), which has no target column; pass "
            "the targets in a file of their own with --labels FILE (labels= in Python), one per sample."
        )
    if table.ndim != 2 or table.shape[1] < 2:
        raise InputError(
            f"{path} must hold a table with at least two columns (features and a target); got an array of shape "
            f"{table.shape}."
        )
    ncol = table.shape[1]
    how = (f"pass target=COLUMN (--target COLUMN on the command line): a header name or a 0-based column index, "
           f"-1 for the last column. {path} has {ncol} columns; {columns}.")
    if target is None:
        raise InputError(f"Which column of {path} is the target? The data file does not say; {how}")
    index = None
    if isinstance(target, str) and names and target in names:
        index = names.index(target)
    else:
        try:
            index = int(target)
        except (TypeError, ValueError):
            raise InputError(f"The target column {target!r} is not a column name of {path}; {how}") from None
        if not -ncol <= index < ncol:
            raise InputError(f"The target column index {index} is out of range for {path}; {how}")
        index %= ncol
    name = repr(names[index]) if names else f"{index}"
    return np.delete(table, index, axis=1), table[:, index], name
