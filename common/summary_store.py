"""Storing a summary where its session lives: used by the producer and the summary workers."""

from __future__ import annotations

from sessionstreams.common.errors import CorruptDataError
from sessionstreams.common.logs import get_logger
from sessionstreams.common.models import Session, Summary
from sessionstreams.common.readpath import SessionReader
from sessionstreams.common.readpath.reader import RouteCounter

log = get_logger("sessionstreams.summary")


async def store_summary(
    reader: SessionReader,
    session: Session,
    filter_key: str,
    summary: Summary,
    cut: str = "",
    count: RouteCounter | None = None,
) -> str:
    """Store one summary in the layout the session lives in ("set if newer"); returns the
    script's status.

    ``cut`` (queued jobs) stores at most one summary per cut and filter key. A session found
    in neither layout is logged and skipped, as the Go service does.

    Raises:
        CorruptDataError: a stored key holds another Redis type or the map is invalid.
    """
    route = await reader.route_of(session)
    if count is not None:
        count("create_session_summary", route)
    status = await reader.store.engines[route].set_summary(
        session.key, filter_key=filter_key, summary=summary,
        ttl_ms=reader.settings.session_ttl_ms, cut=cut,
    )
    if status == "session_gone":
        log.warning("summary not stored: session not found", session=session.id,
                    filter_key=filter_key)
    elif status.startswith("invalid"):
        raise CorruptDataError(f"store summary of {session.key}: {status}")
    return str(status)
