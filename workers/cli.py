"""The ``sessionstreams`` command line.

Every command reads its settings from ``SESSIONSTREAMS_*`` environment variables; ``--url``
(before or after the command's name) overrides the Redis URL.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from sessionstreams.workers._cli import (
    CommandError,
    CommandParser,
    run_command,
    settings_of,
)

#: Entry-point group of sub-commands defined outside the workers package.
COMMANDS_GROUP = "sessionstreams.commands"

#: The benchmark scripts: in a source checkout only (an installed package has no ops/).
OPS_DIR = Path(__file__).resolve().parents[1] / "ops"
BENCHMARKS = ("sync", "async", "list", "compare", "adapters")


def _version() -> str:
    try:
        return version("sessionstreams")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _cmd_worker(args: argparse.Namespace) -> int:
    from sessionstreams.workers.runner import run_worker

    settings = settings_of(args)
    if args.shards:
        settings = settings.replace(async_persister_num=args.shards)
    spec = args.summarizer or os.environ.get("SESSIONSTREAMS_SUMMARIZER", "")
    if spec:  # this worker also runs summary jobs
        from sessionstreams.common.summaries import load_summarizer

        settings = settings.replace(summarizer=load_summarizer(spec))
    return run_worker(settings, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                      trace_file=args.trace_file or None)


def _cmd_bench(args: argparse.Namespace) -> int:
    script = OPS_DIR / f"bench_{args.kind}.py"
    if not script.is_file():
        raise CommandError(
            "bench runs the benchmark scripts of a source checkout (ops/), which an installed "
            "package does not include; run it from a clone of the repository", code=2)
    argv = [str(script), *args.rest]
    if getattr(args, "url", ""):
        argv += ["--url", args.url]
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _add_worker(sub: argparse._SubParsersAction[CommandParser]) -> None:
    worker = sub.add_parser("worker", help="run a worker process (persists streamed writes)")
    worker.add_argument("--shards", type=int, default=0,
                        help="shard count (default: SESSIONSTREAMS_ASYNC_PERSISTER_NUM or 10)")
    worker.add_argument("--summarizer", default="", metavar="MODULE:FACTORY",
                        help="also run summary jobs with the summarizer this factory returns, "
                             "e.g. sessionstreams.common.summarizers:ExtractiveSummarizer "
                             "(default: SESSIONSTREAMS_SUMMARIZER)")
    worker.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics "
                             "(needs the worker extra)")
    worker.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address of the metrics endpoint (default 127.0.0.1)")
    worker.add_argument("--trace-file", default="", metavar="PATH",
                        help="enable tracing and append finished spans to PATH as JSON lines "
                             "(needs the worker extra)")
    worker.set_defaults(func=_cmd_worker)


def _add_bench(sub: argparse._SubParsersAction[CommandParser]) -> None:
    where = "" if OPS_DIR.is_dir() else " (source checkout only)"
    bench = sub.add_parser("bench", help=f"run a benchmark script from ops/{where}")
    bench.add_argument("kind", choices=BENCHMARKS, help="which benchmark (ops/bench_KIND.py)")
    bench.add_argument("rest", nargs=argparse.REMAINDER,
                       help="options for the benchmark script (see its --help)")
    bench.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = CommandParser(
        prog="sessionstreams",
        description="sessionstreams: worker processes and administration of a session store "
                    "on Redis.",
        epilog="Settings come from SESSIONSTREAMS_* environment variables; --url, before or "
               "after the command, overrides the Redis URL.")
    parser.set_defaults(url="")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="show the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Commands of other parts of the distribution (the producer's ``demo``) register through
    # the ``sessionstreams.commands`` entry points, so this module never imports them.
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub, settings_of)

    _add_worker(sub)

    from sessionstreams.workers.cli_admin import register as register_admin

    register_admin(sub, settings_of)

    from sessionstreams.workers.cli_compat import register as register_compat

    register_compat(sub, settings_of)

    from sessionstreams.workers.cli_user import register as register_user

    register_user(sub, settings_of)

    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sessionstreams`` console script.

    Returns:
        The exit code: 0, 1 for an error (one line on stderr), 2 for a usage error, 130 when
        interrupted, or the command's own (``migrate``: 3 when some sessions were left).
    """
    from sessionstreams.common.logs import configure_logging

    args = build_parser().parse_args(argv)
    # Workers log what they do; other commands print their results and log only problems.
    configure_logging(logging.INFO if args.command == "worker" else logging.WARNING)
    return run_command(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
