"""Trained finite networks vs the analytic predictor, and lazy training over width and output scale (properties 2–3).

Usage: python benchmarks/lazy_training.py [--quick] [--out tables]
Writes tables/lazy_training.md and tables/lazy_training.png (see ntk_infinite.reports.lazy_training for the method);
the same as `ntk-infinite tables --only lazy_training`.
"""

import argparse
import pathlib

from ntk_infinite.reports.lazy_training import write_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced widths and seeds: a smoke test")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "tables"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_table(out, quick=args.quick).read_text())
