"""structlog configuration and log binding.

:func:`configure_logging` sets up structlog once per process: JSON lines when stderr is not a
terminal, console output when it is. Every line carries what is bound where it was logged:

- ``app``, ``user``, ``session``: the session of the :class:`~producer.SessionService` call in
  progress (:func:`bind_call`, set by the method decorators of
  :mod:`sessionstreams.common.tracing`), or of
  the entry a worker logs about (:func:`session_fields`);
- ``shard``, ``worker``: bound by the worker around its apply step (structlog contextvars);
- ``trace_id``, ``span_id``: the current OpenTelemetry span, when one is recording.

Redis URLs are never logged with their password: every string value that looks like a URL
with credentials goes through :func:`~sessionstreams.common.connection.redact_url`.

Applications with their own structlog configuration can add :func:`add_call_context` and
:func:`redact_secrets` to their processors to get the same fields.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from sessionstreams.common._urls import redact_url

_root_handler: logging.Handler | None = None

#: The subject of the session-API call in progress (a Key, Session, UserKey or app name).
_call_subject: contextvars.ContextVar[object] = contextvars.ContextVar(
    "sessionstreams_call", default=None
)


def bind_call(subject: object) -> contextvars.Token[object]:
    """Make ``subject`` the session of the log lines that follow (until :func:`unbind_call`).

    Cheap on purpose (one context-variable set): the fields are resolved only when a line is
    logged.
    """
    return _call_subject.set(subject)


def unbind_call(token: contextvars.Token[object]) -> None:
    """Undo :func:`bind_call`."""
    _call_subject.reset(token)


def session_fields(subject: object) -> dict[str, str]:
    """``app`` / ``user`` / ``session`` of a Key, Session, UserKey, Receipt, stream entry or app
    name (nothing for anything else)."""
    if subject is None:
        return {}
    if isinstance(subject, str):
        return {"app": subject}
    fields: dict[str, str] = {}
    for name, attrs in (("app", ("app_name", "app")), ("user", ("user_id", "user")),
                        ("session", ("session_id", "sid", "id"))):
        for attr in attrs:
            value = getattr(subject, attr, None)
            if isinstance(value, str):
                fields[name] = value
                break
    if not fields and hasattr(subject, "key"):  # a Receipt
        return session_fields(subject.key)
    return fields


def add_call_context(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add the bound call's app/user/session (explicit values win)."""
    subject = _call_subject.get()
    if subject is not None:
        for name, value in session_fields(subject).items():
            event_dict.setdefault(name, value)
    return event_dict


def add_trace_ids(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` / ``span_id`` of the current recording span."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def redact_secrets(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask passwords in every string value that holds a URL."""
    for name, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[name] = redact_url(value)
    return event_dict


def _renderer(stream: TextIO) -> structlog.typing.Processor:
    if stream.isatty():
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


def configure_logging(
    level: int = logging.INFO,
    *,
    stream: TextIO | None = None,
    force: bool = False,
    stdlib: bool | None = None,
) -> None:
    """Configure structlog for a process (workers and CLI commands); later calls do nothing.

    Args:
        level: the lowest level logged.
        stream: where lines go (default: stderr).
        force: configure again even when structlog is configured already.
        stdlib: render standard-library log records (redis-py's, for instance) the same way,
            through a handler on the root logger; None: only when the root logger has no
            handler yet (an application's logging setup is left alone).
    """
    if structlog.is_configured() and not force:
        return
    out = stream if stream is not None else sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_call_context,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer = _renderer(out)
    tracebacks: list[structlog.typing.Processor] = (
        [] if out.isatty() else [structlog.processors.dict_tracebacks]
    )
    structlog.configure(
        processors=[*shared, *tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    global _root_handler
    root = logging.getLogger()
    if _root_handler is not None:
        root.removeHandler(_root_handler)
        _root_handler = None
    if stdlib is None:
        stdlib = not root.handlers
    if stdlib:
        handler = logging.StreamHandler(out)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, *tracebacks],
        ))
        root.addHandler(handler)
        root.setLevel(level)
        _root_handler = handler


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): structlog defaults, our root handler removed."""
    global _root_handler
    structlog.reset_defaults()
    if _root_handler is not None:
        logging.getLogger().removeHandler(_root_handler)
        _root_handler = None
