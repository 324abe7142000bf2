"""``sessionstreams index rebuild``: back-fill the HashIdx user session index.

Sessions created while ``enable_user_session_index`` was off (or by a Go service without
the option) have no index entry, so index-based listing does not show them. The rebuild:

1. SCANs the HashIdx meta keys of the app (or one user), glob-escaped, in pages, and adds a
   missing entry per session with one script on the user's slot (``hashidx_index_add``):
   the meta is read in the same script, so a session deleted meanwhile gets no entry;
2. prunes entries whose meta is gone (``hashidx_index_prune``, one script per user).

Each step is idempotent: a rerun (after an interruption, or while traffic flows) only adds
what is still missing. Entries are ``{"createdAt": <meta createdAt>}`` as the Go service
writes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionstreams.common.keys import KeySpace, validate_app, validate_user_key
from sessionstreams.common.models import Key, UserKey
from sessionstreams.common.scripts import Scripts
from sessionstreams.workers._tooling import FaultHook, Progress, reach

_BATCH = 200


@dataclass
class RebuildReport:
    """What a rebuild did."""

    scanned: int = 0
    added: int = 0
    present: int = 0
    gone: int = 0
    pruned: int = 0
    invalid: list[tuple[Key, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for humans."""
        return (f"index rebuild: {self.scanned} sessions scanned, {self.added} entries added, "
                f"{self.present} already present, {self.pruned} stale entries removed, "
                f"{len(self.invalid)} invalid")


async def rebuild_index(
    client: Any,
    keys: KeySpace,
    scripts: Scripts,
    app: str,
    user: str | None = None,
    *,
    progress: Progress | None = None,
    fault: FaultHook | None = None,
    batch_size: int = _BATCH,
) -> RebuildReport:
    """Add the missing index entries of one app (or one user) and prune stale ones.

    Args:
        client: a client from :func:`sessionstreams.common.connection.create_client`.
        keys: key names for the prefix.
        scripts: the scripts of the client.
        app: the app id.
        user: only this user's sessions.
        progress: counts sessions as they are indexed; its total comes first, from a
            counting SCAN pass.
        fault: called with ``("indexed", key)`` after each session (tests stop a run with it).
        batch_size: sessions per pipeline of index scripts.
    """
    validate_app(app)
    if user is not None:
        validate_user_key(UserKey(app, user))
    report = RebuildReport()
    users: set[str] = set()
    batch: list[Key] = []
    pattern = keys.meta_pattern(UserKey(app, user)) if user else keys.app_meta_pattern(app)
    if progress is not None:  # a counting pass, so the total (and time left) is known
        progress.total = sum([1 async for _ in _sessions(client, keys, pattern, app, user)])
    async for key in _sessions(client, keys, pattern, app, user):
        batch.append(key)
        users.add(key.user_id)
        if len(batch) >= batch_size:
            await _add(client, keys, scripts, batch, report, progress, fault)
            batch = []
    if batch:
        await _add(client, keys, scripts, batch, report, progress, fault)
    if user is not None:
        users.add(user)
    else:
        async for raw in client.scan_iter(match=keys.session_index_pattern(app), count=500):
            found = keys.parse_session_index_key(app, raw.decode("utf-8", "replace"))
            if found is not None:
                users.add(found.user_id)
    for user_id in sorted(users):
        report.pruned += await _prune(client, keys, scripts, UserKey(app, user_id))
    return report


async def _sessions(
    client: Any, keys: KeySpace, pattern: str, app: str, user: str | None
) -> AsyncIterator[Key]:
    """The sessions whose meta key matches ``pattern`` (SCAN: one may come twice)."""
    async for raw in client.scan_iter(match=pattern, count=500):
        key = keys.parse_meta_key(app, raw.decode("utf-8", "replace"))
        if key is not None and (user is None or key.user_id == user):
            yield key


async def _add(
    client: Any,
    keys: KeySpace,
    scripts: Scripts,
    batch: Sequence[Key],
    report: RebuildReport,
    progress: Progress | None,
    fault: FaultHook | None,
) -> None:
    # SCAN may return a key twice; each session is indexed once per batch.
    unique = list(dict.fromkeys(batch))
    calls = [
        ("script", "hashidx_index_add", [keys.meta(k), keys.session_index(k)], [k.session_id])
        for k in unique
    ]
    for key, result in zip(unique, await scripts.run_pipeline(client, calls), strict=True):
        status = result.decode() if isinstance(result, bytes) else str(result)
        report.scanned += 1
        if status == "added":
            report.added += 1
        elif status == "present":
            report.present += 1
        elif status == "gone":
            report.gone += 1
        else:
            report.invalid.append((key, status))
        if progress is not None:
            progress.advance()
        await reach(fault, "indexed", key)


async def _prune(client: Any, keys: KeySpace, scripts: Scripts, user: UserKey) -> int:
    index_key = keys.session_index(user)
    ids: list[str] = []
    async for sid, _ in client.hscan_iter(index_key, count=500):
        ids.append(sid.decode("utf-8", "replace"))
    removed = 0
    for start in range(0, len(ids), _BATCH):
        chunk = list(dict.fromkeys(ids[start : start + _BATCH]))
        metas = [keys.meta(Key(user.app_name, user.user_id, sid)) for sid in chunk]
        result = await scripts.call(client, "hashidx_index_prune", [index_key, *metas], chunk)
        removed += int(result)
    return removed
