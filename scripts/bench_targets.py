"""Issue 13's table: each target as a ratio to a baseline measured in the same run, with
PASS/SHORT (or NOT RUN, with the reason). Built from the suites' results; measures nothing."""

from __future__ import annotations

import math
from typing import Any

from bench_common import fmt, render_rows

NOT_RUN = "NOT RUN"


def _row(
    measure: str, figure: float | None, baseline: float | None, target: str, ok: bool | None,
    unit: str = "/s", note: str = "",
) -> dict[str, Any]:  # fmt: skip
    ratio = figure / baseline if figure is not None and baseline else None
    status = NOT_RUN if ok is None else ("PASS" if ok else "SHORT")
    return {
        "measure": measure, "figure": figure, "baseline": baseline, "ratio": ratio,
        "target": target, "status": status, "unit": unit, "note": note,
    }  # fmt: skip


def payment_rows(rows: list[dict[str, Any]], hordak: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for threads, want in ((16, 0.2), (1, 0.15)):
        base = next((r for r in rows if r["mode"] == "baseline" and r["threads"] == threads), None)
        led = next((r for r in rows if r["mode"] == "unbatched" and r["threads"] == threads), None)
        name = f"routed payments/s, single commands, {threads} thread(s) vs one-row INSERT tx/s"
        if base is None or led is None:
            out.append(_row(name, None, None, f">= {want} x", None, note="--threads lacks it"))
            continue
        ratio = led["per_s"] / base["per_s"]
        out.append(_row(name, led["per_s"], base["per_s"], f">= {want} x", ratio >= want))
    for threads, want in ((1, 1.5), (16, 2.0)):
        name = f"routed payments/s vs django-hordak transfer_to/s, {threads} thread(s)"
        led = next((r for r in rows if r["mode"] == "unbatched" and r["threads"] == threads), None)
        hk = next((r for r in hordak.get("rows", []) if r["threads"] == threads), None)
        if led is None or hk is None:
            note = str(hordak.get("error") or "--threads lacks it")[:60]
            out.append(_row(name, None, None, f">= {want} x", None, note=note))
            continue
        per_s = hk["transfers_per_s"]
        note = f"hordak p99 {hk['p99_ms']:.0f} ms, sluice p99 {led['p99_ms']:.0f} ms"
        ok = led["per_s"] >= want * per_s
        out.append(_row(name, led["per_s"], per_s, f">= {want} x", ok, note=note))
    return out


def serve_rows(serve: dict[str, Any] | None) -> list[dict[str, Any]]:
    if serve is None:
        return []
    out = []
    hot = serve.get("hot")
    if hot is not None:
        one, several = hot["one_process"], hot["several"]
        clean = (
            several["conflicts_409"] == 0
            and several["server_errors_5xx"] == 0
            and several["transport_failures"] == 0
            and several["ledger"]["ok"]
        )
        ok = clean and several["per_s"] >= one["per_s"]
        out.append(
            _row(
                f"{several['processes']} serve processes, {several['clients']} clients, hot "
                "platform account: payments/s vs one process",
                several["per_s"], one["per_s"], ">= 1.0 x, no 409/5xx, balanced", ok,
                note=f"409s {several['conflicts_409']}, 5xx {several['server_errors_5xx']}, "
                f"ledger {'balanced' if several['ledger']['ok'] else 'WRONG'}",
            )
        )  # fmt: skip
    hooks = serve.get("webhooks")
    if hooks is not None:
        hook, empty = hooks["webhook"]["per_s"], hooks["empty"]["per_s"]
        out.append(
            _row(
                f"webhook ingest (POST /webhooks/stripe) vs GET /healthz, {hooks['processes']} "
                "process(es)", hook, empty, ">= 0.5 x", hook >= 0.5 * empty,
            )
        )  # fmt: skip
    return out


def projection_rows(projected: dict[str, Any] | None) -> list[dict[str, Any]]:
    if projected is None:
        return []
    out = []
    decoded = projected["reads"][1]["per_s"]
    together = next(
        (r for r in projected["rebuilds"] if r["label"].startswith("rebuild all")), None
    )
    if together is not None:
        out.append(
            _row(
                f"all read models rebuilt from {projected['history']['events_written']:,} "
                "events vs decoded read (events/s)",
                together["per_s"], decoded, ">= 0.5 x", together["per_s"] >= 0.5 * decoded,
            )
        )  # fmt: skip
    validation = projected["validation"]
    if together is not None and "verify_seconds" in validation:
        verify_s, rebuild_s = validation["verify_seconds"], together["seconds"]
        out.append(
            _row(
                "audit verify time vs rebuilding all read models (s)",
                verify_s, rebuild_s, "<= 1.5 x", verify_s <= 1.5 * rebuild_s, unit=" s",
            )
        )  # fmt: skip
    balance = next((r for r in projected["latency"] if r["label"] == "queries.balance"), None)
    raw = next(
        (r for r in projected["latency"] if r["label"].startswith("raw SELECT rm_bal")), None
    )
    if balance is not None and raw is not None:
        ok = balance["p50_ms"] <= 2 * raw["p50_ms"] and balance["p99_ms"] <= 5.0
        out.append(
            _row(
                "balance query p50 (ms) vs raw primary-key SELECT; p99 <= 5 ms",
                balance["p50_ms"], raw["p50_ms"], "<= 2 x, p99 <= 5 ms", ok, unit=" ms",
                note=f"p99 {balance['p99_ms']:.2f} ms",
            )
        )  # fmt: skip
    return out


def latency_rows(latency: dict[str, Any] | None, quick: bool) -> list[dict[str, Any]]:
    """One row: the worst of the four ratios long/short (p50 and p99, cached and uncached) as
    the figure; PASS only if all four are within the target."""
    if latency is None:
        return []
    history = latency["history"]
    ratios = {
        (p, pct): latency[p][f"{pct}_ratio"]
        for p in ("cached", "uncached")
        for pct in ("p50", "p99")
    }
    phase, pct = max(ratios, key=lambda k: ratios[k])
    note = ", ".join(f"{p} {q} {r:.2f} x" for (p, q), r in ratios.items())
    note += f"; figure: {phase} {pct}" + ("; --quick history size" if quick else "")
    return [
        _row(
            f"command latency (ms), seller with {history['long_events']:,} events vs "
            f"{history['short_events']}, p50 and p99",
            latency[phase]["long"][f"{pct}_ms"], latency[phase]["short"][f"{pct}_ms"],
            "<= 1.5 x p50 and p99", all(r <= 1.5 for r in ratios.values()), unit=" ms",
            note=note,
        )
    ]  # fmt: skip


def workers_rows(workers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Payouts end to end: NOT RUN without RabbitMQ, SHORT unless exactly once."""
    if workers is None:
        return []
    name = (
        "payouts end to end (relay -> RabbitMQ -> worker -> Stripe sandbox -> ledger), exactly "
        "once, vs confirmed publishes/s"
    )
    if "not_run" in workers:
        return [_row(name, None, None, ">= 0.2 x, exactly once", None, note=workers["not_run"])]
    if "failed" in workers:
        return [_row(name, None, None, ">= 0.2 x, exactly once", False, note=workers["failed"])]
    rate, baseline, once = workers["per_s"], workers["baseline_per_s"], workers["exactly_once"]
    note = f"{workers['payouts']} payouts, exactly once: {'yes' if once else 'NO'}"
    if not workers["complete"]:
        note += f", incomplete after {workers['seconds']:.0f} s"
    ok = once and rate >= 0.2 * baseline
    return [_row(name, rate, baseline, ">= 0.2 x, exactly once", ok, note=note)]


def render(targets: list[dict[str, Any]]) -> str:
    def figure(value: float | None, unit: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt(value, 2 if unit.strip() in ("ms", "s") else 0) + unit

    header = ("measure", "figure", "baseline", "ratio", "target", "status", "note")
    lines = [
        (
            t["measure"],
            figure(t["figure"], t["unit"]),
            figure(t["baseline"], t["unit"]),
            "-" if t["ratio"] is None else f"{t['ratio']:.3f} x",
            t["target"],
            t["status"],
            t["note"],
        )
        for t in targets
    ]
    return render_rows(header, lines)
