"""Small real data sets shipped inside the package (sources in ``data/README.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["Dataset", "load_breast_cancer"]


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (n, d), targets ``y`` (n,), feature names and a citation."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple
    citation: str


def load_breast_cancer(standardize: bool = True) -> Dataset:
    """Breast Cancer Wisconsin (Diagnostic), 569 × 30, ``y`` = 1 for malignant.

    Street, Wolberg & Mangasarian (1993); UCI Machine Learning Repository, CC BY 4.0.
    With ``standardize`` each feature is centred and scaled to unit variance.
    """
    text = resources.files("ntk_infinite").joinpath("data/breast_cancer_wisconsin.csv").read_text()
    header, *rows = text.strip().splitlines()
    names = header.split(",")
    table = np.array([[float(v) for v in row.split(",")] for row in rows])
    X, y = table[:, :-1], table[:, -1].astype(np.int64)
    if standardize:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    citation = (
        "W. N. Street, W. H. Wolberg, O. L. Mangasarian (1993), Nuclear feature extraction for breast "
        "tumor diagnosis; UCI Machine Learning Repository, Breast Cancer Wisconsin (Diagnostic), CC BY 4.0."
    )
    return Dataset(np.ascontiguousarray(X), y, tuple(names[:-1]), citation)
