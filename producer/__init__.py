"""sessionstreams for agent processes: ``from sessionstreams.producer import ...`` is all a user
needs.

    import asyncio
    from sessionstreams.producer import Event, Key, SessionService, Settings

    async def main() -> None:
        async with SessionService(Settings(url="redis://127.0.0.1:6379/0")) as svc:
            s = await svc.create_session(Key("app", "user", ""))
            await svc.append_event(s, Event.message("user", "hello"))
            print(await svc.get_session(s.key, num_events=20))

    asyncio.run(main())
"""

from sessionstreams.common.errors import (
    BackpressureError,
    ClosedError,
    ConfigError,
    ConnectionFailedError,
    CorruptDataError,
    DeadLetteredError,
    DecodeError,
    InvalidArgumentError,
    InvalidKeyError,
    OutOfMemoryError,
    PersistLostError,
    PersistTimeoutError,
    PersistUncertainError,
    SessionChangedError,
    SessionExistsError,
    SessionNotFoundError,
    SessionStoreError,
    StoreTimeoutError,
    SummarizeError,
    SummaryTimeoutError,
)
from sessionstreams.common.models import Event, Key, Session, Summary, TrackEvent, UserKey
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.settings import CompatMode, Settings
from sessionstreams.producer.hooks import AppendEventContext, GetSessionContext
from sessionstreams.producer.service import SessionService

__all__ = [
    "AppendEventContext",
    "BackpressureError",
    "ClosedError",
    "CompatMode",
    "ConfigError",
    "ConnectionFailedError",
    "CorruptDataError",
    "DeadLetteredError",
    "DecodeError",
    "Event",
    "GetSessionContext",
    "InvalidArgumentError",
    "InvalidKeyError",
    "Key",
    "OutOfMemoryError",
    "PersistLostError",
    "PersistTimeoutError",
    "PersistUncertainError",
    "Receipt",
    "Session",
    "SessionChangedError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionService",
    "SessionStoreError",
    "Settings",
    "StoreTimeoutError",
    "SummarizeError",
    "Summary",
    "SummaryTimeoutError",
    "TrackEvent",
    "UserKey",
]
