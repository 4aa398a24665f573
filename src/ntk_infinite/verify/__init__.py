"""Finite-width networks built from the same description: empirical kernels, training, verification runners."""
