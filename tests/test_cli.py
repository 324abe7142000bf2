"""The ``sessionstreams`` command line as a user meets it: options before or after the
command, ``--version``, help on every option, one-line errors with their exit codes (Redis
unreachable, Ctrl-C, destructive commands without ``--yes``), the worker health check, the
optional worker extra, and ``bench`` outside a source checkout."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from workers_harness import ROOT, eventually, worker_env

from redis_harness import RunningRedis, free_port
from sessionstreams.common.models import Event, Key
from sessionstreams.common.shards import ShardKeys
from sessionstreams.producer import SessionService
from sessionstreams.workers import cli
from sessionstreams.workers._tooling import Progress

#: The shortest valid argv of every command (after its name), for parser checks.
COMMANDS = {
    ("demo",): [],
    ("worker",): [],
    ("status",): [],
    ("worker-health",): [],
    ("dlq",): ["list"],
    ("shards",): ["resize", "--to", "2"],
    ("index", "rebuild"): ["--app", "a"],
    ("migrate",): ["--app", "a"],
    ("bench",): ["async"],
    ("user", "export"): ["--app", "a", "--user", "u"],
    ("user", "erase"): ["--app", "a", "--user", "u"],
    ("user", "import"): [],
    ("retention",): ["--older-than", "30d"],
}

UNREACHABLE = {
    "standalone": "redis://127.0.0.1:{port}/0",
    "cluster": "redis+cluster://127.0.0.1:{port}",
    "sentinel": "redis+sentinel://127.0.0.1:{port}/mymaster",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without SESSIONSTREAMS_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTREAMS_")}
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, module: str = "cli",
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m sessionstreams.workers[.cli] ARGS`` with stdin not a terminal."""
    target = "sessionstreams.workers.cli" if module == "cli" else "sessionstreams.workers"
    return subprocess.run([sys.executable, "-m", target, *args], env=env or clean_env(),
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- parser ----------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the tree, with its command path."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


def test_every_option_and_argument_has_help() -> None:
    """Every option and positional argument of every command says what it is for."""
    missing = [
        f"{prog}: {'/'.join(action.option_strings) or action.dest}"
        for prog, parser in _parsers(cli.build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


def test_every_command_of_the_table_exists() -> None:
    """The table of commands above covers the whole CLI (so the next test checks them all)."""
    leaves = {
        tuple(prog.split()[1:]) for prog, parser in _parsers(cli.build_parser())
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    }
    assert leaves == set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_url_is_accepted_before_and_after_the_command(path: tuple[str, ...]) -> None:
    """``--url`` works before the command and after it; the later one wins."""
    parser = cli.build_parser()
    rest = COMMANDS[path]
    assert parser.parse_args([*path, *rest]).url == ""
    assert parser.parse_args(["--url", "redis://a", *path, *rest]).url == "redis://a"
    assert parser.parse_args([*path, "--url", "redis://b", *rest]).url == "redis://b"
    assert parser.parse_args(["--url", "redis://a", *path, "--url", "redis://b",
                              *rest]).url == "redis://b"


def test_version_is_the_installed_distribution() -> None:
    """``sessionstreams --version`` prints the installed version and exits 0."""
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sessionstreams {version('sessionstreams')}"


def test_bench_outside_a_source_checkout_is_one_line_and_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """Without the ops/ folder (an installed wheel), ``bench`` says why in one line, exit 2."""
    monkeypatch.setattr(cli, "OPS_DIR", tmp_path / "no-ops")
    assert cli.main(["bench", "async", "--samples", "5"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("sessionstreams: bench runs the benchmark scripts of a source checkout")


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["demo"]])
def test_unreachable_redis_is_one_line_and_exit_1(kind: str, command: list[str]) -> None:
    """Redis unreachable (standalone, Cluster, Sentinel): one short line naming the URL, the
    reason and what to check, exit 1, no traceback and no client repr."""
    url = UNREACHABLE[kind].format(port=free_port())
    done = run_cli(*command, "--url", url)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"sessionstreams: cannot reach Redis at {url}: ")
    assert "connection refused" in line
    assert line.endswith("; check --url / SESSIONSTREAMS_URL")
    assert len(line) < 200
    assert "<" not in line


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
def test_worker_module_takes_url_and_waits_for_redis(kind: str) -> None:
    """``python -m sessionstreams.workers --url URL`` uses that URL; unreachable, it waits for
    it with one-line messages (no traceback) and stops cleanly on SIGTERM."""
    url = UNREACHABLE[kind].format(port=free_port())
    proc = subprocess.Popen([sys.executable, "-m", "sessionstreams.workers", "--url", url],
                            env=clean_env(), cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "waiting for redis" in first
        assert f"cannot reach Redis at {url}: " in first
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in first + rest


def test_ctrl_c_on_status_watch_exits_130_without_traceback(redis_server: RunningRedis) -> None:
    """SIGINT while ``status --watch`` refreshes: exit 130, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionstreams.workers.cli", "status", "--watch", "0.2",
         "--url", redis_server.url],
        env=clean_env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("sessionstreams status")  # it is watching
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip() == "sessionstreams: interrupted"


# -- destructive commands ----------------------------------------------------------------------


async def _dead_letters(url: str, prefix: str, count: int) -> ShardKeys:
    import redis.asyncio as aioredis

    sk = ShardKeys(prefix, 0, 2)
    client = aioredis.Redis.from_url(url)
    try:
        for i in range(count):
            await client.xadd(sk.dlq, {"e": b"x", "error": f"boom {i}", "source": "1-0",
                                       "failures": "3"})
    finally:
        await client.aclose()
    return sk


async def _xlen(url: str, key: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.xlen(key))
    finally:
        await client.aclose()


async def test_dlq_drop_without_yes_drops_nothing(redis_server: RunningRedis,
                                                  key_prefix: str) -> None:
    """``dlq drop`` without ids and without --yes (stdin not a terminal) drops nothing and
    exits 1 saying how to confirm; with --yes it drops them all."""
    sk = await _dead_letters(redis_server.url, key_prefix, 3)
    env = clean_env(SESSIONSTREAMS_KEY_PREFIX=key_prefix, SESSIONSTREAMS_ASYNC_PERSISTER_NUM="2")
    done = await asyncio.to_thread(run_cli, "dlq", "drop", "--url", redis_server.url, env=env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == ("sessionstreams: drop all 3 dead letter(s), for good: pass --yes to "
                           "confirm (nothing was changed)\n")
    assert await _xlen(redis_server.url, sk.dlq) == 3
    done = await asyncio.to_thread(run_cli, "dlq", "drop", "--yes", "--url", redis_server.url,
                                   env=env)
    assert (done.returncode, done.stdout) == (0, "dropped 3\n"), done.stderr
    assert await _xlen(redis_server.url, sk.dlq) == 0


@pytest.mark.parametrize(("answer", "left"), [("n", 2), ("", 2), ("y", 0)])
async def test_dlq_drop_asks_on_a_terminal(redis_server: RunningRedis, key_prefix: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           answer: str, left: int) -> None:
    """On a terminal ``dlq drop`` asks first; only y drops."""
    sk = await _dead_letters(redis_server.url, key_prefix, 2)
    monkeypatch.setenv("SESSIONSTREAMS_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("SESSIONSTREAMS_ASYNC_PERSISTER_NUM", "2")
    monkeypatch.setattr(sys, "stdin", type("Tty", (io.StringIO,), {"isatty": lambda s: True})())
    questions: list[str] = []
    monkeypatch.setattr("builtins.input", lambda q: questions.append(q) or answer)
    code = await asyncio.to_thread(cli.main, ["dlq", "drop", "--url", redis_server.url])
    assert questions == ["drop all 2 dead letter(s), for good. Go on? [y/N] "]
    assert code == (0 if left == 0 else 1)
    assert await _xlen(redis_server.url, sk.dlq) == left
    if left:
        assert "not confirmed; nothing was changed" in capsys.readouterr().err


def test_shards_resize_without_yes_changes_nothing(redis_server: RunningRedis,
                                                  key_prefix: str) -> None:
    """``shards resize`` without --yes (no terminal) exits 1 before touching Redis."""
    env = clean_env(SESSIONSTREAMS_KEY_PREFIX=key_prefix)
    done = run_cli("shards", "resize", "--to", "3", "--url", redis_server.url, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("sessionstreams: resize from 10 to 3 shards")
    assert done.stderr.endswith("pass --yes to confirm (nothing was changed)\n")


# -- worker health -----------------------------------------------------------------------------


async def test_worker_health_follows_the_heartbeat(pipeline_settings, start_worker) -> None:
    """``worker-health`` exits 0 while this host's worker has a live heartbeat, 1 for another
    id, and 1 again once the worker was killed and its heartbeat expired."""
    settings = pipeline_settings()
    env = worker_env(settings)

    async def health(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, "worker-health", *args, env=env)

    first = await health()
    assert first.returncode == 1
    assert "no live heartbeat of a worker on host" in first.stderr
    worker = start_worker(settings)

    async def healthy() -> bool:
        return (await health()).returncode == 0

    await eventually(healthy, 30, "a live heartbeat")
    done = await health()
    (line,) = done.stdout.splitlines()
    worker_id = line.split(":", 1)[0]
    assert (await health("--worker", worker_id)).returncode == 0
    assert (await health("--worker", "someone-else")).returncode == 1
    worker.kill()  # no goodbye: the heartbeat stays until it expires

    async def unhealthy() -> bool:
        return (await health()).returncode == 1

    await eventually(unhealthy, 30, "the heartbeat to expire")


# -- worker extra --------------------------------------------------------------------------------


@pytest.fixture
def without_sdk(tmp_path: Path) -> dict[str, str]:
    """An environment whose interpreters cannot import the OpenTelemetry SDK, the Prometheus
    exporter or prometheus_client (as without the worker extra)."""
    site = tmp_path / "nosdk"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "for name in ('opentelemetry.sdk', 'opentelemetry.exporter.prometheus',\n"
        "             'prometheus_client'):\n"
        "    sys.modules[name] = None\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


@pytest.mark.parametrize(("option", "missing"), [
    (["--metrics-port", "0"], "opentelemetry-sdk and opentelemetry-exporter-prometheus and "
                              "prometheus-client"),
    (["--trace-file", "spans.jsonl"], "opentelemetry-sdk"),
])
def test_worker_options_name_the_missing_extra(without_sdk: dict[str, str], option: list[str],
                                               missing: str, redis_server: RunningRedis) -> None:
    """``worker --metrics-port`` / ``--trace-file`` without the SDK: one line naming what is
    missing and the pip command, exit 1."""
    done = run_cli("worker", *option, "--url", redis_server.url, env=clean_env(**without_sdk))
    assert done.returncode == 1
    assert done.stderr == (f"sessionstreams: {option[0]} needs {missing} (not installed): "
                           "pip install 'sessionstreams[worker]'\n")


async def test_library_and_plain_worker_run_without_the_sdk(
        without_sdk: dict[str, str], pipeline_settings, start_worker) -> None:
    """Without the SDK a worker without metrics or tracing persists streamed writes."""
    settings = pipeline_settings(async_persister_num=2)
    worker = start_worker(settings, env=without_sdk)
    svc = SessionService(settings)
    try:
        s = await svc.create_session(Key("app", "u", "s"))
        receipt = await svc.append_event(s, Event.message("user", "hi"))
        assert await svc.wait_persisted(receipt, timeout=30) == "applied"
    finally:
        await svc.close()
    assert worker.terminate() == 0
    assert "Traceback" not in worker.log()


# -- progress ----------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_count_rate_and_time_left() -> None:
    """With a known total the bar shows the count out of the total, the rate and the time
    left; it is drawn on a terminal only."""
    out = _Terminal()
    progress = Progress("migrate", stream=out)
    progress.total = 4
    for _ in range(4):
        progress.advance()
    progress.close()
    text = out.getvalue()
    assert "migrate: 100%" in text
    assert "4/4" in text
    assert "sessions/s]" in text
    assert "<00:00" in text  # elapsed<remaining
    silent = io.StringIO()
    quiet = Progress("migrate", 3, stream=silent)
    quiet.advance(3)
    quiet.close()
    assert silent.getvalue() == ""


def test_misspelt_variable_is_named_with_the_closest_valid_name(
        redis_server: RunningRedis) -> None:
    """A misspelt SESSIONSTREAMS_ variable is named on stderr with the closest valid name,
    the command still runs."""
    env = clean_env(SESSIONSTREAMS_KEY_PREFX="x", SESSIONSTREAMS_URL=redis_server.url)
    done = run_cli("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "SESSIONSTREAMS_KEY_PREFX" in ln]
    assert len(warnings) == 1
    assert "did you mean SESSIONSTREAMS_KEY_PREFIX?" in warnings[0]
