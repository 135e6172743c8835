"""Figures (median seconds, events/s, ratios), targets and the printed table."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rntensor.bench.harness import SECTIONS

__all__ = ["format_table"]


# -- figures --------------------------------------------------------------------------------
def _brief(res: Mapping[str, Any]) -> str:
    if "error" in res:
        return f"error: {res['error']}"
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    s = res.get("seconds")
    return f"{s:.2f} s" if isinstance(s, float) else "ok"


def _first(samples: Sequence[Mapping[str, Any]], key: str) -> Any:
    return next((s[key] for s in samples if key in s), None)


def _make_figure(
    label: str,
    events: int,
    seconds: Sequence[float],
    vs: str | None,
    figs: Mapping[str, Mapping[str, Any]],
    errors: Sequence[str] = (),
    load_avg: Sequence[float] = (),
) -> dict[str, Any]:
    """One row: median (and best) seconds and events/s, and the ratio to figure ``vs``."""
    med = statistics.median(seconds) if seconds else None
    best = min(seconds) if seconds else None
    eps = events / med if med else None
    base = figs.get(vs or "", {})
    ratio = eps / base["events_per_s"] if eps and base.get("events_per_s") else None
    best_ratio = (
        (events / best) / base["best_events_per_s"]
        if best and base.get("best_events_per_s")
        else None
    )
    return {
        "label": label,
        "events": events,
        "seconds": med,
        "seconds_all": list(seconds),
        "events_per_s": eps,
        "best_events_per_s": events / best if best else None,
        "vs": vs,
        "ratio": ratio,
        "best_ratio": best_ratio,
        "errors": list(errors),
        "load_avg": statistics.median(load_avg) if load_avg else None,
    }


def _figure(
    figs: dict[str, Any],
    key: str,
    samples: Mapping[str, Sequence[Mapping[str, Any]]],
    label: str,
    events: int,
    *,
    vs: str | None = None,
) -> None:
    got = samples.get(key, [])
    secs = [x for s in got if "seconds" in s for x in s.get("seconds_all", [s["seconds"]])]
    figs[key] = _make_figure(
        label,
        events,
        secs,
        vs,
        figs,
        [s["error"] for s in got if "error" in s],
        [s["load_avg"] for s in got if "load_avg" in s],
    )


def _median_memory(samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    mems = [s["memory"] for s in samples if "memory" in s]
    if not mems:
        return {}
    return {k: statistics.median(m[k] for m in mems) for k in mems[0]}


def _criterion(
    what: str, value: float, target: float, unit: str, op: str, note: str = ""
) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {
        "what": what,
        "value": value,
        "target": target,
        "unit": unit,
        "op": op,
        "met": met,
        "note": note,
    }


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(results: Mapping[str, Any]) -> str:
    """The printed report: one row per figure, its baseline and ratio; memory; the targets.

    ``events/s`` and ``ratio`` come from median times, ``best`` from the fastest run; ``load``
    is the machine's 1-minute load average during the runs (above the CPU count, other work
    competed for the cores and the ratios are less trustworthy).
    """
    m = results.get("machine", {})
    lines = [
        f"rntensor bench, {m.get('date', '')}, {m.get('cpus', '?')} CPUs, {m.get('memory_gb', 0):.0f} GB, "
        f"python {m.get('python', '')}; medians of {results.get('repeat')} runs"
    ]
    for section in SECTIONS:
        sec = results.get(section)
        if sec is None:
            continue
        lines.append("")
        if "skipped" in sec or "error" in sec:
            what = f"skipped: {sec['skipped']}" if "skipped" in sec else f"error: {sec['error']}"
            lines.append(f"[{section}] {what}")
            continue
        lines.append(f"[{section}] {sec.get('params', {}).get('events', 0):,} events")
        lines.append(
            f"  {'measurement':<54}{'events/s':>12}{'best':>12}{'median s':>10}{'load':>6}"
            f"  {'vs':<14}{'ratio':>9}{'best':>9}"
        )
        figs = sec["figures"]
        for f in figs.values():
            vs = figs[f["vs"]]["label"].split(",")[0][:13] if f.get("vs") in figs else ""
            ratio = f"{f['ratio']:.2f}x" if f.get("ratio") is not None else ""
            best = f"{f['best_ratio']:.2f}x" if f.get("best_ratio") is not None else ""
            err = (
                f"  ({len(f['errors'])} failed: {f['errors'][0][:100]})" if f.get("errors") else ""
            )
            lines.append(
                f"  {f['label']:<54}{_num(f['events_per_s']):>12}{_num(f['best_events_per_s']):>12}"
                f"{_num(f['seconds'], '.3f'):>10}{_num(f.get('load_avg'), '.1f'):>6}  {vs:<14}"
                f"{ratio:>9}{best:>9}{err}"
            )
        for name, mem in sec.get("memory", {}).items():
            parts = [
                f"{k.upper()} {mem[f'peak_{k}_bytes'] / 1e6:,.0f} MB (+{mem[f'peak_{k}_above_start_bytes'] / 1e6:,.0f})"
                for k in ("rss", "pss", "anon")
            ]
            lines.append(f"  peak memory {name:<14} " + ", ".join(parts))
        for c in sec.get("criteria", []):
            note = f"; {c['note']}" if c.get("note") else ""
            lines.append(
                f"  target: {c['what']}: {c['value']:.2f} {c['unit']} (want {c['op']} "
                f"{c['target']:.2f} {c['unit']}{note}): {'met' if c['met'] else 'NOT met'}"
            )
    return "\n".join(lines)
