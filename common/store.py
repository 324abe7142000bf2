"""The assembled store: settings, client, key space, scripts and engines, built once.

Everything that talks to Redis receives a :class:`Store` instead of assembling these parts
itself: the producer's SessionService, the read path, the workers and the operator commands.

    store = Store(settings)                 # builds the client from settings.url / instance
    store = Store(settings, client=client)  # or uses a redis.asyncio client of the caller
    await store.start()                     # PING, eviction-policy check, failover watch
    ...
    await store.aclose()                    # closes the client only if the store built it
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis, RedisCluster

from sessionstreams.common.compat import Engines
from sessionstreams.common.connection import (
    Purpose,
    check_server,
    create_client,
    start_failover_watch,
    translate_errors,
)
from sessionstreams.common.errors import ConfigError
from sessionstreams.common.hashidx import HashIdxEngine
from sessionstreams.common.keys import KeySpace
from sessionstreams.common.legacy import LegacyEngine
from sessionstreams.common.scripts import Scripts
from sessionstreams.common.settings import Settings


class Store:
    """The parts every Redis user of the project shares.

    Args:
        settings: the one settings object.
        client: an existing ``redis.asyncio`` client (``Redis``, ``RedisCluster``) or
            ``ConnectionPool`` to use instead of building one from the settings; its owner
            closes it. It must speak RESP2 and return bytes (``protocol=2``,
            ``decode_responses=False``), as the scripts' replies are read that way.
        purpose: ``default``, or ``stream`` for a client of blocking stream reads and lease
            scripts (see :func:`~sessionstreams.common.connection.create_client`).

    Attributes:
        settings: the settings.
        client: the Redis client.
        keys: every Redis key name (:class:`~sessionstreams.common.keys.KeySpace`).
        scripts: the Lua scripts, loaded once per client.
        engines: both storage engines by route (``engines.hashidx``, ``engines.legacy``).
        errors: a context manager translating Redis errors into our hierarchy.
    """

    def __init__(
        self, settings: Settings, *, client: Any = None, purpose: Purpose = "default"
    ) -> None:
        self.settings = settings
        self.owns_client = client is None
        self.client: Any = (create_client(settings, purpose=purpose) if client is None
                            else adopt_client(client))
        self.keys = KeySpace(settings.key_prefix)
        self.scripts = Scripts(disable_cache=settings.disable_script_cache)
        self.engines = Engines(self.client, self.keys, self.scripts, settings.compat_mode)
        self.errors = translate_errors(settings.url or None)
        self._started = False

    @property
    def hashidx(self) -> HashIdxEngine:
        """The HashIdx engine (the layout new sessions go to)."""
        return self.engines.hashidx

    @property
    def legacy(self) -> LegacyEngine:
        """The legacy ZSet engine."""
        return self.engines.legacy

    def sibling(self, purpose: Purpose) -> Store:
        """Another store on the same settings with a client of its own (e.g. ``stream``)."""
        return Store(self.settings, purpose=purpose)

    async def start(self) -> None:
        """Check the server (reachable, no evicting ``maxmemory-policy`` on any primary) and
        start the Sentinel failover watch. Idempotent.

        Raises:
            ConfigError: the server's eviction policy could evict our keys.
            ConnectionFailedError: the server is not reachable.
        """
        if self._started:
            return
        start_failover_watch(self.client)
        with self.errors:
            await check_server(self.client, url=self.settings.url or None)
        self._started = True

    async def aclose(self) -> None:
        """Close the client when this store built it (a caller's client stays open)."""
        if self.owns_client:
            await self.client.aclose()


def adopt_client(client: Any) -> Any:
    """A caller's client (or pool) checked for the reply shapes the store reads.

    Raises:
        ConfigError: not a redis.asyncio client or pool, or one that decodes responses or
            speaks RESP3.
    """
    if isinstance(client, ConnectionPool):
        client = Redis(connection_pool=client)
    if isinstance(client, Redis):
        options = client.connection_pool.connection_kwargs
    elif isinstance(client, RedisCluster):
        options = client.get_connection_kwargs()
    else:
        raise ConfigError(
            f"client must be a redis.asyncio Redis, RedisCluster or ConnectionPool, "
            f"not {type(client).__name__}"
        )
    if options.get("decode_responses"):
        raise ConfigError("the given Redis client decodes responses: create it with "
                          "decode_responses=False (sessionstreams reads bytes)")
    if str(options.get("protocol")) != "2":
        raise ConfigError("the given Redis client must speak RESP2: create it with protocol=2 "
                          "(the default protocol of redis-py 8 is RESP3)")
    return client
