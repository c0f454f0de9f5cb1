"""What the experts job's results.json holds, for the benchmarks' tests that stand in for the job
(test_leaderboard.py, test_compare_methods.py)."""

from __future__ import annotations


def made_earlier(seconds: float | None, peak: float | None) -> dict:
    """The experts job's results.json where all 4 experts were made by an earlier job, their
    making cost `seconds` summed and `peak` MiB (None, None: a store made before the records
    were kept)."""
    return {"job": "experts", "folder": "/x", "size": 4, "trained_now": 0, "reused": 4,
            "making_seconds": seconds, "making_peak_mib": peak,
            "unrecorded": [] if seconds is not None else [0, 1, 2, 3], "job_seconds": 7.0,
            "job_peak_mib": 700.0}  # fmt: skip
