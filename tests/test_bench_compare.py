"""``sessionstreams bench compare --smoke``: every peer runs the small workload end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_compare_smoke(tmp_path: Path) -> None:
    """The smoke run finishes, writes the table and the PNG, and measures every peer (the
    async-mode row with its worker processes, whose state is reported with the appends), the
    physical limit of a read, every store's memory per event, and the Redis server time of the
    reads of the stores on Redis."""
    proc = subprocess.run(
        [sys.executable, "-m", "sessionstreams.workers.cli", "bench", "compare", "--smoke",
         "--budget-s", "8",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "bench_compare.md").read_text()
    png = (tmp_path / "bench_compare.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "not installed" not in table
    for name in ("sessionstreams sync", "sessionstreams async", "sessionstreams ADK adapter",
                 "ADK InMemory",
                 "ADK Database (sqlite)", "ADK Redis", "sessionstreams Agents adapter",
                 "Agents RedisSession"):
        assert f"| {name} |" in table
    for label in ("append, first 60", "get last 20, 200 events", "create_session (empty)",
                  "list 1 user's 5 of 50 sessions", "list 1 user's 50 sessions (meta)",
                  "Redis memory per stored event"):
        assert label in table
    assert "| physical limit: one read + msgspec decode |" in table
    assert "not measured" not in table  # every target has its figures
    assert "—" not in table  # no peer skipped
    assert "sessionstreams async: appends timed as the producer sees them" in table
    assert "with 2 worker processes running" in table
    server = table.split("Redis server time per read of the last 20 events", 1)[1]
    assert "sessionstreams sync " in server
    assert "Agents RedisSession " in server
