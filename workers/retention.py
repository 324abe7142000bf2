"""Retention: delete the sessions not updated for longer than a given age, in both layouts.

The Go-style TTLs expire idle sessions only when they are set; this keeps sessions no longer
than N days whatever the TTLs (``sessionstreams retention --older-than 30d``, run by cron or
a scheduler). A session's age is measured from its ``updatedAt`` (the last write). The scan
covers every primary (SCAN of the HashIdx metas and the legacy session hashes), so its cost
grows with the database; the deletion is the one ``delete_session`` performs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sessionstreams.common.compat import HASHIDX, ZSET
from sessionstreams.common.deletion import delete_session
from sessionstreams.common.errors import DecodeError, InvalidArgumentError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Key, SessionMeta, SessionStateDoc
from sessionstreams.common.store import Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or a number of seconds) as a timedelta.

    Raises:
        InvalidArgumentError: not such a duration, or not positive.
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not found:
        raise InvalidArgumentError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m, 45s)")
    seconds = float(found[1]) * _UNITS[found[2] or "s"]
    if seconds <= 0:
        raise InvalidArgumentError(f"the age must be positive, not {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Expired:
    """A session older than the cutoff."""

    key: Key
    layout: str
    updated_at: str

    def line(self) -> str:
        """``layout app/user/session updatedAt`` for humans."""
        k = self.key
        return f"{self.layout} {k.app_name}/{k.user_id}/{k.session_id} {self.updated_at}"


async def find_expired(store: Store, cutoff: GoTime, app: str = "") -> list[Expired]:
    """Sessions (both layouts, one app or all) last updated before ``cutoff``, sorted.

    A session whose document does not decode is left out (it is reported by nothing else:
    its age is unknown).
    """
    found: list[Expired] = []
    keys = store.keys
    async for raw in store.client.scan_iter(match=keys.any_meta_pattern(app), count=500):
        key = keys.parse_any_meta_key(raw.decode())
        if key is None or (app and key.app_name != app):
            continue
        doc = await store.client.get(raw)
        updated = _updated(doc, SessionMeta)
        if updated is not None and updated < cutoff:
            found.append(Expired(key, HASHIDX, updated.to_text()))
    async for raw in store.client.scan_iter(match=keys.any_legacy_sessions_pattern(app),
                                            count=500):
        user = keys.parse_any_legacy_sessions_key(raw.decode())
        if user is None or (app and user.app_name != app):
            continue
        for sid, doc in (await store.client.hgetall(raw)).items():
            updated = _updated(doc, SessionStateDoc)
            if updated is not None and updated < cutoff:
                key = Key(user.app_name, user.user_id, sid.decode())
                found.append(Expired(key, ZSET, updated.to_text()))
    found.sort(key=lambda e: (e.key.app_name, e.key.user_id, e.key.session_id, e.layout))
    return found


def _updated(raw: bytes | None, doc_type: type[SessionMeta] | type[SessionStateDoc]
             ) -> GoTime | None:
    if raw is None:
        return None
    try:
        doc = doc_type.from_json(raw)
    except DecodeError:
        return None
    for when in (doc.updated_at, doc.created_at):
        if not when.is_zero:
            return when
    return None


async def delete_expired(
    store: Store, expired: list[Expired], progress: Callable[[int], None] | None = None
) -> int:
    """Delete each expired session in its layout; returns how many were deleted."""
    for done, item in enumerate(expired, 1):
        await delete_session(store, item.key, layouts=(item.layout,))
        if progress is not None:
            progress(done)
    return len(expired)
