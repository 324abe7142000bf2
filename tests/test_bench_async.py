"""``sessionstreams bench async``: every part of the benchmark runs end to end (small sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_async_smoke() -> None:
    """Small sizes: the JSON report has every part, with positive figures and ratios that
    are the quotients of the figures reported beside them; each step is announced on stderr
    while it runs."""
    proc = subprocess.run(
        [sys.executable, "-m", "sessionstreams.workers.cli", "bench", "async", "--samples", "60",
         "--burst-rounds", "2", "--backlog", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=290, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for part in ("latency_workers_running", "latency_workers_idle"):
        row = out[part]
        base, ours = row["bare_xadd"]["p50_us"], row["async_append"]["p50_us"]
        assert base > 0
        assert ours > 0
        assert row["p50_ratio"] == pytest.approx(ours / base, abs=0.02)
    for part in ("burst_200_workers_running", "burst_200_workers_idle"):
        assert set(out[part]) == {"bare_xadd", "async_append", "sync_append"}
        assert out[part]["bare_xadd"]["p99_ratio_to_bare"] == 1.0
    drain = out["drain"]
    assert drain["one_worker_per_s"] > 0
    assert drain["two_workers_per_s"] > 0
    assert drain["one_worker_ratio"] == pytest.approx(
        drain["one_worker_per_s"] / drain["sync_append_rate_200way_per_s"], rel=0.01)
    recovery = out["recovery"]
    assert 0 < recovery["recovery_s"] < 60
    progress = [ln for ln in proc.stderr.splitlines() if ln.startswith("bench async: [")]
    assert progress[0].startswith("bench async: [1/8] latency")
    assert progress[-1].startswith("bench async: [8/8] recovery after a worker SIGKILL: ")


def test_bench_async_refuses_an_unknown_part() -> None:
    proc = subprocess.run(
        [sys.executable, "ops/bench_async.py", "--only", "nonsense"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
