"""Helpers shared by the agent-framework adapters (ADK, OpenAI Agents).

The adapters only call :class:`~sessionstreams.producer.service.SessionService` methods, so they
work the same
in synchronous and asynchronous persistence modes; this module keeps what both need: the
receipts of writes that may still be in flight, time conversions, JSON state values and the
message a Go reader sees for a framework record without chat content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Choice, ContentPart, Key, Message
from sessionstreams.common.receipt import Receipt

if TYPE_CHECKING:
    from sessionstreams.producer.service import SessionService

#: ``num_events`` meaning "every stored event" for an exact-window read.
ALL_EVENTS = (1 << 31) - 1


def ns_from_seconds(seconds: float) -> int:
    """Unix seconds (a framework's float timestamp) to integer nanoseconds."""
    return round(seconds * 1e9)


def seconds_from_ns(unix_ns: int) -> float:
    """Integer nanoseconds to float Unix seconds (the same float for the same instant)."""
    return unix_ns / 1e9


def gotime_from_seconds(seconds: float) -> GoTime:
    """A UTC GoTime from float Unix seconds."""
    return GoTime(ns_from_seconds(seconds))


def decode_json_value(raw: bytes | None) -> Any:
    """A state value stored as JSON bytes; a value that is not JSON (written by Go or by
    ``update_*_state`` with raw bytes) comes back as its UTF-8 text."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")


def decode_json_state(state: Mapping[str, bytes | None]) -> dict[str, Any]:
    """A whole state map of JSON bytes, decoded (see :func:`decode_json_value`)."""
    return {k: decode_json_value(v) for k, v in state.items()}


def placeholder_choice(role: str) -> Choice:
    """The choice of a framework record that has no chat content (a state-only event, a
    control item): an empty ``message`` a Go agent adds nothing to its prompt from, and an
    empty text part in ``delta`` so that the record is stored (Go stores only events with
    content; the framework record itself lives in the event's extensions)."""
    return Choice(
        index=0,
        message=Message(role=role),
        delta=Message(role=role, content_parts=[ContentPart(type="text", text="")]),
    )


class PendingWrites:
    """Receipts of streamed writes not yet known to be persisted, per session.

    In synchronous mode every receipt is complete and nothing is kept. In asynchronous mode the
    adapters wait for a session's receipts before they read it, so the running agent sees its
    own writes (read-your-writes) whatever process serves the read.
    """

    def __init__(self, service: SessionService) -> None:
        self._service = service
        self._pending: dict[Key, list[Receipt]] = {}

    def add(self, receipts: Iterable[Receipt]) -> None:
        """Remember the streamed receipts among ``receipts``."""
        for receipt in receipts:
            if receipt.streamed:
                self._pending.setdefault(receipt.key, []).append(receipt)

    def forget(self, key: Key) -> None:
        """Drop a session's receipts (it was deleted)."""
        self._pending.pop(key, None)

    async def wait(self, key: Key) -> None:
        """Wait until every remembered write of ``key`` is persisted.

        Raises:
            SessionNotFoundError: a write found its session deleted or re-created.
            PersistTimeoutError: a write was not persisted in time.
        """
        receipts = self._pending.pop(key, None)
        if not receipts:
            return
        timeout = self._service.settings.read_your_writes_wait_s
        for receipt in receipts:
            await self._service.wait_persisted(receipt, timeout)
