"""Chaos run of the async pipeline: producers write while workers are killed, paused, restarted.

Loopback only, bounded in time. A throwaway redis-server is started unless ``--url`` names one
on 127.0.0.1. Producers append events (a ``seq`` in each state delta) and track events to
their sessions; a chaos loop SIGKILLs, SIGSTOPs/SIGCONTs and restarts worker processes at
random. Then chaos stops, the writes are flushed, and every acknowledged write is checked:
it reached exactly one outcome (applied), it is stored once, and per-session order holds.

Prints ``N passed, N failed`` (one check per acknowledged write) and exits 1 on any failure.

Usage: ``python ops/chaos.py [--seconds 20] [--workers 3] [--sessions 40] [--seed 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops"))

from bench_sync import local_redis

from sessionstreams.common.errors import SessionStoreError
from sessionstreams.common.gotime import GoTime
from sessionstreams.common.models import Event, Key, TrackEvent
from sessionstreams.common.receipt import Receipt
from sessionstreams.common.settings import Settings
from sessionstreams.producer import SessionService


class Workers:
    """Worker subprocesses under chaos."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.paused: set[int] = set()
        self.events: dict[str, int] = {"kill": 0, "pause": 0, "restart": 0}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONSTREAMS_")}
        s = self.settings
        for name in ("url", "key_prefix", "async_persister_num", "lease_ttl_s",
                     "heartbeat_interval_s", "block_ms"):
            env[f"SESSIONSTREAMS_{name.upper()}"] = str(getattr(s, name))
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self) -> None:
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "sessionstreams.workers"], env=self.env(),
                                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def act(self, rng: random.Random) -> None:
        """One random chaos action."""
        alive = self.alive()
        action = rng.choice(["kill", "pause", "restart"])
        if action == "kill" and len(alive) > 1:
            victim = rng.choice(alive)
            self._cont(victim)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.events["kill"] += 1
        elif action == "pause" and alive:
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGSTOP)
            self.paused.add(victim.pid)
            self.events["pause"] += 1
        else:
            self.start()
            self.events["restart"] += 1

    def resume_some(self, rng: random.Random) -> None:
        for p in self.alive():
            if p.pid in self.paused and rng.random() < 0.5:
                self._cont(p)

    def _cont(self, p: subprocess.Popen[bytes]) -> None:
        if p.pid in self.paused:
            p.send_signal(signal.SIGCONT)
            self.paused.discard(p.pid)

    def calm(self) -> None:
        """End the chaos: resume every paused worker, make sure two run."""
        for p in self.alive():
            self._cont(p)
        while len(self.alive()) < 2:
            self.start()

    def stop(self) -> None:
        for p in self.alive():
            self._cont(p)
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


Write = tuple[Key, int, Receipt]


async def producer(
    svc: SessionService, key: Key, deadline: float, out: list[Write], rng: random.Random
) -> int:
    """Write seq events (and a track event every 4th) until the deadline."""
    session = await svc.create_session(key)
    seq = 0
    while time.monotonic() < deadline:
        ev = Event.message("user" if seq % 3 == 0 else "assistant", f"m{seq}",
                           state_delta={"seq": str(seq).encode()})
        try:
            receipt = await svc.append_event(session, ev)
        except SessionStoreError as exc:  # e.g. backpressure: not acknowledged, not checked
            print(f"write refused: {exc}", file=sys.stderr)
            await asyncio.sleep(0.1)
            continue
        out.append((key, seq, receipt))
        if seq % 4 == 0:
            await svc.append_track_event(
                session, TrackEvent(track="t", payload=str(seq).encode(), timestamp=GoTime.now()))
        seq += 1
        await asyncio.sleep(rng.uniform(0, 0.02))
    return seq


async def check(svc: SessionService, reader: SessionService,
                writes: list[tuple[Key, int, Receipt]], counts: dict[Key, int]) -> tuple[int, int]:
    """One check per acknowledged write: one outcome, stored once, in order."""
    passed = failed = 0
    outcomes = {}
    for _, _, receipt in writes:
        try:
            outcomes[receipt.rid] = await svc.wait_persisted(receipt, timeout=60)
        except SessionStoreError as exc:
            outcomes[receipt.rid] = f"error: {exc}"
    for key, n in counts.items():
        got = await reader.get_session(key, num_events=100_000)
        seqs = [int((e.state_delta or {}).get("seq", b"-1")) for e in got.events] if got else []
        tracks = await reader.get_track_events(key, "t")
        track_seqs = [int(t.payload or b"-1") for t in tracks.events or []]
        in_order = seqs == list(range(n)) and track_seqs == list(range(0, n, 4))
        for k2, seq, receipt in writes:
            if k2 != key:
                continue
            ok = outcomes[receipt.rid] == "applied" and in_order and seqs.count(seq) == 1
            passed += ok
            failed += not ok
            if not ok:
                print(f"FAILED {key.session_id} seq {seq}: outcome {outcomes[receipt.rid]}, "
                      f"order ok {in_order}", file=sys.stderr)
    return passed, failed


async def run(url: str, args: argparse.Namespace, log_dir: Path) -> int:
    rng = random.Random(args.seed)
    settings = Settings(
        url=url, key_prefix=f"chaos{uuid.uuid4().hex[:6]}", enable_async_persist=True,
        async_persister_num=6, lease_ttl_s=1.5, heartbeat_interval_s=0.25, block_ms=200,
        read_your_writes_wait_s=60, session_event_limit=0,
    )
    workers = Workers(settings, log_dir)
    for _ in range(args.workers):
        workers.start()
    svc = SessionService(settings)
    reader = SessionService(settings.replace(enable_async_persist=False))
    writes: list[tuple[Key, int, Receipt]] = []
    deadline = time.monotonic() + args.seconds
    keys = [Key("chaos", f"u{i % 7}", f"s{i}") for i in range(args.sessions)]
    try:
        writing = asyncio.gather(*(producer(svc, k, deadline, writes, rng) for k in keys))
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            workers.act(rng)
            workers.resume_some(rng)
        counts = dict(zip(keys, await writing, strict=True))
        workers.calm()
        await svc.flush(120)
        passed, failed = await check(svc, reader, writes, counts)
    finally:
        await svc.close(timeout=1)
        await reader.close()
        workers.stop()
    print(f"chaos: {len(writes)} acknowledged writes, {workers.events['kill']} kills, "
          f"{workers.events['pause']} pauses, {workers.events['restart']} restarts",
          file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="a Redis on 127.0.0.1 (default: start one)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", default="")
    args = parser.parse_args(argv)
    if args.url and "127.0.0.1" not in args.url and "localhost" not in args.url:
        parser.error("chaos runs only against a loopback Redis")
    default_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{os.getpid()}"
    log_dir = Path(args.log_dir) if args.log_dir else default_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.url:
        return asyncio.run(run(args.url, args, log_dir))
    with local_redis() as url:
        return asyncio.run(run(url, args, log_dir))


if __name__ == "__main__":
    raise SystemExit(main())
