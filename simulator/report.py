"""Tables on the terminal (rich) and plots (matplotlib) of sweep results."""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.units import human_bytes
from policies.registry import is_offline

__all__ = ["print_table", "print_matrix", "plot_sweep", "verdict", "matrix", "time_unit"]


def print_table(results: Sequence[dict], console=None, title: str | None = None) -> None:
    """One row per run; the best online policy per capacity in bold."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 110)
    table = Table(title=title, caption="TTFT in seconds; re-prefill = total prefill time (s: seconds, h: hours); "
                  "bold: best online policy at that capacity; *offline reference (needs the future)")
    unit, divisor = time_unit(results)
    for column in ("capacity", "policy", f"re-prefill {unit[0]}", "hit rate", "TTFT p50", "p99",
                   "misses", "evictions", "written"):
        table.add_column(column, justify="left" if column in ("policy", "capacity") else "right",
                         no_wrap=True)
    best: dict[int, float] = {}
    for r in results:
        if not is_offline(r["policy"]):
            best[r["capacity_bytes"]] = min(best.get(r["capacity_bytes"], float("inf")), r["reprefill_seconds"])
    for r in results:
        style = "bold green" if not is_offline(r["policy"]) and r["reprefill_seconds"] == best[r["capacity_bytes"]] else None
        label = r.get("capacity") or human_bytes(r["capacity_bytes"])
        if label.endswith("%"):
            label = f"{label} {human_bytes(r['capacity_bytes'])}"
        table.add_row(label, r["policy"] + ("*" if is_offline(r["policy"]) else ""),
                      f"{r['reprefill_seconds'] / divisor:,.1f}" if divisor > 1 else f"{r['reprefill_seconds']:,.0f}",
                      f"{r['token_hit_rate']:.1%}", f"{r['ttft_p50']:.1f}",
                      f"{r['ttft_p99']:.1f}", str(r["full_misses"]), str(r["evictions"]),
                      human_bytes(r["bytes_written"]), style=style)
    console.print(table)


def time_unit(results: Sequence[dict]) -> tuple[str, float]:
    """The one unit a sweep's figures are shown in: seconds, or hours when the
    largest total passes 10 hours. The table, the matrix and the plot share it."""
    largest = max((r["reprefill_seconds"] for r in results), default=0.0)
    return ("hours", 3600.0) if largest >= 36_000 else ("seconds", 1.0)


def _capacities(results: Sequence[dict]) -> list[tuple[int, str]]:
    """``(bytes, label as the user wrote it)`` of each capacity, smallest first."""
    seen = {r["capacity_bytes"]: r.get("capacity") or human_bytes(r["capacity_bytes"]) for r in results}
    return sorted(seen.items())


def matrix(results: Sequence[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """``(capacity labels, policies, {(label, policy): re-prefill seconds})``."""
    labels = dict(_capacities(results))
    policies = list(dict.fromkeys(r["policy"] for r in results))
    cells = {(labels[r["capacity_bytes"]], r["policy"]): r["reprefill_seconds"] for r in results}
    return [label for _, label in _capacities(results)], policies, cells


def verdict(results: Sequence[dict]) -> list[str]:
    """One line per capacity: the best online policy (or those tied for best),
    and what it saves against LRU and against the next best online policy.

    >>> verdict([{"capacity_bytes": 1, "capacity": "5%", "policy": p, "reprefill_seconds": s}
    ...          for p, s in (("lru", 200.0), ("prefix-chain", 150.0), ("gdsf", 180.0))])
    ['5%: prefix-chain is best (150 s), 25.0% less than lru (200 s), 16.7% less than the next best, gdsf (180 s)']
    """
    lines = []
    labels, policies, cells = matrix(results)
    online = [p for p in policies if not is_offline(p)]
    for label in labels:
        ranked = sorted((cells[label, p], p != "prefix-chain", p) for p in online if (label, p) in cells)
        if not ranked:
            continue
        best_s = ranked[0][0]
        tied = [p for s, _, p in ranked if s == best_s]
        others = [(s, p) for s, _, p in ranked if s > best_s]
        if len(tied) > 1:
            line = f"{label}: {', '.join(tied)} tie for best ({best_s:,.0f} s)"
        else:
            line = f"{label}: {tied[0]} is best ({best_s:,.0f} s)"
        lru = cells.get((label, "lru"))
        if lru and "lru" not in tied:
            line += f", {_less(best_s, lru)} than lru ({lru:,.0f} s)"
        if others and others[0][1] != "lru":
            second_s, second = others[0]
            line += f", {_less(best_s, second_s)} than the next best, {second} ({second_s:,.0f} s)"
        elif others:
            line += " (the next best)"
        lines.append(line)
    return lines


def _less(best: float, other: float) -> str:
    """How much less ``best`` is than ``other``: a percentage, or the seconds
    when the percentage would print as 0.0.

    >>> _less(150.0, 200.0), _less(290_879.0, 290_893.0), _less(1000.0, 1000.04)
    ('25.0% less', '14 s (under 0.1%) less', '0.04 s (under 0.1%) less')
    """
    share = 100 * (1 - best / other)
    if share >= 0.05:
        return f"{share:.1f}% less"
    gap = other - best
    return f"{gap:,.0f} s (under 0.1%) less" if gap >= 1 else f"{gap:.2g} s (under 0.1%) less"


def print_matrix(results: Sequence[dict], console=None) -> None:
    """The policy x capacity matrix of re-prefill time (best online per column
    in bold; capacities as the user wrote them), then the verdict lines."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 110)
    unit, divisor = time_unit(results)
    labels, policies, cells = matrix(results)
    table = Table(title=f"re-prefill {unit}", caption="bold: best online")
    table.add_column("policy", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    best = {label: min((cells[label, p] for p in policies if (label, p) in cells and not is_offline(p)),
                       default=None) for label in labels}
    for policy in policies:
        row = []
        for label in labels:
            value = cells.get((label, policy))
            text = "" if value is None else (f"{value / divisor:,.1f}" if divisor > 1 else f"{value:,.0f}")
            bold = value is not None and value == best[label] and not is_offline(policy)
            row.append(f"[bold]{text}[/]" if bold else text)
        table.add_row(policy + ("*" if is_offline(policy) else ""), *row)
    console.print(table)
    for line in verdict(results):
        console.print(line)


_MARKERS = "osD^vP*Xh<>"
_DASHES = ["-", "--", "-.", ":"]


def plot_sweep(results: Sequence[dict], path: str, title: str = "") -> None:
    """Re-prefill time vs capacity, one line per policy (PNG, SVG or PDF by extension).

    Left: total re-prefill time, in the unit of the table. Right (when an
    offline reference was run): how far each online policy is above the best
    offline reference, zoomed on the contenders so that the close race is
    readable; the default policy's own points always stay in view, and
    policies off that scale are named. Capacities are labelled as given
    (``5%``, ``64GiB``); every policy has its own marker and dash, the legend
    sits outside the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit, divisor = time_unit(results)
    ticks = _capacities(results)
    policies = list(dict.fromkeys(r["policy"] for r in results))
    series = {p: sorted((r for r in results if r["policy"] == p), key=lambda r: r["capacity_bytes"])
              for p in policies}
    optimum: dict[int, float] = {}  # the best offline reference at each capacity
    for r in results:
        if is_offline(r["policy"]):
            optimum[r["capacity_bytes"]] = min(optimum.get(r["capacity_bytes"], float("inf")),
                                               r["reprefill_seconds"])
    fig, axes = plt.subplots(1, 2 if optimum else 1, figsize=(15 if optimum else 9.5, 5.2), dpi=110,
                             squeeze=False)
    left = axes[0][0]
    styles = {}
    for i, policy in enumerate(policies):
        if is_offline(policy):
            styles[policy] = dict(linestyle=(0, (4, 2)), color="black" if policy == "belady" else "dimgray",
                                  marker="x")
        else:
            styles[policy] = dict(color=f"C{i % 10}", marker=_MARKERS[i % len(_MARKERS)],
                                  linestyle=_DASHES[i % len(_DASHES)])
    for policy, rows in series.items():
        left.plot([r["capacity_bytes"] for r in rows], [r["reprefill_seconds"] / divisor for r in rows],
                  linewidth=2.8 if policy == "prefix-chain" else 1.3, markersize=5,
                  label=policy + (" (offline reference)" if is_offline(policy) else ""), **styles[policy])
    left.set_ylabel(f"total re-prefill time ({unit})")
    left.set_title("all policies")
    if optimum:
        right = axes[0][1]
        excess = {}
        for policy, rows in series.items():
            if is_offline(policy):
                continue
            excess[policy] = [(r["capacity_bytes"], 100 * (r["reprefill_seconds"] / optimum[r["capacity_bytes"]] - 1))
                              for r in rows if optimum.get(r["capacity_bytes"])]
        contenders = sorted(excess, key=lambda p: sum(y for _, y in excess[p]))[: max(3, len(excess) // 2)]
        shown = set(contenders) | ({"prefix-chain"} & set(excess))  # the default policy always in view
        ys = [y for p in shown for _, y in excess[p]]
        top, bottom = max(ys, default=1.0), min(ys, default=0.0)
        for policy in excess:
            right.plot([x for x, _ in excess[policy]], [y for _, y in excess[policy]],
                       linewidth=2.8 if policy == "prefix-chain" else 1.3, markersize=5, label=policy,
                       **styles[policy])
        right.set_ylim(min(-0.5, bottom * 1.15), max(1.0, top * 1.15))
        right.axhline(0, color="black", linestyle="--", linewidth=1)
        right.set_ylabel("re-prefill above the best offline reference (%)")
        right.set_title("the contenders, zoomed (0 = best offline reference)")
        off = [p for p in excess if max(y for _, y in excess[p]) > top * 1.15 and p not in shown]
        if off:
            right.text(0.01, 0.98, "beyond this scale: " + ", ".join(off), transform=right.transAxes,
                       fontsize=8, va="top", color="dimgray")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xticks([b for b, _ in ticks])
        ax.set_xticklabels([label for _, label in ticks])
        ax.minorticks_off()
        ax.set_xlabel("store capacity (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    handles, names = left.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title or "Re-prefill time vs capacity (lower is better)")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def print_fleet(results: Sequence[dict], console=None, title: str | None = None) -> None:
    """One row per fleet variant (``kvsim simulate --engines``): re-prefill,
    hit rate, TTFT and what the shared tier served. Fits 80 columns."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 80)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="seconds; from shared: lookups it served / tokens loaded")
    for column in ("fleet", "re-prefill", "hit rate", "TTFT p50", "p99", "misses", "from shared"):
        table.add_column(column, justify="left" if column == "fleet" else "right", no_wrap=True)
    for r in results:
        shared = f"{r['shared_hits']}/{r['shared_loaded_tokens'] / 1e6:.1f}M" if "shared_capacity_bytes" in r \
            else "-"
        table.add_row(r["policy_label"], f"{r['reprefill_seconds']:,.0f}", f"{r['token_hit_rate']:.1%}",
                      f"{r['ttft_p50']:.1f}", f"{r['ttft_p99']:.1f}", str(r["full_misses"]), shared)
    console.print(table)
