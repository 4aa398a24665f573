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
#: Dense/ReLU kernels at extreme input scales (1e-300 ... 1e300, mixed per row) against the
#: 50-digit mpmath recursion, relative to √(K(x,x)K(x',x')): the closed form's own ~1e-13
#: plus a few roundings of whatever rescaling keeps the intermediates in range.
EXTREME_SCALE_RTOL = 1e-12
#: A user activation with a typed closed form (sin, |x|) through the numerical routes,
#: relative to √(K(x,x)K(x',x')); the routes are asked for tol=1e-10.
USER_ACTIVATION_RTOL = 1e-9
