"""Logging of the library, structlog configuration of its processes, and log binding.

The library logs through the standard :mod:`logging` module, under the ``sessionstreams``
logger hierarchy, which carries a :class:`logging.NullHandler`: an application sees the
library's lines only through the handlers and levels it configured, and nothing is ever
written to stdout. :func:`get_logger` gives structlog's ``log.info("event", key=value)`` API
over such a logger; a line reaches the application's handlers as a record whose message
reads ``event key=value ...``.

:func:`configure_logging` is for processes of our own (the command line and the workers): it
renders every line, the library's and other libraries' standard-library records alike, as
JSON when stderr is not a terminal, and for the console when it is. Every line carries what
is bound where it was logged:

- ``app``, ``user``, ``session``: the session of the :class:`~producer.SessionService` call in
  progress (:func:`bind_call`, set by the method decorators of
  :mod:`sessionstreams.common.tracing`), or of
  the entry a worker logs about (:func:`session_fields`);
- ``shard``, ``worker``: bound by the worker around its apply step (structlog contextvars);
- ``trace_id``, ``span_id``: the current OpenTelemetry span, when one is recording.

Redis URLs are never logged with their password: every string value that looks like a URL
with credentials goes through :func:`~sessionstreams.common.connection.redact_url`.

Applications rendering with structlog's ``ProcessorFormatter`` get the library's lines with
these fields as structured values; applications with their own structlog configuration can add
:func:`add_call_context` and :func:`redact_secrets` to their processors to get the same fields.
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

#: The logger every logger of the library descends from.
LIBRARY_LOGGER = "sessionstreams"

# The library never writes a line the application did not ask for (no "last resort" output).
logging.getLogger(LIBRARY_LOGGER).addHandler(logging.NullHandler())

_root_handler: logging.Handler | None = None
_library_handler: logging.Handler | None = None

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


#: Fields a library line carries that the text form leaves to the application's formatter.
_TEXT_SKIPS = frozenset({"event", "level", "timestamp", "trace_id", "span_id"})


class _LogLine(dict[str, Any]):
    """The event dict of a library line, as the message of a standard-library record.

    ``ProcessorFormatter`` (:func:`configure_logging`, or an application's structlog setup)
    reads it as structured fields; any other formatter shows it as ``event key=value ...``.
    """

    def __str__(self) -> str:
        fields = " ".join(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v)
                          else f"{k}={v}"
                          for k, v in self.items() if k not in _TEXT_SKIPS)
        return f"{self.get('event', '')} {fields}".rstrip()


def _to_record(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[_LogLine], dict[str, dict[str, Any]]]:
    # What structlog's ProcessorFormatter.wrap_for_formatter hands the standard library,
    # with a message that also reads well without that formatter.
    return (_LogLine(event_dict),), {"extra": {"_logger": logger, "_name": method}}


#: What every line gets, whoever renders it: call context, trace ids, level, time, no secrets.
_SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    add_call_context,
    add_trace_ids,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]

_LIBRARY_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.stdlib.filter_by_level,  # first: a line below the level costs nothing more
    *_SHARED_PROCESSORS,
    _to_record,
]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger of the library: ``log.warning("event", key=value)`` on ``logging.getLogger(name)``.

    It does not depend on structlog's global configuration: levels and handlers are those of
    the standard-library logger (``name`` should start with ``sessionstreams.``).

    Args:
        name: the standard-library logger name.

    Returns:
        A structlog bound logger (``bind`` adds fields to every later line).
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=_LIBRARY_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger


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
    """Configure logging for a process of ours (workers, CLI commands); later calls do nothing.

    Args:
        level: the lowest level logged.
        stream: where lines go (default: stderr).
        force: configure again even when structlog is configured already.
        stdlib: also render other standard-library log records (redis-py's, for instance),
            through a handler on the root logger; None: only when the root logger has no
            handler yet (an application's logging setup is left alone). Without it, only the
            library's lines are rendered to ``stream`` (a handler on the ``sessionstreams``
            logger; the root logger's handlers still receive them).
    """
    if structlog.is_configured() and not force:
        return
    out = stream if stream is not None else sys.stderr
    shared = _SHARED_PROCESSORS
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
    _remove_handlers()
    root = logging.getLogger()
    if stdlib is None:
        stdlib = not root.handlers
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tracebacks,
                    renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    library = logging.getLogger(LIBRARY_LOGGER)
    library.setLevel(level)
    global _root_handler, _library_handler
    if stdlib:
        root.addHandler(handler)
        root.setLevel(level)
        _root_handler = handler
    else:
        library.addHandler(handler)
        _library_handler = handler


def _remove_handlers() -> None:
    global _root_handler, _library_handler
    if _root_handler is not None:
        logging.getLogger().removeHandler(_root_handler)
        _root_handler = None
    if _library_handler is not None:
        logging.getLogger(LIBRARY_LOGGER).removeHandler(_library_handler)
        _library_handler = None


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): structlog defaults, our handlers removed."""
    structlog.reset_defaults()
    _remove_handlers()
    logging.getLogger(LIBRARY_LOGGER).setLevel(logging.NOTSET)
