"""Markdown table and PNG plot of ``ops/bench_compare.py`` results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OPS = ["append_1k", "get20_1k", "append_10k", "get20_10k", "list_user"]


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
        "list_user": f"list 1 user of {_k(total)} sessions",
    }


def _cell(row: dict[str, Any] | None, what: str) -> str:
    if row is None:
        return "n/a"
    if not row["samples"]:
        return "not reached"
    mark = " †" if row["partial"] else ""
    if what == "p50":
        return f"{row['p50_us']:,.0f} ({row['ratio']:.1f}×){mark}"
    return f"{row['p99_us']:,.0f}{mark}"


def markdown(result: dict[str, Any]) -> str:
    """Two tables (p50 with its ratio to the bare round trip, and p99), one row per peer."""
    lines = [
        f"Bare redis-py `HSET` round trip: p50 {result['bare']['p50_us']:.0f} µs, "
        f"p99 {result['bare']['p99_us']:.0f} µs. Cells: µs (p50 / bare p50).",
        "",
    ]
    names = list(labels(result["sizes"]).values())
    for what in ("p50", "p99"):
        lines.append(f"| {what} | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for peer in result["peers"]:
            if peer.get("skipped"):
                if what == "p50":
                    lines.append(f"| {peer['name']} | " + " | ".join(
                        ["—"] * (len(names) - 1) + [peer["skipped"]]) + " |")
                continue
            rows = peer["rows"]
            cells = [_cell(rows.get(op), what) for op in OPS]
            lines.append(f"| {peer['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = []
    for peer in result["peers"]:
        reached = {
            (row["size"], row["target"], "sessions" if op == "list_user" else "events")
            for op, row in peer.get("rows", {}).items() if row and row["partial"]
        }
        if reached:
            parts = [f"{size:,} of {target:,} {unit}" for size, target, unit in sorted(reached)]
            notes.append(f"{peer['name']} reached " + " and ".join(parts))
    if notes:
        lines.append(f"† partial, the {result['budget_s']:.0f} s budget per operation ran out: "
                     + "; ".join(notes) + " (its reads ran on the size reached).")
    for peer in result["peers"]:
        phases = [(op, row["workers"]) for op, row in peer.get("rows", {}).items()
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
    lines.append("n/a: the store has no such call (the Agents SDK session has no listing).")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped horizontal bars of p50 / bare (log scale), p99 as a tick; partial hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [p for p in result["peers"] if not p.get("skipped")]
    fig, ax = plt.subplots(figsize=(12, 1.0 + 1.3 * len(OPS)))
    height = 0.8 / max(len(peers), 1)
    colors = plt.get_cmap("tab10").colors
    base = result["bare"]["p50_us"]
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
            ax.plot([row["p99_us"] / base], [y], marker="|", color="black", markersize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_yticks(range(len(OPS)), list(labels(result["sizes"]).values()))
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("latency / bare redis-py HSET round trip (p50 bar, p99 tick; log scale)")
    ax.set_title(f"Session stores, one local Redis (bare round trip p50 {base:.0f} µs); "
                 "hatched = partial")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
