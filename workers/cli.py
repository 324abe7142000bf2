"""The ``sessionstreams`` command line.

Every command reads its settings from ``SESSIONSTREAMS_*`` environment variables; ``--url``
overrides the Redis URL.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.settings import Settings

#: Entry-point group of sub-commands defined outside the workers package.
COMMANDS_GROUP = "sessionstreams.commands"


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"url": args.url} if args.url else {}
    return Settings.from_env(**overrides)


def _cmd_worker(args: argparse.Namespace) -> int:
    from sessionstreams.common.logs import configure_logging
    from sessionstreams.workers.runner import run_worker

    configure_logging()
    settings = _settings(args)
    if args.shards:
        settings = settings.replace(async_persister_num=args.shards)
    spec = args.summarizer or os.environ.get("SESSIONSTREAMS_SUMMARIZER", "")
    if spec:  # this worker also runs summary jobs
        from sessionstreams.common.summaries import load_summarizer

        settings = settings.replace(summarizer=load_summarizer(spec))
    return run_worker(settings, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                      trace_file=args.trace_file or None)


def _cmd_bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[1] / "ops" / f"bench_{args.kind}.py"
    if not script.exists():
        print(f"benchmark script {script} not found (run from a source checkout)", file=sys.stderr)
        return 2
    argv = [str(script), *args.rest]
    if args.url:
        argv += ["--url", args.url]
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="sessionstreams", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="Redis URL (overrides SESSIONSTREAMS_URL)")
    sub = parser.add_subparsers(dest="command", required=True)

    # Commands of other parts of the distribution (the producer's ``demo``) register through
    # the ``sessionstreams.commands`` entry points, so this module never imports them.
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub, _settings)

    worker = sub.add_parser("worker", help="run a worker process (persists streamed writes)")
    worker.add_argument("--shards", type=int, default=0,
                        help="shard count (default: SESSIONSTREAMS_ASYNC_PERSISTER_NUM or 10)")
    worker.add_argument("--summarizer", default="", metavar="MODULE:FACTORY",
                        help="also run summary jobs with the summarizer this factory returns, "
                             "e.g. sessionstreams.common.summarizers:ExtractiveSummarizer "
                             "(default: SESSIONSTREAMS_SUMMARIZER)")
    worker.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics")
    worker.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address of the metrics endpoint (default 127.0.0.1)")
    worker.add_argument("--trace-file", default="", metavar="PATH",
                        help="enable tracing and append finished spans to PATH as JSON lines")
    worker.set_defaults(func=_cmd_worker)

    from sessionstreams.workers.cli_admin import register as register_admin

    register_admin(sub, _settings)

    from sessionstreams.workers.cli_compat import register as register_compat

    register_compat(sub, _settings)

    bench = sub.add_parser("bench", help="run a benchmark script from ops/")
    bench.add_argument("kind", choices=["sync", "async", "list", "compare", "adapters"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sessionstreams`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SessionStoreError as exc:
        print(f"sessionstreams: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
