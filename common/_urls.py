"""Redis URL parsing, redaction and client-option checks (private helpers of
:mod:`sessionstreams.common.connection`).

Accepted forms (anything else is a :class:`~sessionstreams.common.errors.ConfigError`):

- ``redis://[user:pass@]host[:port][/db][?opt=value...]`` and ``rediss://`` (TLS);
- ``unix://[user:pass@]/path/to/redis.sock[?db=N]`` (the db must be a query option: a ``/N``
  after the path would be read as part of the socket path);
- ``redis+sentinel://[user:pass@]h1[:26379],h2[:26379]/master_name[/db]`` and
  ``rediss+sentinel://`` (credentials are the primary's);
- ``redis+cluster://[user:pass@]h1[:6379],h2[:6379][/0]`` and ``rediss+cluster://``.

Query options are converted with redis-py's own URL parsers where it has one (``db`` becomes an
int, ``health_check_interval`` an int...) and are otherwise kept as strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from sessionstreams.common.errors import ConfigError

Kind = Literal["standalone", "unix", "sentinel", "cluster"]

_SCHEMES: Mapping[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT: Mapping[Kind, int] = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}

# Keys an extra option (or URL query option) may not set, with the reason shown to the user.
_PINNED: Mapping[str, str] = {
    "protocol": "pinned to 2 (RESP2 reply shapes)",
    "decode_responses": "pinned to False (bytes everywhere)",
    "legacy_responses": "reply shapes are pinned",
    "retry": "set by client_retries (and off for the stream client)",
    "retry_on_error": "set by client_retries (and off for the stream client)",
    "retry_on_timeout": "set by client_retries (and off for the stream client)",
    "cluster_error_retry_attempts": "set by client_retries (and off for the stream client)",
    "socket_timeout": "use Settings.socket_timeout_s (the stream client also needs > block_ms)",
    "socket_connect_timeout": "use Settings.socket_connect_timeout_s",
    "connection_pool": "the pool is built from the url",
    "connection_class": "the connection class comes from the url scheme",
    "host": "comes from the url",
    "port": "comes from the url",
    "db": "comes from the url",
    "path": "comes from the url",
    "unix_socket_path": "comes from the url",
    "startup_nodes": "comes from the url",
    "ssl": "use a rediss:// url",
}
_SENTINEL_ONLY = ("sentinel_kwargs", "min_other_sentinels")
_SECRET_QUERY = re.compile(r"([?&](?:password|sentinel_password)=)[^&#]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """A Redis URL taken apart; ``repr`` never shows the password.

    Attributes:
        scheme: the scheme as written, lower-cased (``redis+sentinel``...).
        kind: ``standalone``, ``unix``, ``sentinel`` or ``cluster``.
        tls: True for the ``rediss`` schemes.
        hosts: ``(host, port)`` pairs; sentinels for ``sentinel``, seeds for ``cluster``,
            one pair for ``standalone``, empty for ``unix``.
        path: the socket path (``unix`` only).
        db: the database number (0 unless given).
        username: the ACL user, if any.
        password: the password, if any.
        service_name: the Sentinel primary's name (``sentinel`` only).
        options: the query options, converted to their types where redis-py knows them.
    """

    scheme: str
    kind: Kind
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def redacted(self) -> str:
        """The URL rebuilt without its password (safe to log)."""
        creds = ""
        if self.username or self.password:
            creds = (self.username or "") + (":***" if self.password else "") + "@"
        if self.kind == "unix":
            where = self.path or ""
        else:
            where = ",".join(_format_host(h, p) for h, p in self.hosts)
            if self.service_name is not None:
                where += f"/{self.service_name}"
            if self.db:
                where += f"/{self.db}"
        return f"{self.scheme}://{creds}{where}"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works on any string, including URLs that do not parse, so it is safe in error messages.

    Args:
        url: a Redis URL (or anything else).

    Returns:
        The same text with the password of the userinfo part and ``password=`` query values
        masked.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        # The userinfo ends at the last "@": a password may hold an unencoded "@", "/", "?" or
        # "#". (An "@" in a query value masks more than needed, never less.)
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            user, colon, _ = userinfo.partition(":")
            if colon:
                rest = f"{user}:***{rest[at:]}"
        url = f"{scheme}{sep}{rest}"
    return _SECRET_QUERY.sub(r"\1***", url)


def parse_url(url: str) -> ParsedURL:
    """Parse a Redis URL of one of the accepted forms (see the module docstring).

    Args:
        url: the URL.

    Returns:
        The parsed URL.

    Raises:
        ConfigError: empty URL, unknown scheme, bad host list, port, db or option value.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("redis url is empty")
    safe = redact_url(url)
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"redis url {safe!r}: scheme must be one of " + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    kind, tls = _SCHEMES[scheme]
    tail = re.split(r"[?#]", rest, maxsplit=1)[1:]
    if tail and "@" in tail[0]:
        raise ConfigError(
            f"redis url {safe!r}: an '@' after a '?' or '#' is ambiguous; percent-encode "
            "'?', '#' and '@' in the password (%3F, %23, %40) and '@' in query values (%40)"
        )
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    options = _parse_query(query, safe)
    username, password, location = _split_userinfo(rest)
    if kind == "unix":
        return _finish_unix(scheme, location, username, password, options, safe)
    netloc, slash, path = location.partition("/")
    hosts = _parse_hosts(netloc, _DEFAULT_PORT[kind], safe)
    if kind == "standalone" and len(hosts) != 1:
        raise ConfigError(f"redis url {safe!r}: {scheme}:// takes exactly one host")
    segments = [unquote(s) for s in path.split("/")] if slash else []
    service_name: str | None = None
    if kind == "sentinel":
        if not segments or not segments[0]:
            raise ConfigError(f"redis url {safe!r}: the sentinel primary name is missing")
        service_name, segments = segments[0], segments[1:]
    db = _pop_db(options, segments, safe)
    if kind == "cluster" and db != 0:
        raise ConfigError(f"redis url {safe!r}: a cluster has only db 0")
    return ParsedURL(
        scheme=scheme,
        kind=kind,
        tls=tls,
        hosts=hosts,
        db=db,
        username=username,
        password=password,
        service_name=service_name,
        options=MappingProxyType(options),
    )


def _finish_unix(
    scheme: str,
    location: str,
    username: str | None,
    password: str | None,
    options: dict[str, Any],
    safe: str,
) -> ParsedURL:
    path = unquote(location)
    if not path.startswith("/") or path == "/":
        raise ConfigError(f"redis url {safe!r}: unix:// needs an absolute socket path")
    db = _pop_db(options, [], safe)
    return ParsedURL(
        scheme=scheme,
        kind="unix",
        tls=False,
        path=path,
        db=db,
        username=username,
        password=password,
        options=MappingProxyType(options),
    )


def _split_userinfo(rest: str) -> tuple[str | None, str | None, str]:
    # The userinfo ends at the last "@" before the path: a password may contain "@" when the
    # caller did not percent-encode it. A leading "/" is a unix socket path without userinfo.
    if rest.startswith("/"):
        return None, None, rest
    slash = rest.find("/", rest.rfind("@") + 1) if "@" in rest else -1
    head = rest if slash < 0 else rest[:slash]
    at = head.rfind("@")
    if at < 0:
        return None, None, rest
    userinfo, location = rest[:at], rest[at + 1 :]
    user, colon, secret = userinfo.partition(":")
    return (unquote(user) or None), (unquote(secret) if colon and secret else None), location


def _parse_hosts(netloc: str, default_port: int, safe: str) -> tuple[tuple[str, int], ...]:
    if not netloc:
        raise ConfigError(f"redis url {safe!r}: no host given")
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, bracket, tail = item[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ConfigError(f"redis url {safe!r}: bad host {item!r}")
            port_text = tail[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigError(f"redis url {safe!r}: empty host in {netloc!r}")
        hosts.append((unquote(host), _parse_port(port_text, default_port, safe)))
    return tuple(hosts)


def _parse_port(text: str, default: int, safe: str) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"redis url {safe!r}: bad port {text!r}")
    return int(text)


def _parse_query(query: str, safe: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None:
            options[name] = value
            continue
        try:
            options[name] = parser(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"redis url {safe!r}: bad value for option {name!r}") from exc
    return options


def _pop_db(options: dict[str, Any], segments: list[str], safe: str) -> int:
    segments = [s for s in segments if s]
    if len(segments) > 1:
        raise ConfigError(f"redis url {safe!r}: unexpected path {'/'.join(segments)!r}")
    db: Any = options.pop("db", None)
    if db is None and segments:
        if not segments[0].isdigit():
            raise ConfigError(f"redis url {safe!r}: db must be a number, got {segments[0]!r}")
        db = int(segments[0])
    if db is None:
        return 0
    if not isinstance(db, int) or db < 0:
        raise ConfigError(f"redis url {safe!r}: db must be a number >= 0")
    return db


def _format_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_client_options(parsed: ParsedURL, extra: Mapping[str, Any]) -> None:
    """Refuse URL query options and extra options that would override pinned client values.

    Raises:
        ConfigError: naming the offending option and what to use instead.
    """
    for what, options in (("url option", parsed.options), ("extra option", extra)):
        for key in options:
            if key in _PINNED:
                raise ConfigError(
                    f"{what} {key} is not allowed for {parsed.redacted}: {_PINNED[key]}"
                )
            if key in _SENTINEL_ONLY and parsed.kind != "sentinel":
                raise ConfigError(f"{what} {key} needs a redis+sentinel:// url")
