"""Redis clients for sessionstreams: URL resolution, the client factory, error translation.

Every client we build pins what the rest of the code relies on (DESIGN §4, Redis rule 4, and
notes/redis-py-facts.md §0, §3):

- ``protocol=2`` and ``decode_responses=False``: RESP2 reply shapes, bytes everywhere;
- explicit socket timeouts from the settings (never redis-py's defaults);
- ``purpose="default"``: jittered exponential backoff (10 ms .. 1 s), ``client_retries``
  retries on connection errors and timeouts. A retry can run a write twice; our writes carry
  request ids and are deduplicated, so that is harmless;
- ``purpose="stream"``: no retries (XREADGROUP and the lease scripts must never be re-sent by
  the client) and a socket timeout above the BLOCK time, so a blocking read never trips it;
- Cluster: slot map read before the first command, MOVED patches the map in place
  (``reinitialize_steps=0`` unless given); Sentinel: the primary is the one named with the
  highest config epoch, and a ``+switch-master`` watch recycles the pool
  (``sessionstreams.common._clients``).

``extra_options`` (and URL query options) are passed to the client constructor; one that
would override a pinned value is a :class:`~sessionstreams.common.errors.ConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from redis import exceptions as rx
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from sessionstreams.common import _reasons
from sessionstreams.common._clients import (
    ClusterClient,
    EpochSentinel,
    RecyclingSentinelPool,
    quick_writes,
)
from sessionstreams.common._clients import (
    ClusterUnreachableError as ClusterUnreachableError,  # re-exported
)
from sessionstreams.common._clients import (
    SentinelPrimaryRedis as SentinelPrimaryRedis,  # re-exported
)
from sessionstreams.common._urls import ParsedURL as ParsedURL  # re-exported
from sessionstreams.common._urls import check_client_options
from sessionstreams.common._urls import parse_url as parse_url  # re-exported
from sessionstreams.common._urls import redact_url as redact_url  # re-exported
from sessionstreams.common.errors import (
    ConfigError,
    ConnectionFailedError,
    CorruptDataError,
    InvalidArgumentError,
    OutOfMemoryError,
    SessionStoreError,
    StoreTimeoutError,
)
from sessionstreams.common.logs import get_logger
from sessionstreams.common.settings import Settings

log = get_logger(__name__)

Purpose = Literal["default", "stream"]

#: What translate_errors translates: every redis-py error, Cluster client errors included
#: (redis-py derives those from Exception, not RedisError).
REDIS_ERRORS = (rx.RedisError, rx.RedisClusterException)

#: Redis errors a long-running loop retries after: the connection broke, a command timed
#: out, or no Cluster node answered (a failover, a restart, a network cut).
TRANSIENT_ERRORS = (rx.ConnectionError, rx.TimeoutError, ClusterUnreachableError)

MAX_CONNECTIONS = 2000
HEALTH_CHECK_INTERVAL_S = 30
BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 1.0
STREAM_TIMEOUT_MARGIN_S = 2.0


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """What a client factory receives besides the parsed URL.

    Attributes:
        purpose: ``default`` or ``stream`` (see the module docstring).
        kwargs: the client constructor keywords: credentials, pinned values, timeouts,
            retry policy, URL query options and ``extra_options``.
        sentinel_kwargs: keywords for the clients that talk to the sentinels (Sentinel only).
        min_other_sentinels: passed to ``Sentinel`` (Sentinel only).
        settings: the settings the client is built for.
    """

    purpose: Purpose
    kwargs: Mapping[str, Any] = field(repr=False)  # holds the password
    sentinel_kwargs: Mapping[str, Any] = field(repr=False)
    min_other_sentinels: int
    settings: Settings


ClientFactory = Callable[[ParsedURL, ClientOptions], Any]

_lock = threading.Lock()
_instances: dict[str, dict[str, Any]] = {}
_factory: ClientFactory | None = None


# -- instance registry ---------------------------------------------------------------------


def register_instance(name: str, **options: Any) -> None:
    """Register (or extend) a named Redis instance for ``Settings(instance=name)``.

    Args:
        name: the instance name.
        **options: ``url`` plus client options; a second call for the same name merges its
            options into the first (later values win).

    Raises:
        ConfigError: the name is empty.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("register_instance: the instance name is empty")
    with _lock:
        _instances.setdefault(name, {}).update(options)


def unregister_instance(name: str) -> None:
    """Forget a registered instance (no error when it is unknown)."""
    with _lock:
        _instances.pop(name, None)


def set_client_factory(factory: ClientFactory | None) -> None:
    """Install a process-wide client factory; None restores :func:`default_client_factory`."""
    global _factory
    with _lock:
        _factory = factory


def reset_global_state() -> None:
    """Clear the instance registry and the client factory (for tests)."""
    global _factory
    with _lock:
        _instances.clear()
        _factory = None


def resolve_url(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Return the URL and the client options to use for ``settings``.

    ``settings.url`` wins over ``settings.instance``. With an instance, its registered options
    come first and ``settings.extra_options`` are applied on top.

    Raises:
        ConfigError: neither is set, or the instance is unknown or has no url.
    """
    if settings.url:
        return settings.url, dict(settings.extra_options)
    if not settings.instance:
        raise ConfigError("redis url is empty")
    with _lock:
        registered = _instances.get(settings.instance)
        options = dict(registered) if registered is not None else None
    if options is None:
        raise ConfigError(f"redis instance {settings.instance} not found")
    url = options.pop("url", "")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"redis instance {settings.instance} has no url")
    options.update(settings.extra_options)
    return url, options


# -- building clients ----------------------------------------------------------------------


def create_client(settings: Settings, *, purpose: Purpose = "default") -> Any:
    """Build a Redis client for ``settings`` (no command is sent).

    Args:
        settings: where to connect and how.
        purpose: ``default`` for ordinary commands, ``stream`` for blocking reads and lease
            scripts (no retries, socket timeout above the BLOCK time).

    Returns:
        A ``redis.asyncio.Redis`` (standalone, unix, Sentinel primary) or ``RedisCluster``,
        or whatever the installed client factory returns.

    Raises:
        ConfigError: a bad URL, an unknown instance or a conflicting option.
    """
    if purpose not in ("default", "stream"):
        raise ConfigError(f"create_client: unknown purpose {purpose!r}")
    url, extra = resolve_url(settings)
    parsed = parse_url(url)
    options = _client_options(settings, parsed, extra, purpose)
    factory = _factory or default_client_factory
    try:
        return factory(parsed, options)
    except SessionStoreError:
        raise
    except (TypeError, ValueError, *REDIS_ERRORS) as exc:
        raise ConfigError(f"create redis client failed for {parsed.redacted}: "
                          f"{_reasons.clean(str(exc))}") from exc


def default_client_factory(parsed: ParsedURL, options: ClientOptions) -> Any:
    """Build the redis-py client that matches the URL's kind."""
    kwargs = dict(options.kwargs)
    if parsed.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in parsed.hosts]
        # On MOVED, patch the slot map in place: redis-py's periodic full refresh (every 5th
        # MOVED by default) closes every connection of the client, including those of
        # commands in flight in other tasks, which then fail or are re-sent mid-reshard.
        kwargs.setdefault("reinitialize_steps", 0)
        return ClusterClient(startup_nodes=nodes, ssl=parsed.tls, **kwargs)
    if parsed.kind == "sentinel":
        assert parsed.service_name is not None  # parse_url guarantees it
        sentinel = EpochSentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(parsed.hosts),
            min_other_sentinels=options.min_other_sentinels,
            sentinel_kwargs=dict(options.sentinel_kwargs),
        )
        return quick_writes(sentinel.master_for(
            parsed.service_name,
            redis_class=SentinelPrimaryRedis,
            connection_pool_class=RecyclingSentinelPool,
            db=parsed.db,
            ssl=parsed.tls,
            **kwargs,
        ))
    if parsed.kind == "unix":
        return quick_writes(Redis(unix_socket_path=parsed.path, db=parsed.db, **kwargs))
    host, port = parsed.hosts[0]
    return quick_writes(Redis(host=host, port=port, db=parsed.db, ssl=parsed.tls, **kwargs))


def start_failover_watch(client: Any) -> None:
    """Start a Sentinel primary client's ``+switch-master`` watch (no-op for other clients).

    The watch also starts with the client's first command; services call this at start so
    that an idle client learns of a failover too. ``aclose()`` stops it.
    """
    if isinstance(client, SentinelPrimaryRedis):
        client.start_failover_watch()


def _client_options(
    settings: Settings, parsed: ParsedURL, extra: Mapping[str, Any], purpose: Purpose
) -> ClientOptions:
    check_client_options(parsed, extra)
    extra = dict(extra)
    sentinel_extra = extra.pop("sentinel_kwargs", None) or {}
    min_other = extra.pop("min_other_sentinels", 0)
    if not isinstance(sentinel_extra, Mapping) or not isinstance(min_other, int):
        raise ConfigError("extra options sentinel_kwargs / min_other_sentinels are malformed")

    socket_timeout = settings.socket_timeout_s
    if purpose == "stream":
        socket_timeout = max(socket_timeout, settings.block_ms / 1000 + STREAM_TIMEOUT_MARGIN_S)
    kwargs: dict[str, Any] = {
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "client_name": f"sessionstreams-{purpose}",
        # redis-py 8 fails a command once 100 connections are in use; agents with many
        # concurrent sessions need more (each in-flight command holds one connection).
        "max_connections": MAX_CONNECTIONS,
    }
    if parsed.username is not None:
        kwargs["username"] = parsed.username
    if parsed.password is not None:
        kwargs["password"] = parsed.password
    kwargs.update(parsed.options)
    kwargs.update(extra)
    kwargs.update(
        protocol=2,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout_s,
        retry=_retry(settings.client_retries if purpose == "default" else 0),
    )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_connect_timeout_s,
        "protocol": 2,
        # A dead sentinel must cost one refused connect, not seconds of retries (notes §6).
        "retry": Retry(NoBackoff(), 0),
        "ssl": parsed.tls,
        # Every new connection to the primary asks the sentinels: as many lookups may run at
        # once as there are commands in flight (redis-py's default cap of 100 fails them).
        "max_connections": MAX_CONNECTIONS,
    }
    sentinel_kwargs.update(sentinel_extra)
    return ClientOptions(
        purpose=purpose,
        kwargs=MappingProxyType(kwargs),
        sentinel_kwargs=MappingProxyType(sentinel_kwargs),
        min_other_sentinels=min_other,
        settings=settings,
    )


def _retry(retries: int) -> Retry:
    # A fresh object per client: redis-py's default Retry is one shared instance (notes §0).
    if retries <= 0:
        return Retry(NoBackoff(), 0)
    return Retry(ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S), retries)


# -- server checks -------------------------------------------------------------------------

#: The only safe policy. ``allkeys-*`` evicts anything; ``volatile-*`` evicts keys with a TTL,
#: which are every session key when ``session_ttl > 0`` and always our shard leases, create
#: locks and bookkeeping records (an evicted lease lets two workers apply one shard).
_SAFE_POLICY = "noeviction"


async def check_server(client: Any, *, url: str | None = None) -> None:
    """PING the server and refuse a ``maxmemory-policy`` that could evict our keys.

    Only ``noeviction`` is accepted: every other policy may evict keys we wrote (``volatile-*``
    those with a TTL: sessions with ``session_ttl``, shard leases, bookkeeping records). When
    CONFIG GET is not permitted (ACL, managed services) the check is logged and skipped.

    Args:
        client: a client from :func:`create_client`.
        url: the URL, for error messages (redacted).

    Raises:
        ConfigError: the policy evicts keys.
        ConnectionFailedError, StoreTimeoutError: the server does not answer.
    """
    parsed = parse_url(url) if url else None
    if parsed is not None and parsed.tls and parsed.hosts:
        await _refuse_plain_server(parsed)
    with translate_errors(url):
        await client.ping()
    try:
        with translate_errors(url):
            reply = await _config_get_policy(client)
    except SessionStoreError as exc:
        if isinstance(exc, ConnectionFailedError | StoreTimeoutError):
            raise
        log.warning("maxmemory_policy_check_skipped", reason=str(exc))
        return
    for node, policy in reply.items():
        if policy != _SAFE_POLICY:
            where = f" on {node}" if node else ""
            what = "keys with a TTL (sessions, leases, bookkeeping)" if policy.startswith(
                "volatile-") else "any key"
            raise ConfigError(
                f"redis maxmemory-policy is {policy!r}{where}: it may evict {what} and lose "
                "acknowledged writes silently; use noeviction"
            )


#: How long the plain-text probe of a TLS URL's server may take (connect, then the reply).
TLS_PROBE_S = 1.0


async def _refuse_plain_server(parsed: ParsedURL) -> None:
    """Refuse a TLS URL whose (first) server answers in plain text: the TLS handshake would
    otherwise wait for an answer that never comes, through every retry, with no hint.

    A PING in plain text gets a RESP reply from a server without TLS; a TLS server answers
    with an alert or closes the connection, and anything unreachable is left to the PING.

    Raises:
        ConfigError: the server speaks without TLS.
    """
    host, port = parsed.hosts[0]
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                TLS_PROBE_S)
        writer.write(b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), TLS_PROBE_S)
    except (OSError, TimeoutError):
        return
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), TLS_PROBE_S)
    if line[:1] in (b"+", b"-"):
        raise ConfigError(
            f"redis url {parsed.redacted}: {_host_port(host, port)} answers without TLS; use "
            f"{parsed.scheme.replace('rediss', 'redis', 1)}:// or enable TLS on the server"
        )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _config_get_policy(client: Any) -> dict[str, str]:
    """Return ``{node: policy}`` (node "" for a single server)."""
    if isinstance(client, RedisCluster):
        replies = await client.config_get("maxmemory-policy", target_nodes=RedisCluster.PRIMARIES)
        if isinstance(replies, Mapping) and all(isinstance(v, Mapping) for v in replies.values()):
            return {str(node): _policy(reply) for node, reply in replies.items()}
        return {"": _policy(replies)}
    return {"": _policy(await client.config_get("maxmemory-policy"))}


def _policy(reply: Any) -> str:
    for key, value in dict(reply).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name == "maxmemory-policy":
            return value.decode() if isinstance(value, bytes) else str(value)
    raise SessionStoreError("CONFIG GET maxmemory-policy returned nothing")


# -- error translation ---------------------------------------------------------------------


def translate(exc: BaseException, url: str | None = None) -> SessionStoreError:
    """Map a redis-py exception (Cluster and Sentinel ones included) to ours; our own errors
    are returned unchanged.

    A server that cannot be reached (refused, unknown host, no Sentinel primary, no Cluster
    node) becomes ConnectionFailedError "cannot reach Redis at URL: reason", another broken
    connection ConnectionFailedError too, TimeoutError StoreTimeoutError, a WRONGTYPE reply
    CorruptDataError, an OOM reply OutOfMemoryError, DataError InvalidArgumentError, anything
    else SessionStoreError.
    Messages are short, on one line, with the password masked and no client repr. The caller
    raises the result ``from exc``.
    """
    if isinstance(exc, SessionStoreError):
        return exc
    at = f" at {redact_url(url)}" if url else ""
    where = f" ({redact_url(url)})" if url else ""
    text = _reasons.clean(str(exc) or type(exc).__name__)
    if isinstance(exc, rx.TimeoutError):
        return StoreTimeoutError(f"redis timed out{where}: {text}")
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return ConnectionFailedError(f"redis refused the credentials{where}: {text}")
    if _unreachable(exc):
        return ConnectionFailedError(f"cannot reach Redis{at}: {_reasons.reason(exc)}")
    if isinstance(exc, rx.ConnectionError):
        return ConnectionFailedError(f"redis connection failed{where}: {text}")
    if isinstance(exc, rx.ResponseError) and "WRONGTYPE" in text:
        return CorruptDataError(f"a stored key has the wrong type{where}: {text}")
    if isinstance(exc, rx.OutOfMemoryError) or text.startswith("OOM "):
        return OutOfMemoryError(f"redis is out of memory{where}: {text}")
    if isinstance(exc, rx.DataError):
        return InvalidArgumentError(f"redis refused the arguments{where}: {text}")
    if isinstance(exc, rx.ClusterDownError | rx.SlotNotCoveredError):
        return ConnectionFailedError(f"redis cluster unavailable{where}: {text}")
    return SessionStoreError(f"redis error{where}: {text}")


def _unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says no server could be reached (as opposed to a broken command)."""
    if isinstance(exc, ClusterUnreachableError | MasterNotFoundError):
        return True
    return isinstance(exc, rx.ConnectionError) and _reasons.os_reason(exc) is not None


def _raised_in_redis_connection(tb: TracebackType | None) -> bool:
    """True when the innermost frame of ``tb`` is redis-py's connection code."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    path = last.tb_frame.f_code.co_filename.replace("\\", "/")
    return "/redis/asyncio/" in path or "/redis/connection" in path


class translate_errors:  # lower-case on purpose: used like a function
    """Context manager (sync or async) that re-raises redis-py errors as ours.

    Example:
        ``async with translate_errors(url): await client.hset(...)``
    """

    __slots__ = ("_url",)

    def __init__(self, url: str | None = None) -> None:
        self._url = url

    def __enter__(self) -> translate_errors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, REDIS_ERRORS):
            raise translate(exc, self._url) from exc
        if isinstance(exc, AttributeError) and _raised_in_redis_connection(tb):
            # redis-py 8.1 races when a cluster client drops its connections (failover,
            # MOVED storms): a command may find its connection's writer already gone.
            raise ConnectionFailedError(
                f"redis connection dropped mid-command ({redact_url(self._url or '')}): {exc}"
            ) from exc

    async def __aenter__(self) -> translate_errors:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
