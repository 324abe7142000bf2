"""Markdown tables and PNG plot of ``ops/bench_compare.py`` results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OPS = ["append_1k", "get20_1k", "append_10k", "get20_10k", "create", "list_user", "list_1k"]
#: The entry of the physical limit of a read (get_session's one round trip + msgspec decoding).
LIMIT_NAME = "physical limit: one read + msgspec decode"
NATIVE = "sessionstreams sync"
ADK_ADAPTER = "sessionstreams ADK adapter"
AGENTS_ADAPTER = "sessionstreams Agents adapter"
AGENTS_REDIS = "Agents RedisSession"
OURS = (NATIVE, "sessionstreams async", ADK_ADAPTER, AGENTS_ADAPTER, LIMIT_NAME)


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def labels(sizes: dict[str, int]) -> dict[str, str]:
    """Each operation's label for the sizes of the run."""
    small, large, tail = sizes["small"], sizes["large"], sizes["tail"]
    total = sizes["users"] * sizes["per_user"]
    return {
        "append_1k": f"append, first {_k(small)}",
        "get20_1k": f"get last 20, {_k(small)} events",
        "append_10k": f"append, {_k(large - tail)}-{_k(large)}",
        "get20_10k": f"get last 20, {_k(large)} events",
        "create": "create_session (empty)",
        "list_user": f"list 1 user's {sizes['per_user']} of {_k(total)} sessions",
        "list_1k": f"list 1 user's {_k(sizes['creates'])} sessions (meta)",
        "bytes": "Redis memory per stored event",
    }


def _cell(row: dict[str, Any] | None, what: str) -> str:
    if row is None:
        return "n/a"
    if "bytes_per_event" in row:
        return f"{row['bytes_per_event']:,} B"
    if not row["samples"]:
        return "not reached"
    mark = " †" if row["partial"] else ""
    if what == "p50":
        return f"{row['p50_us']:,.0f} ({row['ratio']:.2f}×){mark}"
    return f"{row['p99_us']:,.0f}{mark}"


def _measured(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in peers if not p.get("skipped")]


def _row(result: dict[str, Any], name: str, op: str) -> dict[str, Any] | None:
    for peer in _measured(result["peers"]):
        if peer["name"] == name:
            row: dict[str, Any] | None = peer["rows"].get(op)
            return row if row and (row.get("samples") or "bytes_per_event" in row) else None
    return None


def _value(row: dict[str, Any] | None) -> float | None:
    """What rows are compared by: the bytes per event, or the p50 over the bare round trips
    interleaved with the row (absolute times of rows measured minutes apart on a shared
    machine are not comparable; their ratios are)."""
    if row is None:
        return None
    return float(row["bytes_per_event"] if "bytes_per_event" in row else row["ratio"])


def _best_peer(result: dict[str, Any], op: str) -> tuple[str, dict[str, Any]] | None:
    found = [(p["name"], _row(result, p["name"], op)) for p in _measured(result["peers"])
             if p["name"] not in OURS]
    rows = [(n, r) for n, r in found if r is not None and not r.get("partial")]
    if not rows:
        return None
    return min(rows, key=lambda nr: _value(nr[1]) or 0.0)


def summary_table(result: dict[str, Any]) -> list[str]:
    """Operations as rows: native, the adapters, the physical limit and the best peer."""
    names = labels(result["sizes"])
    lines = [
        f"| operation | {NATIVE} | ADK adapter | Agents adapter | physical limit | best peer |",
        "|---|---|---|---|---|---|",
    ]
    for op in [*OPS, "bytes"]:
        cells = [_cell(_row(result, n, op), "p50")
                 for n in (NATIVE, ADK_ADAPTER, AGENTS_ADAPTER, LIMIT_NAME)]
        best = _best_peer(result, op)
        cells.append("n/a" if best is None else f"{best[0]} {_cell(best[1], 'p50')}")
        lines.append(f"| {names[op]} | " + " | ".join(cells) + " |")
    return lines


def _ratio(result: dict[str, Any], a: str, b: str, op: str) -> float | None:
    x, y = _value(_row(result, a, op)), _value(_row(result, b, op))
    return None if x is None or y is None or not y else x / y


def targets(result: dict[str, Any]) -> list[str]:
    """The performance targets, each with the figures of this run and met / not met."""
    out: list[str] = []

    def check(text: str, value: float | None, limit: float, unit: str = "×") -> None:
        if value is None:
            out.append(f"- {text}: not measured")
            return
        verdict = "met" if value <= limit else "not met"
        out.append(f"- {text}: {value:.2f}{unit} (target ≤ {limit:g}{unit}): {verdict}")

    for op in ("get20_1k", "get20_10k"):
        check(f"{labels(result['sizes'])[op]}: native / Agents RedisSession",
              _ratio(result, NATIVE, AGENTS_REDIS, op), 1.0)
        check(f"{labels(result['sizes'])[op]}: native / physical limit",
              _ratio(result, NATIVE, LIMIT_NAME, op), 1.0)
    for op, limit in (("create", 2.0), ("list_user", 3.0)):
        row = _row(result, NATIVE, op)
        check(f"{labels(result['sizes'])[op]}: native / bare HSET",
              None if row is None else row["ratio"], limit)
    best = _best_peer(result, "list_1k")
    if best is not None:
        check(f"{labels(result['sizes'])['list_1k']}: native / fastest peer ({best[0]})",
              _ratio(result, NATIVE, best[0], "list_1k"), 1.0)
    for op in OPS:
        check(f"ADK adapter / native, {labels(result['sizes'])[op]}",
              _ratio(result, ADK_ADAPTER, NATIVE, op), 1.3)
    for op in ("get20_1k", "get20_10k"):
        check(f"Agents adapter / Agents RedisSession, {labels(result['sizes'])[op]}",
              _ratio(result, AGENTS_ADAPTER, AGENTS_REDIS, op), 1.0)
    for op in ("append_1k", "append_10k"):
        check(f"Agents adapter / Agents RedisSession, {labels(result['sizes'])[op]}",
              _ratio(result, AGENTS_ADAPTER, AGENTS_REDIS, op), 1.0)
    for name in (ADK_ADAPTER, AGENTS_ADAPTER):
        check(f"memory per event, {name} / native", _ratio(result, name, NATIVE, "bytes"), 1.2)
    return out


def markdown(result: dict[str, Any]) -> str:
    """The summary, the targets, and two tables per peer (p50 with its ratio, and p99)."""
    lines = [
        f"Bare redis-py `HSET` round trip over the run: p50 {result['bare']['p50_us']:.0f} µs, "
        f"p99 {result['bare']['p99_us']:.0f} µs. Cells: p50 in µs (the p50 over the p50 of the "
        "bare round trips interleaved with that row's samples). Stores are compared by these "
        "ratios (the targets below too): rows run minutes apart on a shared machine.",
        "",
        *summary_table(result),
        "",
        *targets(result),
        "",
    ]
    names = [labels(result["sizes"])[op] for op in OPS]
    for what in ("p50", "p99"):
        extra = [labels(result["sizes"])["bytes"]] if what == "p50" else []
        lines.append(f"| {what} | " + " | ".join(names + extra) + " |")
        lines.append("|---|" + "---|" * (len(names) + len(extra)))
        for peer in result["peers"]:
            if peer.get("skipped"):
                if what == "p50":
                    lines.append(f"| {peer['name']} | " + " | ".join(
                        ["—"] * (len(names) + len(extra) - 1) + [peer["skipped"]]) + " |")
                continue
            rows = peer["rows"]
            ops = OPS + (["bytes"] if what == "p50" else [])
            cells = [_cell(rows.get(op), what) for op in ops]
            lines.append(f"| {peer['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _notes(result)
    return "\n".join(lines) + "\n"


def _notes(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    notes = []
    for peer in _measured(result["peers"]):
        reached = {
            (row["size"], row["target"],
             "sessions" if op in ("list_user", "list_1k", "create") else "events")
            for op, row in peer["rows"].items() if row and row["partial"]
        }
        if reached:
            parts = [f"{size:,} of {target:,} {unit}" for size, target, unit in sorted(reached)]
            notes.append(f"{peer['name']} reached " + " and ".join(parts))
    if notes:
        lines.append(f"† partial, the {result['budget_s']:.0f} s budget per operation ran out: "
                     + "; ".join(notes) + " (its reads ran on the size reached).")
    for peer in _measured(result["peers"]):
        phases = [(op, row["workers"]) for op, row in peer["rows"].items()
                  if row and "workers" in row]
        if phases:
            counts = sorted({w["workers"] for _, w in phases})
            parts = [f"{w['backlog']:,} entries after \"{labels(result['sizes'])[op]}\", "
                     f"drained in {w['drain_ms']:,.0f} ms" for op, w in phases]
            lines.append(
                f"{peer['name']}: appends timed as the producer sees them (the stream write), "
                f"with {'/'.join(map(str, counts))} worker processes running and applying "
                "on the same machine; backlog the workers had left when the appends ended: "
                + "; ".join(parts) + " (drained before the reads).")
    server = []
    for peer in _measured(result["peers"]):
        times = [(labels(result["sizes"])[op], row.get("server_us"))
                 for op, row in peer["rows"].items() if row and row.get("server_us")]
        if times:
            server.append(f"{peer['name']} " + ", ".join(f"{t:,.0f} µs ({label})"
                                                         for label, t in times))
    if server:
        lines.append(
            "Redis server time per read of the last 20 events (INFO commandstats over 100 "
            "reads alone; for a store that runs a script or a MULTI/EXEC transaction, their "
            "time, the commands inside them included; with workers running, their polls count "
            "too): "
            + "; ".join(server) + ".")
    lines.append(
        f"{LIMIT_NAME}: the read `get_session` sends (one MULTI/EXEC of plain commands for a "
        "window whose event ids the service remembers, else the load script), run once on "
        "the same session, and msgspec decoding of its reply (events into typed structs, the "
        "meta untyped), sampled interleaved with the native reads; no session is built.")
    lines.append("Memory: Redis `MEMORY USAGE` of the session's keys (request record included) "
                 "after the first appends, per stored event; ADK Database: the sqlite file; "
                 "ADK InMemory: the Python heap's growth over as many appends (tracemalloc).")
    lines.append("n/a: the store has no such call (the Agents SDK session has no listing and "
                 "no explicit create), or the row does not apply.")
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped horizontal bars of p50 / bare (log scale), p99 as a tick, partial hatched; and
    the memory per stored event beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = _measured(result["peers"])
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(16, 1.6 + 1.3 * len(OPS)),
                                  gridspec_kw={"width_ratios": [3, 1]})
    height = 0.8 / max(len(peers), 1)
    colors = plt.get_cmap("tab10").colors
    for j, peer in enumerate(peers):
        labelled = False
        for i, op in enumerate(OPS):
            row = peer["rows"].get(op)
            if not row or not row["samples"]:
                continue
            y = i + (j - (len(peers) - 1) / 2) * height
            ax.barh(y, row["ratio"], height=height * 0.9, color=colors[j % 10],
                    hatch="//" if row["partial"] else None, edgecolor="white",
                    label=None if labelled else peer["name"])
            labelled = True
            bare = row.get("bare_p50_us") or result["bare"]["p50_us"]
            ax.plot([row["p99_us"] / bare], [y], marker="|", color="black", markersize=8)
        used = peer["rows"].get("bytes")
        if used:
            mem.barh(j, used["bytes_per_event"], color=colors[j % 10])
    ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(OPS)), [labels(result["sizes"])[op] for op in OPS])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("latency / bare redis-py HSET round trip (p50 bar, p99 tick; log scale)")
    ax.set_title(f"Session stores, one local Redis (bare round trip p50 "
                 f"{result['bare']['p50_us']:.0f} µs); hatched = partial")
    ax.grid(axis="x", which="both", alpha=0.3)
    mem.set_yticks(range(len(peers)), [p["name"] for p in peers], fontsize=8)
    mem.invert_yaxis()
    mem.set_xlabel("bytes per stored event")
    mem.set_title("memory per stored event")
    mem.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
