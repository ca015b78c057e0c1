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


def fixed_rows() -> list[dict[str, Any]]:
    return [
        _row("command latency, 100k-event account vs 10", None, None, "<= 1.5 x p50/p99", None,
             note="not in this entry point yet"),
        _row("payouts end to end vs confirmed publishes", None, None, ">= 0.2 x", None,
             note="scripts/bench workers (needs RabbitMQ)"),
    ]  # fmt: skip


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
