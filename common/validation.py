"""Checks of what a write will encode, made before anything is acknowledged or written.

The models are msgspec Structs, which do not check their field types on construction or
assignment: ``event.id = 7`` or ``event.author = b"bob"`` is accepted by Python, then encoded
as JSON that Go (and our reader) refuses or reads as something else (``"Ym9i"``). Every write
runs these checks first, in both persistence modes, so bad input is refused with
:class:`~sessionstreams.common.errors.InvalidArgumentError` (or
:class:`~sessionstreams.common.errors.InvalidKeyError` for ids and state keys) and nothing is
written or acknowledged. What is accepted is exactly what reads back equal:

* every field holds its declared type (``str`` is a ``str``, never ``bytes``; ints fit Go's
  int64; bools are bools; nested structs are the model classes);
* strings are valid Unicode (a lone surrogate is not: Go would store U+FFFD instead);
* floats are finite (Go cannot encode NaN or infinities);
* times are :class:`~sessionstreams.common.gotime.GoTime` values Go can write (years 0-9999)
  with a zone offset of whole minutes (Go writes minutes only: another offset reads back as
  another text);
* raw JSON (``extensions`` values, a track ``payload``) is one valid JSON value (found by
  :func:`encode_checked`), and raw JSON and ``extra_fields`` nest at most :data:`MAX_DEPTH`
  levels (deeper documents could not be read back);
* state keys are non-empty and name a field after ``app:`` / ``user:``.

``FunctionDef.arguments`` may also be UTF-8 ``bytes`` (Go's ``[]byte``, written as a string).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from sessionstreams.common._codec import field_kind
from sessionstreams.common.errors import InvalidArgumentError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, FunctionDef, ToolCall, TrackEvent
from sessionstreams.common.state import check_state_key

__all__ = ["MAX_DEPTH", "check_event", "check_track_event", "encode_checked", "score_ns"]

#: Deepest nesting of raw JSON and ``extra_fields`` values accepted (the reader's exact
#: decoder recurses once per level).
MAX_DEPTH: Final = 200

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_BYTES = (bytes, bytearray, memoryview)
_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _Bad(Exception):
    """A refused value; ``path`` is filled in (innermost first) as it unwinds."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


Kind = tuple[Any, ...]
_MISSING: Final[Any] = object()
_OVERRIDES: Final[dict[tuple[type, str], Kind]] = {
    (Event, "extensions"): ("opt", ("map", ("opt", ("raw",)))),
    (TrackEvent, "payload"): ("opt", ("raw",)),
    (ToolCall, "extra_fields"): ("opt", ("map", ("any",))),
    (FunctionDef, "arguments"): ("text",),
}
_SIMPLE: Final[dict[Any, str]] = {
    str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes", GoTime: "time",
}
_COMPILED: dict[type, Callable[[Any, int], None]] = {}


def _kind(tp: Any) -> Kind:
    return field_kind(tp, _SIMPLE)


def _default(field: msgspec.structs.FieldInfo) -> Any:
    """The field's default when it is an immutable scalar (such values need no check)."""
    value = field.default
    if value is msgspec.NODEFAULT and field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    if value is None or type(value) in (str, int, bool, float, GoTime):
        return value
    return _MISSING


# Go can write the years 0-9999 in any zone offset below a day: instants between these bounds
# (a day inside the range) need no formatting to be sure of it.
_TIME_LO: Final = GoTime.parse("0001-01-02T00:00:00Z").unix_ns
_TIME_HI: Final = GoTime.parse("9999-12-30T00:00:00Z").unix_ns

#: Per kind, a cheap expression over a value ``{v}`` that is true for the usual valid values;
#: a value for which it is false gets the full check (which finds the reason, or accepts it).
_FAST: Final[dict[str, str]] = {
    "str": "type({v}) is str and {v}.isascii()",
    "text": "type({v}) is str and {v}.isascii()",
    "bool": "type({v}) is bool",
    "int": "type({v}) is int and -9223372036854775808 <= {v} <= 9223372036854775807",
    "bytes": "type({v}) is bytes",
    "time": "type({v}) is GoTime and _TIME_LO <= {v}.unix_ns <= _TIME_HI"
            " and {v}.offset_s % 60 == 0 and -86400 < {v}.offset_s < 86400",
}


def _fast(kind: Kind, var: str) -> str | None:
    """The cheap test of ``kind`` over the variable ``var``, or None when there is none."""
    if kind[0] == "opt":
        inner = _fast(kind[1], var)
        return f"{var} is None" + (f" or ({inner})" if inner else "")
    template = _FAST.get(kind[0])
    return template.format(v=var) if template else None


def _compile(cls: type) -> Callable[[Any, int], None]:
    """A checker of one struct class, unrolled over its fields, with loops for lists of
    structs and maps of plain values (this runs on every append, so the usual values cost an
    attribute load and a type test each). Anything unusual goes to the full check of the
    field, which names the offending value."""
    names: dict[str, Any] = {"_slow": _slow, "_Bad": _Bad, "GoTime": GoTime,
                             "_TIME_LO": _TIME_LO, "_TIME_HI": _TIME_HI}
    lines = ["def check(v, depth):"]
    for i, f in enumerate(msgspec.structs.fields(cls)):
        kind = _OVERRIDES.get((cls, f.name)) or _kind(f.type)
        names[f"k{i}"] = kind
        names[f"d{i}"] = _default(f)
        slow = f"_slow(k{i}, x, depth, {f.encode_name!r})"
        inner = kind[1] if kind[0] == "opt" else kind
        fast = _fast(kind, "x")
        lines.append(f"    x = v.{f.name}")
        lines.append(f"    if not (x is d{i}" + (f" or {fast}" if fast else "") + "):")
        element: Kind = inner[1] if inner[0] in ("list", "map") else ("none",)
        if inner[0] == "struct" or (inner[0] == "list" and element[0] == "struct"):
            struct = inner[1] if inner[0] == "struct" else element[1]
            names[f"c{i}"] = struct
            names[f"s{i}"] = _checker(struct)
            if inner[0] == "struct":
                lines += [f"        if type(x) is c{i}:", "            try:",
                          f"                s{i}(x, depth)", "            except _Bad:",
                          f"                {slow}", "        else:", f"            {slow}"]
            else:
                lines += ["        if type(x) is list:", "            for y in x:",
                          f"                if type(y) is not c{i}:",
                          f"                    {slow}", "                    break",
                          "                try:", f"                    s{i}(y, depth)",
                          "                except _Bad:", f"                    {slow}",
                          "        else:", f"            {slow}"]
        elif inner[0] == "map" and _fast(element, "y"):
            test = f"type(k) is str and k.isascii() and ({_fast(element, 'y')})"
            lines += ["        if type(x) is dict:", "            for k, y in x.items():",
                      f"                if not ({test}):", f"                    {slow}",
                      "                    break", "        else:", f"            {slow}"]
        else:
            lines.append(f"        {slow}")
    lines.append("    return None")
    exec("\n".join(lines), names)  # code generated from the model's own fields
    checker: Callable[[Any, int], None] = names["check"]
    return checker


def _slow(kind: Kind, x: Any, depth: int, name: str) -> None:
    try:
        _CHECKS[kind[0]](kind, x, depth)
    except _Bad as bad:
        bad.path.append(f".{name}")
        raise


# -- the checks, one per kind ----------------------------------------------------------------
def _str(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, str):
        raise _Bad(f"must be a str, not {type(v).__name__}")
    if not v.isascii():
        _unicode(v)


def _unicode(v: str) -> None:
    try:
        v.encode()
    except UnicodeEncodeError:
        raise _Bad("is not valid Unicode (it holds a lone surrogate)") from None


def _text(kind: Kind, v: Any, depth: int) -> None:
    if isinstance(v, _BYTES):
        try:
            bytes(v).decode()
        except UnicodeDecodeError:
            raise _Bad("must be a str or UTF-8 bytes") from None
        return
    _str(kind, v, depth)


def _int(kind: Kind, v: Any, depth: int) -> None:
    if type(v) is bool or not isinstance(v, int):
        raise _Bad(f"must be an int, not {type(v).__name__}")
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise _Bad(f"{v} does not fit a 64-bit integer")


def _float(kind: Kind, v: Any, depth: int) -> None:
    if type(v) is bool or not isinstance(v, int | float):
        raise _Bad(f"must be a float, not {type(v).__name__}")
    _finite(v)


def _finite(v: int | float) -> None:
    try:
        ok = math.isfinite(v)
    except OverflowError:
        ok = False
    if not ok:
        raise _Bad(f"{v!r} is not a finite float64 (Go cannot encode it)")


def _bool(kind: Kind, v: Any, depth: int) -> None:
    if type(v) is not bool:
        raise _Bad(f"must be a bool, not {type(v).__name__}")


def _bytes(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, _BYTES):
        raise _Bad(f"must be bytes, not {type(v).__name__}")


def _time(kind: Kind, v: Any, depth: int) -> None:
    if type(v) is not GoTime:
        raise _Bad(f"must be a GoTime, not {type(v).__name__}")
    if v.offset_s % 60:
        raise _Bad(f"has a zone offset of {v.offset_s} s, not whole minutes: Go writes the "
                   "offset in minutes, so it would not read back as written")
    try:
        v.to_text()
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _opt(kind: Kind, v: Any, depth: int) -> None:
    if v is not None:
        inner = kind[1]
        _CHECKS[inner[0]](inner, v, depth)


def _list(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, list | tuple):
        raise _Bad(f"must be a list, not {type(v).__name__}")
    inner = kind[1]
    check = _CHECKS[inner[0]]
    for i, x in enumerate(v):
        try:
            check(inner, x, depth)
        except _Bad as bad:
            bad.path.append(f"[{i}]")
            raise


def _map(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, dict):
        raise _Bad(f"must be a dict, not {type(v).__name__}")
    inner = kind[1]
    check = _CHECKS[inner[0]]
    for k, x in v.items():
        try:
            _str(("str",), k, depth)
            check(inner, x, depth)
        except _Bad as bad:
            bad.path.append(f"[{k!r}]")
            raise


def _set(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, set | frozenset | list | tuple):
        raise _Bad(f"must be a set, not {type(v).__name__}")
    for x in v:
        _str(("str",), x, depth)


def _checker(cls: type) -> Callable[[Any, int], None]:
    checker = _COMPILED.get(cls)
    if checker is None:
        checker = _COMPILED[cls] = _compile(cls)
    return checker


def _struct(kind: Kind, v: Any, depth: int) -> None:
    cls = kind[1]
    if type(v) is not cls:
        raise _Bad(f"must be a {cls.__name__}, not {type(v).__name__}")
    _checker(cls)(v, depth)


def _raw(kind: Kind, v: Any, depth: int) -> None:
    if not isinstance(v, _BYTES):
        raise _Bad(f"must be bytes of JSON text, not {type(v).__name__}")
    data = bytes(v)
    brackets = data.translate(None, _BRACKETS)
    if len(brackets) > 2 * MAX_DEPTH and _raw_depth(data) > MAX_DEPTH:
        raise _Bad(f"nests deeper than {MAX_DEPTH} levels")
    # Whether it is one valid JSON value is found when it is encoded (encode_checked): the
    # encoder validates raw JSON anyway, and checking twice would cost every large document.


def _raw_depth(data: bytes) -> int:
    """The deepest nesting of a JSON text (brackets inside strings do not count)."""
    outside = _JSON_STRING.sub(b"", data).translate(None, _BRACKETS)
    depth = deepest = 0
    for byte in outside:
        if byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _any(kind: Kind, v: Any, depth: int) -> None:
    """A value Go holds in an ``any``: null, bool, number, str, list, str-keyed map."""
    if depth > MAX_DEPTH:
        raise _Bad(f"nests deeper than {MAX_DEPTH} levels")
    if v is None or type(v) is bool:
        return
    if isinstance(v, str):
        _str(kind, v, depth)
    elif isinstance(v, int | float):
        _finite(v)
    elif isinstance(v, Mapping):
        _map(("map", kind), v if isinstance(v, dict) else dict(v), depth + 1)
    elif isinstance(v, list | tuple):
        _list(("list", kind), v, depth + 1)
    else:
        raise _Bad(f"{type(v).__name__} is not a JSON value")


_CHECKS: Final[dict[str, Callable[[Kind, Any, int], None]]] = {
    "str": _str, "text": _text, "int": _int, "float": _float, "bool": _bool, "bytes": _bytes,
    "time": _time, "opt": _opt, "list": _list, "map": _map, "set": _set, "struct": _struct,
    "raw": _raw, "any": _any,
}


# -- public checks ---------------------------------------------------------------------------
def _run(kind: Kind, value: Any, what: str) -> None:
    try:
        _CHECKS[kind[0]](kind, value, 0)
    except _Bad as bad:
        raise InvalidArgumentError(f"{what}{''.join(reversed(bad.path))} {bad.reason}") from None


def check_event(event: Event) -> None:
    """Refuse an event that would not read back as written (see the module docstring).

    Raises:
        InvalidArgumentError: naming the offending field, e.g. ``event.id must be a str``.
        InvalidKeyError: a state-delta key is empty or names no field.
    """
    _run(("struct", Event), event, "event")
    for k in event.state_delta or ():
        check_state_key(k)


def check_track_event(track_event: TrackEvent) -> None:
    """Refuse a track event that would not read back as written.

    Raises:
        InvalidArgumentError: naming the offending field.
    """
    _run(("struct", TrackEvent), track_event, "track event")


def encode_checked(encode: Callable[[], bytes], what: str) -> bytes:
    """Run an encoder on checked input; any refusal left becomes InvalidArgumentError.

    Raises:
        InvalidArgumentError: the encoder refused the value.
    """
    try:
        return encode()
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise InvalidArgumentError(f"cannot encode {what}: {exc}") from exc


def score_ns(t: GoTime) -> int:
    """A time's index score in ns, held to the int64 range (Go's ``UnixNano`` range: years
    1678-2262); times beyond sort at the ends, in append order."""
    return min(max(t.unix_ns, _INT64_MIN), _INT64_MAX)
