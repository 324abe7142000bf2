"""Compatibility modes (reference §5): route names, the engines by route, the routing rules.

A *route* names the engine a session lives in; it is also the ``storage_type`` tag of
returned sessions and the route carried by stream entries:

- :data:`HASHIDX`: the HashIdx layout (:class:`~sessionstreams.common.hashidx.HashIdxEngine`);
- :data:`ZSET`: the legacy ZSet layout (:class:`~sessionstreams.common.legacy.LegacyEngine`).

Both engines take the same write arguments and return the same statuses
(:class:`Engine`), so ``Engines.engine_for(route).append(...)`` works for either.

The rules of the matrix, per :class:`~sessionstreams.common.settings.CompatMode`:

=====================  ==================  ===================================================
rule                   NONE                LEGACY / TRANSITION
=====================  ==================  ===================================================
existence check        HashIdx EXISTS      HashIdx EXISTS + legacy HEXISTS (one pipeline)
route of a session     HashIdx             legacy when it is there, else HashIdx
route of a tagged one  HashIdx (tag off)   the tag
create target          HashIdx             HashIdx (LEGACY), legacy (TRANSITION)
user state written     HashIdx             HashIdx (LEGACY), HashIdx then legacy (TRANSITION)
user state read        HashIdx             legacy overlaid by HashIdx (HashIdx wins)
user state deleted     HashIdx             both
=====================  ==================  ===================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.hashidx import AppendEntry, HashIdxEngine, LoadResult
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.legacy import LegacyEngine
from sessionstreams.common.models import Key, Summary, UserKey
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import CompatMode, Settings

HASHIDX = "hashidx"
ZSET = "zset"
ROUTES = (HASHIDX, ZSET)


class Engine(Protocol):
    """The interface both engines share (arguments, replies and statuses identical)."""

    # -- reads: call tuples for pipelines, and their parsed replies
    def load_call(
        self, key: Key, limit: int, after_ns: int | None, flags: str
    ) -> tuple[Any, ...]: ...

    @staticmethod
    def parse_load(raw: Sequence[Any]) -> LoadResult: ...

    def load_tracks_call(
        self, key: Key, names: Sequence[str], limit: int, after_ns: int | None
    ) -> tuple[Any, ...]: ...

    async def load_summaries(self, key: Key) -> bytes | None: ...

    async def set_summary(
        self, key: Key, *, filter_key: str, summary: Summary, ttl_ms: int, cut: str = ""
    ) -> str: ...

    # -- writes

    def append_call(
        self,
        key: Key,
        entries: Sequence[AppendEntry],
        *,
        ttl_ms: int,
        storage_limit: int,
        user_state_ttl_ms: int,
        incarnation: str = "",
    ) -> tuple[Any, ...]: ...

    async def prepare_append(self, key: Key, entries: Sequence[AppendEntry]) -> str | None: ...

    async def finish_append(
        self, key: Key, entries: Sequence[AppendEntry], statuses: list[str], **opts: Any
    ) -> list[str]: ...

    async def append(self, key: Key, entries: Sequence[AppendEntry], **opts: Any) -> list[str]: ...

    async def append_track(
        self,
        key: Key,
        *,
        rid: str,
        track: str,
        track_json: bytes,
        ts_ns: int,
        track_ttl_s: int,
        persist: bool,
        producer_ts: str,
        session_ttl_ms: int,
        incarnation: str = "",
    ) -> str: ...

    async def update_state(
        self,
        key: Key,
        *,
        rid: str,
        patch_json: bytes,
        producer_ts: str,
        ttl_ms: int,
        incarnation: str = "",
    ) -> str: ...

    async def trim(
        self, key: Key, *, rid: str, count: int, ttl_ms: int
    ) -> tuple[str, list[bytes]]: ...


class TransitionHashIdxEngine(HashIdxEngine):
    """HashIdx engine of TRANSITION mode: delta user state also goes to the legacy key.

    update_user_state writes both user-state keys in TRANSITION mode, so event deltas do too;
    the legacy key lives in the ``{app}`` slot: checked before the script, written after it.
    """

    def other_slot_user_state(self, key: Key) -> str | None:
        return self.keys.legacy_user_state(key)


class Engines(Mapping[str, Engine]):
    """The two engines of one client, by route (``engines[route]`` / ``engine_for``)."""

    def __init__(self, client: Any, keys: KeySpace, scripts: Scripts, mode: CompatMode) -> None:
        self.mode = mode
        hashidx_cls = TransitionHashIdxEngine if mode is CompatMode.TRANSITION else HashIdxEngine
        self.hashidx: HashIdxEngine = hashidx_cls(client, keys, scripts)
        self.legacy = LegacyEngine(
            client, keys, scripts, hashidx=self.hashidx,
            dual_user_state=mode is CompatMode.TRANSITION,
        )
        self._by_route: dict[str, Engine] = {HASHIDX: self.hashidx, ZSET: self.legacy}

    @classmethod
    def from_settings(
        cls, client: Any, settings: Settings, scripts: Scripts | None = None
    ) -> Engines:
        """Engines for ``settings`` (prefix, compat mode, script cache)."""
        scripts = scripts or Scripts(disable_cache=settings.disable_script_cache)
        return cls(client, KeySpace(settings.key_prefix), scripts, settings.compat_mode)

    def engine_for(self, route: str) -> Engine:
        """The engine of ``route`` (:data:`HASHIDX` or :data:`ZSET`).

        Raises:
            ConfigError: an unknown route (e.g. an entry written by a newer version).
        """
        engine = self._by_route.get(route)
        if engine is None:
            raise ConfigError(f"unknown storage route {route!r} (expected one of {ROUTES})")
        return engine

    def __getitem__(self, route: str) -> Engine:
        return self.engine_for(route)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_route)

    def __len__(self) -> int:
        return len(self._by_route)


# -- the rules ---------------------------------------------------------------------------
def uses_legacy(mode: CompatMode) -> bool:
    """True in the modes that read the legacy layout (LEGACY and TRANSITION)."""
    return mode is not CompatMode.NONE


@dataclass(frozen=True, slots=True)
class Presence:
    """Where a session exists (reference §4.1); both can be true."""

    zset: bool
    hashidx: bool


def presence_calls(keys: KeySpace, key: Key, mode: CompatMode) -> list[tuple[Any, ...]]:
    """The existence check as pipeline calls (:meth:`Scripts.run_pipeline`)."""
    calls: list[tuple[Any, ...]] = [("cmd", "EXISTS", keys.meta(key))]
    if uses_legacy(mode):
        calls.append(("cmd", "HEXISTS", keys.legacy_sessions(key), key.session_id))
    return calls


def parse_presence(mode: CompatMode, replies: Sequence[Any]) -> Presence:
    """The Presence from the replies of :func:`presence_calls`."""
    zset = bool(replies[1]) if uses_legacy(mode) else False
    return Presence(zset=zset, hashidx=bool(replies[0]))


async def check_presence(
    scripts: Scripts, client: Any, keys: KeySpace, key: Key, mode: CompatMode
) -> Presence:
    """Run the existence check (one pipeline; errors raise, they never mean "absent")."""
    replies = await scripts.run_pipeline(client, presence_calls(keys, key, mode))
    return parse_presence(mode, replies)


def load_both_call(
    keys: KeySpace, key: Key, limit: int, after_ns: int | None, exact: bool, ids: bool = False
) -> tuple[Any, ...]:
    """A call reading a session from either layout, legacy first (``compat_load.lua``);
    with ``ids``, the reply also gives the ids of a HashIdx window.

    Single-node servers only: the script reads keys of the ``{app}`` and ``{user}`` slots.
    """
    script_keys = [
        keys.legacy_sessions(key), keys.legacy_events(key), keys.legacy_summaries(key),
        keys.legacy_user_state(key), keys.legacy_track_names(key), keys.app_state(key.app_name),
        keys.meta(key), keys.event_data(key), keys.event_index(key), keys.summary(key),
        keys.user_state(key), keys.track_names(key),
    ]
    args = [key.session_id, max(limit, 0), "" if after_ns is None else str(after_ns),
            "x" if exact else "", "i" if ids else ""]
    return ("script", "compat_load", script_keys, args)


def parse_load_both(raw: Sequence[Any]) -> tuple[str | None, LoadResult, list[bytes]]:
    """(route or None, the load, the HashIdx window's ids) from a ``compat_load`` reply; user
    state merged, HashIdx fields winning."""
    route, doc, summary, old_user, new_user, names, events, prepend, app = raw[:9]
    user = {**_pairs(old_user), **_pairs(new_user)}
    loaded = LoadResult(
        meta=doc or None, summary=summary or None, user_state=user,
        track_names=[n.decode("utf-8", "replace") for n in names], events=list(events),
        prepend=prepend or None, app_state=_pairs(app),
    )
    return (route.decode() if route else None), loaded, list(raw[9]) if len(raw) > 9 else []


def _pairs(flat: Sequence[bytes]) -> dict[str, bytes]:
    return {flat[i].decode("utf-8", "replace"): flat[i + 1] for i in range(0, len(flat), 2)}


def choose_route(mode: CompatMode, presence: Presence) -> str | None:
    """Legacy when the mode reads it and the session is there; else HashIdx if present."""
    if uses_legacy(mode) and presence.zset:
        return ZSET
    if presence.hashidx:
        return HASHIDX
    return None


def tag_route(mode: CompatMode, tag: str | None) -> str | None:
    """The route a session's ``storage_type`` tag gives, or None when the tag is unusable.

    NONE mode ignores the legacy layout entirely, tags included (the Go service would
    still write a ``zset``-tagged session to the legacy layout, where nothing reads it).
    """
    if mode is CompatMode.NONE:
        return HASHIDX
    return tag if tag in ROUTES else None


def create_route(mode: CompatMode) -> str:
    """Where a new session is created: legacy in TRANSITION mode, else HashIdx."""
    return ZSET if mode is CompatMode.TRANSITION else HASHIDX


def user_state_write_keys(keys: KeySpace, mode: CompatMode, user: UserKey | Key) -> list[str]:
    """The user-state keys update_user_state writes, in write order (HashIdx first)."""
    out = [keys.user_state(user)]
    if mode is CompatMode.TRANSITION:
        out.append(keys.legacy_user_state(user))
    return out


def user_state_read_keys(keys: KeySpace, mode: CompatMode, user: UserKey | Key) -> list[str]:
    """The user-state keys a read merges, the winning one last (HashIdx wins)."""
    if not uses_legacy(mode):
        return [keys.user_state(user)]
    return [keys.legacy_user_state(user), keys.user_state(user)]


def user_state_delete_keys(keys: KeySpace, mode: CompatMode, user: UserKey | Key) -> list[str]:
    """The user-state keys delete_user_state removes a field from."""
    return user_state_read_keys(keys, mode, user)
