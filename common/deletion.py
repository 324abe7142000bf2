"""Deleting a session in both layouts: used by SessionService and the retention command."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sessionstreams.common.compat import HASHIDX, ZSET, uses_legacy
from sessionstreams.common.models import Key, SessionMeta, SessionStateDoc
from sessionstreams.common.readpath import track_names
from sessionstreams.common.store import Store


async def delete_session(
    store: Store, key: Key, *, layouts: Sequence[str] | None = None
) -> None:
    """Delete every key of a session with its tracks, summaries, index entry and our
    bookkeeping: the HashIdx copy, then in LEGACY/TRANSITION the legacy copy (or exactly the
    given ``layouts``: ``hashidx``, ``zset``). Every step runs; the first error is raised
    after them."""
    if layouts is None:
        layouts = (HASHIDX, ZSET) if uses_legacy(store.settings.compat_mode) else (HASHIDX,)
    steps = {HASHIDX: _delete_hashidx, ZSET: _delete_legacy}
    first: Exception | None = None
    for layout in layouts:
        try:
            await steps[layout](store, key)
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


async def _delete_hashidx(store: Store, key: Key) -> None:
    engine = store.hashidx
    meta_raw, stored = await engine.track_names_for_delete(key)
    await engine.delete(key, _names(stored, meta_raw, SessionMeta))


async def _delete_legacy(store: Store, key: Key) -> None:
    engine = store.legacy
    doc_raw, stored = await engine.read_for_delete(key)
    await engine.delete(key, _names(stored, doc_raw, SessionStateDoc))


def _names(stored: Sequence[bytes], raw: bytes | None, doc_type: Any) -> list[str]:
    """Track names: the stored name SET plus the document's ``tracks`` (if it decodes)."""
    names = {n.decode("utf-8", "replace") for n in stored}
    if raw is not None:
        with contextlib.suppress(Exception):  # a corrupt document still gets deleted
            names.update(track_names(doc_type.from_json(raw).state or {}))
    return sorted(names)
