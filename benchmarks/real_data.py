"""Infinite-width NNGP/NTK vs tuned RBF kernel ridge and RBF SVM on scikit-learn's real data sets.

Writes ``tables/real_data.md`` (see :mod:`ntk_infinite.reports.real_data` for the protocol).

    python benchmarks/real_data.py            # the published table (several minutes)
    python benchmarks/real_data.py --quick    # smoke test: 2 data sets, small grids
"""

import argparse
import pathlib
import time

from ntk_infinite.reports.real_data import write_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced data sets and grids (smoke test)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "tables"),
                        help="output directory (default: the repository's tables/)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    path = write_table(pathlib.Path(args.out), quick=args.quick)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
