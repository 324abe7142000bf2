"""The producer library: the session API for agent processes."""

from common.receipt import Receipt
from producer.hooks import AppendEventContext, GetSessionContext
from producer.service import SessionService

__all__ = ["AppendEventContext", "GetSessionContext", "Receipt", "SessionService"]
