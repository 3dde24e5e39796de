"""Trace files: one run's events for the visualiser (``paxos viz``), from the
simulator (``paxos sim --trace-json``) or recorded from live nodes (``paxos viz
--live --record``).

The format is the event contract's::

    {"format": "paxos-trace", "version": 1, "source": "sim" | "live", "seed": N | null,
     "nodes": [1, 2, 3], "time_unit": "tick" | "ms", "replay": "paxos sim ..." | null,
     "events": [...], "final": {"chosen": {"<node>": slot}, "delivered": {"<node>": index}}}

plus ``"truncated": true`` (and a ``note``) when recording stopped at its cap.
Written compactly and deterministically: one seed's file is the same bytes on
every run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from broadcast.spec import ConfigError
from paxos.sim.runner import SimResult

FORMAT = "paxos-trace"
VERSION = 1

#: Trace files larger than this are refused by ``paxos viz`` (a capped simulator run
#: writes about 200 MB).
MAX_TRACE_BYTES = 512 * 1024 * 1024


def sim_trace(result: SimResult, replay: str | None) -> dict[str, Any]:
    """The trace document of one simulated run (``SimConfig.events`` on)."""
    nodes = sorted(result.chosen_upto)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "source": "sim",
        "seed": result.seed,
        "nodes": nodes,
        "time_unit": "tick",
        "replay": replay,
        "ticks": result.ticks,
        "events": result.events,
        "final": {
            "chosen": {str(n): result.chosen_upto[n] for n in nodes},
            "delivered": {str(n): result.delivered_upto[n] for n in nodes},
        },
    }
    if result.events_truncated:
        doc["truncated"] = True
        doc["note"] = f"recording stopped after {len(result.events)} events"
    return doc


def live_trace(
    nodes: Iterable[int], events: list[dict[str, Any]], truncated: bool
) -> dict[str, Any]:
    """The trace document of a recorded live run; ``final`` is what the events told."""
    chosen: dict[int, int] = {}
    delivered: dict[int, int] = {}
    for event in events:
        kind = event.get("kind")
        node = event.get("node")
        if not isinstance(node, int):
            continue
        if kind == "chosen":
            last = event.get("to", event.get("slot"))
            if isinstance(last, int):
                chosen[node] = max(chosen.get(node, 0), last)
        elif kind == "deliver":
            index, count = event.get("index"), event.get("count", 1)
            if isinstance(index, int) and isinstance(count, int):
                delivered[node] = max(delivered.get(node, 0), index + count - 1)
    ids = sorted(set(nodes) | set(chosen) | set(delivered))
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "source": "live",
        "seed": None,
        "nodes": ids,
        "time_unit": "ms",
        "replay": None,
        "events": events,
        "final": {
            "chosen": {str(n): chosen.get(n, 0) for n in ids},
            "delivered": {str(n): delivered.get(n, 0) for n in ids},
        },
    }
    if truncated:
        doc["truncated"] = True
        doc["note"] = "the oldest events were dropped (the recording buffer is bounded)"
    return doc


def write(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(doc, out, separators=(",", ":"), allow_nan=False)
            out.write("\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the trace file {path}: {exc.strerror or exc}") from None


def read(path: Path) -> tuple[str, dict[str, Any]]:
    """The text of a trace file and the document it holds, checked; a ConfigError (one
    line) if it cannot be read or is not a trace file."""
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes is more than a trace file may have "
                f"({MAX_TRACE_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a trace file (not UTF-8 text)") from None
    try:
        doc = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError) as exc:  # (JSONDecodeError is a ValueError)
        raise ConfigError(f"{path}: not a trace file (invalid JSON: {exc})") from None
    problem = check(doc)
    if problem:
        raise ConfigError(f"{path}: not a trace file ({problem})")
    return text, doc


def _not_json(name: str) -> float:
    # Python's json reads NaN and Infinity; JSON (and so the page's JSON.parse) does not.
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def check(doc: object) -> str | None:
    """What is wrong with ``doc`` as a trace document, or None."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("format") != FORMAT:
        return f'"format" is not "{FORMAT}"'
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        return f"version {version!r}: this paxos reads version {VERSION}"
    if doc.get("source") not in ("sim", "live"):
        return '"source" must be "sim" or "live"'
    if doc.get("time_unit") not in ("tick", "ms"):
        return '"time_unit" must be "tick" or "ms"'
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not all(_is_int(n) for n in nodes):
        return '"nodes" must be a list of node ids'
    events = doc.get("events")
    if not isinstance(events, list):
        return '"events" must be a list'
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            return f"event {i} is not an object"
        t = event.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            return f'event {i} has no numeric "t"'
        if not isinstance(event.get("kind"), str):
            return f'event {i} has no "kind"'
    final = doc.get("final")
    if final is not None and not isinstance(final, dict):
        return '"final" must be an object'
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
