"""Edge of chaos and mean-field quantities of tanh, erf, ReLU, GELU, SiLU and a user activation.

Usage: python benchmarks/signal.py [--quick] [--out tables]
Writes tables/signal.md and tables/signal.png (see ntk_infinite.reports.signal for the method);
the same as `ntk-infinite tables --only signal`.
"""

import pathlib

from ntk_infinite.reports._common import script_main
from ntk_infinite.reports.signal import write_table

if __name__ == "__main__":
    script_main(write_table, __doc__, "two sigma_b values and a coarse phase diagram: a smoke test",
                pathlib.Path(__file__).resolve().parents[1] / "tables")
