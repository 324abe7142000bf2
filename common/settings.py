"""The one frozen settings object of sessionstreams.

A :class:`Settings` is built from keyword arguments, from a URL (:meth:`Settings.from_url`) or
from environment variables (:meth:`Settings.from_env`, ``SESSIONSTREAMS_<FIELD>``), and is
validated and normalised once, at construction. Normalisation follows the Go service
(reference §1.1): negative TTLs become 0, worker counts and queue sizes below 1 take their
default, ``session_event_limit`` and ``track_event_ttl`` are kept as given. Everything that
cannot be normalised raises :class:`~sessionstreams.common.errors.ConfigError` naming the field.

Durations are float seconds; a :class:`datetime.timedelta` is accepted and converted. Our own
fields carry their unit in their name (``lease_ttl_s``, ``block_ms``).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from sessionstreams.common._urls import parse_url, redact_url
from sessionstreams.common.errors import ConfigError

ENV_PREFIX = "SESSIONSTREAMS_"

_log = logging.getLogger(__name__)


class CompatMode(enum.IntEnum):
    """Which storage engines are read and written (reference §5)."""

    NONE = 0
    LEGACY = 1
    TRANSITION = 2

    @classmethod
    def parse(cls, value: str | int | CompatMode) -> CompatMode:
        """Accept a member, its int value, or its name in any case (``"legacy"``, ``"2"``).

        Raises:
            ConfigError: the value names no mode.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                value = int(text)
            else:
                name = text.upper().removeprefix("COMPATMODE").lstrip("_")
                if name in cls.__members__:
                    return cls[name]
                raise ConfigError(f"compat_mode: unknown mode {value!r} (none|legacy|transition)")
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ConfigError(f"compat_mode: unknown mode {value!r} (none|legacy|transition)")


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option of a SessionService and of the workers (DESIGN §3).

    Go options keep their names (snake_case); ``session_ttl``, ``app_state_ttl``,
    ``user_state_ttl``, ``track_event_ttl`` and ``summary_job_timeout`` are seconds.
    See the module docstring for normalisation; the derived properties give TTLs in the
    units Redis commands take.
    """

    url: str = ""
    instance: str = ""
    extra_options: Mapping[str, Any] = field(default_factory=_empty_mapping, hash=False)
    session_event_limit: int = 1000
    session_event_storage_limit: int | None = None
    session_ttl: float = 0.0
    app_state_ttl: float = 0.0
    user_state_ttl: float = 0.0
    track_event_ttl: float | None = None
    key_prefix: str = ""
    compat_mode: CompatMode = CompatMode.LEGACY
    enable_user_session_index: bool = False
    enable_async_persist: bool = False
    async_persister_num: int = 10
    summarizer: Any = field(default=None, hash=False)
    async_summary_num: int = 3
    summary_queue_size: int = 100
    summary_job_timeout: float = 60.0
    summary_filter_allowlist: tuple[str, ...] | None = None
    cascade_full_session_summary: bool = True
    enable_tracing: bool = False
    enable_metrics: bool | None = None  # None: follow enable_tracing (as in Go)
    append_event_hooks: tuple[Callable[..., Any], ...] = ()
    get_session_hooks: tuple[Callable[..., Any], ...] = ()
    disable_script_cache: bool = False
    # Ours, with units in the names.
    stream_backlog_max: int = 100_000
    backpressure_wait_s: float = 2.0
    lease_ttl_s: float = 10.0
    heartbeat_interval_s: float = 2.0
    read_your_writes_wait_s: float = 5.0
    read_your_writes_stale_ok: bool = False
    dead_letter_after_failures: int = 5
    durable_min_replicas: int = 0
    durable_wait_timeout_s: float = 1.0
    worker_batch_size: int = 200
    block_ms: int = 1000
    #: When a worker has caught up (it woke on new entries, or its last read returned less
    #: than a full batch) it waits this long before reading, so entries arriving one by one
    #: are applied in few batches (less worker CPU per entry) at the cost of that much latency.
    worker_linger_ms: int = 2
    socket_timeout_s: float = 5.0
    socket_connect_timeout_s: float = 5.0
    client_retries: int = 3

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():
            value = getattr(self, name)
            normalised = rule.check(name, value)
            if normalised is not value:
                object.__setattr__(self, name, normalised)
        self._check_cross_fields()

    def _check_cross_fields(self) -> None:
        if "{" in self.key_prefix or "}" in self.key_prefix:
            raise ConfigError("key_prefix: must not contain '{' or '}' (they form hash tags)")
        if self.url:
            parse_url(self.url)
        if self.heartbeat_interval_s >= self.lease_ttl_s:
            raise ConfigError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be below "
                f"lease_ttl_s ({self.lease_ttl_s})"
            )
        if self.durable_min_replicas and self.durable_wait_timeout_s >= self.socket_timeout_s:
            raise ConfigError(  # the WAIT reply would come after the socket gave up
                f"durable_wait_timeout_s ({self.durable_wait_timeout_s}) must be below "
                f"socket_timeout_s ({self.socket_timeout_s})"
            )

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "url":
                value = redact_url(value)
            elif f.name == "extra_options":
                value = _masked(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    # -- derived values ------------------------------------------------------------------

    @property
    def storage_limit(self) -> int:
        """Events kept per session in storage; 0 = never trim."""
        if self.session_event_storage_limit is not None:
            return self.session_event_storage_limit
        return max(self.session_event_limit, 0)

    @property
    def metrics_enabled(self) -> bool:
        """Whether metrics are recorded: ``enable_metrics``, or ``enable_tracing`` when unset
        (trpc-agent-go records metrics only with tracing on)."""
        return self.enable_tracing if self.enable_metrics is None else self.enable_metrics

    @property
    def track_ttl_s(self) -> int:
        """TTL of track keys in whole seconds, rounded up; 0 = no expiry.

        ``track_event_ttl`` None follows ``session_ttl``; an explicit value <= 0 gives 0 (see
        :attr:`track_ttl_explicit_none`).
        """
        if self.track_event_ttl is None:
            return _ceil_units(self.session_ttl, 1)
        return _ceil_units(self.track_event_ttl, 1) if self.track_event_ttl > 0 else 0

    @property
    def track_ttl_explicit_none(self) -> bool:
        """True when ``track_event_ttl`` was set <= 0: no expiry, and track keys are PERSISTed."""
        return self.track_event_ttl is not None and self.track_event_ttl <= 0

    @property
    def session_ttl_ms(self) -> int:
        """Session TTL in whole milliseconds (rounded up); 0 = no expiry."""
        return _ceil_units(self.session_ttl, 1000)

    @property
    def app_state_ttl_s(self) -> int:
        """App-state TTL in whole seconds, rounded up so 0.5 s is 1 s, not "no expiry"."""
        return _ceil_units(self.app_state_ttl, 1)

    @property
    def user_state_ttl_s(self) -> int:
        """User-state TTL in whole seconds, rounded up so 0.5 s is 1 s, not "no expiry"."""
        return _ceil_units(self.user_state_ttl, 1)

    # -- builders ------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SESSIONSTREAMS_<FIELD>`` variables; ``overrides`` win.

        Booleans take 1/0/true/false/yes/no/on/off; ``SUMMARY_FILTER_ALLOWLIST`` is
        comma-separated (``","`` gives an empty allowlist); ``EXTRA_OPTIONS`` is a JSON object;
        an empty value for an optional field (storage limit, track TTL, allowlist) means unset.
        An unknown ``SESSIONSTREAMS_*`` variable (a misspelt name, most likely) is logged as a
        warning, once per process, with the closest valid name; it is otherwise ignored.

        Args:
            environ: the variables to read; ``os.environ`` when None.
            **overrides: field values that take precedence over the environment.

        Raises:
            ConfigError: a malformed variable (named in the message) or an unknown override.
        """
        env = os.environ if environ is None else environ
        _warn_unknown_variables(env)
        values: dict[str, Any] = {}
        for name, rule in _RULES.items():
            var = ENV_PREFIX + name.upper()
            if rule.env is None or var not in env:
                continue
            try:
                values[name] = rule.env(env[var])
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var}: {exc}") from exc
        values.update(overrides)
        return cls._build(values)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Settings:
        """Build settings for ``url`` with other fields from ``kwargs``.

        Raises:
            ConfigError: a bad URL or field value, or an unknown field name.
        """
        return cls._build({**kwargs, "url": url})

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated like a new object).

        Raises:
            ConfigError: a bad value or an unknown field name.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> Settings:
        _check_names(values)
        return cls(**values)


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with secrets masked, nested mappings too (``sentinel_kwargs``)."""
    return {
        k: "***" if any(word in k.lower() for word in ("password", "secret"))
        else _masked(v) if isinstance(v, Mapping) else v
        for k, v in options.items()
    }


# -- validation rules -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    check: Callable[[str, Any], Any]
    env: Callable[[str], Any] | None


#: ``SESSIONSTREAMS_*`` variables read elsewhere than :meth:`Settings.from_env`: the worker's
#: summarizer and fault points, the OpenAI-compatible summarizer, the admin tools' fault hook,
#: and the development scripts and tests.
OTHER_VARIABLES = frozenset(ENV_PREFIX + name for name in (
    "SUMMARIZER", "FAULTS", "ADMIN_FAULT",
    "SUMMARY_BASE_URL", "SUMMARY_MODEL", "SUMMARY_API_KEY", "SUMMARY_TIMEOUT_S",
    "VENV", "SKIP_INSTALL", "SKIP_VALKEY", "SKIP_LOWEST", "STAGES", "LOWEST_VENV",
    "TEST_TOPOLOGY", "TEST_SERVER",
))

_warned: set[str] = set()


def env_variables() -> frozenset[str]:
    """Every ``SESSIONSTREAMS_*`` variable sessionstreams reads."""
    fields = {ENV_PREFIX + name.upper() for name, rule in _RULES.items() if rule.env is not None}
    return frozenset(fields) | OTHER_VARIABLES


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """Log each unknown ``SESSIONSTREAMS_*`` variable once, with the closest valid name."""
    known = env_variables()
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in known or var in _warned:
            continue
        _warned.add(var)
        # Compared without the prefix, which every name shares.
        names = sorted(k.removeprefix(ENV_PREFIX) for k in known)
        close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), names, n=1, cutoff=0.6)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        _log.warning("unknown environment variable %s is ignored%s", var, hint)


def _check_names(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(_RULES))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")


def _ceil_units(seconds: float, per_second: int) -> int:
    """Whole units, rounded up; values that are whole up to float noise are not bumped."""
    if seconds <= 0:
        return 0
    scaled = seconds * per_second
    nearest = round(scaled)
    units = nearest if abs(scaled - nearest) < 1e-6 else math.ceil(scaled)
    return max(units, 1)


def _type_error(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, "a bool", value)
    return value


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an int", value)
    return value


def _duration(name: str, value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, "seconds (int, float) or a timedelta", value)
    if not math.isfinite(value):
        raise ConfigError(f"{name}: must be finite, got {value!r}")
    return float(value)


def _at_least(minimum: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        number = _int(name, value)
        if number < minimum:
            raise ConfigError(f"{name}: must be >= {minimum}, got {number}")
        return number

    return check


def _default_below_1(default: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        number = _int(name, value)
        return default if number < 1 else number

    return check


def _negative_to_zero(name: str, value: Any) -> float:
    return max(_duration(name, value), 0.0)


def _positive_or(default: float) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        seconds = _duration(name, value)
        return default if seconds <= 0 else seconds

    return check


def _positive(name: str, value: Any) -> float:
    seconds = _duration(name, value)
    if seconds <= 0:
        raise ConfigError(f"{name}: must be > 0, got {seconds}")
    return seconds


def _non_negative(name: str, value: Any) -> float:
    seconds = _duration(name, value)
    if seconds < 0:
        raise ConfigError(f"{name}: must be >= 0, got {seconds}")
    return seconds


def _optional(inner: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        return None if value is None else inner(name, value)

    return check


def _compat(name: str, value: Any) -> CompatMode:
    return CompatMode.parse(value)


def _allowlist(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise _type_error(name, "a sequence of strings", value)
    kept = []
    for item in items:
        if not isinstance(item, str):
            raise _type_error(name, "a sequence of strings", value)
        if item.strip():
            kept.append(item.strip())
    return tuple(kept)


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _type_error(name, "a mapping with string keys", value)
    return MappingProxyType(dict(value))


def _callables(name: str, value: Any) -> tuple[Callable[..., Any], ...]:
    if callable(value) or not isinstance(value, Iterable):
        raise _type_error(name, "a sequence of callables", value)
    hooks = tuple(value)
    for hook in hooks:
        if not callable(hook):
            raise _type_error(name, "a sequence of callables", hook)
    return hooks


def _anything(name: str, value: Any) -> Any:
    return value


# -- environment parsers ----------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of 1/0/true/false/yes/no/on/off, got {text!r}")


def _env_int(text: str) -> int:
    return int(text.strip())


def _env_float(text: str) -> float:
    return float(text.strip())


def _env_optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def env(text: str) -> Any:
        return None if not text.strip() else parse(text)

    return env


def _env_json_object(text: str) -> dict[str, Any]:
    loaded = json.loads(text) if text.strip() else {}
    if not isinstance(loaded, dict):
        raise ValueError("expected a JSON object")
    return loaded


_RULES: Mapping[str, _Rule] = {
    "url": _Rule(_str, str),
    "instance": _Rule(_str, str),
    "extra_options": _Rule(_mapping, _env_json_object),
    "session_event_limit": _Rule(_int, _env_int),
    "session_event_storage_limit": _Rule(_optional(_at_least(0)), _env_optional(_env_int)),
    "session_ttl": _Rule(_negative_to_zero, _env_float),
    "app_state_ttl": _Rule(_negative_to_zero, _env_float),
    "user_state_ttl": _Rule(_negative_to_zero, _env_float),
    "track_event_ttl": _Rule(_optional(_duration), _env_optional(_env_float)),
    "key_prefix": _Rule(_str, str),
    "compat_mode": _Rule(_compat, str),
    "enable_user_session_index": _Rule(_bool, _env_bool),
    "enable_async_persist": _Rule(_bool, _env_bool),
    "async_persister_num": _Rule(_default_below_1(10), _env_int),
    "summarizer": _Rule(_anything, None),
    "async_summary_num": _Rule(_default_below_1(3), _env_int),
    "summary_queue_size": _Rule(_default_below_1(100), _env_int),
    "summary_job_timeout": _Rule(_positive_or(60.0), _env_float),
    "summary_filter_allowlist": _Rule(_allowlist, _env_optional(str)),
    "cascade_full_session_summary": _Rule(_bool, _env_bool),
    "enable_tracing": _Rule(_bool, _env_bool),
    "enable_metrics": _Rule(_optional(_bool), _env_optional(_env_bool)),
    "append_event_hooks": _Rule(_callables, None),
    "get_session_hooks": _Rule(_callables, None),
    "disable_script_cache": _Rule(_bool, _env_bool),
    "stream_backlog_max": _Rule(_at_least(1), _env_int),
    "backpressure_wait_s": _Rule(_non_negative, _env_float),
    "lease_ttl_s": _Rule(_positive, _env_float),
    "heartbeat_interval_s": _Rule(_positive, _env_float),
    "read_your_writes_wait_s": _Rule(_non_negative, _env_float),
    "read_your_writes_stale_ok": _Rule(_bool, _env_bool),
    "dead_letter_after_failures": _Rule(_at_least(1), _env_int),
    "durable_min_replicas": _Rule(_at_least(0), _env_int),
    "durable_wait_timeout_s": _Rule(_positive, _env_float),
    "worker_batch_size": _Rule(_at_least(1), _env_int),
    "block_ms": _Rule(_at_least(1), _env_int),
    "worker_linger_ms": _Rule(_at_least(0), _env_int),
    "socket_timeout_s": _Rule(_positive, _env_float),
    "socket_connect_timeout_s": _Rule(_positive, _env_float),
    "client_retries": _Rule(_at_least(0), _env_int),
}
