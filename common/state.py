"""State scopes: how state maps are split on write and merged on read.

Keys prefixed ``app:`` live in the app state HASH, ``user:`` in the user state HASH (both
without the prefix), ``temp:`` are never persisted, everything else is session state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from sessionstreams.common.errors import InvalidArgumentError, InvalidKeyError

APP_PREFIX = "app:"
USER_PREFIX = "user:"
TEMP_PREFIX = "temp:"

StateMap = dict[str, bytes | None]


def to_bytes(name: str, value: Any) -> bytes | None:
    """Normalise one state value to bytes (str is UTF-8 encoded; None stays None)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"state value for {name!r} is not valid Unicode (it holds a lone surrogate)"
            ) from None
    raise InvalidArgumentError(
        f"state value for {name!r} must be bytes, str or None, not {type(value).__name__}"
    )


def check_state_key(key: Any) -> None:
    """Refuse a state key that cannot be stored: not a str of valid Unicode, empty, or a bare
    ``app:`` / ``user:`` (an empty field name in the app or user state).

    Raises:
        InvalidKeyError: naming the key.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"state keys must be str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("state key is required")
    if key in (APP_PREFIX, USER_PREFIX):
        raise InvalidKeyError(f"state key {key!r} names no field")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"state key {key!r} is not valid Unicode (it holds a lone surrogate)"
            ) from None


def copy_state(state: Mapping[str, Any] | None) -> StateMap:
    """A copy of ``state`` with every value normalised to bytes or None.

    Raises:
        InvalidKeyError: a key is refused by :func:`check_state_key`.
        InvalidArgumentError: a value is neither bytes, str nor None.
    """
    if not state:
        return {}
    if not isinstance(state, Mapping):
        raise InvalidArgumentError(f"state must be a mapping, not {type(state).__name__}")
    out: StateMap = {}
    for k, v in state.items():
        check_state_key(k)
        out[k] = to_bytes(k, v)
    return out


class ScopedState(msgspec.Struct):
    """A state map split by scope."""

    session: StateMap
    app: list[tuple[str, bytes]]
    user: list[tuple[str, bytes]]


#: Prefixes of the keys that are not the session's own state.
_SCOPED = (APP_PREFIX, USER_PREFIX, TEMP_PREFIX)


def split_scopes(state: Mapping[str, bytes | None]) -> ScopedState:
    """Split a state map: app/user pairs (prefix stripped, nil as b""), temp dropped."""
    if not any(k.startswith(_SCOPED) for k in state):  # the common case: session keys only
        return ScopedState(dict(state), [], [])
    session: StateMap = {}
    app: list[tuple[str, bytes]] = []
    user: list[tuple[str, bytes]] = []
    for k, v in state.items():
        if k.startswith(APP_PREFIX):
            app.append((k[len(APP_PREFIX):], v or b""))
        elif k.startswith(USER_PREFIX):
            user.append((k[len(USER_PREFIX):], v or b""))
        elif not k.startswith(TEMP_PREFIX):
            session[k] = v
    return ScopedState(session, app, user)


def strip_prefix(state: Mapping[str, Any] | None, prefix: str) -> list[tuple[str, bytes]]:
    """HSET pairs for an app or user state update: prefix stripped, nil stored as b""."""
    pairs: list[tuple[str, bytes]] = []
    for k, v in copy_state(state).items():
        field = k[len(prefix):] if k.startswith(prefix) else k
        if not field:
            raise InvalidKeyError("state key is required")
        pairs.append((field, v or b""))
    return pairs


def b64_patch(state: Mapping[str, bytes | None]) -> bytes:
    """JSON object of base64 values (null for nil): the form state takes inside documents.

    Values must be bytes or None (see :func:`copy_state`); msgspec writes bytes as padded
    standard base64, as Go writes ``[]byte``.
    """
    return msgspec.json.encode(state)


def is_normalised(state: Mapping[str, Any]) -> bool:
    """True when ``state`` has str keys and bytes-or-None values (nothing for copy_state to do)."""
    return all(type(k) is str and (v is None or type(v) is bytes) for k, v in state.items())


def merge_scopes(
    session_state: Mapping[str, bytes | None],
    user_state: Mapping[str, bytes],
    app_state: Mapping[str, bytes],
) -> StateMap:
    """The state a reader sees: session state, then ``user:k``, then ``app:k``."""
    out: StateMap = dict(session_state)
    for k, v in user_state.items():
        out[USER_PREFIX + k] = v
    for k, v in app_state.items():
        out[APP_PREFIX + k] = v
    return out


def decode_hash(flat_or_map: Any) -> dict[str, bytes]:
    """HGETALL reply (bytes keys) -> str keys (undecodable key bytes replaced)."""
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in dict(flat_or_map).items()
    }
