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

# ----- The kernel contract (test_contract.py), per route --------------------------------
#: Two evaluations of the same kernel (K(X) vs K(X, X), tile sizes, permuted rows), relative to
#: the matrix's largest entry. Closed forms compute each entry by the same formula: rounding.
#: The series route evaluates the same coefficient vectors in either order: rounding, plus
#: the near-±1 fix-up of ρ' evaluated from the other side. The quadrature route's 2-D rule is
#: not symmetric in its two points, so (i, j) and (j, i) differ by up to the requested
#: tol = 1e-10 per layer and evaluation; ten of them (five layers, two evaluations).
CONTRACT_RTOL = {"closed form": ROUNDING_RTOL, "series": ROUNDING_RTOL, "quadrature": 1e-9}
#: A common rotation changes X Xᵀ by rounding (~1e-16); for (nearly) parallel rows the angle
#: then moves by ~√1e-16 = 1e-8, and Ṫ (slope 1/2π in θ for ReLU) by ~2e-9.
ROTATION_RTOL = 1e-8

# ----- Numerical routes against quadrature references -----------------------------------
#: The series and quadrature routes' promise at compile's default tol = 1e-10: the error of
#: T (resp. Ṫ) is below tol · √(T₁₁T₂₂) (resp. √(Ṫ₁₁Ṫ₂₂)).
SERIES_RTOL = 1e-10
#: Absolute error of tests/naive.py's dblquad_expectation (epsabs = 1e-13 per panel, a few
#: panels, plus the 1e-14 tail beyond |z| = 8), with a factor 10 of margin.
DBLQUAD_ATOL = 1e-11
