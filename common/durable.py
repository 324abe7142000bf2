"""A script call followed by ``WAIT`` on the same connection (``durable_min_replicas``).

``WAIT n timeout`` counts the replicas that acknowledged every write made *on the connection
it runs on*. It must therefore follow the write on that connection, on the node that owns the
written key:

- standalone and Sentinel: one non-transactional pipeline holds both commands, and a pipeline
  uses one connection of the pool;
- Cluster: WAIT has no key, so ``RedisCluster`` (and its pipelines) send it to a default node.
  Both commands go instead, as one pipeline, to one connection of the node owning the key's
  slot (``ClusterNode.execute_pipeline``, the path redis-py's own cluster pipeline takes for
  each node). A MOVED, ASK or TRYAGAIN reply to the script means nothing was written there:
  the WAIT reply on that connection says nothing about the write, so the pair is sent again
  to the right node (with ASKING in the same pipeline for ASK).

A NOSCRIPT reply loads the script and re-sends both commands: the WAIT that followed the
refused script counted nothing. A connection error re-reads the slot map and re-sends the pair
up to the client's retry count; the script may then have run twice, which our scripts allow
(stream entries carry a request id and are deduplicated when applied).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, PipelineCommand

from sessionstreams.common.scripts import Arg, Scripts

#: Redirections (MOVED / ASK / TRYAGAIN) and NOSCRIPT reloads followed before giving up.
MAX_REDIRECTS = 16
TRYAGAIN_PAUSE_S = 0.05
RETRY_BASE_S = 0.01
RETRY_CAP_S = 1.0


async def call_and_wait(
    client: Any,
    scripts: Scripts,
    name: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """Run script ``name`` on ``keys``, then ``WAIT replicas timeout_ms`` on its connection.

    Returns:
        The script's reply and the number of replicas that acknowledged the write.

    Raises:
        redis.exceptions.RedisError: the script failed, or the node stayed unreachable.
    """
    if isinstance(client, RedisCluster):
        return await _cluster(client, scripts, name, keys, args, replicas, timeout_ms)
    return await _single(client, scripts, name, keys, args, replicas, timeout_ms)


async def _single(
    client: Any, scripts: Scripts, name: str, keys: Sequence[str], args: Sequence[Arg],
    replicas: int, timeout_ms: int,
) -> tuple[Any, int]:
    for _ in range(MAX_REDIRECTS):
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*scripts.command(name, keys, args))
        pipe.execute_command("WAIT", replicas, timeout_ms)
        reply, acked = await pipe.execute(raise_on_error=False)
        if isinstance(reply, rx.NoScriptError):
            await client.script_load(scripts.get(name).text)
            continue
        return _checked(reply, acked)
    raise rx.ResponseError(f"script {name}: NOSCRIPT after {MAX_REDIRECTS} loads")


async def _cluster(
    client: RedisCluster, scripts: Scripts, name: str, keys: Sequence[str],
    args: Sequence[Arg], replicas: int, timeout_ms: int,
) -> tuple[Any, int]:
    command = scripts.command(name, keys, args)
    retries = client.retry.get_retries()
    failures = 0
    asking: ClusterNode | None = None
    for _ in range(MAX_REDIRECTS + retries):
        await client.initialize()  # a no-op unless the slot map must be (re)read
        node = asking or client.get_node_from_key(keys[0])
        if node is None:
            raise rx.SlotNotCoveredError(f"no node serves the slot of {keys[0]}")
        batch = [PipelineCommand(0, *command), PipelineCommand(1, "WAIT", replicas, timeout_ms)]
        if asking is not None:
            batch.insert(0, PipelineCommand(0, "ASKING"))
        asking = None
        try:
            await node.execute_pipeline(batch)
        except (rx.ConnectionError, rx.TimeoutError):
            failures += 1
            if failures > retries:
                raise
            await _forget_node(client, node)
            await asyncio.sleep(min(RETRY_BASE_S * 2**failures, RETRY_CAP_S))
            continue
        reply, acked = batch[-2].result, batch[-1].result
        if isinstance(reply, rx.MovedError):
            await client.nodes_manager.move_slot(reply)
        elif isinstance(reply, rx.AskError):
            asking = client.get_node(host=reply.host, port=reply.port) or ClusterNode(
                reply.host, reply.port, **client.nodes_manager.connection_kwargs
            )
        elif isinstance(reply, rx.TryAgainError):
            await asyncio.sleep(TRYAGAIN_PAUSE_S)
        elif isinstance(reply, rx.NoScriptError):
            await client.script_load(scripts.get(name).text)  # every primary
        elif isinstance(reply, rx.ClusterDownError | rx.SlotNotCoveredError):
            failures += 1
            if failures > retries:
                raise reply
            await _forget_node(client, node)
            await asyncio.sleep(0.25)
        else:
            return _checked(reply, acked)
    raise rx.ClusterError(f"script {name} on {keys[0]}: too many redirections")


async def _forget_node(client: RedisCluster, node: ClusterNode) -> None:
    """What redis-py does after a node failed a command: drop its connections, re-read the
    slot map before the next command (the slot may have moved to a promoted replica)."""
    node.update_active_connections_for_reconnect()
    await node.disconnect_free_connections()
    client.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
    client._initialize = True  # read by RedisCluster.initialize()


def _checked(reply: Any, acked: Any) -> tuple[Any, int]:
    if isinstance(reply, Exception):
        raise reply
    if isinstance(acked, Exception):
        raise acked
    return reply, int(acked)
