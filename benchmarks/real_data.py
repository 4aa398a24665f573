"""Infinite-width NNGP/NTK vs tuned RBF kernel ridge and RBF SVM on scikit-learn's real data sets.

Writes ``tables/real_data.md`` (see :mod:`ntk_infinite.reports.real_data` for the protocol).

    python benchmarks/real_data.py            # the published table (several minutes)
    python benchmarks/real_data.py --quick    # smoke test: 2 data sets, small grids
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.real_data import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "reduced data sets and grids (smoke test)", pathlib.Path(__file__).resolve().parents[1] / "tables")
