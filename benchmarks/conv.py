"""Convolutional networks: ntk_infinite vs neural-tangents, speed, memory, physical limit, agreement.

Usage: python benchmarks/conv.py [--quick] [--out tables] [--nt-python PATH] [--n gap:16x16x3=32,...]
                                 [--cases gap:16x16x3,flatten:16x16x3] [--repeats 3] [--no-nt] [--no-ours]
Writes tables/conv.md (see ntk_infinite.reports.conv for the method).

neural-tangents 0.6.5 runs in its own virtual environment, found as --nt-python, else
$NT_PYTHON, else /tmp/ntvenv/bin/python. One that works (CPU only)::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "neural-tangents==0.6.5" "jax[cpu]==0.4.26"
"""

import argparse
import pathlib
import sys

from ntk_infinite.reports import conv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _case(text):
    readout, _, shape = text.strip().partition(":")
    readout = readout.strip().lower()
    if readout not in conv.READOUTS or not shape:
        raise argparse.ArgumentTypeError(f"expected READOUT:HxWxC with READOUT in {sorted(conv.READOUTS)}, "
                                         f"e.g. gap:16x16x3; got {text!r}")
    return readout, conv.parse_shape(shape)


def _sizes(text):
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected READOUT:HxWxC=N, e.g. gap:16x16x3=32; got {item!r}")
        out[_case(key)] = int(value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny n, one repetition: a smoke test")
    parser.add_argument("--out", default=str(ROOT / "tables"), help="output directory (default tables/)")
    parser.add_argument("--nt-python", default=None, help="python of a venv with neural-tangents 0.6.5")
    parser.add_argument("--no-nt", action="store_true", help="leave neural-tangents out")
    parser.add_argument("--no-ours", action="store_true", help="leave ntk_infinite out (neural-tangents only)")
    parser.add_argument("--n", type=_sizes, default={}, metavar="READOUT:HxWxC=N,...",
                        help="override n per case; defaults: "
                             + ", ".join(f"{r}:{conv.shape_name(s)}={n}" for (r, s), n in conv.CASES.items()))
    parser.add_argument("--cases", type=lambda t: [_case(s) for s in t.split(",") if s.strip()], default=None,
                        metavar="READOUT:HxWxC,...", help="run only these cases (default: all six)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3; quick 1)")
    parser.add_argument("--flops-per-cycle", type=float, default=conv.FLOPS_PER_CYCLE,
                        help=f"per core, for the physical limit (default {conv.FLOPS_PER_CYCLE})")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/conv.py " + " ".join(sys.argv[1:])
    path = conv.write_table(out, quick=args.quick, n=args.n, cases=args.cases, nt_python=args.nt_python,
                            repeats=args.repeats, flops_per_cycle=args.flops_per_cycle, skip_nt=args.no_nt,
                            skip_ours=args.no_ours, command=command.strip())
    print(path.read_text())


if __name__ == "__main__":
    main()
