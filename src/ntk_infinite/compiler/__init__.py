"""Description -> immutable program: activation duals (all sympy work), generated code, the disk cache, formulas."""
