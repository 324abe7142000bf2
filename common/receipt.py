"""Receipts: what every write returns, passable to another process as a string."""

from __future__ import annotations

import base64

import msgspec

from sessionstreams.common.errors import InvalidArgumentError
from sessionstreams.common.models import Key

_TAG = "ssr1."


class Receipt(msgspec.Struct, frozen=True):
    """Proof of a write: the session, the shard stream entry and the request id.

    In synchronous mode ``entry_id`` is empty and the write is already persisted.
    """

    key: Key
    shard: int
    entry_id: str
    rid: str

    @property
    def streamed(self) -> bool:
        """True when the write went through a shard stream (async mode)."""
        return bool(self.entry_id)

    def __str__(self) -> str:
        payload = msgspec.json.encode(
            [self.key.app_name, self.key.user_id, self.key.session_id, self.shard,
             self.entry_id, self.rid]
        )
        return _TAG + base64.urlsafe_b64encode(payload).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> Receipt:
        """Rebuild a receipt from ``str(receipt)``.

        Raises:
            InvalidArgumentError: the text is not a receipt.
        """
        if not text.startswith(_TAG):
            raise InvalidArgumentError(f"not a sessionstreams receipt: {text[:40]!r}")
        body = text[len(_TAG):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            app, user, sid, shard, entry_id, rid = msgspec.json.decode(
                raw, type=tuple[str, str, str, int, str, str]
            )
        except (ValueError, msgspec.DecodeError) as exc:
            raise InvalidArgumentError(f"malformed receipt {text[:40]!r}: {exc}") from exc
        return cls(Key(app, user, sid), shard, entry_id, rid)
