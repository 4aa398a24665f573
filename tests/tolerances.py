"""Named tolerances, in one place (docs/DESIGN.md, "Testing layers").

Every tolerance a test asserts with lives here, grouped by what sets it: rounding, the
accuracy a route promises, the accuracy of a reference, or a derived error bound. Tests
import the constant; none widens it by the code's own report of its accuracy.
"""

#: Exact-recursion diagonals (ReLU): the bound the exact routes promise.
DIAG_RTOL = 1e-13
#: A 500-layer ReLU diagonal against the hand formula with w² = 2 exactly: float64's
#: (√2)² = 2(1 + 2.2e-16) compounds to ~1.1e-13 over 500 layers, plus rounding.
DEEP_DIAG_RTOL = 1e-12
#: Near-duplicate / antipodal pairs against 50-digit mpmath.
COLLINEAR_RTOL = 1e-11
#: Engine vs the naive float recursion on generic inputs (both are ~1e-15 accurate there).
NAIVE_RTOL = 1e-12
#: Closed forms (ReLU dual, Cho & Saul's J_n) vs adaptive 2-D quadrature (dblquad's own
#: accuracy ~1e-11).
DBLQUAD_RTOL = 1e-9
#: Rounding-level agreement between two evaluations of the same quantity by different
#: summation orders (tiles, permutations, rotations of the inputs).
ROUNDING_RTOL = 1e-12
#: Positive semi-definiteness: min eigenvalue >= -PSD_RTOL * max eigenvalue (or max |entry|).
PSD_RTOL = 1e-10
#: Positive semi-definiteness of an order-one Gram matrix that closed forms compute to rounding:
#: min eigenvalue >= -PSD_ATOL.
PSD_ATOL = 1e-14

# ----- Rounding: one quantity computed twice -------------------------------------------
#: A few ulps (float64 eps = 2.2e-16): the same computation reached two ways (a saved file,
#: a strided view, a sympy expression that resolves to the same closed form), or a short
#: formula against 50-digit arithmetic.
ULP_RTOL = 1e-15
#: Two float evaluations of one function by different formulas or libraries (the layer's
#: NumPy fn vs a textbook formula, two closed-form duals of the same activation): a few
#: roundings each.
EXACT_RTOL = 1e-14
#: Absolute floor for EXACT_RTOL comparisons of order-one values that may cross zero.
EXACT_ATOL = 1e-15
#: A sympy expression lambdified through scipy's special functions against the layer's fn:
#: about ten roundings on each side.
EXPRESSION_RTOL = 1e-13
#: Absolute companion of ROUNDING_RTOL for order-one quantities whose entries may vanish
#: (finite-network outputs, Jacobian products, kernels of exactly solvable networks).
ROUNDING_ATOL = 1e-12

# ----- Closed forms against mpmath and hand formulas -----------------------------------
#: Closed forms vs 20-digit mpmath: the bound the closed forms promise, relative to |T| ...
CLOSED_FORM_RTOL = 1e-12
#: ... with an absolute floor at the rounding level of the inputs (T's sensitivity to a
#: relative perturbation 1e-16 of (q₁, q₂, ρ)), relative to the scale √(T₁₁T₂₂).
ROUNDING_FLOOR = 1e-15
#: Whole networks (depth 2) vs mpmath: rounding accumulates over layers.
NETWORK_RTOL = 1e-12
#: Relative accuracy of 1 − ρ' (hence of the next sin²θ) for nearly parallel pairs.
NEAR_PARALLEL_RTOL = 1e-9
#: A symbolic formula evaluated with floats by sympy against the jitted engine.
EVAL_RTOL = 1e-12
#: The polynomial arctangents of _numerics against mpmath: ~5 ulp (interpolation error
#: 1.7e-16 plus rounding of the reduction and Estrin steps).
ATAN_RTOL = 1e-15
#: sin θ' after a Dense layer for θ ≈ 1e-9, against 50-digit arithmetic: the angle keeps its
#: absolute accuracy (~1e-17; the naive 1 − ρ'² route loses it, to ~1e-8).
SMALL_ANGLE_ATOL = 1e-16

# ----- Numerical routes against quadrature references ---------------------------------
#: compile's default tol: the series route promises that the error of T (resp. Ṫ) is below
#: ROUTE_TOL · √(T₁₁T₂₂) (resp. √(Ṫ₁₁Ṫ₂₂)); the quadrature route reports against it.
ROUTE_TOL = 1e-10
#: Series route vs nested adaptive quadrature, relative to the value: the promise plus the
#: ~1e-12 accuracy of the reference.
SERIES_RTOL = ROUTE_TOL + 2e-12
#: Two series-route layers vs tests/naive.py's recursion with a dblquad per layer: the
#: promise per layer, amplified by the layer that follows, plus the reference's 1e-11.
SERIES_NETWORK_RTOL = 1e-9
#: Kink-aware quadrature: the bound the quadrature route promises for kinked user functions.
QUADRATURE_RTOL = 1e-8
#: Absolute error of tests/naive.py's dblquad_expectation (epsabs = 1e-13 per panel, a few
#: panels, plus the 1e-14 tail beyond |z| = 8), with a factor 10 of margin.
DBLQUAD_ATOL = 1e-11

# ----- The kernel contract (test_contract.py), per route ------------------------------
#: Two evaluations of the same kernel (K(X) vs K(X, X), tile sizes, permuted rows), relative
#: to the matrix's largest entry. Closed forms compute each entry by one formula; the series
#: route evaluates the same coefficient vectors whichever point comes first; the quadrature
#: route orders each pair before its (asymmetric) 2-D rule. So each is rounding-level, and a
#: route that loses that (e.g. an unordered rule, off by its tol) fails.
CONTRACT_RTOL = {"closed form": ROUNDING_RTOL, "series": ROUNDING_RTOL, "quadrature": ROUNDING_RTOL}
#: A common rotation changes X Xᵀ by rounding (~1e-16); for (nearly) parallel rows the angle
#: then moves by up to ~√1e-16 = 1e-8, which the duals (slope ≲ 1/π in θ) damp to ≲ 1e-9.
ROTATION_RTOL = 1e-9

# ----- Derivatives by central differences ---------------------------------------------
#: Activations' dfn vs central differences, step 1e-6 on smooth functions: error
#: ~ h²·f''' + eps·f/h ≈ 1e-10, with room for the large f''' of the steep library activations.
ACTIVATION_FD_RTOL = 1e-7
#: Finite-network Jacobians, step 1e-6: truncation ~ h²·|f'''| ≈ 1e-12, rounding ~ eps/h
#: ≈ 1e-10, relative to derivatives of order one.
NETWORK_FD_RTOL = 1e-6
NETWORK_FD_ATOL = 1e-7
#: Kernel gradients (closed-form routes), step 1e-5: truncation ~ h²·|K'''| ~ 1e-10 and
#: rounding ~ eps·|K|/h ~ 1e-11, relative to the derivative's scale.
KERNEL_FD_RTOL = 1e-6
#: Kernel gradients through the series route: the route's accuracy (ROUTE_TOL relative),
#: amplified by the difference quotient's 1/h = 1e5.
KERNEL_FD_SERIES_RTOL = 1e-4

# ----- Dense linear algebra (predict, selection, estimators) ---------------------------
#: Two dense-algebra routes (eigendecomposition/Cholesky vs inverse/expm) on kernels with
#: condition number below ~1e4: rounding error ~ cond·eps.
ALGEBRA_RTOL = 1e-9
ALGEBRA_ATOL = 1e-10
#: A ridge of 1e-10 (test_predict.TINY_RIDGE) changes a kernel with smallest eigenvalue ~1e-2
#: by ~1e-8 relative.
RIDGE_LIMIT_RTOL = 1e-7
#: t·λ_min ≥ 60 makes e^{-Θt} below e^{-60} ≈ 1e-26 relative; what is left is rounding.
LARGE_T_RTOL = 1e-9
#: LOO closed form vs refits: both are dense solves of systems with cond < 1e6.
LOO_RTOL = 1e-8
LOO_ATOL = 1e-10
#: Marginal likelihood vs scipy.stats (Cholesky vs its own eigendecomposition).
ML_RTOL = 1e-10
#: The scikit-learn estimators and the predictor do the same algebra on the same Gram matrices.
SAME_RTOL = 1e-12
SAME_ATOL = 1e-12

# ----- Training dynamics and statistics ------------------------------------------------
#: RK4 at step z/(ηλ_max) with z = test_empirical.RK4_Z: the global relative error of a mode
#: λ is about (ηλt)·(z λ/λ_max)⁴/120 ≤ 5e-8·ηλ_max·t, i.e. ≲ 1e-6 for the times used there.
RK4_RTOL = 1e-6
RK4_ATOL = 1e-7
#: False-alarm rate of the statistical tests (two-sided).
FALSE_ALARM = 1e-3
#: z-bound of the deterministic statistical checks of test_verify (two-sided false-alarm
#: rate 6e-5 per check, were the seed changed).
STAT_Z = 4.0
#: Kink-aware quadrature of a user activation with its kinks declared, against closed
#: forms or mpmath: the route's accuracy target.
USER_KINK_RTOL = 1e-8
#: The kink-aware numerical derivative of a piecewise-smooth callable (order-6 one-sided
#: differences, step <= 1e-3: truncation ~1e-18, rounding ~30 eps / step ~ 1e-11).
NUMERICAL_DERIVATIVE_RTOL = 1e-10
#: Extreme input scales against the mpmath recursion (ReLU, Erf): the same rounding-level
#: accuracy as at scale 1.
SCALE_RTOL = 1e-13
#: Results in float64's subnormal range: a few units of the smallest subnormal (2^-1074),
#: from the final roundings into that range.
SUBNORMAL_ATOL = 8 * 2.0**-1074
#: Dense/ReLU kernels at extreme input scales (1e-300 ... 1e300, mixed per row) against the
#: 50-digit mpmath recursion, relative to √(K(x,x)K(x',x')): the closed form's own ~1e-13
#: plus a few roundings of whatever rescaling keeps the intermediates in range.
EXTREME_SCALE_RTOL = 1e-12
#: A user activation with a typed closed form (sin, |x|) through the numerical routes,
#: relative to √(K(x,x)K(x',x')); the routes are asked for tol=1e-10.
USER_ACTIVATION_RTOL = 1e-9

# ----- Convolutional reference (tests/naive.py spatial section, test_naive_conv.py) -----
#: The naive CNN-GP/CNTK loops against neural-tangents 0.6.5 (x64) on distinct random inputs:
#: both are a few hundred float64 sums and closed-form duals per entry (measured <= 7e-16);
#: 1e-10 leaves room for arccos near-collinear position pairs, and any wrong convention (pad
#: placement, divisor, wrap) moves entries by 1e-3 or more.
NT_CROSS_RTOL = 1e-10
#: A shift that should change a kernel (Flatten under a shift of one input, SAME padding)
#: changes its largest-moving entry by at least this relative amount on random inputs
#: (observed 0.1-0.3), far above the rounding level at which the invariances hold.
CONV_SHIFT_MIN_CHANGE = 1e-3
#: Cross entries between rows whose variances differ by more than float64's range in one call
#: (1 and 1e-312): the small row's variance is subnormal in the call's units, which keeps
#: 52 − 14 = 38 bits, 2^-38 ≈ 3.6e-12.
MIXED_SCALE_RTOL = 1e-11
#: Power of the Monte-Carlo checks of finite CNNs (test_empirical_conv.py): the same bound that
#: accepts the empirical means must reject the reference kernel scaled by 1 + this.
CONV_MC_POWER_RTOL = 0.1
