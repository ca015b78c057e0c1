"""The store gauges issue 12 left: the relay's lag in seconds (recorded-time distance from its
last published event to the log's head, as for the read models) and open reconciliation breaks
by name, read from a real SQLite store through the same collector `/metrics` serves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters import metrics
from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.settings import Settings
from ledger.reconciliation import BREAK_NAMES, ReportBreak, ResolveBreak
from projections.runner import Projector

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GAP_S = 90


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Any, Any, list[datetime]]]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'gauges.db'}")
    init_database(settings)
    now = [T0]
    ledger = bootstrap(settings, clock=lambda: now[0])
    view = read_model(settings)
    try:
        yield ledger, view, now
    finally:
        ledger.close()
        view.datastore.close()


def scrape(ledger: Any, view: Any) -> dict[str, dict[str, float]]:
    parts = [metrics.relay_lag, metrics.reconciliation_breaks]
    body, _ = metrics.exposition(metrics.registry(metrics.StoreCollector(ledger, view, parts)))
    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            samples.setdefault(sample.name, {})[label] = sample.value
    return samples


def set_relay_position(view: Any, position: int) -> None:
    with view.write(None) as tx:
        tx.execute("DELETE FROM sl_relay_position WHERE name = %s", ("default",))
        tx.execute(
            "INSERT INTO sl_relay_position (name, position) VALUES (%s, %s)", ("default", position)
        )


def report(ledger: Any, now: datetime, key: str, name: str) -> None:
    ledger.execute(
        ReportBreak(
            idempotency_key=f"report-{key}",
            effective_at=now,
            account_id="acct_g",
            currency="usd",
            key=key,
            break_name=name,
            stripe_ref=f"txn_{key}",
            ledger_ref="",
            difference={"amount": 5},
        )
    )


def test_relay_lag_seconds_is_the_recorded_distance_to_the_head(store: Any) -> None:
    ledger, view, now = store
    first = ledger.open_account(idempotency_key="g1", account_id="acct_g", kind="connected")
    now[0] += timedelta(seconds=GAP_S)
    ledger.open_account(idempotency_key="g2", account_id="acct_h", kind="connected")
    set_relay_position(view, first.position)
    gauges = scrape(ledger, view)
    assert gauges["sluice_metrics_store_up"][""] == 1.0
    assert gauges["sluice_relay_lag_seconds"]["default"] == pytest.approx(GAP_S, abs=1.0)
    assert gauges["sluice_relay_lag_events"]["default"] > 0
    set_relay_position(view, ledger.recorder.max_notification_id())
    assert scrape(ledger, view)["sluice_relay_lag_seconds"]["default"] == 0.0


def test_open_breaks_are_counted_by_name_and_resolved_ones_are_not(store: Any) -> None:
    ledger, view, now = store
    ledger.open_account(idempotency_key="g1", account_id="acct_g", kind="connected")
    report(ledger, now[0], "ch_1", "amount_mismatch")
    report(ledger, now[0], "ch_2", "amount_mismatch")
    report(ledger, now[0], "ch_3", "missing_in_ledger")
    ledger.execute(
        ResolveBreak(
            idempotency_key="resolve-ch_3",
            effective_at=now[0],
            account_id="acct_g",
            currency="usd",
            key="ch_3",
            how="refetched",
        )
    )
    Projector(ledger, view, ["reconciliation"]).run_once()
    breaks = scrape(ledger, view)["sluice_reconciliation_breaks_open"]
    assert set(BREAK_NAMES) <= set(breaks)  # every name has a series, zero or not
    assert breaks["amount_mismatch"] == 2.0
    assert breaks["missing_in_ledger"] == 0.0
