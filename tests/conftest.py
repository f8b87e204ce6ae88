"""Shared test configuration."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The suite's tensors are tiny: one intra-op thread is faster than two on the 2-core CI machine
    (no OpenMP spin-waiting) and keeps timings stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- property-based fuzzing (tests/test_fuzz_*.py, issue 10) ------------------------------------------
# Hypothesis profiles: "ci" (the default: few examples, derandomized so CI is reproducible and fast),
# "long" (release checks: many random examples; `diffzoo selftest --fuzz long`). Chosen with the
# environment variable DIFFZOO_FUZZ_PROFILE. No example database is written (database=None): a failure
# prints the falsifying example and a @reproduce_failure blob instead.
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

FUZZ_PROFILES = {"ci": 10, "long": 500}

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev dependency; the fuzz tests skip without it
    settings = None

if settings is not None:
    for _name, _n in FUZZ_PROFILES.items():
        settings.register_profile(
            _name,
            max_examples=_n,
            deadline=None,
            database=None,
            derandomize=_name == "ci",
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        )
    settings.load_profile(os.environ.get("DIFFZOO_FUZZ_PROFILE", "ci"))

#: generated cases per (registry, kind), counted by the ``fuzz_count`` fixture; with DIFFZOO_FUZZ_STATS=path
#: the counts are written there as JSON at the end of the session (``diffzoo selftest`` prints them).
FUZZ_COUNTS: collections.Counter = collections.Counter()


@pytest.fixture(scope="session")
def fuzz_count():
    """``fuzz_count(registry, kind)``: count one generated case (kind: valid, invalid, invariant)."""

    def count(registry: str, kind: str) -> None:
        FUZZ_COUNTS[registry, kind] += 1

    return count


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("DIFFZOO_FUZZ_STATS")
    if path and FUZZ_COUNTS:
        rows: dict = {}
        for (registry, kind), n in sorted(FUZZ_COUNTS.items()):
            rows.setdefault(registry, {})[kind] = n
        profile = os.environ.get("DIFFZOO_FUZZ_PROFILE", "ci")
        with open(path, "w") as f:
            json.dump({"profile": profile, "counts": rows}, f, indent=1, sort_keys=True)
