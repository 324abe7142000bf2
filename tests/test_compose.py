"""The compose stacks and the worker image, checked for structure (no Docker engine here):
services, images and builds, commands against the CLI's own parser, settings variables,
health checks and start order; and the ops/ scripts that run the same topologies without
Docker, started and stopped for real."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sessionstreams.common._urls import parse_url
from sessionstreams.common.settings import ENV_PREFIX, OTHER_VARIABLES, Settings
from sessionstreams.workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
STACKS = ["docker-compose.yml", "docker-compose.cluster.yml"]
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def load(name: str) -> dict[str, Any]:
    """A compose file, parsed (anchors and merge keys resolved)."""
    document: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text())
    return document


def services(name: str) -> dict[str, dict[str, Any]]:
    """The services of a compose file."""
    found: dict[str, dict[str, Any]] = load(name)["services"]
    return found


def command_of(service: dict[str, Any]) -> list[str]:
    """A service's command as an argv list (exec form is required, so no shell splitting)."""
    command = service.get("command", [])
    assert isinstance(command, list), f"use the exec (list) form: {command!r}"
    return [str(part) for part in command]


def redis_option(argv: list[str], name: str) -> str | None:
    """The value of ``--name`` in a redis-server argv."""
    flag = f"--{name}"
    return argv[argv.index(flag) + 1] if flag in argv else None


def depends(service: dict[str, Any]) -> dict[str, str]:
    """``{service: condition}`` of a service's depends_on (list or mapping form)."""
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


@pytest.mark.parametrize("stack", STACKS)
def test_every_service_has_a_pinned_image_or_an_existing_build(stack: str) -> None:
    """Images carry a tag other than latest; builds point at an existing Dockerfile."""
    for name, service in services(stack).items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        if image and "build" not in service:
            assert ":" in image, f"{name}: pin {image}"
            assert not image.endswith(":latest"), f"{name}: pin {image}"
        if "build" in service:
            context = (COMPOSE / service["build"]["context"]).resolve()
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            assert context == ROOT, name
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


@pytest.mark.parametrize("stack", STACKS)
def test_sessionstreams_commands_parse_with_the_cli(stack: str) -> None:
    """Every ``sessionstreams ...`` command uses sub-commands and flags the CLI defines."""
    parser = build_parser()
    seen = set()
    for name, service in services(stack).items():
        argv = command_of(service)
        if not argv or argv[0] != "sessionstreams":
            continue
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit as exc:  # argparse reports unknown flags this way
            pytest.fail(f"{stack} {name}: {shlex.join(argv)} does not parse ({exc.code})")
        seen.add(args.command)
    assert {"worker", "demo"} <= seen


@pytest.mark.parametrize("stack", STACKS)
def test_environment_names_settings_fields_and_parses(stack: str) -> None:
    """SESSIONSTREAMS_* variables name Settings fields and build valid Settings; the URL's
    hosts are services of the stack."""
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    all_services = services(stack)
    for name, service in all_services.items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        ours = {k for k in env if k.startswith(ENV_PREFIX)}
        if not ours:
            continue
        assert ours <= fields | OTHER_VARIABLES, f"{name}: unknown {ours - fields}"
        settings = Settings.from_env(env)
        parsed = parse_url(settings.url)
        for host, port in parsed.hosts:
            assert host in all_services, f"{name}: {host} is not a service"
            assert port == 6379


@pytest.mark.parametrize("stack", STACKS)
def test_start_order_and_health_checks(stack: str) -> None:
    """depends_on names existing services with known conditions; service_healthy targets
    have a health check, service_completed_successfully targets run once; Redis nodes and
    workers have health checks in exec form, a worker's being `sessionstreams worker-health`
    (its own heartbeat)."""
    all_services = services(stack)
    for name, service in all_services.items():
        for target, condition in depends(service).items():
            assert target in all_services, f"{name} depends on unknown {target}"
            assert condition in CONDITIONS, f"{name}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert all_services[target].get("restart") == "no", target
        argv = command_of(service)
        if argv[:1] == ["redis-server"] or argv[:2] == ["sessionstreams", "worker"]:
            check = service.get("healthcheck", {})
            assert check.get("test", [""])[0] in ("CMD", "CMD-SHELL"), f"{name}: {check}"
            assert check.get("retries", 0) >= 1
        if argv[:2] == ["sessionstreams", "worker"]:
            # Healthy only while this container's worker has a live heartbeat.
            assert service["healthcheck"]["test"] == ["CMD", "sessionstreams", "worker-health"]
            assert build_parser().parse_args(["worker-health"]).command == "worker-health"
        if argv[:1] == ["sessionstreams"]:
            assert depends(service), f"{name} starts before Redis"


@pytest.mark.parametrize("stack", STACKS)
def test_redis_is_durable_and_never_evicts(stack: str) -> None:
    """Every Redis runs with AOF (everysec or always) and noeviction."""
    nodes = [s for s in services(stack).values() if command_of(s)[:1] == ["redis-server"]]
    assert nodes
    for service in nodes:
        argv = command_of(service)
        assert redis_option(argv, "appendonly") == "yes"
        assert redis_option(argv, "appendfsync") in ("everysec", "always")
        policy = redis_option(argv, "maxmemory-policy") or "noeviction"
        assert policy == "noeviction"


def test_standalone_stack_has_redis_workers_and_a_demo() -> None:
    """One Redis, at least two workers, a one-shot demo that waits for healthy workers."""
    s = services("docker-compose.yml")
    assert command_of(s["redis"])[0] == "redis-server"
    assert s["worker"]["deploy"]["replicas"] >= 2
    assert "container_name" not in s["worker"]  # it is scaled
    assert s["demo"]["restart"] == "no"
    assert depends(s["demo"])["worker"] == "service_healthy"


def test_cluster_stack_creates_a_cluster_of_every_node() -> None:
    """Six cluster-enabled nodes; the init job waits for all of them healthy and creates
    3 primaries with one replica each; its script is valid shell."""
    s = services("docker-compose.cluster.yml")
    nodes = [n for n, v in s.items() if redis_option(command_of(v), "cluster-enabled") == "yes"]
    assert len(nodes) == 6
    init = s["cluster-init"]
    assert set(depends(init)) == set(nodes)
    assert set(depends(init).values()) == {"service_healthy"}
    script = "\n".join(command_of(init)).replace("$$", "$")  # compose escapes $ as $$
    assert "--cluster create" in script
    assert "--cluster-replicas 1" in script
    assert all(n in script for n in nodes)
    shell = shutil.which("sh") or "/bin/sh"
    subprocess.run([shell, "-n", "-c", script], check=True)
    for name in ("worker", "demo"):
        assert depends(s[name])["cluster-init"] == "service_completed_successfully"


def test_dockerfile_builds_the_package_on_python_slim() -> None:
    """python:3.11-slim, every COPY source exists, the package is pip-installed with the
    worker extra, the default command is a worker; the .dockerignore keeps what the COPYs
    need."""
    lines = [ln.strip() for ln in (COMPOSE / "Dockerfile").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ")]
    sources = [src for group in copies for src in group]
    assert {"pyproject.toml", "common", "producer", "workers"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
    # The worker extra: --metrics-port and --trace-file work in the image.
    assert any(ln.startswith('RUN pip install ".[worker]"') for ln in lines)
    assert lines[-1] == 'CMD ["sessionstreams", "worker"]'
    ignore = (COMPOSE / "Dockerfile.dockerignore").read_text().splitlines()
    for src in sources:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, src


# -- ops/: the same topologies without Docker --------------------------------------------------


def _free_block(size: int, offset: int) -> int:
    """A base port with ``size`` consecutive free ports, and ``size`` more at ``+offset``."""
    for base in range(21000, 29000, 37):
        ports = [*range(base, base + size), *range(base + offset, base + offset + size)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port block")


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _demo(url: str) -> str:
    return _run(sys.executable, "-m", "sessionstreams.workers.cli", "--url", url, "demo",
                "--sessions", "1")


@pytest.mark.slow
def test_cluster_local_script_starts_serves_and_stops(tmp_path: Path) -> None:
    """ops/cluster-local.sh start gives a working redis+cluster:// URL; stop ends it."""
    base = _free_block(3, 10000)
    script = str(ROOT / "ops" / "cluster-local.sh")
    common = ["--base-port", str(base), "--dir", str(tmp_path)]
    try:
        url = _run("bash", script, "start", *common).strip().splitlines()[-1]
        assert url.startswith("redis+cluster://127.0.0.1:")
        assert "has 1 sessions" in _demo(url)
    finally:
        _run("bash", script, "stop", *common)
    done = subprocess.run(["bash", script, "status", *common], capture_output=True, check=False)
    assert done.returncode != 0


@pytest.mark.slow
def test_sentinel_local_script_starts_serves_and_stops(tmp_path: Path) -> None:
    """ops/sentinel-local.sh start gives a working redis+sentinel:// URL; stop ends it."""
    base = _free_block(3, 20000)
    script = str(ROOT / "ops" / "sentinel-local.sh")
    common = ["--base-port", str(base), "--dir", str(tmp_path)]
    try:
        url = _run("bash", script, "start", *common).strip().splitlines()[-1]
        assert url.startswith("redis+sentinel://127.0.0.1:")
        assert url.endswith("/mymaster/0")
        assert "has 1 sessions" in _demo(url)
    finally:
        _run("bash", script, "stop", *common)
    done = subprocess.run(["bash", script, "status", *common], capture_output=True, check=False)
    assert done.returncode != 0
