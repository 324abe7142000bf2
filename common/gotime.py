"""Go's ``time.Time`` as a small immutable value: an instant in nanoseconds plus a zone offset.

Go writes times as RFC 3339 with up to nine fractional digits and keeps the writer's offset
(``2025-01-02T11:04:08.987654321+08:00``). Python's ``datetime`` holds microseconds only, and
msgspec rounds nanoseconds away, which would change event order (ZSET scores are ``UnixNano``).
:class:`GoTime` keeps ``(unix_ns, offset_s)`` exactly, parses what Go's ``Time.UnmarshalJSON``
accepts and formats exactly like Go's ``Time.MarshalJSON``.
"""

from __future__ import annotations

import datetime as _dt
import re
import time as _time
from functools import lru_cache
from typing import Any, ClassVar, Final

from sessionstreams.common.errors import DecodeError

__all__ = ["GoTime"]

_NS: Final = 1_000_000_000
_DAY_S: Final = 86_400
# Seconds from 0001-01-01T00:00:00Z (Go's zero time) to the Unix epoch.
_ZERO_UNIX_S: Final = -62_135_596_800
_EPOCH_UTC: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

# Go's time.Parse(RFC3339, s) as Time.UnmarshalJSON uses it (fast path + fallback, Go >= 1.20):
# 4-digit year, 2-digit month/day/minute/second, 1- or 2-digit hour (the fallback's quirk),
# an optional fraction after '.' or ',', then 'Z' or a +hh:mm / -hh:mm offset. Case-sensitive.
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d?):(\d\d):(\d\d)(?:[.,](\d+))?(?:Z|([+-])(\d\d):(\d\d))\Z",
    re.ASCII,
)
_BAD_DATE: Final = -(1 << 62)
_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


@lru_cache(maxsize=512)
def _date_days(y: int, m: int, d: int) -> int:
    """Validated day number of a date, or ``_BAD_DATE`` when month or day is out of range."""
    if not 1 <= m <= 12:
        return _BAD_DATE
    dim = _DAYS_IN_MONTH[m]
    if m == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        dim = 29
    if not 1 <= d <= dim:
        return _BAD_DATE
    return _days_from_civil(y, m, d)


_DATES: dict[int, str] = {}


def _date_text(days: int) -> str:
    """``YYYY-MM-DDT`` for a day number (Go's appendInt(year, 4) pads to four digits).

    Results are memoised in ``_DATES``, which is cleared when it reaches 4096 entries.
    """
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    if not 0 <= y <= 9999:
        raise ValueError(f"Time.MarshalJSON: year {y} outside of range [0,9999]")
    text = f"{y:04d}-{m:02d}-{d:02d}T"
    if len(_DATES) >= 4096:
        _DATES.clear()
    _DATES[days] = text
    return text


@lru_cache(maxsize=64)
def _zone_text(offset_s: int) -> str:
    """Go's ``Z07:00`` zone for an offset; seconds are cut off, hour must be below 24."""
    if offset_s == 0:
        return "Z"
    sign = "-" if offset_s < 0 else "+"
    minutes = abs(offset_s) // 60
    if minutes // 60 >= 24:
        raise ValueError("Time.MarshalJSON: timezone hour outside of range [0,23]")
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


_2D: Final = tuple(f"{i:02d}" for i in range(100))
_SCALE: Final = (0, 10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 100, 10, 1)
_ZONE = re.compile(r"[+-]\d\d:\d\d\Z", re.ASCII)


# Lookup tables for the fast parser: "HH:MM:" -> seconds, "SS" -> seconds (fixed size), and
# memos "YYYY-MM-DDT" -> day number and "YYYY-MM-DDTHH:MM:SS" -> Unix seconds (each cleared
# when it reaches _DAYS_OF_MAX entries, so memory stays bounded).
_HM_S: Final = {f"{h:02d}:{m:02d}:": h * 3600 + m * 60 for h in range(24) for m in range(60)}
_SS_S: Final = {f"{s:02d}": s for s in range(60)}
_DAYS_OF: dict[str, int] = {}
_DAYS_OF_MAX: Final = 4096
_DATE_PREFIX = re.compile(r"\d{4}-\d\d-\d\dT\Z", re.ASCII)


_SECS_OF: dict[str, int] = {}


def _head_seconds(head: str) -> int | None:
    """Unix seconds of a valid ``YYYY-MM-DDTHH:MM:SS`` (memoised), or None."""
    days = _DAYS_OF.get(head[:11])
    if days is None:
        days = _date_prefix_days(head[:11])
    hm = _HM_S.get(head[11:17])
    sec = _SS_S.get(head[17:19])
    if days is None or hm is None or sec is None:
        return None
    secs = days * 86_400 + hm + sec
    if len(_SECS_OF) >= _DAYS_OF_MAX:
        _SECS_OF.clear()
    _SECS_OF[head] = secs
    return secs


def _date_prefix_days(prefix: str) -> int | None:
    """Day number of a valid ``YYYY-MM-DDT`` prefix (memoised), or None."""
    if _DATE_PREFIX.match(prefix) is None:
        return None
    days = _date_days(int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]))
    if days == _BAD_DATE:
        return None
    if len(_DAYS_OF) >= _DAYS_OF_MAX:
        _DAYS_OF.clear()
    _DAYS_OF[prefix] = days
    return days


def _zone_seconds(zone: str) -> int | None:
    """Offset of a ``±hh:mm`` zone (Go allows hh <= 24 and mm <= 60 here), or None."""
    if _ZONE.match(zone) is None:
        return None
    hh = int(zone[1:3])
    mm = int(zone[4:6])
    if hh > 24 or mm > 60:
        return None
    off = (hh * 60 + mm) * 60
    return -off if zone[0] == "-" else off


# Every valid "±hh:mm" (a fixed, bounded set: 2 * 25 * 61 entries).
_ZONES: Final = {
    z: off
    for z in (f"{sg}{hh:02d}:{mm:02d}" for sg in "+-" for hh in range(25) for mm in range(61))
    if (off := _zone_seconds(z)) is not None
}


def _parse_slow(text: str) -> GoTime:
    """The general parser (comma separator, one-digit hour, errors)."""
    m = _RFC3339.match(text) if type(text) is str else None
    if m is None:
        raise DecodeError(f"cannot parse {text!r} as RFC 3339 time", text)
    y, mo, d, hh, mi, ss, frac, sign, oh, om = m.groups()
    days = _date_days(int(y), int(mo), int(d))
    h = int(hh)
    mn = int(mi)
    s = int(ss)
    if days == _BAD_DATE or h > 23 or mn > 59 or s > 59:
        raise DecodeError(f"RFC 3339 time {text!r} has a field out of range", text)
    ns = int(frac[:9].ljust(9, "0")) if frac else 0
    secs = days * _DAY_S + h * 3600 + mn * 60 + s
    if sign is None:
        return _make(secs * _NS + ns, 0)
    ohi = int(oh)
    omi = int(om)
    if ohi > 24 or omi > 60:
        raise DecodeError(f"RFC 3339 time {text!r} has an offset out of range", text)
    off = (ohi * 60 + omi) * 60
    if sign == "-":
        off = -off
    return _make((secs - off) * _NS + ns, off)


class GoTime:
    """An instant with nanosecond precision and the zone offset it was written with.

    Equality and hashing use both fields (like Go's ``==`` on the wire value); ordering uses
    the instant only (like Go's ``Before``/``After``). Use :meth:`equal` to compare instants.

    Args:
        unix_ns: Nanoseconds since the Unix epoch (any Python int; the zero time is
            ``-62135596800000000000``).
        offset_s: Zone offset in seconds east of UTC.
    """

    __slots__ = ("_ns", "_off")

    ZERO: ClassVar[GoTime]
    _ns: int
    _off: int

    def __init__(self, unix_ns: int, offset_s: int = 0) -> None:
        self._ns = int(unix_ns)
        self._off = int(offset_s)

    @property
    def unix_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""
        return self._ns

    @property
    def offset_s(self) -> int:
        """Zone offset in seconds east of UTC."""
        return self._off

    def __reduce__(self) -> tuple[type[GoTime], tuple[int, int]]:
        return (GoTime, (self._ns, self._off))

    def __copy__(self) -> GoTime:
        return self

    def __deepcopy__(self, memo: Any) -> GoTime:
        return self

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def now(cls) -> GoTime:
        """The current time in UTC with nanoseconds (``time.time_ns()``)."""
        return _make(_time.time_ns(), 0)

    @classmethod
    def parse(cls, text: str) -> GoTime:
        """Parse an RFC 3339 timestamp exactly as Go's ``Time.UnmarshalJSON`` does.

        Accepted: ``Z`` or ``±hh:mm``, an optional fraction of any length (cut to nine
        digits), ``.`` or ``,`` as decimal separator. Rejected: a missing zone, lower-case
        ``t``/``z``, a space separator, ``+0800``, out-of-range fields.

        Args:
            text: The timestamp text (the JSON string's content).

        Returns:
            The parsed time, keeping the offset it was written with.

        Raises:
            DecodeError: Go would refuse the text.
        """
        # Fast path for the shapes Go and most writers produce; anything else (or any doubt)
        # goes to the general parser, which also produces the errors.
        if text == "0001-01-01T00:00:00Z":
            return _ZERO_TIME
        if type(text) is not str or len(text) < 20 or not text.isascii():
            return _parse_slow(text)
        secs = _SECS_OF.get(text[:19])
        if secs is None:
            secs = _head_seconds(text[:19])
            if secs is None:
                return _parse_slow(text)
        if text[-1] == "Z":
            off = 0
            end = len(text) - 1
        else:
            off_or_none = _ZONES.get(text[-6:])
            if off_or_none is None:
                return _parse_slow(text)
            off = off_or_none
            end = len(text) - 6
        t = _new(GoTime)
        t._off = off
        if end == 19:
            t._ns = (secs - off) * 1_000_000_000
            return t
        digits = text[20:end]
        if text[19] != "." or not digits.isdigit():
            return _parse_slow(text)
        if len(digits) >= 9:
            t._ns = (secs - off) * 1_000_000_000 + int(digits[:9])
        else:
            t._ns = (secs - off) * 1_000_000_000 + int(digits) * _SCALE[len(digits)]
        return t

    @classmethod
    def from_datetime(cls, dt: _dt.datetime) -> GoTime:
        """Convert an aware ``datetime`` (its offset is kept).

        Raises:
            ValueError: ``dt`` is naive.
        """
        off = dt.utcoffset()
        if off is None:
            raise ValueError("GoTime.from_datetime needs an aware datetime (tzinfo set)")
        delta = dt - _EPOCH_UTC
        ns = ((delta.days * _DAY_S + delta.seconds) * 1_000_000 + delta.microseconds) * 1000
        return _make(ns, off.days * _DAY_S + off.seconds)

    @classmethod
    def from_unix_ns(cls, unix_ns: int) -> GoTime:
        """A UTC time from integer Unix nanoseconds (a ZSET score, for instance)."""
        return _make(int(unix_ns), 0)

    # ---- views --------------------------------------------------------------------------
    @property
    def is_zero(self) -> bool:
        """True for Go's zero time (0001-01-01T00:00:00Z, whatever the offset)."""
        return self._ns == _ZERO_UNIX_NS

    def to_utc(self) -> GoTime:
        """The same instant with offset 0."""
        return self if self._off == 0 else _make(self._ns, 0)

    def equal(self, other: GoTime) -> bool:
        """True when both denote the same instant (Go's ``Time.Equal``)."""
        return self._ns == other._ns

    def to_datetime(self) -> _dt.datetime:
        """An aware ``datetime`` (microseconds, truncated) in this time's offset.

        Raises:
            OverflowError: The year is outside what ``datetime`` supports (1..9999).
        """
        tz = _dt.UTC if self._off == 0 else _dt.timezone(_dt.timedelta(seconds=self._off))
        utc = _EPOCH_UTC + _dt.timedelta(microseconds=self._ns // 1000)
        return utc.astimezone(tz)

    def to_text(self) -> str:
        """Go's RFC3339Nano text: fraction trimmed, offset kept, offset 0 written as ``Z``.

        Raises:
            ValueError: Go would refuse to marshal it (year outside 0..9999, offset >= 24h).
        """
        off = self._off
        secs, ns = divmod(self._ns, _NS)
        days, sod = divmod(secs + off, _DAY_S)
        h, rem = divmod(sod, 3600)
        mi, s = divmod(rem, 60)
        zone = "Z" if off == 0 else _zone_text(off)
        date = _DATES.get(days) or _date_text(days)
        if ns:
            frac = ("%09d" % ns).rstrip("0")  # noqa: UP031 - twice as fast as an f-string
            return f"{date}{_2D[h]}:{_2D[mi]}:{_2D[s]}.{frac}{zone}"
        return f"{date}{_2D[h]}:{_2D[mi]}:{_2D[s]}{zone}"

    # ---- dunder -------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns == other._ns and self._off == other._off

    def __ne__(self, other: object) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns != other._ns or self._off != other._off

    def __hash__(self) -> int:
        return hash((self._ns, self._off))

    def __lt__(self, other: GoTime) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns < other._ns

    def __le__(self, other: GoTime) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns <= other._ns

    def __gt__(self, other: GoTime) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns > other._ns

    def __ge__(self, other: GoTime) -> bool:
        if type(other) is not GoTime:
            return NotImplemented
        return self._ns >= other._ns

    def __repr__(self) -> str:
        return f"GoTime(unix_ns={self._ns}, offset_s={self._off})"

    def __str__(self) -> str:
        try:
            return self.to_text()
        except ValueError:
            return repr(self)


_new = object.__new__
_ZERO_UNIX_NS: Final = _ZERO_UNIX_S * _NS


def _make(unix_ns: int, offset_s: int) -> GoTime:
    t: GoTime = _new(GoTime)
    t._ns = unix_ns
    t._off = offset_s
    return t


GoTime.ZERO = _ZERO_TIME = _make(_ZERO_UNIX_NS, 0)
