"""Large-n NTK regression: exact solver vs Nyström/FALKON (time, peak memory, test RMSE) and convergence in M.

Usage: python benchmarks/scale.py [--quick] [--out tables] [--n 1000,2000,...] [--routes exact,nystrom,blocked]
                                  [--no-convergence]
Writes tables/scale.md and tables/scale.png (see ntk_infinite.reports.scale for the method);
the same as `ntk-infinite tables --only scale`.
"""

import argparse
import pathlib
import sys

from ntk_infinite.reports import scale

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny n: a smoke test")
    parser.add_argument("--out", default=str(ROOT / "tables"), help="output directory (default tables/)")
    parser.add_argument("--n", type=_ints, default=None, metavar="N,...",
                        help="training sizes (default " + ",".join(map(str, scale.SIZES)) + ")")
    parser.add_argument("--routes", type=lambda t: tuple(s.strip() for s in t.split(",") if s.strip()),
                        default=None, help="subset of " + ",".join(scale.ROUTES))
    parser.add_argument("--no-convergence", action="store_true", help="skip the convergence-in-M table")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = ("python benchmarks/scale.py " + " ".join(sys.argv[1:])).strip()
    path = scale.write_table(out, quick=args.quick, sizes=args.n, routes=args.routes,
                             convergence=not args.no_convergence, command=command)
    print(path.read_text())


if __name__ == "__main__":
    main()
