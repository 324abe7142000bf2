"""Low-level helpers that write JSON exactly like Go's ``encoding/json``.

Go differs from Python's stock encoders in a few places that matter for byte-exact documents:

* strings: ``<`` ``>`` ``&`` become ``\\u003c`` ``\\u003e`` ``\\u0026``, U+2028/U+2029 are
  escaped, other control characters use lower-case ``\\u00XX`` (``\\n`` ``\\r`` ``\\t`` keep
  their short forms; ``\\b`` and ``\\f`` are written short, as Go 1.22+ does), invalid UTF-8
  (a lone surrogate in a Python ``str``) becomes ``\\ufffd``;
* ``float64``: shortest round-trip digits, exponent form only below 1e-6 or from 1e21 up
  (``1e-7``, ``1e+21``), no ``.0`` on integral values;
* ``json.RawMessage``: compacted and HTML-escaped, number text kept as written;
* ``[]byte``: standard padded base64, decoded strictly (no URL-safe alphabet, no missing
  padding; only ``\\r`` and ``\\n`` are skipped).
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

__all__ = [
    "b64decode",
    "b64encode",
    "compact_raw",
    "encode_str",
    "encode_value",
    "escape_html",
    "format_float",
]

_json_encode = msgspec.json.encode
_raw_decode = msgspec.json.Decoder(msgspec.Raw).decode

_LT: Final = b"<"
_GT: Final = b">"
_AMP: Final = b"&"
_LS: Final = "\u2028".encode()
_PS: Final = "\u2029".encode()
_SURROGATE = re.compile("[\ud800-\udfff]")
_WS: Final = frozenset(b" \t\n\r")
# A JSON string token (only used on text already known to be valid JSON), or whitespace.
_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.DOTALL)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_B64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def escape_html(data: bytes) -> bytes:
    """Escape ``<`` ``>`` ``&`` U+2028 U+2029 in compact JSON text, as Go does.

    These characters can only occur inside strings of valid JSON, so a plain replace is safe.

    Args:
        data: Compact JSON text (for instance msgspec output).

    Returns:
        The text with Go's HTML-safe escapes (the same object when nothing changes).
    """
    if len(data.translate(None, b"<>&")) != len(data):  # one pass; cheaper than three `in`s
        data = data.replace(_LT, b"\\u003c").replace(_GT, b"\\u003e").replace(_AMP, b"\\u0026")
    if not data.isascii() and b"\xe2\x80" in data:
        data = data.replace(_LS, b"\\u2028").replace(_PS, b"\\u2029")
    return data


def encode_str(s: str) -> bytes:
    """Encode a string as a Go JSON string literal (quotes included).

    Args:
        s: The string; lone surrogates stand for invalid UTF-8 and are written ``\\ufffd``.

    Returns:
        The JSON text, e.g. ``b'"a\\\\u003cb"'`` for ``"a<b"``.
    """
    try:
        return escape_html(_json_encode(s))
    except UnicodeEncodeError:
        parts = [escape_html(_json_encode(p))[1:-1] for p in _SURROGATE.split(s)]
        return b'"' + b"\\ufffd".join(parts) + b'"'


def format_float(f: float) -> str:
    """Format a float64 exactly like Go's ``encoding/json``.

    Args:
        f: A finite float.

    Returns:
        Go's text: ``-2``, ``0.000001``, ``1e-7``, ``1e+21``, ``123456789``, ``-0``.

    Raises:
        ValueError: ``f`` is NaN or infinite (Go refuses to encode those).
    """
    if not math.isfinite(f):
        raise ValueError(f"json: unsupported value: {f!r}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    r = repr(abs(f))
    mant, _, e = r.partition("e")
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    exp = (int(e) if e else 0) - len(fp)  # value == int(digits) * 10**exp
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    sign = "-" if f < 0 else ""
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        x = exp + len(digits) - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e-{-x}" if x < 0 else f"{sign}{mantissa}e+{x:02d}"
    if exp >= 0:
        return sign + digits + "0" * exp
    point = len(digits) + exp
    if point > 0:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return f"{sign}0.{'0' * -point}{digits}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def _validate(data: bytes) -> bytes:
    """Return ``data`` without surrounding whitespace if it is one valid JSON value."""
    try:
        return bytes(_raw_decode(data))
    except (msgspec.DecodeError, ValueError):
        pass
    # msgspec refuses lone surrogate escapes, which Go's scanner accepts.
    text = data.decode("utf-8", "surrogateescape")
    json.loads(text, parse_constant=_reject_constant)
    return data.strip(b" \t\n\r")


def compact_raw(data: bytes | bytearray | memoryview | str) -> bytes:
    """Compact and HTML-escape raw JSON text like Go does when it marshals a RawMessage.

    Whitespace outside strings is removed; ``<>&`` U+2028 U+2029 inside strings are escaped;
    everything else (number text such as ``1.50``, other escapes) is kept as written.

    Args:
        data: One JSON value.

    Returns:
        The compact Go-style text.

    Raises:
        ValueError: ``data`` is not a single valid JSON value.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    raw = _validate(raw)
    # Whitespace inside strings is common (message text); the per-token rewrite runs only
    # when some lies outside them.
    if not _WS.isdisjoint(raw) and not _WS.isdisjoint(_STRING.sub(b"", raw)):
        raw = _TOKEN.sub(lambda m: m.group(1) or b"", raw)
    return escape_html(raw)


def b64encode(data: bytes) -> str:
    """Standard base64 with ``=`` padding (Go's ``[]byte`` JSON form)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Decode base64 exactly as Go's ``base64.StdEncoding`` does for ``[]byte`` fields.

    Args:
        text: Standard-alphabet base64 with padding; ``\\r`` and ``\\n`` are skipped.

    Returns:
        The decoded bytes.

    Raises:
        ValueError: URL-safe alphabet, missing padding, other whitespace or garbage.
    """
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    if b"\r" in raw or b"\n" in raw:
        raw = raw.replace(b"\r", b"").replace(b"\n", b"")
    if _B64.match(raw) is None:
        raise ValueError(f"illegal base64 data: {raw[:40]!r}")
    return binascii.a2b_base64(raw)


def encode_value(value: Any) -> bytes:
    """Encode a JSON-like value as Go encodes ``any`` (a ``map[string]any`` member).

    Numbers are float64 (``2.0`` -> ``2``), map keys are sorted, strings are Go-escaped.

    Args:
        value: ``None``, bool, int, float, str, a sequence or a str-keyed mapping of these.

    Returns:
        Compact Go-style JSON text.

    Raises:
        TypeError: An unsupported value type.
        ValueError: A NaN or infinite number.
    """
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def _encode_into(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, str):
        out.append(encode_str(value))
    elif isinstance(value, int | float):
        out.append(format_float(float(value)).encode())
    elif isinstance(value, Mapping):
        out.append(b"{")
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(b",")
            out.append(encode_str(key))
            out.append(b":")
            _encode_into(value[key], out)
        out.append(b"}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _encode_into(item, out)
        out.append(b"]")
    elif isinstance(value, msgspec.Raw):
        out.append(compact_raw(bytes(value)))
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a Go JSON value")


# ---------------------------------------------------------------------------------------------
# A small exact parser for the decoders' slow path
# ---------------------------------------------------------------------------------------------
class Num(str):
    """A JSON number, kept as its literal text (Go decides int vs float per field)."""

    __slots__ = ()


class Obj:
    """A JSON object as Go sees it: members in order, duplicates kept, with raw value spans.

    Attributes:
        pairs: ``(key, value, start, end)`` tuples; ``text[start:end]`` is the raw value.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any, int, int]]) -> None:
        self.pairs = pairs


_P_WS = re.compile(r"[ \t\n\r]*")
_P_STR = re.compile(r'"((?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)"')
_P_NUM = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def doc_text(data: bytes | bytearray | memoryview | str) -> str:
    """The document as ``str``; invalid UTF-8 bytes become lone surrogates (``\\udcXX``)."""
    if isinstance(data, str):
        return data
    return bytes(data).decode("utf-8", "surrogateescape")


def span_bytes(text: str) -> bytes:
    """Back from :func:`doc_text` to the original bytes of a span."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _unquote(body: str) -> str:
    # Go turns invalid UTF-8 and unpaired surrogate escapes into U+FFFD.
    s = json.loads(f'"{body}"') if "\\" in body else body
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def parse_tree(text: str) -> Any:
    """Parse one JSON document into ``None``/bool/:class:`Num`/str/list/:class:`Obj`.

    Raises:
        ValueError: The text is not exactly one JSON value (Go's syntax rules).
    """
    value, i = _parse_value(text, _P_WS.match(text, 0).end())  # type: ignore[union-attr]
    i = _P_WS.match(text, i).end()  # type: ignore[union-attr]
    if i != len(text):
        raise ValueError(f"invalid character after top-level value at offset {i}")
    return value


def _parse_value(s: str, i: int) -> tuple[Any, int]:
    c = s[i : i + 1]
    if c == '"':
        m = _P_STR.match(s, i)
        if m is None:
            raise ValueError(f"invalid string at offset {i}")
        return _unquote(m.group(1)), m.end()
    if c == "{":
        return _parse_object(s, i)
    if c == "[":
        return _parse_array(s, i)
    for lit, val in (("true", True), ("false", False), ("null", None)):
        if s.startswith(lit, i):
            return val, i + len(lit)
    m = _P_NUM.match(s, i)
    if m is None:
        raise ValueError(f"invalid character {c!r} at offset {i}")
    return Num(m.group()), m.end()


def _parse_object(s: str, i: int) -> tuple[Obj, int]:
    ws = _P_WS.match
    pairs: list[tuple[str, Any, int, int]] = []
    i = ws(s, i + 1).end()  # type: ignore[union-attr]
    if s[i : i + 1] == "}":
        return Obj(pairs), i + 1
    while True:
        m = _P_STR.match(s, i)
        if m is None:
            raise ValueError(f"expected an object key at offset {i}")
        key = _unquote(m.group(1))
        i = ws(s, m.end()).end()  # type: ignore[union-attr]
        if s[i : i + 1] != ":":
            raise ValueError(f"expected ':' at offset {i}")
        start = ws(s, i + 1).end()  # type: ignore[union-attr]
        value, end = _parse_value(s, start)
        pairs.append((key, value, start, end))
        i = ws(s, end).end()  # type: ignore[union-attr]
        c = s[i : i + 1]
        if c == "}":
            return Obj(pairs), i + 1
        if c != ",":
            raise ValueError(f"expected ',' or '}}' at offset {i}")
        i = ws(s, i + 1).end()  # type: ignore[union-attr]


def _parse_array(s: str, i: int) -> tuple[list[Any], int]:
    ws = _P_WS.match
    items: list[Any] = []
    i = ws(s, i + 1).end()  # type: ignore[union-attr]
    if s[i : i + 1] == "]":
        return items, i + 1
    while True:
        value, i = _parse_value(s, i)
        items.append(value)
        i = ws(s, i).end()  # type: ignore[union-attr]
        c = s[i : i + 1]
        if c == "]":
            return items, i + 1
        if c != ",":
            raise ValueError(f"expected ',' or ']' at offset {i}")
        i = ws(s, i + 1).end()  # type: ignore[union-attr]
