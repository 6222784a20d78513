"""Whole BIDS datasets on dask.distributed: resumable, failure-isolated, with group tables."""

from qsmkit.cohort.runner import CohortSummary, run_cohort

__all__ = ["CohortSummary", "run_cohort"]
