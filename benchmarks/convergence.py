"""Empirical NNGP/NTK of finite networks vs the analytic kernels over widths 64…4096 (property 1).

Usage: python benchmarks/convergence.py [--quick] [--out tables]
Writes tables/convergence.md and tables/convergence.png (see ntk_infinite.reports.convergence for the method);
the same as `ntk-infinite tables --only convergence`.
"""

import argparse
import pathlib

from ntk_infinite.reports.convergence import write_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced widths and seeds: a smoke test")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "tables"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_table(out, quick=args.quick).read_text())
