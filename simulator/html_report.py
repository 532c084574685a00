"""``kvsim sweep ... --report report.html``: one self-contained HTML file a
person can send to a colleague — the plot embedded, the policy x capacity
matrix and verdict, every metric, what each policy does, where the trace came
from, the cost profile, and the command line that made it.

>>> import tempfile, os
>>> rows = [{"policy": "lru", "capacity_bytes": 10, "capacity": "5%", "reprefill_seconds": 9.0}]
>>> path = os.path.join(tempfile.mkdtemp(), "r.html")
>>> write_report(path, rows, trace="t.jsonl", profile=None, command="kvsim sweep t.jsonl")
>>> open(path).read().startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Sequence
from typing import Any

from policies.registry import available, is_offline

from .report import matrix, time_unit, verdict
from .replay import METRIC_KEYS

__all__ = ["write_report", "trace_provenance"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } th, td { padding: .25em .7em; border: 1px solid #ddd;
  white-space: nowrap; } .wide { overflow-x: auto; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } tr:nth-child(even) { background: #f7f7f7; }
.best { font-weight: bold; background: #e6f4e6; } td:last-child { white-space: normal; } .offline { color: #666; font-style: italic; }
pre { background: #f4f4f4; padding: .7em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #ddd; } .note { color: #666; font-size: .9em; }
"""


def trace_provenance(path: str) -> dict[str, Any]:
    """The header line of a kvsim trace (generator, seed, command...), if it has one."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "null")
    except (OSError, ValueError):
        return {}
    return first if isinstance(first, dict) and first.get("format") == "kvsim-trace" else {}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def write_report(path: str, results: Sequence[dict], *, trace: str, profile: Any, command: str,
                 plot_png: bytes | None = None, working_set: int | None = None) -> None:
    """Write the report of a sweep to ``path`` (UTF-8 HTML, no external files)."""
    unit, divisor = time_unit(results)
    labels, policies, cells = matrix(results)
    best = {label: min((cells[label, p] for p in policies if (label, p) in cells and not is_offline(p)),
                       default=None) for label in labels}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>kvsim sweep: {_esc(trace)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>Re-prefill time by eviction policy and store capacity — {_esc(trace)}</h1>",
           "<p>Lower is better: the seconds an engine spends prefilling what the store could not "
           "give back, over the whole trace.</p>", "<h2>Verdict</h2><ul>"]
    out += [f"<li>{_esc(line)}</li>" for line in verdict(results)]
    out.append("</ul>")
    if plot_png:
        data = base64.b64encode(plot_png).decode("ascii")
        out.append(f'<h2>Plot</h2><img alt="re-prefill time vs capacity" src="data:image/png;base64,{data}">')
    out.append(f"<h2>Re-prefill {unit}, policy x capacity</h2><table><tr><th>policy</th>")
    out += [f"<th>{_esc(label)}</th>" for label in labels]
    out.append("</tr>")
    for policy in policies:
        cls = ' class="offline"' if is_offline(policy) else ""
        out.append(f"<tr{cls}><td>{_esc(policy)}{' (offline)' if is_offline(policy) else ''}</td>")
        for label in labels:
            value = cells.get((label, policy))
            text = "" if value is None else (f"{value / divisor:,.1f}" if divisor > 1 else f"{value:,.0f}")
            mark = " best" if value is not None and value == best[label] and not is_offline(policy) else ""
            out.append(f'<td class="n{mark}">{text}</td>')
        out.append("</tr>")
    out.append("</table><p class=\"note\">Bold: the best online policy at that capacity. Offline references "
               "need the future and cannot run in an engine.</p>")
    out.append('<h2>Every metric</h2><div class="wide"><table><tr><th>capacity</th><th>policy</th>')
    metrics = [k for k in METRIC_KEYS if k != "requests"]
    out += [f"<th>{_esc(k)}</th>" for k in metrics]
    out.append("</tr>")
    for r in sorted(results, key=lambda r: (r["capacity_bytes"], policies.index(r["policy"]))):
        out.append(f"<tr><td>{_esc(r.get('capacity') or r['capacity_bytes'])}</td><td>{_esc(r['policy'])}</td>")
        for k in metrics:
            v = r.get(k, "")
            out.append(f'<td class="n">{_esc(f"{v:,.3f}" if isinstance(v, float) else v)}</td>')
        out.append("</tr>")
    out.append("</table></div><h2>The policies</h2><table><tr><th>policy</th><th>what it does</th></tr>")
    descriptions = available()
    out += [f"<tr><td>{_esc(p)}</td><td>{_esc(descriptions.get(p, ''))}</td></tr>" for p in policies]
    out.append("</table><h2>The trace</h2><table>")
    provenance = {"file": trace, **trace_provenance(trace)}
    if working_set:
        provenance["working set (bytes)"] = f"{working_set:,}"
    out += [f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in provenance.items()]
    out.append("</table>")
    if profile is not None:
        out.append("<h2>The cost profile</h2><table>")
        fields = dataclasses.asdict(profile) if dataclasses.is_dataclass(profile) else dict(vars(profile))
        out += [f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in fields.items()]
        out.append("</table>")
    out.append(f"<h2>Command</h2><pre>{_esc(command)}</pre></body></html>")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
