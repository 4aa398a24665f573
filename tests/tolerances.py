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
#: Kink-aware quadrature of a user activation with its kinks declared, against closed
#: forms or mpmath: the route's accuracy target.
USER_KINK_RTOL = 1e-8
#: The kink-aware numerical derivative of a piecewise-smooth callable (order-6 one-sided
#: differences, step <= 1e-3: truncation ~1e-18, rounding ~30 eps / step ~ 1e-11).
NUMERICAL_DERIVATIVE_RTOL = 1e-10
