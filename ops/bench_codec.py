"""Median encode/decode times of the Go-compatible event codec.

Run: ``python ops/bench_codec.py [--rounds N]``. Prints one line per case with the JSON size
and the median microseconds of ``Event.to_json()`` and ``Event.from_json()`` (each median is
over ``rounds`` timings of a batch of calls), plus the GoTime parse/format medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import (
    Choice,
    Event,
    Message,
    PromptTokensDetails,
    Response,
    Usage,
)

_TS = GoTime.parse("2025-01-02T03:04:05.123456789Z")


def user_message() -> Event:
    """A typical user message as the runner stores it (about 400 bytes of JSON)."""
    return Event.message(
        "user",
        "What's the weather in Paris tomorrow? Should I pack an umbrella?",
        author="user",
        invocation_id="e0c1c5a4-8d7b-4f0e-9a55-0b8f6d2e1a01",
        request_id="req-0001",
        id="3f1c2a9e-7d4b-4c1e-9a55-0b8f6d2e1a01",
        timestamp=_TS,
        filter_key="weather_agent",
    )


def assistant_event() -> Event:
    """A final assistant answer with usage, finish reason and a nested response id."""
    resp = Response(
        id="chatcmpl-9xYzAbCdEfGh",
        object="chat.completion",
        created=1735787045,
        model="gpt-4o-2024-08-06",
        choices=[
            Choice(
                index=0,
                message=Message(
                    role="assistant",
                    content="It will be 18°C and sunny in Paris tomorrow; no umbrella needed.",
                ),
                finish_reason="stop",
            )
        ],
        usage=Usage(
            prompt_tokens=1200,
            completion_tokens=85,
            total_tokens=1285,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=1024),
        ),
        system_fingerprint="fp_6b68a8204b",
        timestamp=GoTime.parse("2025-01-02T03:04:06.12Z"),
        done=True,
    )
    return Event(
        response=resp,
        request_id="0b1f6a52-7e2d-4c4f-8d9e-3a2b1c0d9e8f",
        invocation_id="e0c1c5a4-8d7b-4f0e-9a55-0b8f6d2e1a01",
        author="weather_agent",
        id="3f1c2a9e-7d4b-4c1e-9a55-0b8f6d2e1a02",
        timestamp=GoTime.parse("2025-01-02T03:04:07.000123456Z"),
        branch="weather_agent",
        filter_key="weather_agent",
        version=1,
    )


def timings_us(fn: Callable[[], object], rounds: int, batch: int = 200) -> tuple[float, float]:
    """(median, min) per-call microseconds over ``rounds`` batches of ``batch`` calls."""
    for _ in range(batch):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - t0) / batch / 1000)
    return statistics.median(samples), min(samples)


def main() -> None:
    """Print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=51)
    rounds = ap.parse_args().rounds
    print("median (min) microseconds per call")
    print(f"{'case':<18} {'bytes':>5} {'to_json':>16} {'from_json':>16}")
    for name, ev in (("user message", user_message()), ("assistant event", assistant_event())):
        data = ev.to_json()
        assert Event.from_json(data).to_json() == data
        enc = timings_us(ev.to_json, rounds)
        dec = timings_us(lambda d=data: Event.from_json(d), rounds)  # type: ignore[misc]
        print(f"{name:<18} {len(data):>5} {_fmt(enc):>16} {_fmt(dec):>16}")
    text = _TS.to_text()
    print(f"{'GoTime.parse':<24} {_fmt(timings_us(lambda: GoTime.parse(text), rounds)):>16}")
    print(f"{'GoTime.to_text':<24} {_fmt(timings_us(_TS.to_text, rounds)):>16}")


def _fmt(t: tuple[float, float]) -> str:
    return f"{t[0]:.2f} ({t[1]:.2f})"


if __name__ == "__main__":
    main()
