"""The producer library: the session API for agent processes."""

from sessionstreams.common.receipt import Receipt
from sessionstreams.producer.hooks import AppendEventContext, GetSessionContext
from sessionstreams.producer.service import SessionService

__all__ = ["AppendEventContext", "GetSessionContext", "Receipt", "SessionService"]
