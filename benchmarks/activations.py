"""Every activation: route, accuracy against a high-precision reference, truncation, speed.

Usage: python benchmarks/activations.py [--quick] [--out tables]
Writes tables/activations.md (see ntk_infinite.reports.activations for the method).
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.activations import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "fewer pairs, small n, one repetition", pathlib.Path(__file__).resolve().parents[1] / "tables")
