"""``python -m sessionstreams.workers`` is ``sessionstreams worker``."""

import sys

from sessionstreams.workers.cli import main

raise SystemExit(main(["worker", *sys.argv[1:]]))
