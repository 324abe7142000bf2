"""A running write load for failover and resharding tests.

``WriteLoad`` drives a ``SessionService`` (or anything with ``create_session``,
``append_event`` and ``get_session``) from several writer tasks while a test breaks the
deployment underneath it. Every append carries the session's next sequence number in its id
and in a ``seq`` state delta; a failed append is retried with the same event (our writes are
deduplicated by event id) until it is acknowledged, so each session's acknowledged writes form
a gap-free sequence. The load records each acknowledgement (with the monotonic times its call
started and returned) and every failure; :meth:`WriteLoad.verify` reads the sessions back and
reports what is missing, duplicated, out of order or unknown.

Usage::

    svc = await make_service(session_event_storage_limit=0)   # nothing trimmed
    async with WriteLoad(svc, users=[f"u{i}" for i in range(8)]) as load:
        await load.wait_for_acks(200)
        t_fault = time.monotonic(); break_something()
        await load.wait_for_acks(200, started_after=t_fault)
    report = await load.verify(reader_svc, since=load.first_ack_started_after(t_fault))
    report.assert_ok()

In asynchronous mode an acknowledgement is the producer's (the entry is on its stream); pass
``settle_s`` to ``verify`` so it polls until the workers applied everything or time runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, Session

#: Pause after a failed append before it is retried (the same event again).
RETRY_PAUSE_S = 0.02


@dataclass(frozen=True, slots=True)
class Write:
    """One acknowledged append."""

    key: Key
    seq: int
    event_id: str
    started: float  # time.monotonic() when the (first attempt of the) call started
    acked: float  # time.monotonic() when the successful call returned
    receipt: Any = None  # what append_event returned (a Receipt for SessionService)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed call (the write is retried; a read is not)."""

    at: float
    kind: str  # "write" or "read"
    error: str


@dataclass
class LoadReport:
    """What :meth:`WriteLoad.verify` found.

    Attributes:
        acked: acknowledged writes.
        checked: acknowledged writes that had to be present (see ``verify``'s ``since``).
        missing: checked writes not stored.
        lost_before: writes acknowledged before ``since`` (or started before
            ``started_since``) and not stored: what Redis may lose in a failover, as
            replication is asynchronous.
        duplicates: event ids stored more than once.
        out_of_order: sessions whose stored sequence numbers do not increase.
        unknown: stored event ids the load never sent.
        state_behind: sessions whose ``seq`` state is below their last acknowledged write.
        failures: failed calls during the load.
    """

    acked: int = 0
    checked: int = 0
    missing: list[Write] = field(default_factory=list)
    lost_before: list[Write] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    out_of_order: list[Key] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    state_behind: list[Key] = field(default_factory=list)
    failures: int = 0

    @property
    def ok(self) -> bool:
        """Nothing that had to be stored is missing, and nothing is wrong."""
        return not (
            self.missing or self.duplicates or self.out_of_order or self.unknown
            or self.state_behind
        )  # fmt: skip

    def assert_ok(self) -> None:
        """Raise AssertionError with a summary unless :attr:`ok`."""
        assert self.ok, self.summary()

    def summary(self) -> str:
        """One line for assertion messages and logs."""
        return (
            f"acked={self.acked} checked={self.checked} missing={len(self.missing)} "
            f"lost_before={len(self.lost_before)} duplicates={len(self.duplicates)} "
            f"out_of_order={len(self.out_of_order)} unknown={len(self.unknown)} "
            f"state_behind={len(self.state_behind)} failures={self.failures}; "
            f"first missing: {self.missing[:3]}"
        )


def _seq_state(session: Session) -> int:
    raw = session.state.get("seq")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text) if text.isdigit() else -1


@dataclass
class _Stream:
    """One session's writer state."""

    session: Session
    next_seq: int = 0
    last_ns: int = 0
    attempted: set[str] = field(default_factory=set)


class WriteLoad:
    """Writers appending to their own sessions until stopped; optional readers.

    Args:
        service: where to write (and, by default, what :meth:`verify` reads).
        app: the app name of every session.
        users: one or more users per writer; each user gets ``sessions_per_user`` sessions.
        sessions_per_user: sessions created per user.
        writers: writer tasks (default: one per user, at most 8); sessions are dealt round
            robin, so each session has exactly one writer and a well-defined order.
        readers: reader tasks calling ``get_session`` on random sessions.
        pause_s: pause between two appends of one writer.
    """

    def __init__(
        self,
        service: Any,
        *,
        app: str = "load",
        users: Sequence[str] = ("load-user",),
        sessions_per_user: int = 1,
        writers: int | None = None,
        readers: int = 0,
        pause_s: float = 0.0,
    ) -> None:
        self.service = service
        self.app = app
        self.users = list(users)
        self.sessions_per_user = sessions_per_user
        self.writers = writers or min(len(self.users) * sessions_per_user, 8)
        self.readers = readers
        self.pause_s = pause_s
        self.acks: list[Write] = []
        self.failures: list[Failure] = []
        self.reads = 0
        self._streams: list[_Stream] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._acked_event = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> WriteLoad:
        """Create the sessions (fresh ids) and start the writer and reader tasks."""
        run = f"{random.getrandbits(32):08x}"
        for user in self.users:
            for n in range(self.sessions_per_user):
                key = Key(self.app, user, f"load-{run}-{n}")
                self._streams.append(_Stream(await self.service.create_session(key)))
        for w in range(self.writers):
            mine = self._streams[w :: self.writers]
            if mine:
                self._tasks.append(asyncio.create_task(self._write_loop(mine)))
        for _ in range(self.readers):
            self._tasks.append(asyncio.create_task(self._read_loop()))
        return self

    async def stop(self) -> None:
        """Stop every task after its current call (a pending retry is abandoned)."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> WriteLoad:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def keys(self) -> list[Key]:
        """Every session of the load."""
        return [s.session.key for s in self._streams]

    # -- waiting and figures ------------------------------------------------------------
    async def wait_for_acks(
        self, count: int, *, started_after: float | None = None, timeout_s: float = 30.0
    ) -> None:
        """Wait until ``count`` writes (started after ``started_after``) are acknowledged.

        Raises:
            TimeoutError: not reached in ``timeout_s``; the message has the failure count
                and the last failure.
        """
        deadline = time.monotonic() + timeout_s
        while self._count(started_after) < count:
            if any(t.done() for t in self._tasks):
                for t in self._tasks:
                    if t.done() and t.exception() is not None:
                        raise RuntimeError("a load task crashed") from t.exception()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = self.failures[-1].error if self.failures else "none"
                raise TimeoutError(
                    f"{self._count(started_after)}/{count} acks in {timeout_s}s; "
                    f"{len(self.failures)} failures, last: {last}"
                )
            self._acked_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._acked_event.wait()

    def _count(self, started_after: float | None) -> int:
        if started_after is None:
            return len(self.acks)
        return sum(1 for w in self.acks if w.started > started_after)

    async def kill_primary(
        self, group: Any, *, before: int = 200, after: int = 300
    ) -> tuple[float, Any, Any]:
        """Once ``before`` writes are acknowledged, SIGKILL the Sentinel ``group``'s primary,
        wait for the sentinels to promote a replica and for ``after`` acknowledged writes
        started after the kill. Returns the moment of the kill (``time.monotonic()``), the
        killed primary and the promoted one."""
        await self.wait_for_acks(before)
        old = group.primary()
        killed_at = time.monotonic()
        old.kill()
        new = await group.wait_for_new_primary(old, timeout_s=30)
        await self.wait_for_acks(after, started_after=killed_at, timeout_s=30)
        return killed_at, old, new

    def first_ack_started_after(
        self, moment: float, users: Sequence[str] | None = None
    ) -> float | None:
        """When the first write that started after ``moment`` was acknowledged.

        After a primary is killed at ``moment``, this is when the first command succeeded on
        the promoted primary (a write sent after the kill cannot reach the dead one). On a
        Cluster, pass the ``users`` whose slots the dead primary held.
        """
        wanted = None if users is None else set(users)
        times = [
            w.acked for w in self.acks
            if w.started > moment and (wanted is None or w.key.user_id in wanted)
        ]  # fmt: skip
        return min(times) if times else None

    def write_failures(self) -> list[Failure]:
        """Failed write attempts (each was retried)."""
        return [f for f in self.failures if f.kind == "write"]

    # -- checking -----------------------------------------------------------------------
    async def verify(
        self,
        reader: Any = None,
        *,
        since: float | None = None,
        started_since: float | None = None,
        settle_s: float = 0.0,
    ) -> LoadReport:
        """Read every session back and compare with the acknowledged writes.

        Args:
            reader: what to read through (default: the load's service).
            since: only writes acknowledged at or after this monotonic time must be present;
                earlier missing ones are reported as ``lost_before``.
            started_since: only writes whose call started at or after this time must be
                present (combined with ``since`` when both are given).
            settle_s: poll this long for missing writes to appear (asynchronous mode).
        """
        reader = reader or self.service

        def must(w: Write) -> bool:
            return (since is None or w.acked >= since) and (
                started_since is None or w.started >= started_since
            )

        deadline = time.monotonic() + settle_s
        while True:
            report = await self._check(reader, must)
            if report.ok or time.monotonic() >= deadline:
                return report
            await asyncio.sleep(0.1)

    async def _check(self, reader: Any, must: Callable[[Write], bool]) -> LoadReport:
        report = LoadReport(acked=len(self.acks), failures=len(self.failures))
        by_key: dict[Key, list[Write]] = {}
        for w in self.acks:
            by_key.setdefault(w.key, []).append(w)
        for stream in self._streams:
            key = stream.session.key
            stored = await reader.get_session(key, num_events=stream.next_seq + 10)
            events = stored.events if stored is not None else []
            ids = [e.id for e in events]
            seen = set(ids)
            report.duplicates += sorted(i for i, n in Counter(ids).items() if n > 1)
            report.unknown += [i for i in seen if i not in stream.attempted]
            seqs = [int(i.rpartition(".")[2]) for i in ids if i in stream.attempted]
            if seqs != sorted(set(seqs)):
                report.out_of_order.append(key)
            acked = by_key.get(key, [])
            for w in acked:
                required = must(w)
                report.checked += required
                if w.event_id not in seen:
                    (report.missing if required else report.lost_before).append(w)
            if acked and stored is not None and _seq_state(stored) < acked[-1].seq:
                report.state_behind.append(key)
        return report

    # -- the tasks ----------------------------------------------------------------------
    async def _write_loop(self, streams: list[_Stream]) -> None:
        turn = 0
        while not self._stopping.is_set():
            stream = streams[turn % len(streams)]
            turn += 1
            await self._write_one(stream)
            if self.pause_s:
                await asyncio.sleep(self.pause_s)

    async def _write_one(self, stream: _Stream) -> None:
        seq = stream.next_seq
        key = stream.session.key
        now = max(time.time_ns(), stream.last_ns + 1)  # strictly increasing per session
        stream.last_ns = now
        event_id = f"{key.session_id}.{seq}"
        stream.attempted.add(event_id)
        started = time.monotonic()
        while True:
            event = Event.message(
                "user", f"message {seq}", id=event_id, timestamp=GoTime(now),
                state_delta={"seq": str(seq).encode()},
            )  # fmt: skip
            try:
                receipt = await self.service.append_event(stream.session, event)
            except SessionStoreError as exc:
                self.failures.append(Failure(time.monotonic(), "write", repr(exc)))
                if self._stopping.is_set():
                    return  # abandoned: it may or may not be stored
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            break
        stream.session.events.clear()  # the in-memory mirror would grow without bound
        stream.next_seq = seq + 1
        self.acks.append(Write(key, seq, event_id, started, time.monotonic(), receipt))
        self._acked_event.set()

    async def _read_loop(self) -> None:
        rng = random.Random()
        while not self._stopping.is_set():
            stream = rng.choice(self._streams)
            try:
                await self.service.get_session(stream.session.key, num_events=20)
                self.reads += 1
            except SessionStoreError as exc:
                self.failures.append(Failure(time.monotonic(), "read", repr(exc)))
                await asyncio.sleep(RETRY_PAUSE_S)
