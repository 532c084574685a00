"""Tables on the terminal (rich) and plots (matplotlib) of sweep results."""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.units import human_bytes
from policies.registry import is_offline

__all__ = ["print_table", "plot_sweep"]


def print_table(results: Sequence[dict], console=None, title: str | None = None) -> None:
    """One row per run; the best online policy per capacity in bold."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 110)
    table = Table(title=title, caption="TTFT in seconds; re-prefill = total prefill seconds; "
                  "bold: best online policy at that capacity; *offline reference (needs the future)")
    for column in ("capacity", "policy", "re-prefill s", "hit rate", "TTFT p50", "p99",
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
                      f"{r['reprefill_seconds']:,.0f}", f"{r['token_hit_rate']:.1%}", f"{r['ttft_p50']:.1f}",
                      f"{r['ttft_p99']:.1f}", str(r["full_misses"]), str(r["evictions"]),
                      human_bytes(r["bytes_written"]), style=style)
    console.print(table)


def plot_sweep(results: Sequence[dict], path: str, title: str = "") -> None:
    """Re-prefill time vs capacity, one line per policy (PNG, SVG or PDF by extension).

    Left: total re-prefill hours. Right (when an offline reference was run):
    how far each online policy is above the best offline reference, zoomed on
    the contenders so that the close race is readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r["policy"] for r in results))
    series = {p: sorted((r for r in results if r["policy"] == p), key=lambda r: r["capacity_bytes"])
              for p in policies}
    optimum: dict[int, float] = {}  # the best offline reference at each capacity
    for r in results:
        if is_offline(r["policy"]):
            optimum[r["capacity_bytes"]] = min(optimum.get(r["capacity_bytes"], float("inf")),
                                               r["reprefill_seconds"])
    fig, axes = plt.subplots(1, 2 if optimum else 1, figsize=(13 if optimum else 8, 5), dpi=110, squeeze=False)
    left = axes[0][0]
    colors = {p: f"C{i}" for i, p in enumerate(policies)}
    for policy, rows in series.items():
        style = (dict(linestyle="--", color="black" if policy == "belady" else "dimgray")
                 if is_offline(policy) else dict(color=colors[policy]))
        left.plot([r["capacity_bytes"] / 2**30 for r in rows], [r["reprefill_seconds"] / 3600 for r in rows],
                  marker="o", linewidth=2.8 if policy == "prefix-chain" else 1.4,
                  label=policy + (" (offline reference)" if is_offline(policy) else ""), **style)
    left.set_ylabel("total re-prefill time (hours)")
    left.set_title("all policies")
    if optimum:
        right = axes[0][1]
        excess = {}
        for policy, rows in series.items():
            if is_offline(policy):
                continue
            excess[policy] = [100 * (r["reprefill_seconds"] / optimum[r["capacity_bytes"]] - 1)
                              for r in rows if optimum.get(r["capacity_bytes"])]
            right.plot([r["capacity_bytes"] / 2**30 for r in rows if optimum.get(r["capacity_bytes"])],
                       excess[policy], marker="o", color=colors[policy],
                       linewidth=2.8 if policy == "prefix-chain" else 1.4, label=policy)
        contenders = sorted(excess.values(), key=lambda ys: sum(ys))[: max(3, len(excess) // 2)]
        top = max((max(ys) for ys in contenders if ys), default=1.0)
        bottom = min((min(ys) for ys in contenders if ys), default=0.0)  # an online policy can beat it
        right.set_ylim(min(-0.5, bottom * 1.15), max(1.0, top * 1.15))
        right.axhline(0, color="black", linestyle="--", linewidth=1)
        right.set_ylabel("re-prefill above the best offline reference (%)")
        right.set_title("the contenders, zoomed (0 = best offline reference)")
        right.legend(fontsize=8)
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("store capacity (GiB, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(title or "Re-prefill time vs capacity (lower is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
