"""What every ``sessionstreams`` sub-command shares: the parser class that gives each one the
global options, the one error handler, and the confirmation of destructive commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from sessionstreams.common.connection import REDIS_ERRORS, translate
from sessionstreams.common.errors import (
    ConnectionFailedError,
    SessionStoreError,
    StoreTimeoutError,
)
from sessionstreams.common.settings import ENV_PREFIX, Settings

#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

URL_HELP = f"Redis URL (overrides {ENV_PREFIX}URL)"


class CommandError(Exception):
    """A command cannot go on; ``str(exc)`` is the one-line message, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class CommandParser(argparse.ArgumentParser):
    """A parser whose every sub-command accepts the global options after its name too.

    Sub-command parsers are made of the class of their parent, so nested ones
    (``index rebuild``) get them as well. Their default is *suppressed*, so a value given
    before the sub-command is not overwritten by the sub-command's default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--url", default=argparse.SUPPRESS, metavar="URL", help=URL_HELP)


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of a command: ``SESSIONSTREAMS_*`` variables, ``--url`` over them."""
    url: str = getattr(args, "url", "")
    overrides: dict[str, object] = {"url": url} if url else {}
    return Settings.from_env(None, **overrides)


def url_of(args: argparse.Namespace) -> str:
    """The Redis URL a command talks to (for messages)."""
    return getattr(args, "url", "") or os.environ.get(f"{ENV_PREFIX}URL", "")


def error_line(exc: BaseException, url: str = "") -> str:
    """The one line shown for an error: our message (a redis-py error translated first), and
    for a server that cannot be reached, what to check."""
    err = exc if isinstance(exc, SessionStoreError | CommandError) else translate(exc, url or None)
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, ConnectionFailedError | StoreTimeoutError):
        text += f"; check --url / {ENV_PREFIX}URL"
    return f"sessionstreams: {text}"


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command with the one error handler: a one-line message and exit 1 (or the
    CommandError's code) for our errors and Redis errors, 130 on Ctrl-C, never a traceback
    for either."""
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print("sessionstreams: interrupted", file=sys.stderr)
        return INTERRUPTED
    except CommandError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.code
    except (SessionStoreError, *REDIS_ERRORS) as exc:
        print(error_line(exc, url_of(args)), file=sys.stderr)
        return 1


def confirm(action: str, yes: bool) -> None:
    """Go on only when ``action`` is confirmed: by ``--yes``, or by answering y on a terminal.

    Raises:
        CommandError: not confirmed (nothing was changed).
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{action}: pass --yes to confirm (nothing was changed)")
    try:
        answer = input(f"{action}. Go on? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed; nothing was changed")


def add_yes(parser: argparse.ArgumentParser) -> None:
    """Add ``--yes`` to a destructive command."""
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do it without asking (required when stdin is not a terminal)")
