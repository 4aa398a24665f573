"""Every activation: route, accuracy against a high-precision reference, truncation, speed.

Usage: python benchmarks/activations.py [--quick] [--out tables]
Writes tables/activations.md (see ntk_infinite.reports.activations for the method).
"""

import argparse
import pathlib

from ntk_infinite.reports.activations import write_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs, small n, one repetition")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "tables"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_table(out, quick=args.quick).read_text())
