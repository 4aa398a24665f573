"""Named tolerances, in one place (DESIGN.md, "Testing layers")."""

#: Exact-recursion diagonals (ReLU): the issue's bound.
DIAG_RTOL = 1e-13
#: Near-duplicate / antipodal pairs against 50-digit mpmath.
COLLINEAR_RTOL = 1e-11
#: Engine vs the naive float recursion on generic inputs (both are ~1e-15 accurate there).
NAIVE_RTOL = 1e-12
#: Closed-form ReLU dual vs adaptive 2-D quadrature (dblquad's own accuracy ~1e-11).
DBLQUAD_RTOL = 1e-9
#: Rounding-level agreement between two evaluations of the same quantity by different
#: summation orders (tiles, permutations, rotations of the inputs).
ROUNDING_RTOL = 1e-12
#: Positive semi-definiteness: min eigenvalue >= -PSD_RTOL * max eigenvalue.
PSD_RTOL = 1e-10
#: Extreme input scales against the mpmath recursion (ReLU, Erf): the same rounding-level
#: accuracy as at scale 1.
SCALE_RTOL = 1e-13
#: Results in float64's subnormal range: a few units of the smallest subnormal (2^-1074),
#: from the final roundings into that range.
SUBNORMAL_ATOL = 8 * 2.0**-1074
