"""Results on disk: one JSON document, a Markdown report, PNG plots (matplotlib, optional)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.suite import find, headline_rows

SYSTEM_NAMES = {
    "paxos": "Multi-Paxos",
    "async": "async replication",
    "pysyncobj": "PySyncObj",
    "pysyncobj-tuned": "PySyncObj, 10 ms period",
}
COLORS = {"paxos": "#1f77b4", "async": "#ff7f0e", "pysyncobj": "#2ca02c",
          "pysyncobj-tuned": "#98df8a"}


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _spread(cell: dict[str, Any] | None, digits: int = 0, scale: float = 1.0) -> str:
    if not cell:
        return "-"
    med, lo, hi = (cell[k] * scale for k in ("median", "min", "max"))
    if cell.get("n", 1) <= 1:
        return _n(med, digits)
    return f"{_n(med, digits)} ({_n(lo, digits)}..{_n(hi, digits)})"


def _lat(row: dict[str, Any] | None) -> str:
    if row is None or not row.get("p50_ms"):
        return "-"
    p50, p99 = row["p50_ms"]["median"], (row.get("p99_ms") or {}).get("median")
    return f"{p50:.2f} / {p99:.1f}" if p99 is not None else f"{p50:.2f}"


def _system_name(system: str, secure: bool, params: dict[str, Any]) -> str:
    """The report's name of a system; ``--insecure`` runs of a CURVE system say so when
    the suite otherwise runs it with CURVE."""
    name = SYSTEM_NAMES.get(system, system)
    if not secure and not params.get("insecure") and system in ("paxos", "async"):
        name += " --insecure"
    return name


def _security_note(doc: dict[str, Any]) -> str:
    if doc["params"].get("insecure"):
        return ("Security: every system ran `--insecure` (no CURVE: plaintext, no "
                "authentication).")
    return ("Security: Multi-Paxos and async replication run as deployed, CURVE on every "
            "socket (the load clients with the cluster's admin key); rows marked `--insecure` "
            "ran plaintext. PySyncObj is always plaintext (its Raft traffic is its own TCP).")


def _lat_cell(cell: dict[str, Any] | None) -> str:
    """p50 / p99 ms (medians), with the p50 and p99 ranges over the rounds."""
    if not cell or not cell.get("p50_ms"):
        return "-"
    p50, p99 = cell["p50_ms"], cell.get("p99_ms") or {}
    text = f"{p50['median']:.2f} / {p99.get('median', float('nan')):.2f}"
    if p50.get("n", 1) > 1:
        text += (f" ({p50['min']:.2f}..{p50['max']:.2f} / "
                 f"{p99.get('min', float('nan')):.2f}..{p99.get('max', float('nan')):.2f})")
    return text


def security_section(doc: dict[str, Any], heading: str = "##") -> list[str]:
    """The CURVE-vs-``--insecure`` comparison (Multi-Paxos) as Markdown lines."""
    rows = doc.get("security") or []
    if not rows:
        return []
    rates = [int(r) for r in doc["params"]["rates"]]
    lines = [
        f"{heading} What CURVE costs (Multi-Paxos, CURVE vs `--insecure`)",
        "",
        "Each round starts a fresh cluster with CURVE and one `--insecure`, one right after "
        "the other, alternating which goes first. Throughput: saturation, median of the "
        "rounds (min..max); ratio: CURVE median / insecure median, and the median (min..max) "
        "of the per-round ratios; CPU µs/msg: CPU time of all processes (nodes and load "
        "client) per committed message at saturation, the least noisy measure of the cost "
        "on a shared machine. Latency: p50 / p99 ms at a fixed offered rate, medians of "
        "the rounds (ranges of p50 / p99 in brackets).",
        "",
    ]
    head = ["nodes", "payload", "fsync", "security", "msgs/s"]
    head += [f"p50 / p99 ms @{r:,}/s" for r in rates]
    head += ["CPU % L/F/C", "CPU µs/msg"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        for which in ("curve", "insecure"):
            cpu = row["cpu_pct"][which]
            cells = [str(row["nodes"]), f"{row['payload']} B",
                     "on" if row["fsync"] else "off",
                     "CURVE" if which == "curve" else "--insecure",
                     _spread(row[f"{which}_msgs_s"])]
            for rate in rates:
                cell = (row["latency"].get(str(rate)) or {}).get(which)
                text = _lat_cell(cell)
                if cell and cell.get("msgs_s") and cell["msgs_s"]["median"] < 0.9 * rate:
                    text += f" (only {cell['msgs_s']['median']:,.0f}/s)"
                cells.append(text)
            cells.append(f"{_n(cpu['leader'])} / {_n(cpu['follower'])} / {_n(cpu['client'])}")
            cells.append(_n(row["cpu_us_per_msg"][which].get("total"), 1))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| nodes | payload | fsync | CURVE / insecure msgs/s | per round | cost "
              f"| cost <= {rows[0]['max_cost']:.0%} | CPU µs/msg CURVE / insecure "
              "| other CPU % of a core (median, max) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        paired = row["paired_ratio"]
        paired_text = "-" if not paired else (
            f"{paired['median']:.3f} ({paired['min']:.3f}..{paired['max']:.3f}, "
            f"n={paired['n']})")
        foreign = row["foreign_cpu_pct"]
        met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
        lines.append(
            f"| {row['nodes']} | {row['payload']} B | {'on' if row['fsync'] else 'off'} | "
            f"{_n(row['ratio'], 3)} | {paired_text} | "
            f"{'-' if row['cost'] is None else format(row['cost'], '.1%')} | {met} | "
            f"{_n(row.get('cpu_ratio'), 3)} | "
            + ("-" if not foreign else f"{foreign['median']:.0f}, {foreign['max']:.0f}")
            + " |"
        )
    start, end = doc["machine"].get("loadavg_at_start"), doc.get("loadavg_at_end")
    if start or end:
        def fmt(avg: list[float] | None) -> str:
            return "-" if not avg else " / ".join(f"{x:.2f}" for x in avg)
        lines += ["", f"Load average (1 / 5 / 15 min) at the start: {fmt(start)}; at the end: "
                  f"{fmt(end)}. Other CPU: used meanwhile by processes not part of the run."]
    changes = sum(r["leader_changes"] for r in rows)
    if changes:
        lines += ["", f"Leader changes (an election, e.g. heartbeats starved of CPU) during "
                  f"{changes} of the {sum(r['runs'] for r in rows)} measured runs: their "
                  "figures include the stall (see `leader_changed` in the JSON)."]
    return lines


def security_markdown(doc: dict[str, Any]) -> str:
    """The report of ``python -m bench --security``."""
    m = doc["machine"]
    lines = [
        "# What CURVE costs",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} usable cores, Linux {m['kernel']}, "
        f"Python {m['python']}, pyzmq {m['pyzmq']} / libzmq {m['libzmq']}. "
        f"{doc['params']['reps']} rounds, {doc['elapsed_s']:.0f} s.",
        "",
        *security_section(doc, "##"),
    ]
    if doc.get("errors"):
        lines += ["", "## Errors", ""]
        lines += [f"- {e.get('system')} fsync {e.get('fsync')} secure {e.get('secure')}: "
                  f"{str(e['error']).splitlines()[0][:300]}" for e in doc["errors"]]
    return "\n".join(lines) + "\n"


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    mem = m.get("memory_bytes")
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['cpu_model']}, {m['cores_usable']} usable cores, "
        f"{(mem or 0) / 2**30:.1f} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"pyzmq {m['pyzmq']} / libzmq {m['libzmq']}"
        + (f", PySyncObj {m['pysyncobj']}" if m.get("pysyncobj") else "")
        + f". Suite time {doc['elapsed_s']:.0f} s.",
        "",
        "All processes on 127.0.0.1 (nodes and load clients are separate processes). "
        "Throughput: committed (acknowledged) messages per second at saturation, median of "
        "the repetitions (min..max). Latency: p50 / p99 commit latency in ms measured by the "
        "client (send → acknowledgement) at a fixed offered rate or at saturation. "
        "CPU: % of one core, leader / each follower (mean) / load client, at saturation; "
        "CPU µs/msg: CPU time of all processes (nodes and client) per committed message.",
        "",
    ]
    rows = doc["summary"]
    params = doc["params"]
    rates = [float(r) for r in params["rates"]]
    head = ["system", "nodes", "payload", "fsync", "msgs/s", "MB/s"]
    head += [f"p50/p99 ms @{int(r):,}/s" for r in rates]
    head += ["p50/p99 ms @sat", "CPU % L/F/C", "CPU µs/msg"]
    lines += [_security_note(doc), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    configs = sorted(
        {(r["system"], r["nodes"], r["payload"], r["fsync"], r.get("secure", True))
         for r in rows},
        key=lambda c: (list(SYSTEM_NAMES).index(c[0]) if c[0] in SYSTEM_NAMES else 9,
                       c[1], c[2], c[3], not c[4]),
    )
    base = {"batch": params["batch"], "window": params["window"]}
    for system, nodes, payload, fsync, secure in configs:
        key = {"system": system, "nodes": nodes, "payload": payload, "fsync": fsync,
               "secure": secure, **base}
        sat = find(rows, **key, mode="saturation")
        cells = [
            _system_name(system, secure, params),
            str(nodes),
            f"{payload} B",
            ("journal" if system.startswith("pysyncobj") else "on") if fsync else "off",
            _spread(sat["msgs_s"] if sat else None),
            _spread(sat["mb_s"] if sat else None, 1),
        ]
        for rate in rates:
            row = find(rows, **key, mode="rate", offered_msgs_s=rate)
            cell = _lat(row)
            if row is not None and row.get("msgs_s") and row["msgs_s"]["median"] < 0.9 * rate:
                cell += f" (only {row['msgs_s']['median']:,.0f}/s)"
            cells.append(cell)
        cells.append(_lat(sat))
        if sat is not None:
            cells.append(f"{_n(sat['leader_cpu_pct'])} / {_n(sat['follower_cpu_pct'])} / "
                         f"{_n(sat['client_cpu_pct'])}")
            cells.append(_n((sat.get("cpu_us_per_msg") or {}).get("total"), 1))
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    changed = [r for r in rows if r.get("leader_changes")]
    if changed:
        intro = "Leader changes during measured runs (an election stalls commits): "
        lines += ["", intro + ", ".join(
            f"{SYSTEM_NAMES.get(r['system'], r['system'])} {r['nodes']} nodes {r['payload']} B "
            f"fsync {'on' if r['fsync'] else 'off'} "
            f"{'saturation' if r['mode'] == 'saturation' else str(r['offered_msgs_s']) + '/s'}: "
            f"{r['leader_changes']}/{r['reps']} runs"
            for r in changed
        ) + "."]
    foreign = [r["foreign_cpu_pct_max"] for r in rows if r.get("foreign_cpu_pct_max") is not None]
    if foreign and max(foreign) > 20:
        lines += ["", f"Warning: other processes used up to {max(foreign):.0f}% of a core during "
                  "some runs (`foreign_cpu_pct` in the JSON); those figures are pessimistic."]
    if doc.get("sweep"):
        lines += ["", "## Client batch size and window (saturation, 3 nodes, no fsync)", "",
                  "| system | batch | window | msgs/s | p50 / p99 ms |", "|---|---|---|---|---|"]
        for row in sorted(doc["sweep"] + [r for r in headline_rows(doc)
                                          if r["mode"] == "saturation"
                                          and r["nodes"] == 3 and not r["fsync"]
                                          and r["payload"] == params["payloads"][0]
                                          and r["system"] in params["sweep_systems"]],
                          key=lambda r: (r["system"], r["batch"], r["window"])):
            lines.append(f"| {SYSTEM_NAMES.get(row['system'], row['system'])} | {row['batch']} "
                         f"| {row['window']} | {_spread(row['msgs_s'])} | {_lat(row)} |")
    if doc.get("security"):
        lines += ["", *security_section(doc)]
    if doc.get("failover_summary"):
        lines += ["", "## Failover (SIGKILL the leader under load)", "",
                  "| system | fsync | load | acked msgs | acked lost | kill → first new commit s "
                  "| kill → first ack s | survivors agree |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in doc["failover_summary"]:
            per_rep = ", ".join(str(x) for x in row["lost_acked_per_rep"])
            lines.append(
                f"| {SYSTEM_NAMES.get(row['system'], row['system'])} | "
                f"{'on' if row['fsync'] else 'off'} | {row['mode']} | {row['acked_total']:,} | "
                f"{row['lost_acked_total']} ({per_rep}) | {_spread(row['unavailable_s'], 3)} | "
                f"{_spread(row['first_ack_after_kill_s'], 3)} | "
                f"{'yes' if row['orders_agree'] else 'NO'} |"
            )
    if doc.get("targets"):
        lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        for t in doc["targets"]:
            value = t["value"]
            shown = "-" if value is None else (f"{value:,.3f}" if value < 100 else f"{value:,.0f}")
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {shown} | {t['op']} {t['threshold']:,} | {met} |")
    if doc.get("errors"):
        lines += ["", "## Errors", ""]
        lines += [f"- {e.get('system')} {e.get('nodes', '')} {e.get('payload', '')}: "
                  f"{str(e['error']).splitlines()[0][:300]}" for e in doc["errors"]]
    return "\n".join(lines) + "\n"


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots; returns the files written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    rows = headline_rows(doc)
    params = doc["params"]
    base = {"batch": params["batch"], "window": params["window"]}

    # Throughput by system, payload and node count (one panel per fsync setting).
    fsyncs = sorted({r["fsync"] for r in rows})
    systems = [s for s in SYSTEM_NAMES if any(r["system"] == s for r in rows)]
    groups = sorted({(r["payload"], r["nodes"]) for r in rows})
    if rows and groups:
        fig, axes = plt.subplots(1, len(fsyncs), figsize=(6 * len(fsyncs), 4.5), squeeze=False)
        width = 0.8 / max(1, len(systems))
        for ax, fsync in zip(axes[0], fsyncs, strict=True):
            for i, system in enumerate(systems):
                xs, ys, lo, hi = [], [], [], []
                for g, (payload, nodes) in enumerate(groups):
                    row = find(rows, system=system, payload=payload, nodes=nodes, fsync=fsync,
                               mode="saturation", **base)
                    if row is None or row["msgs_s"] is None:
                        continue
                    s = row["msgs_s"]
                    xs.append(g + (i - (len(systems) - 1) / 2) * width)
                    ys.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                if xs:
                    ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3,
                           label=SYSTEM_NAMES[system], color=COLORS[system])
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([f"{p} B\n{n} nodes" for p, n in groups])
            ax.set_ylabel("committed msgs/s (median, min..max)")
            ax.set_title(f"saturation throughput, fsync {'on' if fsync else 'off'}")
            ax.grid(axis="y", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = out / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # Latency CDFs: 3 nodes, first payload, no fsync; one panel per offered load.
    loads: list[float | None] = [float(r) for r in params["rates"]] + [None]
    payload0 = params["payloads"][0]
    fig, axes = plt.subplots(1, len(loads), figsize=(4.2 * len(loads), 4), squeeze=False)
    drew = False
    for ax, load in zip(axes[0], loads, strict=True):
        for system in systems:
            row = find(rows, system=system, nodes=3, payload=payload0, fsync=False,
                       mode="saturation" if load is None else "rate", offered_msgs_s=load, **base)
            if row is None or not row.get("cdf_ms"):
                continue
            xs = [p[0] for p in row["cdf_ms"]]
            ys = [p[1] for p in row["cdf_ms"]]
            ax.plot(xs, ys, label=SYSTEM_NAMES[system], color=COLORS[system])
            drew = True
        ax.set_xscale("log")
        ax.set_xlabel("commit latency (ms)")
        ax.set_title("saturation" if load is None else f"{load:,.0f} msgs/s offered")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.0)
    axes[0][0].set_ylabel(f"fraction (3 nodes, {payload0} B, no fsync)")
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    if drew:
        path = out / "latency_cdf.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)

    # Failover timeline: first repetition of each system (no fsync if measured).
    fail = doc.get("failover") or []
    if fail:
        fig, ax = plt.subplots(figsize=(9, 4.2))
        for system in SYSTEM_NAMES:
            runs = [r for r in fail if r["system"] == system]
            runs.sort(key=lambda r: (r["fsync"], r["rep"]))
            if not runs:
                continue
            r = runs[0]
            xs = [p[0] for p in r["timeline"]]
            ys = [p[1] for p in r["timeline"]]
            label = (f"{SYSTEM_NAMES[system]} (unavailable {r['unavailable_s']} s, "
                     f"lost {r['lost_acked']})")
            ax.step(xs, ys, where="post", label=label, color=COLORS[system])
        ax.axvline(0, color="red", linestyle="--", linewidth=1)
        ax.text(0.01, ax.get_ylim()[1] * 0.95, "SIGKILL leader", color="red", va="top")
        ax.set_xlabel("seconds since the leader was killed")
        ax.set_ylabel(f"acknowledged msgs/s ({fail[0]['bucket_ms']} ms buckets)")
        ax.set_title(f"failover under load ({fail[0]['mode']}, {fail[0]['nodes']} nodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / "failover.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
