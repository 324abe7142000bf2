"""Redis Cluster and Sentinel topologies for tests, on loopback ports in temp dirs.

``start_cluster`` starts N cluster-enabled ``redis-server`` processes and joins them with
``redis-cli --cluster create``; ``start_sentinel_group`` starts a primary, its replicas and
a group of sentinels. Both return an object that knows its nodes, builds clients and tears
everything down with ``stop()`` (idempotent, also after a test SIGKILLed a node).

``RedisTarget`` is what topology-parametrized tests see (the ``redis_target`` fixture): the URL
to put in ``Settings``, an admin client of the right kind, and helpers that act on every
primary (command statistics), so one test body runs on standalone, Cluster and Sentinel.
Every wait here is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot

from redis_harness import RunningRedis, free_port, server_cli_binary, start_redis_server

READY_TIMEOUT_S = 20.0
POLL_S = 0.05
CLI_TIMEOUT_S = 60.0


def redis_cli_binary() -> str:
    """Path of the command-line client (``redis-cli``, or the one beside the server binary
    named by ``SESSIONSTREAMS_TEST_SERVER``); RuntimeError with install advice when missing."""
    return server_cli_binary()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; RuntimeError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(POLL_S)


async def async_wait_until(
    condition: Callable[[], Any], timeout_s: float, what: str, *, interval_s: float = POLL_S
) -> Any:
    """Await ``condition()`` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            value = await condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


def _sync_client(node: RunningRedis) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, protocol=2, socket_timeout=5)


def _info(node: RunningRedis, section: str) -> dict[str, Any]:
    with _sync_client(node) as client:
        return dict(client.info(section))


def _alive(node: RunningRedis) -> bool:
    return node.process is None or node.process.poll() is None


def _stop_all(nodes: Sequence[RunningRedis]) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()


# -- Cluster ---------------------------------------------------------------------------------


def users_in_slots(slots: set[int], count: int, stem: str = "user") -> list[str]:
    """``count`` user ids whose hash tag ``{user}`` falls into ``slots``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"{stem}-{i}"
        if key_slot(name.encode()) in slots:
            found.append(name)
        i += 1
    return found


@dataclass
class RunningCluster:
    """A Redis Cluster on loopback; ``url`` is its ``redis+cluster://`` URL (every node)."""

    nodes: list[RunningRedis]
    directory: Path
    url: str = ""

    def __post_init__(self) -> None:
        if not self.url:
            self.url = "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    # -- inspection ---------------------------------------------------------------------
    def node(self, port: int) -> RunningRedis:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, node: RunningRedis) -> str:
        """The cluster node id (CLUSTER MYID)."""
        with _sync_client(node) as client:
            value = client.execute_command("CLUSTER", "MYID")
        return value.decode() if isinstance(value, bytes) else str(value)

    def slot_owners(self) -> dict[int, RunningRedis]:
        """``{slot: primary}`` for every assigned slot, as the first live node sees it."""
        for node in self.live_nodes():
            with _sync_client(node) as client:
                ranges = client.execute_command("CLUSTER", "SLOTS")
            owners: dict[int, RunningRedis] = {}
            for start, end, primary, *_ in ranges:
                owner = self.node(int(primary[1]))
                for slot in range(int(start), int(end) + 1):
                    owners[slot] = owner
            return owners
        raise RuntimeError("no live cluster node")

    def primaries(self) -> list[RunningRedis]:
        """The nodes that own at least one slot."""
        owners = {n.port: n for n in self.slot_owners().values()}
        return [owners[p] for p in sorted(owners)]

    def live_nodes(self) -> list[RunningRedis]:
        """The nodes whose process is running."""
        return [n for n in self.nodes if _alive(n)]

    def is_consistent(self) -> bool:
        """Every live node reports ``cluster_state:ok`` and the same slot map."""
        maps = []
        for node in self.live_nodes():
            with _sync_client(node) as client:
                if client.execute_command("CLUSTER", "INFO").find(b"cluster_state:ok") < 0:
                    return False
                slots = client.execute_command("CLUSTER", "SLOTS")
            maps.append(sorted((int(s), int(e), int(p[1])) for s, e, p, *_ in slots))
        return all(m == maps[0] for m in maps)

    def wait_consistent(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll until :meth:`is_consistent` (after a create or a reshard)."""
        wait_until(self.is_consistent, timeout_s, "a consistent cluster")

    def wait_replicated(self, primary: RunningRedis, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll until a replica of ``primary`` is online and has every write made so far (its
        acknowledged offset reaches the primary's offset of now): a freshly created cluster's
        replicas may still be in their first sync, and a primary killed then takes its data
        with it. (``WAIT`` would not do: it only waits for the calling connection's writes.)"""

        def info() -> dict[str, Any]:
            with _sync_client(primary) as client:
                return dict(client.info("replication"))

        target = int(info()["master_repl_offset"])

        def synced() -> bool:
            replicas = [v for k, v in info().items()
                        if k.startswith("slave") and isinstance(v, dict)]
            return any(r.get("state") == "online" and int(r.get("offset", 0)) >= target
                       for r in replicas)

        wait_until(synced, timeout_s, f"a replica of :{primary.port} in sync")

    def wait_for_failover(self, dead: RunningRedis, timeout_s: float = READY_TIMEOUT_S) -> None:
        """After ``dead`` (a primary) was killed: poll until its replica owns its slots and
        the live nodes agree (a blocking call: use ``asyncio.to_thread`` under a load)."""

        def promoted() -> bool:
            return self.is_consistent() and dead not in self.slot_owners().values()

        wait_until(promoted, timeout_s, f"the slots of :{dead.port} to move to a replica")

    # -- clients and changes ------------------------------------------------------------
    def client(self, **kwargs: Any) -> aioredis.RedisCluster:
        """A new asyncio cluster client (RESP2, bytes); the caller closes it."""
        kwargs.setdefault("protocol", 2)
        nodes = [ClusterNode(n.host, n.port) for n in self.nodes]
        return aioredis.RedisCluster(startup_nodes=nodes, **kwargs)

    def reshard_command(self, source: RunningRedis, target: RunningRedis, slots: int) -> list[str]:
        """The ``redis-cli --cluster reshard`` argv moving ``slots`` slots (the lowest ones
        of ``source``) to ``target``."""
        return [
            redis_cli_binary(), "--cluster", "reshard", f"{source.host}:{source.port}",
            "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
            "--cluster-slots", str(slots), "--cluster-yes",
        ]  # fmt: skip

    def stop(self) -> None:
        """Stop every node (SHUTDOWN NOSAVE, then terminate / kill)."""
        _stop_all(self.nodes)


def start_cluster(
    directory: Path,
    primaries: int = 3,
    replicas_per_primary: int = 0,
    *,
    node_timeout_ms: int = 2000,
    extra_args: Sequence[str] = (),
) -> RunningCluster:
    """Start a Redis Cluster: ``primaries`` primaries, each with ``replicas_per_primary``.

    Nodes listen on free loopback ports (the cluster bus on another free port, set with
    ``cluster-port``), each with its files in ``directory/node-<i>``; ``redis-cli --cluster
    create`` assigns the slots evenly. Returns once every node agrees on the slot map.

    Raises:
        RuntimeError: a node did not start, or the cluster did not form in time.
    """
    count = primaries * (1 + replicas_per_primary)
    nodes: list[RunningRedis] = []
    try:
        for i in range(count):
            args = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-port", str(free_port()),
                "--repl-diskless-sync-delay", "0",
                *extra_args,
            )  # fmt: skip
            nodes.append(start_redis_server(directory / f"node-{i}", args))
        argv = [
            redis_cli_binary(), "--cluster", "create",
            *(f"{n.host}:{n.port}" for n in nodes),
            "--cluster-replicas", str(replicas_per_primary), "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, timeout=CLI_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]!r}")
        cluster = RunningCluster(nodes=nodes, directory=directory)
        cluster.wait_consistent()
        if replicas_per_primary:
            wait_until(
                lambda: all(_info(n, "replication").get("master_link_status", "up") == "up"
                            for n in nodes),
                READY_TIMEOUT_S, "cluster replicas in sync",
            )  # fmt: skip
        return cluster
    except BaseException:
        _stop_all(nodes)
        raise


# -- Sentinel --------------------------------------------------------------------------------


@dataclass
class RunningSentinelGroup:
    """A primary, its replicas and sentinels monitoring them as ``service_name``.

    ``servers`` holds the data nodes (the initial primary first), ``sentinels`` the sentinel
    processes; ``url`` is the ``redis+sentinel://`` URL listing every sentinel.
    """

    servers: list[RunningRedis]
    sentinels: list[RunningRedis]
    service_name: str
    directory: Path
    url: str = ""

    def __post_init__(self) -> None:
        if not self.url:
            hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
            self.url = f"redis+sentinel://{hosts}/{self.service_name}/0"

    def url_with_sentinels(self, order: Sequence[RunningRedis]) -> str:
        """The URL listing ``order`` (sentinels) in that order."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in order)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    def server(self, port: int) -> RunningRedis:
        """The data node listening on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def master_states(self) -> list[dict[str, Any]]:
        """``SENTINEL MASTER <service>`` of every reachable sentinel."""
        states = []
        for sentinel in self.sentinels:
            if not _alive(sentinel):
                continue
            with contextlib.suppress(redis.RedisError, OSError), _sync_client(sentinel) as c:
                states.append(dict(c.sentinel_master(self.service_name)))
        return states

    def primary(self) -> RunningRedis:
        """The primary named by the sentinel with the highest config epoch."""
        states = self.master_states()
        if not states:
            raise RuntimeError("no sentinel answers")
        best = max(states, key=lambda s: int(s.get("config-epoch", 0)))
        return self.server(int(best["port"]))

    def replicas(self) -> list[RunningRedis]:
        """Every live data node other than :meth:`primary`."""
        primary = self.primary()
        return [s for s in self.servers if s is not primary and _alive(s)]

    def is_ready(self, replicas: int | None = None) -> bool:
        """Every sentinel sees the same healthy primary, its replicas and the other sentinels;
        each replica's link to the primary is up."""
        expected_replicas = len(self.servers) - 1 if replicas is None else replicas
        states = self.master_states()
        if len(states) != len(self.sentinels):
            return False
        ports = {int(s["port"]) for s in states}
        if len(ports) != 1:
            return False
        for state in states:
            if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                return False
            if state["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
            if state["num-slaves"] < expected_replicas:
                return False
        primary = self.server(ports.pop())
        replicas = [n for n in self.servers if n is not primary and _alive(n)]
        return all(_info(n, "replication").get("master_link_status") == "up" for n in replicas)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, replicas: int | None = None) -> None:
        """Poll until :meth:`is_ready`."""
        wait_until(lambda: self.is_ready(replicas), timeout_s, "a ready sentinel group")

    async def wait_for_new_primary(
        self, old: RunningRedis, timeout_s: float = READY_TIMEOUT_S
    ) -> RunningRedis:
        """Poll (without blocking the event loop) until a sentinel majority names a primary
        other than ``old``; returns it."""

        async def check() -> RunningRedis | None:
            states = await asyncio.to_thread(self.master_states)
            moved = [s for s in states if int(s["port"]) != old.port]
            if len(moved) * 2 > len(self.sentinels):
                return self.server(int(moved[0]["port"]))
            return None

        found: RunningRedis = await async_wait_until(check, timeout_s, "a promoted primary")
        return found

    def client(self, **kwargs: Any) -> aioredis.Redis:
        """An asyncio client of the current primary through the sentinels (redis-py's own
        ``master_for``, independent of the product's factory); the caller closes it."""
        kwargs.setdefault("protocol", 2)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(s.host, s.port) for s in self.sentinels],
            sentinel_kwargs={"protocol": 2, "socket_timeout": 2},
        )
        client: aioredis.Redis = sentinel.master_for(
            self.service_name, redis_class=_SentinelAdminRedis, **kwargs
        )
        return client

    def stop(self) -> None:
        """Stop the sentinels first (no failover during teardown), then the data nodes."""
        _stop_all(self.sentinels)
        _stop_all(self.servers)


class _SentinelAdminRedis(aioredis.Redis):
    """A ``master_for`` client that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()


def start_sentinel_group(
    directory: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
    service_name: str = "mymaster",
    extra_args: Sequence[str] = (),
) -> RunningSentinelGroup:
    """Start a primary with ``replicas`` replicas and ``sentinels`` sentinels (``quorum``).

    Returns once every sentinel sees the primary, every replica and every other sentinel
    (so a failover can be elected at once) and every replica is in sync.

    Raises:
        RuntimeError: a process did not start, or the group did not converge in time.
    """
    servers: list[RunningRedis] = []
    watchers: list[RunningRedis] = []
    # Without this a replica's first sync waits the default 5 s for more replicas to join.
    extra_args = ("--repl-diskless-sync-delay", "0", *extra_args)
    try:
        primary = start_redis_server(directory / "server-0", extra_args)
        servers.append(primary)
        for i in range(replicas):
            args = ("--replicaof", primary.host, str(primary.port), *extra_args)
            servers.append(start_redis_server(directory / f"server-{i + 1}", args))
        for i in range(sentinels):
            folder = directory / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor {service_name} {primary.host} {primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {service_name} {down_after_ms}\n"
                f"sentinel failover-timeout {service_name} {failover_timeout_ms}\n"
            )
            watchers.append(start_redis_server(folder, ("--sentinel",), config_file=conf))
        group = RunningSentinelGroup(
            servers=servers, sentinels=watchers, service_name=service_name, directory=directory
        )
        group.wait_ready()
        return group
    except BaseException:
        _stop_all(watchers)
        _stop_all(servers)
        raise


# -- what topology-parametrized tests see ----------------------------------------------------


@dataclass
class RedisTarget:
    """One Redis deployment as a test sees it.

    Attributes:
        kind: ``standalone``, ``cluster`` or ``sentinel``.
        url: the URL for ``Settings(url=...)``.
        make_client: builds an admin client of the right kind (Redis or RedisCluster).
        primaries: the data nodes that take writes (for per-node statistics).
        topology: the RunningRedis, RunningCluster or RunningSentinelGroup behind it.
    """

    kind: str
    url: str
    make_client: Callable[[], Any] = field(repr=False)
    primaries: Callable[[], list[RunningRedis]] = field(repr=False)
    topology: Any = field(default=None, repr=False)

    @property
    def is_cluster(self) -> bool:
        """True for Redis Cluster (keys of different slots live on different nodes)."""
        return self.kind == "cluster"

    def client(self) -> Any:
        """A new admin client (RESP2, bytes); the caller closes it with ``aclose()``."""
        return self.make_client()

    async def reset_stats(self) -> None:
        """CONFIG RESETSTAT on every primary."""
        for node in self.primaries():
            client = node.client()
            try:
                await client.config_resetstat()
            finally:
                await client.aclose()

    async def command_stats(self) -> dict[str, int]:
        """``{command: calls}`` summed over every primary (INFO commandstats)."""
        totals: dict[str, int] = {}
        for node in self.primaries():
            client = node.client()
            try:
                stats = await client.info("commandstats")
            finally:
                await client.aclose()
            for name, value in stats.items():
                command = name.removeprefix("cmdstat_")
                totals[command] = totals.get(command, 0) + int(value["calls"])
        return totals


def standalone_target(server: RunningRedis) -> RedisTarget:
    """The target of one standalone server."""
    return RedisTarget("standalone", server.url, server.client, lambda: [server], server)


def cluster_target(cluster: RunningCluster) -> RedisTarget:
    """The target of a cluster (statistics summed over its primaries)."""
    return RedisTarget("cluster", cluster.url, cluster.client, cluster.primaries, cluster)


def sentinel_target(group: RunningSentinelGroup) -> RedisTarget:
    """The target of a sentinel group (statistics from the current primary)."""
    return RedisTarget("sentinel", group.url, group.client, lambda: [group.primary()], group)


@contextlib.contextmanager
def running(topology: Any) -> Iterator[Any]:
    """Yield ``topology`` and stop it on exit."""
    try:
        yield topology
    finally:
        topology.stop()
