"""Trained finite networks vs the analytic predictor, and lazy training over width and output scale (properties 2–3).

Usage: python benchmarks/lazy_training.py [--quick] [--out tables]
Writes tables/lazy_training.md and tables/lazy_training.png (see ntk_infinite.reports.lazy_training for the method);
the same as `ntk-infinite tables --only lazy_training`.
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.lazy_training import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "reduced widths and seeds: a smoke test", pathlib.Path(__file__).resolve().parents[1] / "tables")
