"""Named fault points, so race windows are tested on purpose rather than by luck.

``SESSIONSTREAMS_FAULTS`` holds comma-separated ``<point>:<action>`` items, for example
``before_read:sleep=3`` or ``after_apply:kill``. Points:

- ``before_read``: after the worker's own lease-deadline check, before the read script;
- ``after_apply``: after a batch was applied, before it is acknowledged;
- ``before_app_state``: after the session script, before the app-state write of what it
  applied;
- ``before_other_slots``: after the session scripts of a round, when an entry writes keys
  of other slots after them (app state, the other layout's user state), before those writes;
- ``mid_batch``: after the first half of a batch's sessions were applied;
- ``summary_before_store``: a summary job's summarizer returned, before the summary is stored;
- ``summary_after_store``: a summary was stored, before its job is acknowledged.

Actions: ``sleep=<seconds>`` (the whole process stalls, lease renewals included),
``kill`` (SIGKILL of this process); ``once`` may follow an action (``after_apply:kill:once``
fires only the first time; every fault fires every time otherwise). An optional ``@<n>``
fires from the n-th pass on (``after_apply:kill@3``).
"""

from __future__ import annotations

import os
import signal
import time

from sessionstreams.common.errors import ConfigError
from sessionstreams.common.logs import get_logger

log = get_logger("sessionstreams.faults")

POINTS = ("before_read", "after_apply", "before_app_state", "before_other_slots", "mid_batch",
          "summary_before_store", "summary_after_store")
ENV = "SESSIONSTREAMS_FAULTS"


class Fault:
    """One armed fault point."""

    def __init__(self, spec: str) -> None:
        parts = spec.split(":")
        if len(parts) < 2 or parts[0] not in POINTS:
            raise ConfigError(f"{ENV}: bad fault {spec!r}; points are {', '.join(POINTS)}")
        self.point = parts[0]
        action, _, start = parts[1].partition("@")
        self.start = int(start) if start else 1
        self.once = "once" in parts[2:]
        self.sleep_s = 0.0
        self.kill = action == "kill"
        if action.startswith("sleep="):
            self.sleep_s = float(action.split("=", 1)[1])
        elif not self.kill:
            raise ConfigError(f"{ENV}: bad action in {spec!r} (sleep=<s> or kill)")
        self.passes = 0
        self.fired = False


class Faults:
    """The fault points of one worker process."""

    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get(ENV, "") if spec is None else spec
        self._faults = [Fault(item) for item in spec.split(",") if item.strip()]

    def __bool__(self) -> bool:
        return bool(self._faults)

    async def hit(self, point: str) -> None:
        """Run the faults armed at ``point`` (no-op when none is)."""
        for fault in self._faults:
            if fault.point != point or (fault.once and fault.fired):
                continue
            fault.passes += 1
            if fault.passes < fault.start:
                continue
            fault.fired = True
            log.warning("fault fired", point=point, kill=fault.kill, sleep_s=fault.sleep_s)
            if fault.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            # A blocking sleep: the whole process stalls (lease renewals included), as a
            # process stopped by a long GC pause or SIGSTOP would.
            time.sleep(fault.sleep_s)  # noqa: ASYNC251 - the stall is the point
