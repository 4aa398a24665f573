"""Residual, LayerNorm and standard-parameterisation networks: ntk_infinite vs neural-tangents.

Usage: python benchmarks/branches.py [--quick] [--out tables] [--nt-python PATH]
Writes tables/branches.md (see ntk_infinite.reports.branches for the method); the same as
`ntk-infinite tables --only branches`.

neural-tangents 0.6.5 runs in its own virtual environment, found as --nt-python, else
$NT_PYTHON, else /tmp/ntvenv/bin/python. One that works (CPU only)::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "neural-tangents==0.6.5" "jax[cpu]==0.4.26"
"""

from ntk_infinite.reports.branches import main

if __name__ == "__main__":
    main()
