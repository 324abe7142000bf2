"""What the HashIdx append script stores, byte for byte, over a fixed sequence of appends.

``append_snapshot.json`` holds, per server (Redis, Valkey), the statuses and every stored key
(value, order of the fields of a small hash, scores as the server prints them, TTL in seconds)
that the sequence below produced when the file was recorded. The servers differ in how they
print scores and in the key order of the JSON their Lua cjson writes, so each has its own
record. Any change to the script that alters a stored byte, a TTL or a status fails here.
Record again only for a deliberate change of the stored data (it records the server the tests
run on): ``SESSIONSTREAMS_RECORD_APPEND_SNAPSHOT=1 pytest tests/test_append_bytes.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sessionstreams.common.hashidx import AppendEntry
from sessionstreams.common.models import Key

SNAPSHOT = Path(__file__).resolve().parent / "append_snapshot.json"
T0 = 1_735_787_045_000_000_000  # 2025-01-02T03:04:05Z in ns
META = (b'{"id":"%s","appName":"app","userID":"u","state":{"k":"AA=="},"generation":"g1",'
        b'"createdAt":"2025-01-02T03:04:05Z","updatedAt":"2025-01-02T03:04:05.5Z"}')


def _event_json(i: int, role: str) -> bytes:
    return (b'{"id":"e%d","timestamp":"2025-01-02T03:04:05Z","response":{"choices":'
            b'[{"message":{"role":"%s","content":"m%d"}}]}}' % (i, role.encode(), i))


def _entry(i: int, role: str = "user", *, rid: str = "", ts: int = 0, delta: bytes = b"",
           at: str = "", pairs: tuple[tuple[str, bytes], ...] = (), stored: bool = True,
           event_id: str = "") -> AppendEntry:
    return AppendEntry(
        rid=rid or f"r{i}", event_id=event_id or f"e{i}",
        event_json=_event_json(i, role) if stored else b"", ts_ns=ts or T0 + i * 1000,
        is_user=role == "user", producer_ts=at, session_delta=delta, user_pairs=pairs,
    )


async def _dump(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix``: type, value in stored order (a hash table's fields sorted),
    TTL rounded to seconds."""
    out: dict[str, Any] = {}
    keys = sorted([k async for k in client.scan_iter(match=f"{prefix}*")])
    for raw_key in keys:
        kind = (await client.type(raw_key)).decode()
        value: Any
        if kind == "string":
            value = (await client.get(raw_key)).decode()
        elif kind == "hash":
            pairs = list((await client.hgetall(raw_key)).items())
            if await client.object("ENCODING", raw_key) != b"listpack":
                pairs.sort()  # a hash table's order is the server's hash seed's
            value = [x.decode() for pair in pairs for x in pair]
        elif kind == "zset":
            flat = await client.execute_command("ZRANGE", raw_key, 0, -1, "WITHSCORES")
            value = [v.decode() for v in flat]
        else:
            value = kind
        pttl = await client.pttl(raw_key)
        name = raw_key.decode().removeprefix(prefix)
        out[name] = {"type": kind, "value": value, "ttl_s": -1 if pttl < 0 else round(pttl / 1000)}
    return out


async def _sequence(svc: Any, client: Any, prefix: str) -> list[list[str]]:
    """Appends covering each path of the script; the statuses of every call."""
    eng, keys = svc.engine, svc.keys
    base = {"ttl_ms": 0, "storage_limit": 0, "user_state_ttl_ms": 0}
    bounded = {"ttl_ms": 3_600_000, "storage_limit": 4, "user_state_ttl_ms": 7_200_000}
    a, b, c, d = (Key("app", "u", s) for s in ("a", "b", "c", "d"))
    for key in (a, b, d):
        await client.set(keys.meta(key), META % key.session_id.encode())
    calls: list[tuple[Key, list[AppendEntry], dict[str, Any]]] = [
        (a, [_entry(1, delta=b'{"x":"MQ==","k":null}', at="2025-01-02T03:04:06Z",
                    pairs=(("p", b"1"),))], base),
        (a, [_entry(2, "assistant", ts=T0 + 1000, at="2025-01-02T03:04:06Z")], base),
        (a, [_entry(1)], base),  # the same request again
        (a, [_entry(3, rid="r3", event_id="e1")], base),  # a known event id
        (a, [_entry(4, at="2025-01-02T04:04:06+01:00"), _entry(4), _entry(5, stored=False,
             delta=b'{"y":"Mg=="}'), _entry(6, "assistant", ts=T0 + 1000)], base),
        (a, [_entry(7)], {**base, "stale_after": "2025-01-02T03:04:05Z"}),
        (a, [_entry(8)], {**base, "incarnation": "other"}),
        (a, [_entry(9)], {**base, "incarnation": "g1", "stale_after": "2025-01-03T00:00:00Z"}),
        *[(a, [_entry(10 + i, at=f"2025-01-02T03:05:{i:02d}.25Z")], base) for i in range(20)],
        *[(b, [_entry(40 + i, "user" if i % 5 == 0 else "assistant",
                      pairs=(("q", b"%d" % i),) if i == 3 else ())], bounded) for i in range(12)],
        (b, [_entry(60 + i, "assistant") for i in range(6)], bounded),
        (c, [_entry(70)], base),  # no session
        (c, [_entry(70), _entry(71)], bounded),
        (d, [_entry(80, ts=T0)], {**bounded, "ttl_ms": 0}),
        (d, [_entry(81, ts=T0)], {**bounded, "ttl_ms": 0}),
    ]
    statuses = [await eng.append(key, entries, **opts) for key, entries, opts in calls]
    # Keys of the wrong type: the script refuses before writing anything.
    wrong = [keys.event_data, keys.event_index, keys.applied, keys.info, keys.user_state]
    for i, name in enumerate(wrong):
        key = Key("app", f"w{i}", "s")
        await client.set(keys.meta(key), META % b"s")
        await client.set(name(key), b"not a collection")
        statuses.append(await eng.append(key, [_entry(90, pairs=(("p", b"1"),))], **bounded))
        statuses.append(await eng.append(key, [_entry(91)], **bounded))
        await client.delete(keys.meta(key))
        statuses.append(await eng.append(key, [_entry(92)], **bounded))
    return [[s.replace(prefix, "P:") for s in row] for row in statuses]


async def test_append_stores_the_recorded_bytes(make_service, redis_client, key_prefix) -> None:
    """A fixed append sequence stores exactly the recorded keys, values, order and TTLs."""
    svc = await make_service()
    prefix = f"{key_prefix}:"
    got = {"statuses": await _sequence(svc, redis_client, prefix),
           "keys": await _dump(redis_client, prefix)}
    info = await redis_client.info("server")
    server = "valkey" if "valkey_version" in info else "redis"
    recorded = json.loads(SNAPSHOT.read_text())
    if os.environ.get("SESSIONSTREAMS_RECORD_APPEND_SNAPSHOT"):
        recorded[server] = got
        SNAPSHOT.write_text(json.dumps(recorded, indent=1) + "\n")
    assert got == recorded[server]
