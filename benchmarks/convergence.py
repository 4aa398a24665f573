"""Empirical NNGP/NTK of finite networks vs the analytic kernels over widths 64…4096 (property 1).

Usage: python benchmarks/convergence.py [--quick] [--out tables]
Writes tables/convergence.md and tables/convergence.png (see ntk_infinite.reports.convergence for the method);
the same as `ntk-infinite tables --only convergence`.
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.convergence import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "reduced widths and seeds: a smoke test", pathlib.Path(__file__).resolve().parents[1] / "tables")
