"""Real Redis servers for tests: start ``redis-server`` on a free loopback port in a temp dir.

``SESSIONSTREAMS_TEST_SERVER=/path/to/valkey-server`` starts that binary instead (Valkey, or
another Redis build), for standalone servers, Cluster nodes and sentinels alike.

``start_redis_server`` is used by the session fixture in ``conftest.py`` and by tests that need
servers of their own (replicas, Sentinel, Cluster, SIGKILL tests). Nothing here ever touches a
server it did not start, beyond the commands a test sends itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass
class RunningRedis:
    """A Redis server the tests can reach; ``process`` is None when we did not start it."""

    host: str
    port: int
    url: str
    process: subprocess.Popen[bytes] | None = None
    directory: Path | None = None
    container: Any = field(default=None, repr=False)

    @property
    def owned(self) -> bool:
        """True when this harness started the server (it may be reconfigured or killed)."""
        return self.process is not None or self.container is not None

    def client(self, **kwargs: Any) -> aioredis.Redis:
        """A new asyncio client (RESP2, bytes); the caller closes it with ``aclose()``."""
        kwargs.setdefault("protocol", 2)
        return aioredis.Redis.from_url(self.url, **kwargs)

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command over a raw socket and return the raw reply line(s)."""
        return _raw_command(self.host, self.port, args, timeout)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then terminate / kill if the process does not exit in time."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.stop()
            self.container = None
            return
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            self.command("SHUTDOWN", "NOSAVE")
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the server (crash simulation) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)


#: The highest port a Cluster node may use: its bus port is 10,000 higher.
MAX_NODE_PORT = 55535


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, low enough for a Cluster node."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port <= MAX_NODE_PORT:
            return port


#: The server binary the tests start, e.g. a ``valkey-server``; default ``redis-server``.
SERVER_ENV = "SESSIONSTREAMS_TEST_SERVER"


def redis_server_binary() -> str:
    """Path of the server binary: ``$SESSIONSTREAMS_TEST_SERVER``, else ``redis-server``.

    Raises:
        RuntimeError: the binary is missing (with install advice).
    """
    wanted = os.environ.get(SERVER_ENV, "").strip()
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            raise RuntimeError(f"{SERVER_ENV}={wanted}: no such executable")
        return found
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server is not on PATH: install it (apt-get install -y redis-server), "
            "or set REDIS_URL to a server the tests may use"
        )
    return found


def server_cli_binary() -> str:
    """The command-line client that goes with the server binary: the ``*-cli`` beside a
    ``$SESSIONSTREAMS_TEST_SERVER`` (``valkey-cli`` for ``valkey-server``) when there is one,
    else ``redis-cli`` on PATH.

    Raises:
        RuntimeError: no client found (with install advice).
    """
    if os.environ.get(SERVER_ENV, "").strip():
        server = Path(redis_server_binary())
        sibling = server.with_name(server.name.replace("-server", "-cli"))
        if sibling != server and os.access(sibling, os.X_OK):
            return str(sibling)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("redis-cli is not on PATH: install it (apt-get install -y redis-tools)")
    return found


def start_redis_server(
    directory: Path,
    extra_args: Sequence[str] = (),
    *,
    port: int | None = None,
    config_file: Path | None = None,
) -> RunningRedis:
    """Start ``redis-server`` on a free loopback port with its files in ``directory``.

    Args:
        directory: working directory (log, and any dump or AOF a test enables).
        extra_args: more ``redis-server`` arguments, e.g. ``("--maxmemory-policy", "x")``.
        port: a fixed port (a free one is picked when None).
        config_file: a config file, passed first (Sentinel needs one it can rewrite).

    Returns:
        The running server; PING has answered.

    Raises:
        RuntimeError: the binary is missing or the server did not answer in time.
    """
    binary = redis_server_binary()
    directory.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    last_error = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        logfile = directory / f"redis-{chosen}.log"
        errfile = directory / f"redis-{chosen}.stderr"
        argv = [
            binary,
            *([str(config_file)] if config_file is not None else []),
            "--port", str(chosen),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(logfile),
            *extra_args,
        ]  # fmt: skip
        with errfile.open("wb") as err:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        server = RunningRedis(
            host="127.0.0.1",
            port=chosen,
            url=f"redis://127.0.0.1:{chosen}/0",
            process=process,
            directory=directory,
        )
        if _wait_until_ready(server):
            return server
        last_error = _startup_failure(server, (errfile, logfile))
    raise RuntimeError(f"redis-server did not start: {last_error}")


def start_sentinel(
    directory: Path, primary: RunningRedis, service_name: str = "mymaster", quorum: int = 1
) -> RunningRedis:
    """Start a Sentinel monitoring ``primary`` as ``service_name``; its ``url`` is the
    ``redis+sentinel://`` URL of the primary through this sentinel."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor {service_name} {primary.host} {primary.port} {quorum}\n"
        f"sentinel down-after-milliseconds {service_name} 1000\n"
        f"sentinel failover-timeout {service_name} 3000\n"
    )
    sentinel = start_redis_server(directory, ("--sentinel",), config_file=conf)
    sentinel.url = f"redis+sentinel://{sentinel.host}:{sentinel.port}/{service_name}/0"
    return sentinel


def start_single_node_cluster(directory: Path) -> RunningRedis:
    """Start a cluster-enabled server owning all 16384 slots; ``url`` is ``redis+cluster://``."""
    node = start_redis_server(
        directory, ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    )
    node.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + START_TIMEOUT_S
    while b"cluster_state:ok" not in node.command("CLUSTER", "INFO"):
        if time.monotonic() > deadline:
            node.stop()
            raise RuntimeError("single-node cluster did not reach cluster_state:ok")
        time.sleep(0.02)  # poll interval
    node.url = f"redis+cluster://{node.host}:{node.port}"
    return node


def _wait_until_ready(server: RunningRedis) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    assert server.process is not None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            if server.command("PING", timeout=0.5).startswith(b"+PONG"):
                return True
        time.sleep(0.02)  # poll interval, not a wait for a condition
    return False


def _startup_failure(server: RunningRedis, outputs: Sequence[Path]) -> str:
    assert server.process is not None
    if server.process.poll() is None:
        server.process.kill()
    server.process.wait(timeout=STOP_TIMEOUT_S)
    text = "".join(p.read_text(errors="replace")[-2000:] for p in outputs if p.exists())
    return text.strip() or "no output"


def _raw_command(host: str, port: int, args: Sequence[str], timeout: float) -> bytes:
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def server_from_env() -> RunningRedis | None:
    """The server named by ``REDIS_URL``, if set (never started or stopped by us)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    parsed = urlparse(url)
    return RunningRedis(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379, url=url)


def server_from_docker() -> RunningRedis | None:
    """A testcontainers Redis when a Docker engine answers; None otherwise (never raises)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return None
    try:
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7")
        container.start()
    except Exception:
        return None
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(6379))
    return RunningRedis(host=host, port=port, url=f"redis://{host}:{port}/0", container=container)


@contextlib.contextmanager
def provide_redis_server(directory: Path) -> Iterator[RunningRedis]:
    """REDIS_URL, else Docker, else a local server; stopped on exit if ours.

    With ``$SESSIONSTREAMS_TEST_SERVER`` set, Docker is not tried: that binary is started.
    """
    docker = None if os.environ.get(SERVER_ENV, "").strip() else server_from_docker()
    server = server_from_env() or docker or start_redis_server(directory)
    try:
        yield server
    finally:
        server.stop()
