"""The kernel floors of tables/conv.md: every map is timed (positive, finite), ReLU's tile costs
more than the square root and division it contains, and the implied floor is the stated
arithmetic (entries × layers × (ReLU + convolution) / cores)."""

import math

import pytest

from ntk_infinite.reports._conv_floors import floor_lines, measure


@pytest.fixture(scope="module")
def floors():
    return measure()


def test_every_map_is_timed(floors):
    assert set(floors) == {"sqrt+div", "relu", "conv full", "conv diag"}
    assert all(math.isfinite(v) and v > 0 for v in floors.values())
    assert floors["relu"] > floors["sqrt+div"]


def test_floor_rows_are_the_stated_arithmetic():
    floors = {"sqrt+div": 0.5, "relu": 2.0, "conv full": 3.0, "conv diag": 4.0}
    rows = [{"readout": "gap", "shape": (16, 16, 3), "n": 4, "ours": {"seconds": 0.5}, "nt": {"seconds": 8.0}},
            {"readout": "flatten", "shape": (16, 16, 3), "n": 10, "ours": {"seconds": 0.2}, "nt": None},
            {"readout": "gap", "shape": (8, 8, 1), "n": 4, "ours": {"seconds": 0.1}, "nt": None}]
    lines = floor_lines(rows, floors, cores=2, depth=4)
    table = [line for line in lines if line.startswith("| gap") or line.startswith("| flatten")]
    assert len(table) == 2  # only the 16×16 cases
    gap_entries = (4 * 3 // 2 + 4) * 256 * 256
    assert f"| {gap_entries:.3g} | {gap_entries * 4 * 5.0e-9 / 2:.3f} | 0.500 | 0.400 |" in table[0]
    flat_entries = (10 * 9 // 2 + 10) * 256
    assert f"| {flat_entries:.3g} | {flat_entries * 4 * 6.0e-9 / 2:.3f} | 0.200 | — |" in table[1]
