"""Summarizers for the summary tests, importable by worker subprocesses
(``--summarizer summary_fixtures:recording``, with ``tests/`` on PYTHONPATH).

:class:`RecordingSummarizer` makes a summary that lists every message it has seen: the items
of the previous summary (the ``system`` event) plus the contents of the new events, sorted,
comma-separated, then ``|call=<n>``. Each call appends one JSON line to a log file, so a test
counts the calls of every process and sees what each call covered.

Environment (for ``recording()``): ``SS_TEST_SUMMARY_LOG`` the log path,
``SS_TEST_SUMMARY_SLEEP_S`` a pause inside each call, ``SS_TEST_SUMMARY_BLOCK=1`` a call that
never returns (until cancelled).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from sessionstreams.common.models import Session
from sessionstreams.common.summarizers import event_text


def items_of(text: str) -> list[str]:
    """The items a summary lists (its text before ``|``)."""
    head = text.split("|", 1)[0]
    return [item for item in head.split(",") if item]


def read_calls(log: Path) -> list[dict[str, Any]]:
    """Every call recorded in ``log``, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class RecordingSummarizer:
    """Lists every message seen so far; logs each call (see the module docstring)."""

    def __init__(self, log: str | Path, sleep_s: float = 0.0, block: bool = False,
                 text: str | None = None) -> None:
        self.log = Path(log)
        self.sleep_s = sleep_s
        self.block = block
        self.text = text  # a fixed answer ("" tests the empty-summary rule)

    async def should_summarize(self, session: Session) -> bool:
        return True

    async def summarize(self, session: Session) -> str:
        items: set[str] = set()
        new: list[str] = []
        for event in session.events:
            text = event_text(event)
            if event.author == "system":
                items.update(items_of(text))
            elif text:
                new.append(text)
                items.add(text)
        calls = len(read_calls(self.log)) + 1
        with self.log.open("a") as out:
            out.write(json.dumps({"pid": os.getpid(), "session": session.id, "call": calls,
                                  "new": new, "items": sorted(items)}) + "\n")
        if self.block:
            await asyncio.Event().wait()
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if self.text is not None:
            return self.text
        return ",".join(sorted(items)) + f"|call={calls}"


class FailingSummarizer:
    """Always raises."""

    async def should_summarize(self, session: Session) -> bool:
        return True

    async def summarize(self, session: Session) -> str:
        raise RuntimeError("model unavailable")


def recording() -> RecordingSummarizer:
    """A RecordingSummarizer configured from the environment."""
    return RecordingSummarizer(
        os.environ["SS_TEST_SUMMARY_LOG"],
        sleep_s=float(os.environ.get("SS_TEST_SUMMARY_SLEEP_S", "0") or 0),
        block=os.environ.get("SS_TEST_SUMMARY_BLOCK", "") == "1",
    )
