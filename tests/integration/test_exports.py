"""Finance-ready exports and one id per movement (issue 15), on real stores.

- a movement's id is the same in the auditor's replay, ``GET /v1/balance_transactions``, the
  CSV export and an account proof;
- the CLI exports: decimals by currency exponent beside minor units, ISO 8601 instants (UTC or
  ``--tz``), gross/fee/net, account metadata columns, statements with opening and closing rows,
  every row (no page cap); bad parameters are one line and exit 2;
- the itemized reports' law, as a hypothesis property over random balance transactions:
  closing = opening + the period's movements, exactly, per seller and per category.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from adapters.cli import app as sluice_app
from adapters.export import SUMMARY_MONEY_ALL, decimal_text
from adapters.persistence import ledger_env
from adapters.settings import Settings
from adapters.sql_store import open_read_model
from ledger import commands as c
from projections import exports
from projections.projections import ALL_DDL
from projections.runner import Projector
from tests.integration.http_support import Client, new_key, running
from tests.integration.merkle_support import PLATFORM, SELLER, Books, books_on
from tests.support import T0

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def sluice(url: str, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(
        sluice_app, list(args), env={"SLUICE_DATABASE_URL": url, **(env or {})}
    )
    assert result.exit_code == code, (args, result.exit_code, result.output)
    if code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return result.output


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    with books_on("sqlite", tmp_path) as books:
        books.ledger.execute(
            c.SetAccountProfile(
                idempotency_key="profile",
                effective_at=T0,
                account_id=SELLER,
                display_name="Alpine",
                metadata=(("region", "eu"), ("tier", "gold")),
            )
        )
        for op, amount in (("charge", 12_345), ("transfer", 5_000), ("topup", 700)):
            books.apply(op, amount)
        books.apply("payout", 1_250)
        Projector(
            books.ledger, books.view, ["balances", "balance_transactions", "payouts"]
        ).run_once()
        yield books


# One id per movement ---------------------------------------------------------------------------


def test_a_movement_has_one_id_in_replay_api_csv_and_proof(books: Books, tmp_path: Path) -> None:
    key = tmp_path / "audit.pem"
    sluice(books.url, "audit", "generate-key", str(key))
    keyed = {"SLUICE_AUDIT_SIGNING_KEY_FILE": str(key)}
    sluice(books.url, "audit", "checkpoint", env=keyed)
    admin = new_key(books.settings, "admin")
    from adapters.http.app import create_app

    with running(create_app(books.settings, run_projector=False)) as address:
        for account in (PLATFORM, SELLER):
            api = Client(address, admin).get(
                f"/v1/balance_transactions?account={account}&limit=100"
            )
            assert api.status == 200, api.text
            by_api = {bt["id"] for bt in api.json()["data"]}
            replayed = json.loads(
                sluice(books.url, "audit", "replay", "--account", account, "--format", "json")
            )
            by_replay = {m["id"] for m in replayed["movements"]}
            exported = sluice(books.url, "export", "balance-transactions", "--account", account)
            by_csv = {row["id"] for row in csv_rows(exported)}
            proof = json.loads(
                sluice(
                    books.url,
                    "audit",
                    "prove",
                    "--account",
                    account,
                    "--as-of",
                    "2027-01-01",
                    env=keyed,
                )
            )
            by_proof = {m["id"] for m in proof["movements"]}
            assert by_api and by_api == by_replay == by_csv == by_proof, account
            assert all(i.startswith("sl_txn_") for i in by_api)
            entries = {m["id"]: m["entry_id"] for m in replayed["movements"]}
            assert {row["id"]: row["entry_id"] for row in csv_rows(exported)} == entries


def test_ids_minted_before_the_brand_keep_their_bare_shape() -> None:
    from ledger.ids import balance_transaction_id, object_id, payout_aggregate_id, unbranded

    new = object_id("po", "acct_a", "usd", "2026-03-02")
    assert new.startswith("sl_po_") and unbranded(new).startswith("po_")
    # The same natural key before and after the brand is one aggregate: a retry spanning the
    # upgrade finds what was made before it.
    assert payout_aggregate_id(new) == payout_aggregate_id(unbranded(new))
    assert payout_aggregate_id("po_1StripeMade") != payout_aggregate_id(new)
    old_entry = unbranded(object_id("txn", "charge", "ch_1"))
    assert balance_transaction_id(old_entry, "acct_a").startswith("txn_")
    assert balance_transaction_id(object_id("txn", "charge", "ch_1"), "acct_a").startswith(
        "sl_txn_"
    )


# The CLI exports -------------------------------------------------------------------------------


def test_balance_transactions_export_is_finance_ready(books: Books) -> None:
    rows = csv_rows(sluice(books.url, "export", "balance-transactions", "--account", SELLER))
    assert rows
    for row in rows:
        assert int(row["net_minor"]) == int(row["gross_minor"]) - int(row["fee_minor"])
        for name in ("gross", "fee", "net"):
            assert row[name] == decimal_text(int(row[f"{name}_minor"]), row["currency"])
        assert row["created"].endswith("Z") and "T" in row["created"]
        assert (row["account_metadata.region"], row["account_metadata.tier"]) == ("eu", "gold")
    paris = csv_rows(
        sluice(
            books.url, "export", "balance-transactions", "--account", SELLER, "--tz", "Europe/Paris"
        )
    )
    assert [r["id"] for r in paris] == [r["id"] for r in rows]
    assert all(r["created"].endswith(("+01:00", "+02:00")) for r in paris)
    as_json = json.loads(sluice(books.url, "export", "balance-transactions", "--format", "json"))
    assert len(as_json) > len(rows) and {r["id"] for r in rows} <= {r["id"] for r in as_json}


def test_decimals_follow_each_currencys_exponent() -> None:
    assert [
        decimal_text(a, cur)
        for a, cur in ((1250, "usd"), (-5, "usd"), (1000, "jpy"), (-1234, "bhd"))
    ] == [
        "12.50",
        "-0.05",
        "1000",
        "-1.234",
    ]


def test_a_statement_has_opening_movements_and_closing_rows(books: Books) -> None:
    start = (T0 + timedelta(hours=2, minutes=30)).isoformat()  # after the charge (T0 + 2 h)
    rows = csv_rows(
        sluice(
            books.url,
            "export",
            "statement",
            "--account",
            PLATFORM,
            "--currency",
            "usd",
            "--from",
            start,
        )
    )
    assert rows[0]["row"] == "opening_balance" and rows[-1]["row"] == "closing_balance"
    assert {r["row"] for r in rows[1:-1]} == {"movement"}
    balance = int(rows[0]["balance_minor"])
    assert balance != 0  # the charge before --from is in the opening balance
    for row in rows[1:-1]:
        balance += int(row["net_minor"])
        assert int(row["balance_minor"]) == balance
    assert int(rows[-1]["balance_minor"]) == balance == int(rows[-1]["net_minor"])


def test_itemized_reports_by_category_and_by_seller(books: Books) -> None:
    change = csv_rows(sluice(books.url, "export", "balance-change", "--from", "2026-01-01"))
    usd = [r for r in change if r["currency"] == "usd"]
    assert usd[0]["reporting_category"] == "opening_balance"
    assert usd[-1]["reporting_category"] == "closing_balance"
    categories = {r["reporting_category"] for r in usd[1:-1]}
    assert {"charge", "transfer", "topup"} <= categories
    assert int(usd[-1]["net_minor"]) == int(usd[0]["net_minor"]) + sum(
        int(r["net_minor"]) for r in usd[1:-1]
    )
    summary = csv_rows(sluice(books.url, "export", "seller-summary", "--to", "2027-01-01"))
    assert [r["account"] for r in summary] == [SELLER]  # the platform is not a seller
    (seller,) = summary
    assert int(seller["transfers_minor"]) == 5_000 and int(seller["payouts_minor"]) == -1_250
    assert seller["closing"] == decimal_text(int(seller["closing_minor"]), "usd") == "37.50"
    assert seller["account_metadata.tier"] == "gold"


def test_export_errors_are_one_line_and_exit_2(books: Books) -> None:
    for args in (
        ("export", "payouts", "--tz", "Mars/Olympus"),
        ("export", "payouts", "--format", "xml"),
        ("export", "balance-transactions", "--from", "yesterday"),
        (
            "export",
            "statement",
            "--account",
            SELLER,
            "--currency",
            "usd",
            "--from",
            "2026-02-01",
            "--to",
            "2026-01-01",
        ),
        ("audit", "replay", "--account", SELLER, "--format", "xml"),
    ):
        sluice(books.url, *args, code=2)


# The reports' law, as a property ---------------------------------------------------------------

CATEGORIES = [*exports.SUMMARY_GROUPS, "topup", "adjustment"]
rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["acct_a", "acct_b", "acct_platform"]),
        st.sampled_from(["usd", "jpy", "bhd"]),
        st.sampled_from(CATEGORIES),
        st.integers(-99_999_999, 99_999_999),  # amount
        st.integers(0, 5_000),  # fee
        st.integers(0, 100),  # created, in days after T0
    ),
    max_size=40,
)


@pytest.fixture(params=BACKENDS)
def scratch_view(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reports.db'}"
        drop = None
    else:
        from adapters.persistence import ensure_postgres_schema
        from tests.support import new_postgres_schema

        url, drop = new_postgres_schema(request.getfixturevalue("postgres_url"))
        ensure_postgres_schema(url)
    view = open_read_model(ledger_env(Settings(database_url=url), create_tables=True), ALL_DDL)
    yield view
    view.datastore.close()
    if drop is not None:
        drop()


def _load(view: Any, rows: list[tuple[str, str, str, int, int, int]]) -> list[dict[str, Any]]:
    t0 = int(T0.timestamp())
    loaded = []
    with view.write(None) as tx:
        tx.execute("DELETE FROM rm_balance_transactions")
        for n, (account, currency, category, amount, fee, day) in enumerate(rows):
            created = (t0 + day * 86_400) * 1_000_000
            tx.execute(
                "INSERT INTO rm_balance_transactions (id, position, account_id, type, amount,"
                " fee, fee_details, net, currency, status, available_on, created, recorded,"
                " source, reporting_category, description, entry_id) VALUES (%s, %s, %s, %s,"
                " %s, %s, '[]', %s, %s, 'available', NULL, %s, %s, '', %s, '', %s)",
                (f"txn_{n}", n + 1, account, category, amount, fee, amount - fee, currency,
                 created, created, category, f"e{n}"),
            )  # fmt: skip
            loaded.append(
                {
                    "account": account,
                    "currency": currency,
                    "net": amount - fee,
                    "created": created // 1_000_000,
                }
            )
    return loaded


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy, start_day=st.integers(0, 100), length_days=st.integers(1, 100))
def test_closing_is_opening_plus_the_periods_movements_exactly(
    scratch_view: Any,
    rows: list[tuple[str, str, str, int, int, int]],
    start_day: int,
    length_days: int,
) -> None:
    loaded = _load(scratch_view, rows)
    start = int(T0.timestamp()) + start_day * 86_400
    end = start + length_days * 86_400

    def total(account: str, currency: str, before: int) -> int:
        return sum(
            r["net"]
            for r in loaded
            if (r["account"], r["currency"]) == (account, currency) and r["created"] < before
        )

    summaries = exports.seller_summaries(scratch_view, start, end, exclude=["acct_platform"])
    for s in summaries:
        movements = sum(s[m] for m in SUMMARY_MONEY_ALL if m not in ("opening", "closing"))
        assert s["closing"] == s["opening"] + movements
        assert s["opening"] == total(s["account"], s["currency"], start)
        assert s["closing"] == total(s["account"], s["currency"], end)
    seen = {(s["account"], s["currency"]) for s in summaries}
    expected = {
        (r["account"], r["currency"])
        for r in loaded
        if r["created"] < end and r["account"] != "acct_platform"
    }
    assert seen == expected
    for account in ("acct_a", "acct_platform"):
        report = exports.balance_change(scratch_view, account, start, end)
        for currency in {r["currency"] for r in report}:
            mine = [r for r in report if r["currency"] == currency]
            assert mine[0]["reporting_category"] == "opening_balance"
            assert mine[-1]["reporting_category"] == "closing_balance"
            assert mine[0]["net"] == total(account, currency, start)
            assert mine[-1]["net"] == mine[0]["net"] + sum(r["net"] for r in mine[1:-1])
            assert mine[-1]["net"] == total(account, currency, end)
            assert all(r["net"] == r["gross"] - r["fee"] for r in mine[1:-1])


def test_the_reports_over_http_as_json_and_csv(books: Books) -> None:
    from adapters.http.app import create_app

    admin, own = new_key(books.settings, "admin"), new_key(books.settings, f"account:{SELLER}")
    with running(create_app(books.settings, run_projector=False)) as address:
        client = Client(address, admin)
        change = client.get("/v1/reports/balance_change?from=0").json()["data"]
        usd = [r for r in change if r["currency"] == "usd"]
        assert usd[-1]["net"] == usd[0]["net"] + sum(r["net"] for r in usd[1:-1])
        as_csv = client.get("/v1/reports/balance_change?from=0&format=csv")
        assert as_csv.status == 200 and as_csv.headers["content-type"].startswith("text/csv")
        assert [r["reporting_category"] for r in as_csv.rows()] == [
            r["reporting_category"] for r in change
        ]
        summaries = client.get("/v1/reports/seller_summaries").json()["data"]
        assert [(s["account"], s["closing"]) for s in summaries] == [(SELLER, 3_750)]
        mine = Client(address, own).get("/v1/reports/seller_summaries?format=csv").rows()
        assert [(r["account"], r["closing"], r["account_metadata.region"]) for r in mine] == [
            (SELLER, "37.50", "eu")
        ]
        theirs = Client(address, own).get(f"/v1/reports/balance_change?account={PLATFORM}")
        assert theirs.status == 404  # an account key sees its own account only
        backwards = client.get("/v1/reports/seller_summaries?from=200&to=100")
        assert backwards.status == 400 and backwards.error["param"] == "to"
