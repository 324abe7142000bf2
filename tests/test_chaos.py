"""The chaos script, short: workers killed, paused and restarted under load lose nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_chaos_short_run(redis_server, tmp_path: Path) -> None:
    """Every acknowledged write of an 8 s chaos run is applied once and in order."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "chaos.py"), "--seconds", "8", "--sessions", "16",
         "--url", redis_server.url, "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=170, check=False,
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stderr[-3000:]
    passed, failed = (int(part.split()[0]) for part in last.split(","))
    assert failed == 0
    assert passed > 100  # the run really wrote under chaos
    assert "kills" in out.stderr
