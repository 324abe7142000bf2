"""Settings: defaults, normalisation (reference §1.1), validation, builders."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest

from sessionstreams.common import settings as settings_module
from sessionstreams.common.errors import ConfigError
from sessionstreams.common.settings import _RULES, CompatMode, Settings, env_variables


def test_defaults_match_the_go_service() -> None:
    """A bare Settings has the Go defaults and ours."""
    s = Settings()
    assert s.session_event_limit == 1000
    assert s.session_event_storage_limit is None
    assert (s.session_ttl, s.app_state_ttl, s.user_state_ttl) == (0.0, 0.0, 0.0)
    assert s.track_event_ttl is None
    assert s.compat_mode is CompatMode.LEGACY
    assert (s.async_persister_num, s.async_summary_num, s.summary_queue_size) == (10, 3, 100)
    assert s.summary_job_timeout == 60.0
    assert s.summary_filter_allowlist is None
    assert s.cascade_full_session_summary is True
    assert s.extra_options == {}
    assert (s.stream_backlog_max, s.block_ms, s.client_retries) == (100_000, 1000, 3)


def test_every_field_has_a_validation_rule() -> None:
    """Each dataclass field is validated and has a known env behaviour."""
    assert set(_RULES) == {f.name for f in dataclasses.fields(Settings)}


def test_settings_are_frozen() -> None:
    """Assigning to a field fails."""
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.url = "redis://x"  # type: ignore[misc]


@pytest.mark.parametrize("field", ["session_ttl", "app_state_ttl", "user_state_ttl"])
def test_negative_ttls_become_zero(field: str) -> None:
    """Negative session/app/user TTLs are normalised to 0 (no expiry), as in Go."""
    assert getattr(Settings(**{field: -5}), field) == 0.0


def test_timedelta_durations_are_converted_to_seconds() -> None:
    """A timedelta is accepted for any duration and stored as float seconds."""
    s = Settings(session_ttl=timedelta(minutes=30), lease_ttl_s=timedelta(seconds=12))  # type: ignore[arg-type]
    assert s.session_ttl == 1800.0
    assert s.lease_ttl_s == 12.0
    assert isinstance(s.session_ttl, float)


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("async_persister_num", 0, 10),
        ("async_persister_num", -3, 10),
        ("async_persister_num", 4, 4),
        ("async_summary_num", 0, 3),
        ("summary_queue_size", -1, 100),
        ("summary_job_timeout", 0, 60.0),
        ("summary_job_timeout", -2.5, 60.0),
        ("summary_job_timeout", 5, 5.0),
    ],
)
def test_go_normalisation_of_counts_and_job_timeout(field: str, given: Any, expected: Any) -> None:
    """Worker counts and queue size < 1, and a job timeout <= 0, take their defaults."""
    assert getattr(Settings(**{field: given}), field) == expected


@pytest.mark.parametrize("limit", [0, -1, 5])
def test_session_event_limit_is_kept_as_given(limit: int) -> None:
    """session_event_limit is stored unchanged, including 0 and negatives."""
    assert Settings(session_event_limit=limit).session_event_limit == limit


@pytest.mark.parametrize(
    ("limit", "storage", "expected"),
    [(1000, None, 1000), (0, None, 0), (-4, None, 0), (50, 0, 0), (50, 200, 200)],
)
def test_storage_limit_resolution(limit: int, storage: int | None, expected: int) -> None:
    """storage_limit follows the read limit when unset (0 when that is <= 0); 0 = never trim."""
    s = Settings(session_event_limit=limit, session_event_storage_limit=storage)
    assert s.storage_limit == expected


def test_negative_storage_limit_is_refused() -> None:
    """A negative session_event_storage_limit is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match="session_event_storage_limit"):
        Settings(session_event_storage_limit=-1)


def test_track_ttl_follows_session_ttl_rounded_up() -> None:
    """With track_event_ttl unset, the track TTL is the session TTL rounded up to seconds."""
    s = Settings(session_ttl=1.2)
    assert s.track_ttl_s == 2
    assert not s.track_ttl_explicit_none
    assert Settings().track_ttl_s == 0


@pytest.mark.parametrize("ttl", [0, -3, timedelta(0)])
def test_explicit_non_positive_track_ttl_means_persist(ttl: Any) -> None:
    """An explicit track_event_ttl <= 0 is kept, means no expiry, and asks for PERSIST."""
    s = Settings(session_ttl=100, track_event_ttl=ttl)
    assert s.track_ttl_s == 0
    assert s.track_ttl_explicit_none
    assert s.track_event_ttl is not None
    assert s.track_event_ttl <= 0


def test_explicit_positive_track_ttl_is_rounded_up() -> None:
    """A positive track_event_ttl is used instead of the session TTL, rounded up."""
    assert Settings(session_ttl=100, track_event_ttl=0.3).track_ttl_s == 1


def test_sub_unit_ttls_round_up_not_to_zero() -> None:
    """Sub-second app/user TTLs and sub-millisecond session TTLs never become "no expiry"."""
    s = Settings(app_state_ttl=0.5, user_state_ttl=1.0001, session_ttl=0.0004)
    assert s.app_state_ttl_s == 1
    assert s.user_state_ttl_s == 2
    assert s.session_ttl_ms == 1


def test_whole_values_are_not_bumped_by_float_noise() -> None:
    """1.1 s is 1100 ms, not 1101 (float noise does not round up)."""
    assert Settings(session_ttl=1.1).session_ttl_ms == 1100
    assert Settings(session_ttl=3).session_ttl_ms == 3000


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("none", CompatMode.NONE),
        ("Legacy", CompatMode.LEGACY),
        ("TRANSITION", CompatMode.TRANSITION),
        ("CompatModeTransition", CompatMode.TRANSITION),
        ("2", CompatMode.TRANSITION),
        (0, CompatMode.NONE),
        (CompatMode.LEGACY, CompatMode.LEGACY),
    ],
)
def test_compat_mode_parse(given: Any, expected: CompatMode) -> None:
    """CompatMode.parse accepts members, ints and names in any case."""
    assert CompatMode.parse(given) is expected
    assert Settings(compat_mode=given).compat_mode is expected


@pytest.mark.parametrize("bad", ["hybrid", 3, -1, True, 1.0, ""])
def test_bad_compat_mode_is_a_config_error(bad: Any) -> None:
    """An unknown compat mode raises ConfigError naming compat_mode."""
    with pytest.raises(ConfigError, match="compat_mode"):
        Settings(compat_mode=bad)


def test_allowlist_drops_blank_entries_and_strips() -> None:
    """Blank allowlist entries are dropped and the rest stripped; empty stays non-None."""
    assert Settings(summary_filter_allowlist=[" a ", "", "  ", "b"]).summary_filter_allowlist == (
        "a",
        "b",
    )
    assert Settings(summary_filter_allowlist=[]).summary_filter_allowlist == ()
    assert Settings(summary_filter_allowlist="x, y").summary_filter_allowlist == ("x", "y")


def test_extra_options_are_an_immutable_copy() -> None:
    """extra_options is copied and read-only: later changes to the source do not leak in."""
    source = {"max_connections": 5}
    s = Settings(extra_options=source)
    source["max_connections"] = 9
    assert s.extra_options["max_connections"] == 5
    assert isinstance(s.extra_options, MappingProxyType)
    with pytest.raises(TypeError):
        s.extra_options["x"] = 1  # type: ignore[index]


def test_hooks_are_stored_as_tuples_of_callables() -> None:
    """Hook lists become tuples; a non-callable hook is refused."""

    def hook(*args: Any) -> None:
        return None

    assert Settings(append_event_hooks=[hook]).append_event_hooks == (hook,)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="get_session_hooks"):
        Settings(get_session_hooks=[hook, 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="append_event_hooks"):
        Settings(append_event_hooks=hook)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", 5),
        ("key_prefix", None),
        ("enable_async_persist", 1),
        ("session_event_limit", 10.0),
        ("session_event_limit", True),
        ("session_ttl", "30"),
        ("session_ttl", float("nan")),
        ("lease_ttl_s", 0),
        ("heartbeat_interval_s", -1),
        ("socket_timeout_s", 0),
        ("socket_connect_timeout_s", -1),
        ("durable_wait_timeout_s", 0),
        ("backpressure_wait_s", -0.1),
        ("read_your_writes_wait_s", -1),
        ("stream_backlog_max", 0),
        ("dead_letter_after_failures", 0),
        ("durable_min_replicas", -1),
        ("worker_batch_size", 0),
        ("block_ms", 0),
        ("client_retries", -1),
        ("extra_options", [("a", 1)]),
        ("extra_options", {1: 2}),
        ("summary_filter_allowlist", [1]),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(field: str, value: Any) -> None:
    """A wrong type or out-of-range value raises ConfigError whose message names the field."""
    with pytest.raises(ConfigError, match=field):
        Settings(**{field: value})


def test_heartbeat_must_be_shorter_than_lease() -> None:
    """heartbeat_interval_s >= lease_ttl_s is refused (leases would lapse between beats)."""
    with pytest.raises(ConfigError, match="heartbeat_interval_s"):
        Settings(lease_ttl_s=2, heartbeat_interval_s=2)


def test_key_prefix_with_braces_is_refused() -> None:
    """A key prefix containing a hash-tag brace is refused."""
    with pytest.raises(ConfigError, match="key_prefix"):
        Settings(key_prefix="a{b}")


@pytest.mark.parametrize("url", ["localhost:6379", "http://h", "redis+sentinel://h1"])
def test_bad_url_is_refused_at_construction(url: str) -> None:
    """A malformed URL fails when Settings is built, not at the first request."""
    with pytest.raises(ConfigError, match="redis url"):
        Settings(url=url)


def test_repr_hides_passwords() -> None:
    """repr() never shows the URL password or password-like extra options."""
    s = Settings(url="redis://user:s3cret@h:6379/0", extra_options={"password": "p4ss"})
    text = repr(s)
    assert "s3cret" not in text
    assert "p4ss" not in text
    assert "user:***@h" in text


def test_from_env_reads_prefixed_variables() -> None:
    """from_env reads SESSIONSTREAMS_<FIELD> for every scalar field with its type."""
    env = {
        "SESSIONSTREAMS_URL": "redis://127.0.0.1:6379/1",
        "SESSIONSTREAMS_SESSION_EVENT_LIMIT": "20",
        "SESSIONSTREAMS_SESSION_TTL": "1.5",
        "SESSIONSTREAMS_ENABLE_ASYNC_PERSIST": "yes",
        "SESSIONSTREAMS_ENABLE_TRACING": "0",
        "SESSIONSTREAMS_COMPAT_MODE": "transition",
        "SESSIONSTREAMS_SUMMARY_FILTER_ALLOWLIST": "a, ,b",
        "SESSIONSTREAMS_EXTRA_OPTIONS": '{"max_connections": 7}',
        "SESSIONSTREAMS_BLOCK_MS": "250",
        "SESSIONSTREAMS_TRACK_EVENT_TTL": "-1",
        "SESSIONSTREAMS_FAULTS": "ignored:by-settings",
        "OTHER": "x",
    }
    s = Settings.from_env(env)
    assert s.url == "redis://127.0.0.1:6379/1"
    assert s.session_event_limit == 20
    assert s.session_ttl == 1.5
    assert s.enable_async_persist is True
    assert s.enable_tracing is False
    assert s.compat_mode is CompatMode.TRANSITION
    assert s.summary_filter_allowlist == ("a", "b")
    assert s.extra_options == {"max_connections": 7}
    assert s.block_ms == 250
    assert s.track_ttl_explicit_none


def test_from_env_kwargs_win() -> None:
    """Keyword overrides take precedence over environment variables."""
    env = {"SESSIONSTREAMS_KEY_PREFIX": "env", "SESSIONSTREAMS_ASYNC_PERSISTER_NUM": "4"}
    s = Settings.from_env(env, key_prefix="kw")
    assert (s.key_prefix, s.async_persister_num) == ("kw", 4)


def test_from_env_empty_optional_means_unset() -> None:
    """An empty value for an optional field leaves it None; "," gives an empty allowlist."""
    env = {
        "SESSIONSTREAMS_TRACK_EVENT_TTL": "",
        "SESSIONSTREAMS_SESSION_EVENT_STORAGE_LIMIT": " ",
        "SESSIONSTREAMS_SUMMARY_FILTER_ALLOWLIST": "",
    }
    s = Settings.from_env(env)
    assert s.track_event_ttl is None
    assert s.session_event_storage_limit is None
    assert s.summary_filter_allowlist is None
    assert (
        Settings.from_env({"SESSIONSTREAMS_SUMMARY_FILTER_ALLOWLIST": ","}).summary_filter_allowlist
        == ()
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SESSIONSTREAMS_ENABLE_TRACING", "maybe"),
        ("SESSIONSTREAMS_BLOCK_MS", "1.5"),
        ("SESSIONSTREAMS_SESSION_TTL", "soon"),
        ("SESSIONSTREAMS_EXTRA_OPTIONS", "[1, 2]"),
        ("SESSIONSTREAMS_EXTRA_OPTIONS", "{not json"),
    ],
)
def test_from_env_malformed_value_names_the_variable(var: str, value: str) -> None:
    """A malformed environment value raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: value})


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads os.environ."""
    monkeypatch.setenv("SESSIONSTREAMS_KEY_PREFIX", "fromos")
    assert Settings.from_env().key_prefix == "fromos"


def test_builders_refuse_unknown_fields() -> None:
    """from_env, from_url and replace raise ConfigError for unknown field names."""
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, bogus=1)
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_url("redis://h", nope=2)
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().replace(sesion_ttl=3)


def test_from_url_sets_the_url_and_other_fields() -> None:
    """from_url builds settings for a URL plus keyword fields."""
    s = Settings.from_url("rediss://h:6380/2", key_prefix="p", session_ttl=timedelta(seconds=9))
    assert (s.url, s.key_prefix, s.session_ttl) == ("rediss://h:6380/2", "p", 9.0)


def test_replace_validates_like_construction() -> None:
    """replace() returns a new validated object and leaves the original unchanged."""
    s = Settings(session_ttl=10)
    t = s.replace(session_ttl=-1, compat_mode="none")
    assert (t.session_ttl, t.compat_mode) == (0.0, CompatMode.NONE)
    assert s.session_ttl == 10.0
    with pytest.raises(ConfigError, match="block_ms"):
        s.replace(block_ms=-5)


def test_equal_settings_compare_and_hash_equal() -> None:
    """Two settings built from the same values are equal and hash alike."""
    a = Settings(url="redis://h", extra_options={"x": 1})
    b = Settings(url="redis://h", extra_options={"x": 1})
    assert a == b
    assert hash(a) == hash(b)


def test_unknown_variable_is_warned_once_with_the_closest_name(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt SESSIONSTREAMS_ variable is logged (not printed) once per process, with the
    closest valid name when there is one; variables other components read are not."""
    monkeypatch.setattr(settings_module, "_warned", set())
    env = {"SESSIONSTREAMS_ASYNC_PERSISTOR_NUM": "4", "SESSIONSTREAMS_ZZZQQQ": "1",
           "SESSIONSTREAMS_FAULTS": "", "SESSIONSTREAMS_SUMMARIZER": "m:f",
           "SESSIONSTREAMS_KEY_PREFIX": "p", "OTHER_THING": "x"}
    with caplog.at_level(logging.WARNING, logger="sessionstreams"):
        s = Settings.from_env(env)
        Settings.from_env(env)  # the same variables again: no new warning
    assert (s.key_prefix, s.async_persister_num) == ("p", 10)  # the misspelt one is ignored
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("sessionstreams.common.settings", logging.WARNING)] * 2
    assert [r.getMessage() for r in caplog.records] == [
        "unknown environment variable SESSIONSTREAMS_ASYNC_PERSISTOR_NUM is ignored; "
        "did you mean SESSIONSTREAMS_ASYNC_PERSISTER_NUM?",
        "unknown environment variable SESSIONSTREAMS_ZZZQQQ is ignored",
    ]


def test_every_settings_variable_is_known() -> None:
    """Each field read from the environment has its variable among the known ones (so it
    is never reported as unknown)."""
    known = env_variables()
    for name, rule in _RULES.items():
        if rule.env is not None:
            assert f"SESSIONSTREAMS_{name.upper()}" in known, name
