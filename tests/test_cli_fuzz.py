"""Property test over the seeded fuzz cases of benchmarks/fuzz.py (issue 16): whatever the
mutation of the input, a command ends in a clean one-line error or a good run; never a
traceback, a silently bad map, a changed input, a half-written output or a hang."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz  # noqa: E402

NIFTI_FAMILIES = {"damaged bytes", "odd phase values", "odd magnitude", "odd affine",
                  "bad sidecar", "odd values", "awkward output", "valid"}
"""The first campaign's mutations; tests/test_fuzz_dicom_bids.py covers the others."""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fuzz.write_base(tmp_path_factory.mktemp("fuzz-base"))


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_every_fuzz_case_keeps_the_promises(base, tmp_path_factory, seed):
    name, command, outcome, detail = fuzz.run_case(
        seed, base, tmp_path_factory.mktemp("case"), timeout_s=300, only=NIFTI_FAMILIES)
    assert outcome in fuzz.GOOD, f"seed {seed}: {name}: {command}: {outcome}: {detail}"
