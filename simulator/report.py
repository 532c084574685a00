"""Tables on the terminal (rich) and plots (matplotlib) of sweep results."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["print_table", "plot_sweep", "human_bytes"]


def human_bytes(n: float) -> str:
    """Bytes in binary units.

    >>> human_bytes(3 * 2**30)
    '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_table(results: Sequence[dict], console=None, title: str | None = None) -> None:
    """One row per run; the best online policy per capacity in bold."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 110)
    table = Table(title=title, caption="TTFT in seconds; re-prefill = total prefill seconds; "
                  "bold: best online policy at that capacity; *offline optimum")
    for column in ("capacity", "policy", "re-prefill s", "hit rate", "TTFT p50", "p99",
                   "misses", "evictions", "written"):
        table.add_column(column, justify="left" if column in ("policy", "capacity") else "right",
                         no_wrap=True)
    best: dict[int, float] = {}
    for r in results:
        if r["policy"] != "belady":
            best[r["capacity_bytes"]] = min(best.get(r["capacity_bytes"], float("inf")), r["reprefill_seconds"])
    for r in results:
        style = "bold green" if r["policy"] != "belady" and r["reprefill_seconds"] == best[r["capacity_bytes"]] else None
        label = r.get("capacity") or human_bytes(r["capacity_bytes"])
        if label.endswith("%"):
            label = f"{label} {human_bytes(r['capacity_bytes'])}"
        table.add_row(label, r["policy"] + ("*" if r["policy"] == "belady" else ""),
                      f"{r['reprefill_seconds']:,.0f}", f"{r['token_hit_rate']:.1%}", f"{r['ttft_p50']:.1f}",
                      f"{r['ttft_p99']:.1f}", str(r["full_misses"]), str(r["evictions"]),
                      human_bytes(r["bytes_written"]), style=style)
    console.print(table)


def plot_sweep(results: Sequence[dict], path: str, title: str = "") -> None:
    """Re-prefill seconds vs capacity, one line per policy (PNG, SVG or PDF by extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    policies = list(dict.fromkeys(r["policy"] for r in results))
    for policy in policies:
        rows = sorted((r for r in results if r["policy"] == policy), key=lambda r: r["capacity_bytes"])
        xs = [r["capacity_bytes"] / 2**30 for r in rows]
        ys = [r["reprefill_seconds"] / 3600 for r in rows]
        style = dict(linestyle="--", color="black") if policy == "belady" else {}
        linewidth = 2.8 if policy == "prefix-chain" else 1.4
        ax.plot(xs, ys, marker="o", linewidth=linewidth,
                label=policy + (" (offline optimum)" if policy == "belady" else ""), **style)
    ax.set_xscale("log")
    ax.set_xlabel("store capacity (GiB, log scale)")
    ax.set_ylabel("total re-prefill time (hours)")
    ax.set_title(title or "Re-prefill time vs capacity (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
