"""Shared test configuration: deterministic hypothesis profile and named tolerances."""

import os

from hypothesis import HealthCheck, settings

# Deterministic by default (same examples every run, no deadline flakiness under load);
# HYPOTHESIS_PROFILE=thorough explores more, with random seeds.
settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
