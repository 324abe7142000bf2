"""Every Redis key name used by sessionstreams, built in one place.

``[p:]`` is the configured key prefix followed by a colon, or nothing when the prefix is empty.
``<app>``, ``<user>``, ``<sid>`` and ``<track>`` are the raw ids (braces are rejected by
:func:`validate_ids`, so they can never change a hash tag).

HashIdx engine (hash tag ``{<user>}``: one user's keys share a Cluster slot)

===============================================  ======  ==========================================
key                                              type    content
===============================================  ======  ==========================================
``[p:]hashidx:meta:<app>:{<user>}:<sid>``         STRING  session meta JSON (Go format)
``[p:]hashidx:evtdata:<app>:{<user>}:<sid>``      HASH    event id -> event JSON
``[p:]hashidx:evtidx:time:<app>:{<user>}:<sid>``  ZSET    event id scored by timestamp ns
``[p:]hashidx:sesssum:<app>:{<user>}:<sid>``      STRING  JSON map filter key -> summary
``[p:]hashidx:trkdata:<app>:{<user>}:<sid>:<t>``  HASH    ``_seq`` counter, ``<n>`` -> track JSON
``[p:]hashidx:trkidx:time:<app>:{<user>}:<sid>:<t>``  ZSET  ``<n>`` scored by timestamp ns
``[p:]hashidx:trkidx:names:<app>:{<user>}:<sid>``  SET    track names
``[p:]hashidx:sessidx:<app>:{<user>}``             HASH    sid -> ``{"createdAt": ...}``
``[p:]hashidx:userstate:<app>:{<user>}``           HASH    user state, raw values
``[p:]appstate:{<app>}``                           HASH    app state, raw values (both engines)
``[p:]ss:applied:<app>:{<user>}:<sid>``            ZSET    request record: rid scored
                                                           ``seq * 8 + outcome code`` (newest 1,024)
``[p:]ss:info:<app>:{<user>}:<sid>``               HASH    ours: ``user_evt`` (newest user message
                                                           id we stored), ``last_id`` (progress),
                                                           ``imported`` (migrate)
``[p:]ss:create:<app>:{<user>}:<sid>``             STRING  ours: lock of a create with a given id
                                                           in LEGACY/TRANSITION (token, 5 s)
``[p:]ss:summary:<app>:{<user>}:<sid>``            HASH    ours: summary runs per filter key ``f``:
                                                           ``c:f`` cut of the stored summary,
                                                           ``l:f``/``u:f`` lock token and deadline
                                                           (ms), ``d:f`` dirty cut, ``h:f`` handled
                                                           cut (stream ids); TTL follows the meta
===============================================  ======  ==========================================

Legacy ZSet engine (hash tag ``{<app>}``: one app's keys share a slot)

=============================================  ======  ===========================================
``[p:]sess:{<app>}:<user>``                     HASH    sid -> SessionState JSON
``[p:]event:{<app>}:<user>:<sid>``              ZSET    full event JSON scored by timestamp ns
``[p:]track:{<app>}:<user>:<sid>:<track>``      ZSET    track JSON scored by timestamp ns
``[p:]trackidx:{<app>}:<user>:<sid>``           SET     track names
``[p:]sesssum:{<app>}:<user>``                  HASH    sid -> JSON map filter key -> summary
``[p:]userstate:{<app>}:<user>``                HASH    user state (the old key)
``[p:]ss:applied:{<app>}:<user>:<sid>``         ZSET    request record, as above
``[p:]ss:info:{<app>}:<user>:<sid>``            HASH    ours, as above; ``migrated`` = the
                                                        generation after ``migrate`` moved it
``[p:]ss:summary:{<app>}:<user>:<sid>``         HASH    ours: summary runs, as above
=============================================  ======  ===========================================

Our own keys live only in the ``ss:`` family: never under a pattern that the Go service scans,
never as a field of a Go hash, never inside a Go JSON document.

Ids that would share keys. ``:`` separates the parts of a name, so where two parts of
arbitrary text meet, two different sessions can reach one key. HashIdx puts the user inside
its hash tag (braces are refused in ids), so app, user and session are unambiguous, but the
track keys end in ``<sid>:<track>``: session ``s:x`` track ``t`` and session ``s`` track
``x:t`` meet. The legacy layout writes ``<user>:<sid>[:<track>]``: user ``alice:x`` session
``1`` and user ``alice`` session ``x:1`` share every per-session key. Hence, on every write
(:func:`validate_write_key`, :func:`validate_track`): track names never contain ``:``, and
user ids contain no ``:`` in the compat modes that read or write the legacy layout. Reads are
never refused, so data written by others under such ids stays readable.
"""

from __future__ import annotations

from functools import lru_cache

from sessionstreams.common.errors import InvalidKeyError
from sessionstreams.common.models import Key, UserKey

_GLOB_SPECIALS = frozenset("*?[]\\")

#: Hash tag characters are refused in ids (they would move keys to another slot).
_FORBIDDEN = ("{", "}")


def validate_app(app_name: str) -> None:
    """Raise InvalidKeyError unless ``app_name`` is a usable app id."""
    _check_text("appName", app_name)
    if not app_name:
        raise InvalidKeyError("appName is required")
    _check_braces("appName", app_name)


def validate_user_key(key: UserKey | Key) -> None:
    """Raise InvalidKeyError unless the app and user ids are usable (ref. CheckUserKey)."""
    validate_app(key.app_name)
    _check_text("userID", key.user_id)
    if not key.user_id:
        raise InvalidKeyError("userID is required")
    _check_braces("userID", key.user_id)


def validate_key(key: Key) -> None:
    """Raise InvalidKeyError unless app, user and session ids are usable (CheckSessionKey)."""
    validate_user_key(key)
    _check_text("sessionID", key.session_id)
    if not key.session_id:
        raise InvalidKeyError("sessionID is required")
    _check_braces("sessionID", key.session_id)


def validate_session_id(session_id: str) -> None:
    """Raise InvalidKeyError for a session id that would break the key layout."""
    _check_text("sessionID", session_id)
    _check_braces("sessionID", session_id)


def validate_write_key(key: Key, *, legacy_layout: bool) -> None:
    """Raise InvalidKeyError unless ``key`` may be written without sharing keys with another
    session (see the module docstring).

    Args:
        key: the session.
        legacy_layout: the compat mode reads or writes the legacy layout, whose per-session
            keys are ``<user>:<sid>``: a user id with ``:`` is refused.
    """
    validate_key(key)
    if legacy_layout and ":" in key.user_id:
        raise InvalidKeyError(
            f"userID {key.user_id!r} must not contain ':' while the legacy layout is in use "
            f"(compat_mode legacy/transition): user {key.user_id!r} session "
            f"{key.session_id!r} would share keys with another user's session"
        )


def validate_track(track: str) -> None:
    """Raise InvalidKeyError unless ``track`` may name a track of a write (non-empty, no
    ``:``: track keys end in ``<sid>:<track>``)."""
    if not isinstance(track, str) or not track:
        raise InvalidKeyError("append track event: track name is required")
    _check_text("track", track)
    if ":" in track:
        raise InvalidKeyError(
            f"track name {track!r} must not contain ':' (its keys end in <session>:<track>, "
            "so it would share keys with a track of another session)"
        )


def _check_text(field: str, value: object) -> None:
    """An id must be a str of valid Unicode (a lone surrogate cannot be sent to Redis)."""
    if not isinstance(value, str):
        raise InvalidKeyError(f"{field} must be a str, not {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"{field} {value!r} is not valid Unicode (it holds a lone surrogate)"
            ) from None


def _check_braces(field: str, value: str) -> None:
    for ch in _FORBIDDEN:
        if ch in value:
            raise InvalidKeyError(
                f"{field} {value!r} must not contain '{ch}' (it would change the Redis hash tag)"
            )


def glob_escape(text: str) -> str:
    """Escape SCAN/HSCAN MATCH glob characters so ``text`` only matches itself."""
    return "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in text)


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit hash of the UTF-8 bytes of ``text`` (the Go session hash)."""
    h = 2166136261
    for byte in text.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


@lru_cache(maxsize=8192)
def session_hash(key: Key) -> int:
    """The Go ``Session.Hash``: FNV-1a 32 of ``app:user:sid`` (memoised: a listing or a read
    builds it for every session it returns)."""
    return fnv1a32(f"{key.app_name}:{key.user_id}:{key.session_id}")


class KeySpace:
    """Builds every key name for one key prefix."""

    __slots__ = ("_p", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._p = f"{prefix}:" if prefix else ""

    # -- shared -------------------------------------------------------------------------
    def app_state(self, app: str) -> str:
        """``[p:]appstate:{<app>}`` (HASH), shared by both engines."""
        return f"{self._p}appstate:{{{app}}}"

    # -- HashIdx ------------------------------------------------------------------------
    def _h(self, kind: str, key: Key) -> str:
        return f"{self._p}hashidx:{kind}:{key.app_name}:{{{key.user_id}}}:{key.session_id}"

    def meta(self, key: Key) -> str:
        """HashIdx session meta (STRING)."""
        return self._h("meta", key)

    def event_data(self, key: Key) -> str:
        """HashIdx event data (HASH id -> JSON)."""
        return self._h("evtdata", key)

    def event_index(self, key: Key) -> str:
        """HashIdx event time index (ZSET)."""
        return self._h("evtidx:time", key)

    def summary(self, key: Key) -> str:
        """HashIdx summary map (STRING)."""
        return self._h("sesssum", key)

    def track_data(self, key: Key, track: str) -> str:
        """HashIdx track data (HASH)."""
        return f"{self._h('trkdata', key)}:{track}"

    def track_index(self, key: Key, track: str) -> str:
        """HashIdx track time index (ZSET)."""
        return f"{self._h('trkidx:time', key)}:{track}"

    def track_names(self, key: Key) -> str:
        """HashIdx track names (SET)."""
        return self._h("trkidx:names", key)

    def session_index(self, key: UserKey | Key) -> str:
        """HashIdx per-user session index (HASH sid -> entry JSON)."""
        return f"{self._p}hashidx:sessidx:{key.app_name}:{{{key.user_id}}}"

    def user_state(self, key: UserKey | Key) -> str:
        """HashIdx user state (HASH)."""
        return f"{self._p}hashidx:userstate:{key.app_name}:{{{key.user_id}}}"

    def session_index_pattern(self, app: str) -> str:
        """SCAN MATCH pattern for every HashIdx user session index of one app (escaped)."""
        return f"{glob_escape(self._p)}hashidx:sessidx:{glob_escape(app)}:\\{{*"

    def parse_session_index_key(self, app: str, raw: str) -> UserKey | None:
        """Recover the UserKey from a session index name found by SCAN, or None."""
        head = f"{self._p}hashidx:sessidx:{app}:{{"
        if not raw.startswith(head) or not raw.endswith("}") or len(raw) <= len(head) + 1:
            return None
        return UserKey(app, raw[len(head) : -1])

    def meta_pattern(self, key: UserKey | Key) -> str:
        """SCAN MATCH pattern for every HashIdx meta of one user (glob-escaped)."""
        return (
            f"{glob_escape(self._p)}hashidx:meta:{glob_escape(key.app_name)}:"
            f"\\{{{glob_escape(key.user_id)}\\}}:*"
        )

    def app_meta_pattern(self, app: str) -> str:
        """SCAN MATCH pattern for every HashIdx meta of one app (glob-escaped)."""
        return f"{glob_escape(self._p)}hashidx:meta:{glob_escape(app)}:*"

    def parse_meta_key(self, app: str, raw: str) -> Key | None:
        """Recover the Key from a meta key name found by SCAN, or None if it is not one."""
        head = f"{self._p}hashidx:meta:{app}:{{"
        if not raw.startswith(head):
            return None
        user, sep, sid = raw[len(head) :].partition("}:")
        if not sep or not user or not sid:
            return None
        return Key(app, user, sid)

    def _ours(self, kind: str, key: Key) -> str:
        return f"{self._p}ss:{kind}:{key.app_name}:{{{key.user_id}}}:{key.session_id}"

    def record(self, key: Key, route: str) -> str:
        """The request record of a session on ``route`` (``hashidx`` or ``zset``)."""
        return self.applied(key) if route == "hashidx" else self.legacy_applied(key)

    def applied(self, key: Key) -> str:
        """Our request record for a HashIdx session (ZSET)."""
        return self._ours("applied", key)

    def info(self, key: Key) -> str:
        """Our per-session bookkeeping for a HashIdx session (HASH)."""
        return self._ours("info", key)

    def summary_runs(self, key: Key) -> str:
        """Our summary-run record of a HashIdx session (HASH; see the module docstring)."""
        return self._ours("summary", key)

    def create_lock(self, key: Key) -> str:
        """Our lock serialising creates of one session id across compat modes (STRING)."""
        return self._ours("create", key)

    # -- legacy ZSet --------------------------------------------------------------------
    def legacy_sessions(self, key: UserKey | Key) -> str:
        """Legacy per-user session HASH."""
        return f"{self._p}sess:{{{key.app_name}}}:{key.user_id}"

    def legacy_events(self, key: Key) -> str:
        """Legacy event ZSET (members are full event JSON)."""
        return f"{self._p}event:{{{key.app_name}}}:{key.user_id}:{key.session_id}"

    def legacy_track(self, key: Key, track: str) -> str:
        """Legacy track ZSET."""
        return f"{self._p}track:{{{key.app_name}}}:{key.user_id}:{key.session_id}:{track}"

    def legacy_track_names(self, key: Key) -> str:
        """Legacy track names SET."""
        return f"{self._p}trackidx:{{{key.app_name}}}:{key.user_id}:{key.session_id}"

    def legacy_summaries(self, key: UserKey | Key) -> str:
        """Legacy per-user summary HASH (field sid)."""
        return f"{self._p}sesssum:{{{key.app_name}}}:{key.user_id}"

    def legacy_user_state(self, key: UserKey | Key) -> str:
        """Legacy user state HASH (the old key)."""
        return f"{self._p}userstate:{{{key.app_name}}}:{key.user_id}"

    def legacy_sessions_pattern(self, app: str) -> str:
        """SCAN MATCH pattern for every legacy per-user session HASH of one app (escaped)."""
        return f"{glob_escape(self._p)}sess:\\{{{glob_escape(app)}\\}}:*"

    def parse_legacy_sessions_key(self, app: str, raw: str) -> UserKey | None:
        """Recover the UserKey from a legacy session HASH name found by SCAN, or None."""
        head = f"{self._p}sess:{{{app}}}:"
        user = raw[len(head) :] if raw.startswith(head) else ""
        return UserKey(app, user) if user else None

    def legacy_user_state_pattern(self, app: str) -> str:
        """SCAN MATCH pattern for every old user-state HASH of one app (escaped)."""
        return f"{glob_escape(self._p)}userstate:\\{{{glob_escape(app)}\\}}:*"

    def parse_legacy_user_state_key(self, app: str, raw: str) -> UserKey | None:
        """Recover the UserKey from an old user-state HASH name found by SCAN, or None."""
        head = f"{self._p}userstate:{{{app}}}:"
        user = raw[len(head) :] if raw.startswith(head) else ""
        return UserKey(app, user) if user else None

    def legacy_applied(self, key: Key) -> str:
        """Our request record for a legacy session (ZSET)."""
        return f"{self._p}ss:applied:{{{key.app_name}}}:{key.user_id}:{key.session_id}"

    def legacy_info(self, key: Key) -> str:
        """Our per-session bookkeeping for a legacy session (HASH)."""
        return f"{self._p}ss:info:{{{key.app_name}}}:{key.user_id}:{key.session_id}"

    def legacy_summary_runs(self, key: Key) -> str:
        """Our summary-run record of a legacy session (HASH)."""
        return f"{self._p}ss:summary:{{{key.app_name}}}:{key.user_id}:{key.session_id}"

    # -- one user's keys, both layouts (user export and erase) ----------------------------
    #: HashIdx key families holding one session each (``<family>:<app>:{<user>}:<sid>...``).
    _HASHIDX_SESSION = ("meta", "evtdata", "evtidx:time", "sesssum", "trkdata", "trkidx:time",
                        "trkidx:names")
    #: Our per-session families (``ss:<family>:...``), in both layouts.
    _OURS = ("applied", "info", "create", "summary")
    #: Legacy families holding one session each (``<family>:{<app>}:<user>:<sid>...``).
    _LEGACY_SESSION = ("event", "track", "trackidx", "ss:applied", "ss:info", "ss:summary")

    def user_patterns(self, user: UserKey) -> list[str]:
        """SCAN MATCH patterns covering every key of one user in both layouts (escaped);
        filter what they find with :meth:`session_of` (an app id may end like another)."""
        p, a, u = glob_escape(self._p), glob_escape(user.app_name), glob_escape(user.user_id)
        return [f"{p}*:{a}:\\{{{u}\\}}*", f"{p}*:\\{{{a}\\}}:{u}*"]

    def session_of(
        self, user: UserKey, raw: str, legacy_sids: set[str] | None = None
    ) -> tuple[str, str]:
        """(layout, session id) of a key of ``user``: layout ``hashidx`` or ``zset``, the
        session id empty for a per-user key; ("", "") when the key is not the user's.

        ``legacy_sids`` are the user's legacy session ids: a legacy key is the user's when it
        names one of them, or when its session part has no ``:`` (an orphan no other user's
        id can explain)."""
        app, uid, p = user.app_name, user.user_id, self._p
        hashidx_user = f"{app}:{{{uid}}}"
        for family in ("hashidx:sessidx", "hashidx:userstate"):
            if raw == f"{p}{family}:{hashidx_user}":
                return "hashidx", ""
        for family in (*(f"hashidx:{f}" for f in self._HASHIDX_SESSION),
                       *(f"ss:{f}" for f in self._OURS)):
            head = f"{p}{family}:{hashidx_user}:"
            if raw.startswith(head) and len(raw) > len(head):
                rest = raw[len(head):]
                sid = rest if family not in _TRACK_FAMILIES else rest.rpartition(":")[0]
                return "hashidx", sid or rest
        legacy_user = f"{{{app}}}:{uid}"
        for family in ("sess", "sesssum", "userstate"):
            if raw == f"{p}{family}:{legacy_user}":
                return "zset", ""
        for family in self._LEGACY_SESSION:
            head = f"{p}{family}:{legacy_user}:"
            if not raw.startswith(head) or len(raw) == len(head):
                continue
            rest = raw[len(head):]
            if family == "track":
                sid = next((s for s in legacy_sids or () if rest.startswith(f"{s}:")), "")
                if sid or rest.count(":") == 1:
                    return "zset", sid or rest.partition(":")[0]
            elif rest in (legacy_sids or ()) or ":" not in rest:
                return "zset", rest
        return "", ""

    # -- every session, every app (retention) ---------------------------------------------
    def any_meta_pattern(self, app: str = "") -> str:
        """SCAN MATCH pattern for the HashIdx metas of one app, or of every app (escaped)."""
        if app:
            return self.app_meta_pattern(app)
        return f"{glob_escape(self._p)}hashidx:meta:*"

    def any_legacy_sessions_pattern(self, app: str = "") -> str:
        """SCAN MATCH pattern for the legacy session HASHes of one app, or of every app."""
        if app:
            return self.legacy_sessions_pattern(app)
        return f"{glob_escape(self._p)}sess:\\{{*"

    def parse_any_meta_key(self, raw: str) -> Key | None:
        """The Key of a HashIdx meta name of any app (braces never occur in ids), or None."""
        head = f"{self._p}hashidx:meta:"
        if not raw.startswith(head):
            return None
        app, sep, rest = raw[len(head):].partition(":{")
        user, sep2, sid = rest.partition("}:")
        if not (app and sep and user and sep2 and sid):
            return None
        return Key(app, user, sid)

    def parse_any_legacy_sessions_key(self, raw: str) -> UserKey | None:
        """The UserKey of a legacy session HASH name of any app, or None."""
        head = f"{self._p}sess:{{"
        if not raw.startswith(head):
            return None
        app, sep, user = raw[len(head):].partition("}:")
        return UserKey(app, user) if app and sep and user else None

#: HashIdx families whose keys end with ``:<track>`` after the session id.
_TRACK_FAMILIES = frozenset({"hashidx:trkdata", "hashidx:trkidx:time"})

