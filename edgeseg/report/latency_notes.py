"""What a bench.json's figures mean, in plain words: noise, INT8 that does not pay off, denormals (layer 4).

Read from the bench.json dict alone, so the bench summary, bench.json's ``notes`` and the report (which
recomputes them: an older bench.json gets them too) say the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BUSY_LOAD_PER_CORE = 0.5  # load average above this x usable cores: other work competed for the CPU
MAX_SPREAD = 1.5  # p90 / p50 above this: a runner's samples scatter too much to quote


def noise_reasons(data: Mapping[str, Any]) -> list[str]:
    """Why the figures of a bench.json dict are noisy (empty: they look clean)."""
    reasons = []
    load = data.get("load_average") or {}
    busy = load.get("busy_above")
    for when in ("start", "end"):
        value = load.get(when)
        if value is not None and busy is not None and value > busy:
            reasons.append(f"load average {value:.2f} at the {when} of the run (above {busy:.2f} = "
                           f"{BUSY_LOAD_PER_CORE} x {load.get('usable_cores')} usable cores)")
    for r in data.get("runners", []):
        spread = r["p90_ms"] / r["p50_ms"] if r.get("p50_ms") else None
        if spread is not None and spread > MAX_SPREAD:
            reasons.append(f"{r['name']} p90/p50 = {spread:.2f} (above {MAX_SPREAD})")
    return reasons


def _slower_int8(runners: Sequence[Mapping[str, Any]]) -> list[str]:
    fp32 = {r["backend"]: r for r in runners if r.get("precision") == "fp32"}
    notes = []
    for r in runners:
        base = fp32.get(r.get("backend")) if r.get("precision") == "int8" else None
        if base is not None and r["p50_ms"] > base["p50_ms"]:
            notes.append(f"{r['name']} is SLOWER than {base['name']} on this machine (p50 {r['p50_ms']:.2f} ms vs "
                         f"{base['p50_ms']:.2f} ms, {r['p50_ms'] / base['p50_ms']:.2f}x): INT8 does not pay off "
                         f"here; the FP32 model of the same backend is the faster choice.")
    return notes


def _denormal_notes(runners: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    for r in runners:
        if r.get("flush_denormal") is True:
            notes.append(f"{r['name']} was timed with denormal floats flushed to zero (torch.set_flush_denormal"
                         f"(True)): untrained or random weights produce denormals that make PyTorch eager 5-30x "
                         f"slower, which would flatter every other backend.")
        elif r.get("flush_denormal") is False:
            notes.append(f"{r['name']}: this CPU cannot flush denormal floats, so with untrained or random weights "
                         f"PyTorch eager may be 5-30x slower than it would be with trained ones.")
    return notes


def latency_notes(data: Mapping[str, Any]) -> list[str]:
    """Plain-words notes on a bench.json dict, for the CLI summary and the report."""
    runners = data.get("runners", [])
    notes = _slower_int8(runners) + _denormal_notes(runners)
    reasons = noise_reasons(data)
    if reasons:
        notes.insert(0, "These figures are NOISY: " + "; ".join(reasons) + ". Re-run on an idle machine; the "
                        "ratios (runners interleaved) hold up better than the absolute milliseconds.")
    return notes
