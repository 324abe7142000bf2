"""The library logs through the standard ``logging`` module, under ``sessionstreams``, and
writes nothing an application did not configure: nothing on stdout, ever; on stderr only what
the application's own handlers print."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap

import msgspec
import pytest
from workers_harness import ROOT

from redis_harness import RunningRedis, free_port
from sessionstreams.common.logs import LIBRARY_LOGGER, configure_logging, get_logger
from sessionstreams.common.models import Event

#: An application with logging at WARNING: a session's life through SessionService, a
#: corrupt event read back (a warning), and an unreachable Sentinel (whose failover watch logs
#: at debug while it retries).
APP = textwrap.dedent("""
    import asyncio, logging, sys
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="APP %(levelname)s %(name)s: %(message)s")
    from sessionstreams.common.errors import ConnectionFailedError
    from sessionstreams.common.models import Event, Key, UserKey
    from sessionstreams.common.settings import Settings
    from sessionstreams.producer import SessionService

    async def main(url, prefix, sentinel_url):
        async with SessionService(Settings(url=url, key_prefix=prefix)) as svc:
            s = await svc.create_session(Key("app", "u", "s"))
            for i in range(3):
                await svc.append_event(s, Event.message("user", f"m{i}"))
            await svc.client.hset(svc.keys.event_data(s.key), "broken", b"{not json")
            await svc.client.zadd(svc.keys.event_index(s.key), {"broken": 1})
            got = await svc.get_session(s.key)
            listed = await svc.list_sessions(UserKey("app", "u"))
            assert len(got.events) == 3 and len(listed) == 1, (got, listed)
        svc = SessionService(Settings(url=sentinel_url, socket_connect_timeout_s=0.5))
        try:
            await svc.create_session(Key("app", "u", "s2"))
        except ConnectionFailedError:
            await asyncio.sleep(0.5)  # the failover watch retries (and logs) meanwhile
        finally:
            await svc.close()

    asyncio.run(main(*sys.argv[1:4]))
""")


def run_app(*args: str, code: str = APP) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``args``."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_app_at_warning_gets_nothing_on_stdout(redis_server: RunningRedis,
                                               key_prefix: str) -> None:
    """Create, append, get and list (with a corrupt event skipped and a Sentinel retrying at
    debug) write nothing to stdout; the skipped event's warning reaches stderr through the
    application's handler, with its fields, and nothing else does."""
    sentinel = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    done = run_app(redis_server.url, key_prefix, sentinel)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines, "the skipped event's warning is missing"
    assert all(line.startswith("APP WARNING sessionstreams.") for line in lines), lines
    skipped = [line for line in lines if "skipping undecodable event" in line]
    assert len(skipped) == len(lines)  # read by get_session and by list_sessions
    for line in skipped:
        assert line.startswith("APP WARNING sessionstreams.read: skipping undecodable event")
        assert "session=s " in line
        assert "app=app" in line
        assert "error='invalid JSON" in line


def test_app_without_logging_config_gets_nothing_at_all(redis_server: RunningRedis,
                                                        key_prefix: str) -> None:
    """An application that never configured logging sees no line from the library, not even
    a warning (the ``sessionstreams`` logger has a NullHandler)."""
    code = APP.replace("logging.basicConfig(", "dict(")
    done = run_app(redis_server.url, key_prefix, f"redis+sentinel://127.0.0.1:{free_port()}/m",
                   code=code)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_library_lines_are_stdlib_records(caplog: pytest.LogCaptureFixture,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    """A library logger is a standard-library logger: its level filters, its records carry
    the level and a message reading ``event key=value``, and nothing is printed."""
    log = get_logger("sessionstreams.test").bind(shard=3)
    with caplog.at_level(logging.WARNING, logger=LIBRARY_LOGGER):
        log.debug("not shown", detail=1)
        log.info("not shown either")
        log.warning("lease lost", worker="w 1")
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("sessionstreams.test", logging.WARNING)
    assert record.getMessage() == "lease lost shard=3 worker='w 1'"
    assert capfd.readouterr() == ("", "")
    assert logging.getLogger(LIBRARY_LOGGER).handlers[0].__class__ is logging.NullHandler


def test_configured_process_renders_library_lines_as_json() -> None:
    """In a process of ours (configure_logging), library lines are JSON with their bound and
    explicit fields, level and timestamp; passwords in URLs are masked."""
    buf = io.StringIO()
    configure_logging(stream=buf, stdlib=True)
    log = get_logger("sessionstreams.worker").bind(worker="w1")
    log.info("worker started", shards=4, url="redis://u:secret@h:6379/0")
    log.debug("below the level")
    (line,) = [json.loads(text) for text in buf.getvalue().splitlines()]
    assert line["event"] == "worker started"
    assert (line["worker"], line["shards"], line["level"]) == ("w1", 4, "info")
    assert line["url"] == "redis://u:***@h:6379/0"
    assert "timestamp" in line


def test_configured_process_without_root_handler_still_renders(
        caplog: pytest.LogCaptureFixture) -> None:
    """configure_logging with the root logger owned by someone else renders the library's
    lines to its stream too (through the ``sessionstreams`` logger) and leaves the root alone."""
    buf = io.StringIO()
    root_handlers = list(logging.getLogger().handlers)
    configure_logging(stream=buf, stdlib=False)
    get_logger("sessionstreams.x").warning("dead letter", entry="1-0")
    assert json.loads(buf.getvalue())["entry"] == "1-0"
    assert logging.getLogger().handlers == root_handlers


def test_unreadable_adk_event_is_logged_and_read_from_its_message(
        caplog: pytest.LogCaptureFixture) -> None:
    """A stored ADK event whose kept JSON no longer validates is read from its message, with
    a warning naming the event."""
    pytest.importorskip("google.adk")
    from sessionstreams.producer._adk_events import ADK_EXTENSION, from_store_event

    event = msgspec.structs.replace(Event.message("user", "hello"),
                                    extensions={ADK_EXTENSION: b'{"nope": '})
    with caplog.at_level(logging.WARNING, logger=LIBRARY_LOGGER):
        adk = from_store_event(event)
    assert adk.id == event.id
    (record,) = caplog.records
    assert record.getMessage().startswith("unreadable ADK event kept, using its message")
    assert f"event_id={event.id}" in record.getMessage()


def test_no_module_logs_through_unconfigured_structlog() -> None:
    """Every module of the package gets its logger from common.logs.get_logger: a
    structlog.get_logger logger would print to stdout in an application that never
    configured structlog."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for part in ("common", "producer", "workers")
        for path in sorted((ROOT / part).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "structlog.get_logger(" in line or "structlog.stdlib.get_logger(" in line
    ]
    assert offenders == []
