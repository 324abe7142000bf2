"""Which ADK events the stored event gives back whole, found without dumping them.

An ADK event needs no patch beside the stored event when its JSON equals the JSON of the ADK
event rebuilt from the stored one. Dumping the event to find out costs more than the rest of
storing it; :func:`is_plain` answers for the common events by looking at the values instead:
a message of one text part (or no content), a state delta of plain JSON values, every other
field at its default. It answers True only where the dump would equal the rebuilt JSON; for
anything else (another value type, a subclass, an extra field, function calls) it answers
False and the caller compares the dumps.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import pydantic
from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions as AdkActions
from google.genai import types

from sessionstreams.producer._interop import ns_from_seconds, seconds_from_ns

__all__ = ["is_plain"]

#: Event fields the stored event carries (checked one by one below).
_EVENT_MAPPED = frozenset({"id", "invocation_id", "author", "timestamp", "branch", "content",
                           "actions"})
#: Action fields the stored event carries.
_ACTIONS_MAPPED = frozenset({"state_delta", "skip_summarization"})
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


class _Defaults:
    """The fields of a model class not carried by the stored event, with a default
    instance's values: None-valued ones checked at once, the others one by one."""

    def __init__(self, default: pydantic.BaseModel, mapped: frozenset[str]) -> None:
        values = {k: v for k, v in default.__dict__.items() if k not in mapped}
        none = [k for k, v in values.items() if v is None]
        self.none_count = len(none)
        self.get_none: Callable[[dict[str, Any]], Any] = (
            operator.itemgetter(*none) if len(none) > 1 else lambda d: tuple(d[k] for k in none))
        self.others = [(k, _checker(v)) for k, v in values.items() if v is not None]

    def hold(self, model: pydantic.BaseModel) -> bool:
        """``model`` has exactly the default values in these fields."""
        values = model.__dict__
        if self.get_none(values).count(None) != self.none_count:
            return False
        return all(check(values[name]) for name, check in self.others)


def _checker(default: Any) -> Callable[[Any], bool]:
    """A test that a value equals ``default`` with the same types all the way down."""
    kind = type(default)
    if isinstance(default, pydantic.BaseModel):
        fields = _Defaults(default, frozenset())
        return lambda v: type(v) is kind and not v.__pydantic_extra__ and fields.hold(v)
    if kind in (dict, list) and not default:
        return lambda v: type(v) is kind and not v
    return lambda v: _same(v, default)


_EVENT = _Defaults(AdkEvent(author="", invocation_id=""), _EVENT_MAPPED)
_ACTIONS = _Defaults(AdkActions(), _ACTIONS_MAPPED)
_CONTENT_FIELDS = len(types.Content.model_fields)
_PART_FIELDS = len(types.Part.model_fields)


def is_plain(event: AdkEvent) -> bool:
    """The stored event of ``event`` gives it back whole (its JSON as pydantic dumps it,
    without nulls, equals the rebuilt event's); False also when unsure."""
    if type(event) is not AdkEvent or event.__pydantic_extra__ or not _EVENT.hold(event):
        return False
    if not (type(event.id) is str and type(event.invocation_id) is str
            and type(event.author) is str and event.author):
        return False
    branch = event.branch
    if branch is not None and (type(branch) is not str or not branch):
        return False
    ts = event.timestamp
    if type(ts) is not float or seconds_from_ns(ns_from_seconds(ts)) != ts:
        return False
    return _plain_content(event.content) and _plain_actions(event.actions)


def _plain_content(content: types.Content | None) -> bool:
    """No content, or one part of non-empty text alone, of role ``user`` or ``model``."""
    if content is None:
        return True
    if type(content) is not types.Content or content.__pydantic_extra__ or \
            content.role not in ("user", "model") or \
            list(content.__dict__.values()).count(None) != _CONTENT_FIELDS - 2:
        return False
    parts = content.parts
    if type(parts) is not list or len(parts) != 1:
        return False
    part = parts[0]
    if type(part) is not types.Part or part.__pydantic_extra__:
        return False
    text = part.text
    return type(text) is str and bool(text) and \
        list(part.__dict__.values()).count(None) == _PART_FIELDS - 1


def _plain_actions(actions: AdkActions | None) -> bool:
    """Actions of a state delta of plain JSON values, skip_summarization unset or True, the
    rest at their defaults."""
    if type(actions) is not AdkActions or actions.__pydantic_extra__ or \
            not _ACTIONS.hold(actions):
        return False
    if actions.skip_summarization not in (None, True) or \
            type(actions.skip_summarization) not in (type(None), bool):
        return False
    delta = actions.state_delta
    return type(delta) is dict and all(type(k) is str and _json(v) for k, v in delta.items())


def _json(value: Any) -> bool:
    """``value`` is JSON that its JSON text decodes back to (same types, same values)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _json(v) for k, v in value.items())
    return False


def _same(value: Any, default: Any) -> bool:
    """``value`` equals ``default`` with the same types all the way down."""
    if type(value) is not type(default):
        return False
    if isinstance(value, pydantic.BaseModel):
        return not value.__pydantic_extra__ and _same(value.__dict__, default.__dict__)
    if type(value) is dict:
        return value.keys() == default.keys() and all(
            _same(v, default[k]) for k, v in value.items())
    if type(value) is list:
        return len(value) == len(default) and all(
            _same(a, b) for a, b in zip(value, default, strict=True))
    return bool(value == default)
