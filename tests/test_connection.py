"""Connection: URL parsing and redaction, instance registry, client factory, server checks,
error translation. Client behaviour is checked against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.sentinel import SentinelConnectionPool

from redis_harness import (
    RunningRedis,
    free_port,
    start_redis_server,
    start_sentinel,
    start_single_node_cluster,
)
from sessionstreams.common import connection
from sessionstreams.common.connection import (
    ClientOptions,
    ClusterUnreachableError,
    ParsedURL,
    check_server,
    create_client,
    parse_url,
    redact_url,
    register_instance,
    resolve_url,
    set_client_factory,
    translate,
    translate_errors,
    unregister_instance,
)
from sessionstreams.common.errors import (
    ConfigError,
    ConnectionFailedError,
    CorruptDataError,
    InvalidArgumentError,
    OutOfMemoryError,
    SessionNotFoundError,
    SessionStoreError,
    StoreTimeoutError,
)
from sessionstreams.common.models import Event, Key, Session, UserKey
from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService

# -- URL parsing -----------------------------------------------------------------------------


def test_parse_plain_redis_url() -> None:
    """redis://host:port/db gives one host, the port and the db."""
    p = parse_url("redis://cache.local:6380/2")
    assert (p.kind, p.tls, p.hosts, p.db) == ("standalone", False, (("cache.local", 6380),), 2)
    assert (p.username, p.password, p.service_name, p.path) == (None, None, None, None)


def test_parse_defaults_port_and_db() -> None:
    """A URL without port or db uses 6379 and db 0."""
    p = parse_url("redis://h")
    assert (p.hosts, p.db) == ((("h", 6379),), 0)


def test_parse_rediss_with_credentials_and_options() -> None:
    """rediss:// sets TLS; percent-encoded credentials are decoded; query options are kept."""
    p = parse_url("rediss://alice:pa%40ss@h:6380/1?ssl_cert_reqs=none&health_check_interval=7")
    assert p.tls
    assert (p.username, p.password, p.db) == ("alice", "pa@ss", 1)
    assert dict(p.options) == {"ssl_cert_reqs": "none", "health_check_interval": 7}


def test_parse_password_only_and_ipv6() -> None:
    """A password without a user and an [IPv6]:port host are understood."""
    p = parse_url("redis://:s3cret@[::1]:7000")
    assert (p.username, p.password, p.hosts) == (None, "s3cret", (("::1", 7000),))


def test_parse_db_from_query_wins_over_nothing() -> None:
    """?db=N sets the database for redis:// too."""
    assert parse_url("redis://h?db=4").db == 4


def test_parse_unix_socket_url() -> None:
    """unix:// takes an absolute socket path and ?db=, with optional credentials."""
    p = parse_url("unix:///var/run/redis/redis.sock?db=3")
    assert (p.kind, p.path, p.db, p.hosts) == ("unix", "/var/run/redis/redis.sock", 3, ())
    q = parse_url("unix://:pw@/tmp/r.sock")
    assert (q.path, q.password) == ("/tmp/r.sock", "pw")


def test_parse_sentinel_url() -> None:
    """redis+sentinel:// lists sentinels (default port 26379), the primary name and a db."""
    p = parse_url("redis+sentinel://u:p@s1:26380,s2/mymaster/2")
    assert p.kind == "sentinel"
    assert not p.tls
    assert p.hosts == (("s1", 26380), ("s2", 26379))
    assert (p.service_name, p.db, p.username, p.password) == ("mymaster", 2, "u", "p")
    assert parse_url("rediss+sentinel://s1/m").tls


def test_parse_cluster_url() -> None:
    """redis+cluster:// lists seed nodes; /0 is allowed, rediss+cluster sets TLS."""
    p = parse_url("redis+cluster://n1:7000,n2:7001,n3")
    assert (p.kind, p.hosts) == ("cluster", (("n1", 7000), ("n2", 7001), ("n3", 6379)))
    assert parse_url("rediss+cluster://n1:7000/0").tls


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "localhost:6379",
        "http://h:6379",
        "sentinel://h:26379/m",
        "redis://h:port",
        "redis://h:0",
        "redis://h:70000",
        "redis://h1:1,h2:2",
        "redis://h/abc",
        "redis://h/1/2",
        "redis://",
        "redis://h?db=x",
        "unix://relative.sock",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/",
        "redis+cluster://n1:7000/1",
        "redis+cluster://n1:7000,,n2",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    """Bare host:port, other schemes and malformed parts raise ConfigError."""
    with pytest.raises(ConfigError):
        parse_url(url)


def test_parse_error_does_not_echo_the_password() -> None:
    """An error message about a URL shows it redacted."""
    with pytest.raises(ConfigError) as info:
        parse_url("redis://u:topsecret@h:notaport")
    assert "topsecret" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h", "redis://:***@h"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://u@h", "redis://u@h"),
        ("redis+sentinel://u:p@a:1,b:2/m", "redis+sentinel://u:***@a:1,b:2/m"),
        ("unix://:pw@/tmp/s.sock?db=1", "unix://:***@/tmp/s.sock?db=1"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("redis://u:p@ss@h/0", "redis://u:***@h/0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """redact_url replaces every password with *** and leaves the rest readable."""
    assert redact_url(url) == expected


def test_parsed_url_repr_and_redacted_hide_password() -> None:
    """ParsedURL's repr and .redacted never contain the password."""
    p = parse_url("redis+sentinel://u:hunter2@s1,s2:26380/m/3")
    assert "hunter2" not in repr(p)
    assert p.redacted == "redis+sentinel://u:***@s1:26379,s2:26380/m/3"


# -- instance registry -----------------------------------------------------------------------


def test_instance_resolves_url_and_options() -> None:
    """A registered instance supplies the URL and its client options."""
    register_instance("main", url="redis://h:1/0", max_connections=4)
    assert resolve_url(Settings(instance="main")) == ("redis://h:1/0", {"max_connections": 4})


def test_registering_again_merges_later_wins() -> None:
    """A second register_instance call merges options into the first; later values win."""
    register_instance("main", url="redis://h:1/0", max_connections=4, client_name="a")
    register_instance("main", client_name="b")
    assert resolve_url(Settings(instance="main")) == (
        "redis://h:1/0",
        {"max_connections": 4, "client_name": "b"},
    )


def test_settings_extra_options_apply_on_top_of_instance_options() -> None:
    """With an instance, Settings.extra_options override the registered options."""
    register_instance("main", url="redis://h:1/0", max_connections=4)
    s = Settings(instance="main", extra_options={"max_connections": 9})
    assert resolve_url(s)[1] == {"max_connections": 9}


def test_url_wins_over_instance() -> None:
    """settings.url is used even when an instance is named (and registered)."""
    register_instance("main", url="redis://other:1/0", max_connections=4)
    s = Settings(url="redis://mine:2/0", instance="main", extra_options={"client_name": "x"})
    assert resolve_url(s) == ("redis://mine:2/0", {"client_name": "x"})


def test_unknown_instance_and_empty_url_errors() -> None:
    """An unknown instance and a missing URL give the Go error messages as ConfigError."""
    with pytest.raises(ConfigError, match="redis instance nosuch not found"):
        resolve_url(Settings(instance="nosuch"))
    with pytest.raises(ConfigError, match="redis url is empty"):
        resolve_url(Settings())


def test_instance_without_url_and_unregister() -> None:
    """An instance lacking a url is a ConfigError; unregister_instance forgets it."""
    register_instance("bare", max_connections=1)
    with pytest.raises(ConfigError, match="has no url"):
        resolve_url(Settings(instance="bare"))
    unregister_instance("bare")
    unregister_instance("bare")  # unknown: no error
    with pytest.raises(ConfigError, match="not found"):
        resolve_url(Settings(instance="bare"))
    with pytest.raises(ConfigError):
        register_instance("")


# -- client factory --------------------------------------------------------------------------


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Collect clients built in a test and close them afterwards."""
    clients: list[Any] = []

    def keep(client: Any) -> Any:
        clients.append(client)
        return client

    yield keep
    for client in clients:
        await client.aclose()


def _kwargs(client: aioredis.Redis) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


async def test_default_client_pins_protocol_bytes_timeouts_and_retries(
    closing: Callable[[Any], Any],
) -> None:
    """The default client uses RESP2, bytes, the settings' timeouts and client_retries."""
    s = Settings(url="redis://h:1/3", socket_timeout_s=1.5, socket_connect_timeout_s=0.5)
    client = closing(create_client(s))
    assert isinstance(client, aioredis.Redis)
    kw = _kwargs(client)
    assert (kw["protocol"], kw["decode_responses"]) == (2, False)
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (1.5, 0.5)
    assert (kw["host"], kw["port"], kw["db"]) == ("h", 1, 3)
    assert kw["retry"].get_retries() == 3


async def test_stream_client_has_no_retries_and_timeout_above_block(
    closing: Callable[[Any], Any],
) -> None:
    """The stream client never retries and its socket timeout exceeds the BLOCK time."""
    s = Settings(url="redis://h:1/0", socket_timeout_s=5, block_ms=10_000)
    kw = _kwargs(closing(create_client(s, purpose="stream")))
    assert kw["retry"].get_retries() == 0
    assert kw["socket_timeout"] > 10.0
    short = Settings(url="redis://h:1/0", socket_timeout_s=5, block_ms=100)
    assert _kwargs(closing(create_client(short, purpose="stream")))["socket_timeout"] == 5


async def test_stream_client_survives_block_longer_than_socket_timeout(
    redis_server: RunningRedis, key_prefix: str, closing: Callable[[Any], Any]
) -> None:
    """A BLOCK longer than socket_timeout_s returns empty on the stream client, no timeout."""
    s = Settings(url=redis_server.url, socket_timeout_s=0.2, block_ms=500)
    client = closing(create_client(s, purpose="stream"))
    reply = await client.xread({f"{key_prefix}:empty": "$"}, block=s.block_ms, count=1)
    assert reply == []


async def test_extra_options_pass_through(closing: Callable[[Any], Any]) -> None:
    """Non-pinned extra options reach the client constructor."""
    s = Settings(url="redis://h:1/0", extra_options={"max_connections": 7, "client_name": "me"})
    client = closing(create_client(s))
    assert client.connection_pool.max_connections == 7
    assert _kwargs(client)["client_name"] == "me"


@pytest.mark.parametrize(
    "key",
    [
        "protocol",
        "decode_responses",
        "legacy_responses",
        "retry",
        "retry_on_timeout",
        "socket_timeout",
        "connection_pool",
        "host",
        "db",
    ],
)
def test_extra_option_overriding_a_pinned_key_is_a_config_error(key: str) -> None:
    """An extra option that would override a pinned value raises ConfigError naming it."""
    s = Settings(url="redis://h:1/0", extra_options={key: 3})
    with pytest.raises(ConfigError, match=key):
        create_client(s)


def test_url_query_overriding_a_pinned_key_is_a_config_error() -> None:
    """A URL query option such as ?protocol=3 cannot override pinned values either."""
    with pytest.raises(ConfigError, match="protocol"):
        create_client(Settings(url="redis://h:1/0?protocol=3"))
    with pytest.raises(ConfigError, match="socket_timeout"):
        create_client(Settings(url="redis://h:1/0?socket_timeout=9"), purpose="stream")


def test_unknown_extra_option_fails_at_creation() -> None:
    """An option the client does not know is a ConfigError at creation, not at first use."""
    with pytest.raises(ConfigError, match="create redis client failed"):
        create_client(Settings(url="redis://h:1/0", extra_options={"no_such_option": 1}))


def test_sentinel_options_need_a_sentinel_url() -> None:
    """sentinel_kwargs on a non-Sentinel URL is refused."""
    s = Settings(url="redis://h:1/0", extra_options={"sentinel_kwargs": {}})
    with pytest.raises(ConfigError, match="sentinel_kwargs"):
        create_client(s)


def test_create_client_needs_a_url_or_instance() -> None:
    """Without url or instance, create_client raises ConfigError."""
    with pytest.raises(ConfigError, match="redis url is empty"):
        create_client(Settings())


async def test_sentinel_url_builds_a_primary_client(closing: Callable[[Any], Any]) -> None:
    """redis+sentinel:// yields a primary client via Sentinel with no sentinel-side retries."""
    s = Settings(
        url="redis+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/mymaster/2",
        extra_options={"sentinel_kwargs": {"password": "sentinel-pw"}},
    )
    client = closing(create_client(s))
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kw = pool.connection_kwargs
    assert (kw["db"], kw["username"], kw["password"], kw["protocol"]) == (2, "u", "pw", 2)
    sentinels = pool.sentinel_manager.sentinels
    assert [(c.connection_pool.connection_kwargs["port"]) for c in sentinels] == [1, 2]
    skw = sentinels[0].connection_pool.connection_kwargs
    assert skw["retry"].get_retries() == 0
    assert skw["password"] == "sentinel-pw"


async def test_cluster_url_builds_a_cluster_client(closing: Callable[[Any], Any]) -> None:
    """redis+cluster:// yields a RedisCluster seeded with every listed node."""
    client = closing(create_client(Settings(url="redis+cluster://127.0.0.1:1,127.0.0.1:2")))
    assert isinstance(client, aioredis.RedisCluster)
    assert sorted(n.port for n in client.startup_nodes) == [1, 2]
    assert client.retry.get_retries() == 3
    stream = closing(create_client(Settings(url="redis+cluster://127.0.0.1:1"), purpose="stream"))
    assert stream.retry.get_retries() == 0


def test_custom_client_factory_receives_url_and_options() -> None:
    """set_client_factory replaces the builder; it gets the parsed URL and the options."""
    seen: list[tuple[ParsedURL, ClientOptions]] = []
    marker = object()

    def factory(parsed: ParsedURL, options: ClientOptions) -> Any:
        seen.append((parsed, options))
        return marker

    set_client_factory(factory)
    s = Settings(url="redis://u:pw@h:1/0", extra_options={"custom": True})
    assert create_client(s, purpose="stream") is marker
    parsed, options = seen[0]
    assert parsed.hosts == (("h", 1),)
    assert options.purpose == "stream"
    assert options.kwargs["custom"] is True
    assert options.kwargs["protocol"] == 2
    assert "pw" not in repr(options)
    set_client_factory(None)
    assert connection._factory is None


def test_factory_errors_become_config_errors() -> None:
    """A TypeError or ValueError from a factory is reported as ConfigError with a safe URL."""

    def factory(parsed: ParsedURL, options: ClientOptions) -> Any:
        raise ValueError("nope")

    set_client_factory(factory)
    with pytest.raises(ConfigError, match=r"u:\*\*\*@h") as info:
        create_client(Settings(url="redis://u:pw@h:1/0"))
    assert isinstance(info.value.__cause__, ValueError)


def test_unknown_purpose_is_refused() -> None:
    """create_client only knows the default and stream purposes."""
    with pytest.raises(ConfigError, match="purpose"):
        create_client(Settings(url="redis://h"), purpose="bulk")  # type: ignore[arg-type]


# -- server checks ---------------------------------------------------------------------------


async def test_check_server_accepts_the_test_server(
    redis_server: RunningRedis, closing: Callable[[Any], Any]
) -> None:
    """check_server passes against a server with the default noeviction policy."""
    await check_server(closing(create_client(Settings(url=redis_server.url))))


async def test_check_server_refuses_evicting_policies(
    tmp_path: Path, closing: Callable[[Any], Any]
) -> None:
    """Every policy but noeviction is refused (volatile-* evicts keys with a TTL)."""
    server = start_redis_server(tmp_path, ("--maxmemory-policy", "allkeys-lru"))
    try:
        client = closing(create_client(Settings(url=server.url)))
        with pytest.raises(ConfigError, match="allkeys-lru"):
            await check_server(client, url=server.url)
        policies = [("volatile-ttl", False), ("allkeys-random", False), ("noeviction", True)]
        for policy, ok in policies:
            await client.config_set("maxmemory-policy", policy)
            if ok:
                await check_server(client)
            else:
                with pytest.raises(ConfigError, match=policy):
                    await check_server(client)
    finally:
        server.stop()


async def test_check_server_skips_policy_check_without_config_permission(
    tmp_path: Path, closing: Callable[[Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """When CONFIG is not permitted, the policy check is logged and skipped."""
    server = start_redis_server(tmp_path, ("--maxmemory-policy", "allkeys-lru"))
    try:
        server.command("ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-config")
        url = f"redis://limited:pw@127.0.0.1:{server.port}/0"
        client = closing(create_client(Settings(url=url)))
        with caplog.at_level(logging.WARNING, logger="sessionstreams"):
            await check_server(client, url=url)
        assert [r.msg["event"] for r in caplog.records] == ["maxmemory_policy_check_skipped"]
        assert "pw@" not in caplog.text
    finally:
        server.stop()


async def test_closed_port_gives_connection_failed_quickly(closing: Callable[[Any], Any]) -> None:
    """A server that is not listening gives ConnectionFailedError, after the short backoff."""
    url = f"redis://:pw@127.0.0.1:{free_port()}/0"
    client = closing(create_client(Settings(url=url)))
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionFailedError) as info:
            await check_server(client, url=url)
    assert isinstance(info.value.__cause__, rx.ConnectionError)
    assert "127.0.0.1" in str(info.value)
    assert ":pw@" not in str(info.value)


# -- error translation -----------------------------------------------------------------------


UNREACHABLE = {
    "standalone": "redis://:pw@127.0.0.1:{port}/0",
    "cluster": "redis+cluster://:pw@127.0.0.1:{port}",
    "sentinel": "redis+sentinel://:pw@127.0.0.1:{port}/mymaster",
}


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
async def test_unreachable_server_is_a_short_connection_failed_error(kind: str) -> None:
    """Create, append, get and list against a closed port (standalone, Cluster or Sentinel)
    raise ConnectionFailedError: one short line naming the URL (password masked) and the
    reason, without a client repr."""
    url = UNREACHABLE[kind].format(port=free_port())
    svc = SessionService(Settings(url=url, socket_connect_timeout_s=1.0, client_retries=0))
    session = Session(id="s", app_name="app", user_id="u")
    calls = {
        "create": lambda: svc.create_session(Key("app", "u", "s")),
        "append": lambda: svc.append_event(session, Event.message("user", "hi")),
        "get": lambda: svc.get_session(Key("app", "u", "s")),
        "list": lambda: svc.list_sessions(UserKey("app", "u")),
    }
    try:
        for name, call in calls.items():
            async with asyncio.timeout(20):
                with pytest.raises(ConnectionFailedError) as info:
                    await call()
            text = str(info.value)
            assert text.startswith(f"cannot reach Redis at {redact_url(url)}: "), (name, text)
            assert "connection refused" in text, (name, text)
            assert len(text) < 200, (name, text)
            assert "<" not in text, (name, text)
            assert ":pw@" not in text, (name, text)
    finally:
        await svc.close()


def test_translation_covers_cluster_errors_and_strips_reprs() -> None:
    """redis-py's Cluster errors (outside RedisError) and messages holding client reprs are
    translated into our hierarchy, on one short line."""
    unreachable = translate(ClusterUnreachableError("no node"), "redis+cluster://h:1")
    assert isinstance(unreachable, ConnectionFailedError)
    assert str(unreachable) == "cannot reach Redis at redis+cluster://h:1: no node"
    slot = translate(rx.SlotNotCoveredError('Slot "3" is not covered by the cluster.'))
    assert isinstance(slot, ConnectionFailedError)
    noisy = rx.ResponseError("bad <redis.asyncio.client.Redis(<ConnectionPool(<Connection("
                             "host=h,port=1)>)>)> reply\n" + "x" * 400)
    text = str(translate(noisy))
    assert "<" not in text
    assert "\n" not in text
    assert len(text) < 200




async def test_wrongtype_becomes_corrupt_data(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A WRONGTYPE reply is translated to CorruptDataError, chained to the redis error."""
    key = f"{key_prefix}:str"
    await redis_client.set(key, b"x")
    try:
        with pytest.raises(CorruptDataError) as info:
            async with translate_errors("redis://u:pw@h"):
                await redis_client.hget(key, "f")
        assert isinstance(info.value.__cause__, rx.ResponseError)
        assert "u:***@h" in str(info.value)
    finally:
        await redis_client.delete(key)


async def test_other_response_errors_become_session_store_error(
    redis_client: aioredis.Redis,
) -> None:
    """A ResponseError other than WRONGTYPE becomes a plain SessionStoreError."""
    with pytest.raises(SessionStoreError) as info, translate_errors():
        await redis_client.execute_command("NOSUCHCOMMAND")
    assert type(info.value) is SessionStoreError
    assert isinstance(info.value.__cause__, rx.ResponseError)


async def test_socket_timeout_becomes_store_timeout(
    redis_server: RunningRedis, key_prefix: str, closing: Callable[[Any], Any]
) -> None:
    """A command outlasting the socket timeout raises StoreTimeoutError."""
    s = Settings(url=redis_server.url, socket_timeout_s=0.1, client_retries=0)
    client = closing(create_client(s))
    with pytest.raises(StoreTimeoutError) as info, translate_errors(redis_server.url):
        await client.blpop([f"{key_prefix}:nothing"], timeout=1)
    assert isinstance(info.value.__cause__, rx.TimeoutError)


async def test_small_writes_skip_the_write_timeout_task(
    redis_server: RunningRedis, key_prefix: str, closing: Callable[[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool's only small command in flight goes out without asyncio.wait_for (it cannot
    wait); a large one, or one among others in flight, keeps redis-py's timed write; all round
    trip and the connection keeps its socket timeout."""
    s = Settings(url=redis_server.url, socket_timeout_s=2.0)
    client = closing(create_client(s))
    assert client.connection_pool.connection_class.__name__ == "QuickConnection"
    await client.ping()  # connect first: the handshake is not counted
    timed: list[object] = []
    real_wait_for = asyncio.wait_for

    async def counting(fut: Any, timeout: float | None) -> Any:
        timed.append(timeout)
        return await real_wait_for(fut, timeout)

    monkeypatch.setattr(asyncio, "wait_for", counting)
    await client.set(f"{key_prefix}:small", b"v" * 100)
    assert timed == []
    big = b"b" * (64 * 1024)
    await client.set(f"{key_prefix}:big", big)
    assert timed == [2.0]
    # With other commands in flight, writes keep redis-py's deferred (timed) path.
    await asyncio.gather(*(client.ping() for _ in range(5)))  # five pooled connections
    timed.clear()
    await asyncio.gather(*(client.set(f"{key_prefix}:c{i}", b"x") for i in range(5)))
    assert timed == [2.0] * 4  # the first one out was alone
    assert await client.get(f"{key_prefix}:small") == b"v" * 100
    assert await client.get(f"{key_prefix}:big") == big
    conn = await client.connection_pool.get_connection()
    try:
        assert conn.socket_timeout == 2.0
    finally:
        await client.connection_pool.release(conn)


async def test_a_server_that_never_answers_times_out(closing: Callable[[Any], Any]) -> None:
    """Small quick writes still end in the read timeout: a silent server gives
    StoreTimeoutError after about socket_timeout_s, not a hang."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = Settings(url=f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.3,
                     socket_connect_timeout_s=0.3, client_retries=0)
        client = closing(create_client(s))
        start = asyncio.get_running_loop().time()
        with pytest.raises(StoreTimeoutError), translate_errors(s.url):
            await asyncio.wait_for(client.set("k", b"v"), 10)
        assert asyncio.get_running_loop().time() - start < 5
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


def test_our_errors_and_foreign_errors_pass_through() -> None:
    """SessionStoreError subclasses and non-redis exceptions are not rewritten."""
    original = SessionNotFoundError("gone")
    with pytest.raises(SessionNotFoundError) as info, translate_errors():
        raise original
    assert info.value is original
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("k")
    assert translate(original) is original


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rx.ConnectionError("down"), ConnectionFailedError),
        (rx.BusyLoadingError("loading"), ConnectionFailedError),
        (rx.TimeoutError("slow"), StoreTimeoutError),
        (rx.ResponseError("WRONGTYPE Operation against a key"), CorruptDataError),
        (rx.ResponseError("OOM command not allowed"), OutOfMemoryError),
        (rx.OutOfMemoryError("command not allowed"), OutOfMemoryError),
        (rx.DataError("bad arg"), InvalidArgumentError),
        (rx.RedisError("other"), SessionStoreError),
    ],
)
def test_translate_mapping(exc: Exception, expected: type[SessionStoreError]) -> None:
    """translate() maps each redis-py exception family to its SessionStoreError subclass."""
    result = translate(exc, "rediss://u:pw@h:1")
    assert type(result) is expected
    assert "pw" not in str(result)
    assert str(exc) in str(result)


# -- Sentinel and Cluster smoke tests (failover and resharding are tested elsewhere) -----------


async def test_sentinel_url_reaches_the_primary(
    tmp_path: Path, key_prefix: str, closing: Callable[[Any], Any]
) -> None:
    """A redis+sentinel:// client finds the primary through a real sentinel and writes."""
    primary = start_redis_server(tmp_path / "primary")
    sentinel = start_sentinel(tmp_path / "sentinel", primary)
    try:
        client = closing(create_client(Settings(url=sentinel.url)))
        await check_server(client)
        await client.set(f"{key_prefix}:k", b"v")
        direct = closing(primary.client())
        assert await direct.get(f"{key_prefix}:k") == b"v"
    finally:
        sentinel.stop()
        primary.stop()


async def test_cluster_url_reaches_a_cluster(
    tmp_path: Path, key_prefix: str, closing: Callable[[Any], Any]
) -> None:
    """A redis+cluster:// client (default and stream) works against a real cluster node."""
    node = start_single_node_cluster(tmp_path)
    try:
        s = Settings(url=node.url, block_ms=100)
        client = closing(create_client(s))
        await check_server(client)
        await client.set(f"{{{key_prefix}}}:k", b"v")
        stream = closing(create_client(s, purpose="stream"))
        assert await stream.get(f"{{{key_prefix}}}:k") == b"v"
        assert await stream.xread({f"{{{key_prefix}}}:s": "$"}, block=s.block_ms) == []
    finally:
        node.stop()


async def test_dropped_connection_writer_is_a_connection_error() -> None:
    """A connection dropped under a command is a ConnectionFailedError, without the password:
    redis-py < 8.2 raises an AttributeError there ('writer is None'), 8.2 a ConnectionError."""
    from redis.asyncio.connection import Connection

    from sessionstreams.common.connection import translate_errors
    from sessionstreams.common.errors import ConnectionFailedError

    conn = Connection()
    with pytest.raises(ConnectionFailedError) as info:
        async with translate_errors("redis://:secret@127.0.0.1:1/0"):
            await conn._send_packed_command([b"PING"])
    assert "secret" not in str(info.value)
    with pytest.raises(AttributeError):  # our own AttributeErrors are not hidden
        async with translate_errors():
            None.missing  # type: ignore[attr-defined]  # noqa: B018
