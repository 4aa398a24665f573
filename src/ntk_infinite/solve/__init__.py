"""Gram matrices -> predictions: gradient-descent predictors, model selection, scikit-learn estimators and GP kernels."""
