"""The read path: how a session is read, with the compat fallback between the two layouts.

- :class:`SessionReader` (:mod:`.reader`) serves every read: ``get_session``,
  ``list_sessions``, ``list_app_sessions``, ``track_events``, the state scopes and the stored
  summary text, for both layouts, choosing the layout by the compat mode. The producer's
  SessionService and the summary workers both read through it.
- :mod:`.documents` turns the stored documents into Session objects (decoding, the reference
  window filtering, state-scope merging); it does no I/O.
"""

from sessionstreams.common.readpath.documents import (
    HASHIDX,
    INCARNATION,
    STORAGE_TYPE,
    ZSET,
    apply_event_filtering,
    build_session,
    decode_events,
    decode_meta,
    decode_tracks,
    newest_first,
    pick_summary,
    track_names,
)
from sessionstreams.common.readpath.reader import SessionReader, hash_reply, meta_from_doc

__all__ = [
    "HASHIDX",
    "INCARNATION",
    "STORAGE_TYPE",
    "ZSET",
    "SessionReader",
    "apply_event_filtering",
    "build_session",
    "decode_events",
    "decode_meta",
    "decode_tracks",
    "hash_reply",
    "meta_from_doc",
    "newest_first",
    "pick_summary",
    "track_names",
]
