"""``python -m workers`` is ``sessionstreams worker``."""

import sys

from common.cli import main

raise SystemExit(main(["worker", *sys.argv[1:]]))
