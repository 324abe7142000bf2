"""The redis-py client classes our factory builds for Cluster and Sentinel.

- :class:`ClusterClient`: a ``RedisCluster`` that learns the slot map before routing its first
  command. redis-py picks a command's routing policy before it initializes, so commands issued
  concurrently on a fresh client go to a default node and come back MOVED.
- :class:`EpochSentinel`: a ``Sentinel`` whose primary lookup asks every sentinel and trusts the
  one with the highest config epoch. redis-py trusts the first sentinel that answers, and after
  a failover a sentinel that has not heard of it yet (they learn within seconds) still names
  the old primary, which stays writable until it is demoted: new connections would go there.
- :func:`quick_writes`: swaps a client's connection class for one that skips redis-py's
  per-command write-timeout task when the write cannot block.
- :class:`SentinelPrimaryRedis`: the ``master_for`` client. It runs a :class:`FailoverWatch`
  that subscribes to ``+switch-master`` on every sentinel and recycles the client's pooled
  connections when the primary changes (a pooled connection otherwise keeps writing to the
  demoted primary until it is reconfigured, seconds later, and those writes are lost).
- :class:`RecyclingSentinelPool`: the pool of that client. It retires every connection at
  once, idle ones now and busy ones when their command returns, through the pool's public
  ``get_connection`` / ``release`` / ``disconnect`` only, so it behaves the same on every
  supported redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis import exceptions as rx
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from sessionstreams.common._reasons import reason
from sessionstreams.common.logs import get_logger

log = get_logger(__name__)

#: The Sentinel event announcing a new primary: ``<name> <old-ip> <old-port> <ip> <port>``.
SWITCH_CHANNEL = "+switch-master"
WATCH_POLL_S = 1.0
WATCH_RETRY_MIN_S = 0.2
WATCH_RETRY_MAX_S = 5.0


#: Commands up to this size are written without a timeout task: into an empty transport
#: buffer they stay far below asyncio's pause threshold (64 KiB), so the write cannot wait.
QUICK_WRITE_MAX_BYTES = 16 * 1024


class QuickWriteMixin:
    """Connection mixin: the pool's only command in flight, if small, is written without the
    ``asyncio.wait_for`` task redis-py wraps every write in when ``socket_timeout`` is set.

    Such a write never waits (the transport takes it whole, below its pause threshold), so the
    timeout could not fire; the task only adds latency. With other commands in flight the task
    is kept: it defers the write, so a burst's writes go out together and their replies are
    read together, which is faster than interleaving writes with replies. Larger writes, a busy
    buffer or a disconnected connection take redis-py's path with its timeout; reads keep
    theirs; the health-check PING runs first, under the normal timeouts.
    """

    socket_timeout: float | None
    #: The pool whose connections are of this class (set by :func:`quick_writes`).
    quick_pool: Any = None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        parent: Any = super()
        me: Any = self
        in_use = getattr(self.quick_pool, "_in_use_connections", None)
        if (not timeout or in_use is None or len(in_use) > 1
                or _size(command) > QUICK_WRITE_MAX_BYTES):
            await parent.send_packed_command(command, check_health)
            return
        if check_health:
            await me.check_health()
        transport = getattr(getattr(self, "_writer", None), "transport", None)
        if transport is None or not me.is_connected or transport.get_write_buffer_size():
            await parent.send_packed_command(command, False)
            return
        self.socket_timeout = None  # redis-py then writes inline; nothing awaits in between
        try:
            await parent.send_packed_command(command, False)
        finally:
            self.socket_timeout = timeout


    def pack_command(self, *args: Any) -> list[bytes]:
        """redis-py's packing without its per-argument encoder call when every argument is a
        ``str``, ``bytes`` or ``int`` (our scripts' calls: 10 to 30 arguments) and the
        encoding is UTF-8 (strict): hiredis packs those exactly as the encoder would."""
        me: Any = self
        first = args[0] if args else b""
        encoder = me.encoder
        if (_pack is None or encoder.encoding_errors != "strict"
                or encoder.encoding.lower().replace("-", "") != "utf8"
                or (" " in first if type(first) is str else b" " in first)
                or not all(type(arg) in _PLAIN for arg in args)):
            parent: Any = super()
            packed: list[bytes] = parent.pack_command(*args)
            return packed
        return [_pack(args)]


_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py packs in Python
    _pack = None
else:
    _pack = _hiredis_pack
#: Argument types hiredis packs as redis-py's encoder does (bool, an int subclass, is refused
#: by the encoder and so left to it).
_PLAIN = (str, bytes, int)


def _size(command: Any) -> int:
    if isinstance(command, bytes | str):
        return len(command)
    return sum(len(part) for part in command)


#: redis-py major releases whose connection internals QuickWriteMixin relies on were checked
#: (tests/test_redis_py_internals.py names them); pyproject.toml allows no other.
QUICK_WRITE_REDIS_MAJORS = (8,)


def _redis_major() -> int:
    head = redis.__version__.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def quick_writes(client: Any) -> Any:
    """Give ``client``'s pool (standalone, unix, TLS or Sentinel) a :class:`QuickWriteMixin`
    variant of its connection class; other clients, and every client under a redis-py
    release outside :data:`QUICK_WRITE_REDIS_MAJORS`, are returned unchanged."""
    pool = getattr(client, "connection_pool", None)
    base = getattr(pool, "connection_class", None)
    if pool is None or not isinstance(base, type) or issubclass(base, QuickWriteMixin):
        return client
    if _redis_major() not in QUICK_WRITE_REDIS_MAJORS:
        return client
    pool.connection_class = type(
        f"Quick{base.__name__}", (QuickWriteMixin, base), {"quick_pool": pool}
    )
    return client


#: What redis-py 8.0 and 8.1 say when no Cluster node answers (a bare RedisClusterException).
_UNREACHABLE_TEXT = "Redis Cluster cannot be connected"

if hasattr(rx, "RedisClusterUnreachableError"):
    ClusterUnreachableError = rx.RedisClusterUnreachableError
else:  # redis-py 8.0 and 8.1: ClusterClient raises this one instead of the bare exception

    class ClusterUnreachableError(rx.RedisClusterException):  # type: ignore[no-redef]
        """No node of the Cluster could be reached (redis-py 8.2 has this class itself)."""


class ClusterClient(RedisCluster):
    """``RedisCluster`` that initializes (reads the slot map) before routing any command, and
    says "no node answered" with :data:`ClusterUnreachableError` on every supported redis-py."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()  # a no-op once initialized
        return await super().execute_command(*args, **kwargs)

    async def initialize(self, *args: Any, **kwargs: Any) -> ClusterClient:
        try:
            await super().initialize(*args, **kwargs)
        except ClusterUnreachableError:
            raise
        except rx.RedisClusterException as exc:
            if str(exc).startswith(_UNREACHABLE_TEXT):
                raise ClusterUnreachableError(str(exc)) from exc
            raise
        return self


class EpochSentinel(Sentinel):
    """``Sentinel`` that picks the primary named with the highest config epoch."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """Ask every sentinel at once; return the address of the newest healthy primary.

        Raises:
            MasterNotFoundError: no sentinel names a healthy primary.
        """
        replies = await asyncio.gather(
            *(self._master_state(s, service_name) for s in self.sentinels),
            return_exceptions=True,
        )
        best: dict[str, Any] | None = None
        errors: list[str] = []
        for sentinel, reply in zip(self.sentinels, replies, strict=True):
            if isinstance(reply, BaseException):
                errors.append(f"sentinel {_address(sentinel)}: {reason(reply)}")
                continue
            if reply is None or not self.check_master_state(reply, service_name):
                continue
            if best is None or int(reply.get("config-epoch", 0)) > int(
                best.get("config-epoch", 0)
            ):
                best = reply
        if best is None:
            detail = f" ({'; '.join(errors)})" if errors else ""
            raise MasterNotFoundError(f"no primary found for {service_name!r}{detail}")
        return str(best["ip"]), int(best["port"])

    @staticmethod
    async def _master_state(sentinel: Redis, service_name: str) -> dict[str, Any] | None:
        try:
            state = await sentinel.sentinel_master(service_name)
        except rx.ResponseError:  # this sentinel does not monitor the name
            return None
        return dict(state) if isinstance(state, Mapping) else None


class RecyclingSentinelPool(SentinelConnectionPool):
    """Sentinel primary pool whose connections can all be retired at once.

    :meth:`retire_connections` closes the idle connections and marks those checked out; a
    marked connection is closed when it comes back, so its next user reconnects through the
    sentinels. (redis-py 8.1 has ``run_proactive_reconnect`` for this; older versions close
    only idle connections, and busy ones went on writing to the demoted primary.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self._checked_out: weakref.WeakSet[Any] = weakref.WeakSet()
        self._retiring: weakref.WeakSet[Any] = weakref.WeakSet()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self._checked_out.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        self._checked_out.discard(connection)
        if connection in self._retiring:
            self._retiring.discard(connection)
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                await connection.disconnect()
        await super().release(connection)

    async def retire_connections(self) -> None:
        """Close idle connections now and checked-out ones when they are released."""
        self._retiring.update(self._checked_out)
        await self.disconnect(inuse_connections=False)


def _address(client: Redis) -> str:
    """``host:port`` of a client (never its repr, which lists every connection option)."""
    kwargs = getattr(client.connection_pool, "connection_kwargs", {})
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


class FailoverWatch:
    """Recycles a Sentinel primary client's connections on ``+switch-master``.

    One task per sentinel holds a subscription (re-established with backoff when a sentinel
    goes away). On a switch of the watched primary, idle connections are closed and in-use
    ones are marked to be closed when released, so every later command goes to the new
    primary. Several sentinels announce the same switch: it is handled once.

    Attributes:
        switches: how many switches were handled.
        last_primary: the address of the last announced primary (None before any switch).
        switched_at: ``time.monotonic()`` of the last handled switch.
    """

    def __init__(self, pool: Any, sentinels: list[Redis], service_name: str) -> None:
        self._pool = pool
        self._sentinels = sentinels
        self.service_name = service_name
        self.switches = 0
        self.last_primary: tuple[str, int] | None = None
        self.switched_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        """True while the subscriptions run."""
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        """Start one subscriber task per sentinel (idempotent; needs a running loop)."""
        if self._tasks:
            return
        for sentinel in self._sentinels:
            task = asyncio.get_running_loop().create_task(self._watch(sentinel))
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel the subscribers and wait for them to close their connections."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, sentinel: Redis) -> None:
        delay = WATCH_RETRY_MIN_S
        while True:
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe(SWITCH_CHANNEL)
                delay = WATCH_RETRY_MIN_S
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=WATCH_POLL_S
                    )
                    if message is not None:
                        await self.handle(message.get("data"))
            except (rx.RedisError, OSError) as exc:
                log.debug("sentinel_watch_reconnect", error=str(exc), retry_in_s=delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RETRY_MAX_S)

    async def handle(self, data: Any) -> bool:
        """Act on one ``+switch-master`` payload; True when it switched the watched primary."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) != 5 or parts[0] != self.service_name or not parts[4].isdigit():
            return False
        new = (parts[3], int(parts[4]))
        if new == self.last_primary:
            return False  # the same switch, announced by another sentinel
        self.last_primary = new
        self.switches += 1
        self.switched_at = time.monotonic()
        log.warning(
            "sentinel_switch_master",
            service=self.service_name,
            old=f"{parts[1]}:{parts[2]}",
            new=f"{new[0]}:{new[1]}",
        )
        await self._recycle()
        return True

    async def _recycle(self) -> None:
        retire = getattr(self._pool, "retire_connections", None)
        try:
            if retire is not None:  # a RecyclingSentinelPool
                # Closes idle connections, marks in-use ones so the pool closes them on
                # release (closing them mid-command would break it).
                await retire()
            else:  # a pool built elsewhere: only its idle connections can be closed
                await self._pool.disconnect(inuse_connections=False)
        except Exception as exc:  # a failed close must not stop the watch
            log.warning("sentinel_pool_recycle_failed", error=str(exc))


class SentinelPrimaryRedis(Redis):
    """The Sentinel primary client: failover watch, and ``aclose()`` closes everything.

    The watch starts with the first command (or :meth:`start_failover_watch`) and stops in
    :meth:`aclose`, which also closes the connections to the sentinels (redis-py's
    ``master_for`` client closes only its own pool). A client used again after ``aclose()``
    reconnects as redis-py clients do, but without the watch.
    """

    _failover_watch: FailoverWatch | None = None

    @property
    def failover_watch(self) -> FailoverWatch:
        """The client's watch (created on first access)."""
        if self._failover_watch is None:
            pool = self.connection_pool
            manager = pool.sentinel_manager  # type: ignore[attr-defined]
            self._failover_watch = FailoverWatch(
                pool, list(manager.sentinels), pool.service_name  # type: ignore[attr-defined]
            )
        return self._failover_watch

    def start_failover_watch(self) -> None:
        """Subscribe to ``+switch-master`` (idempotent; needs a running event loop)."""
        self.failover_watch.start()

    async def initialize(self) -> SentinelPrimaryRedis:
        if self._failover_watch is None:  # first use (a stopped watch stays stopped)
            self.start_failover_watch()
        await super().initialize()
        return self

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._failover_watch is not None:
            await self._failover_watch.stop()
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel_client in getattr(manager, "sentinels", ()):
            await sentinel_client.aclose()
