"""Speed and memory of the Gram-matrix engine vs a plain-NumPy recursion.

Usage: python benchmarks/bench_gram.py [--quick] [--out tables]
Writes tables/performance.md (see ntk_infinite.reports.performance for the method).
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.performance import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "small sizes, one repetition", pathlib.Path(__file__).resolve().parents[1] / "tables")
