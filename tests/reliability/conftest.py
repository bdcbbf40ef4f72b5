"""A fixed, bounded hypothesis profile for CI: the same examples every run, a known cost."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ce-rerank-ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ce-rerank-ci")
