"""CSV and JSON renderings shared by the CLI and the HTTP API, and the finance-ready export rows.

Finance rows keep every amount twice: ``*_minor`` (the integer the ledger holds) and beside it
the decimal by the currency's ISO 4217 exponent (``jpy`` 0, ``usd`` 2, ``bhd`` 3: ``12.50``,
never a float), and every instant as ISO 8601, in UTC (``2026-11-15T00:00:00Z``) unless a time
zone is asked for. Money columns come as gross, fee and net. Exports are generators: a CSV is
written (or sent) row by row, never built whole in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.money import exponent

INSTANT_SECONDS_END = 253_402_214_400  # 9999-12-31: later instants cannot be written in ISO 8601
CSV_CHUNK_ROWS = 500  # rows per chunk a streamed CSV yields (one write or one HTTP chunk)

MetadataOf = Callable[[str], Mapping[str, str]]


class ExportError(ValueError):
    """A bad export parameter (CLI: one line, exit 2; HTTP: 400 with ``code``)."""

    def __init__(self, message: str, param: str, code: str = "parameter_invalid") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return "" if value is None else value


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """One header row, one row per object; nested values as compact JSON, amounts as ints."""
    return "".join(csv_lines(rows, list(columns or (rows[0].keys() if rows else []))))


def csv_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """The header, then chunks of ``CSV_CHUNK_ROWS`` rows: a streamed CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    pending = 0
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
        pending += 1
        if pending >= CSV_CHUNK_ROWS:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            pending = 0
    yield out.getvalue()


def json_lines(rows: Iterable[Any]) -> Iterator[str]:
    """A JSON array, an element at a time."""
    yield "["
    for n, row in enumerate(rows):
        yield ("\n" if n == 0 else ",\n") + json.dumps(row, sort_keys=True)
    yield "\n]\n"


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


# Presentation ----------------------------------------------------------------------------------


def decimal_text(amount_minor: int, currency: str) -> str:
    """``1250, usd`` → ``12.50``; ``-5, bhd`` → ``-0.005``; ``1000, jpy`` → ``1000``. Exact:
    integer arithmetic, no float, no thousands separator."""
    exp = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(int(amount_minor)), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def zone(name: str | None) -> tzinfo:
    """UTC, or the IANA zone named (``--tz Europe/Paris``)."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the OS refuses to open
        raise ExportError(f"unknown time zone {name!r}: use an IANA name", "tz") from None


def iso(seconds: int | None, tz: tzinfo = UTC) -> str:
    """ISO 8601 with its offset; UTC as ``Z``. Empty for no instant."""
    if seconds is None or int(seconds) >= INSTANT_SECONDS_END:
        return ""  # no instant, or "no end" (a period open to the future)
    text = datetime.fromtimestamp(int(seconds), tz).isoformat()
    return text.removesuffix("+00:00") + "Z" if tz is UTC else text


def money(row: Mapping[str, Any], currency: str, **amounts: int) -> dict[str, Any]:
    """``gross=1250`` → ``gross_minor: 1250, gross: "12.50"``, added to ``row``."""
    out = dict(row)
    for name, amount in amounts.items():
        out[f"{name}_minor"] = int(amount)
        out[name] = decimal_text(int(amount), currency)
    return out


def metadata_columns(keys: Iterable[str]) -> list[str]:
    return [f"account_metadata.{k}" for k in sorted(set(keys))]


def account_metadata(
    get_account: Callable[[str], Any], accounts: Iterable[str]
) -> tuple[list[str], MetadataOf]:
    """The metadata keys of ``accounts`` (sorted: the export's extra columns) and a cached
    lookup. From the ledger's accounts: the read models carry no metadata."""
    cache: dict[str, Mapping[str, str]] = {}

    def metadata_of(account: str) -> Mapping[str, str]:
        if account not in cache:
            found = get_account(account)
            cache[account] = dict(getattr(found, "metadata", None) or {})
        return cache[account]

    keys = sorted({k for a in accounts for k in metadata_of(a)})
    return keys, metadata_of


def _metadata(account: str, keys: Sequence[str], metadata_of: MetadataOf | None) -> dict[str, Any]:
    if not keys or metadata_of is None:
        return {}
    found = metadata_of(account)
    return {f"account_metadata.{k}": found.get(k, "") for k in keys}


# Finance rows ----------------------------------------------------------------------------------

BT_COLUMNS = [
    "id", "account", "created", "available_on", "currency", "type", "reporting_category",
    "status", "source", "description", "gross_minor", "fee_minor", "net_minor", "gross", "fee",
    "net", "entry_id",
]  # fmt: skip
PAYOUT_COLUMNS = [
    "id", "account", "created", "updated", "currency", "status", "amount_minor", "amount",
    "failure_code", "hold_reason", "stripe_payout_id", "arrival_date", "destination",
    "failure_message", "metadata",
]  # fmt: skip
STATEMENT_COLUMNS = ["row", *BT_COLUMNS, "balance_minor", "balance"]
BALANCE_CHANGE_COLUMNS = [
    "account", "currency", "reporting_category", "count", "gross_minor", "fee_minor", "net_minor",
    "gross", "fee", "net",
]  # fmt: skip
SUMMARY_MONEY = ("opening", "gross", "fees", "refunds", "disputes", "transfers", "payouts")
SUMMARY_MONEY_ALL = (*SUMMARY_MONEY, "other", "closing")
SUMMARY_COLUMNS = [
    "account", "currency", "count",
    *(f"{m}_minor" for m in SUMMARY_MONEY_ALL), *SUMMARY_MONEY_ALL,
]  # fmt: skip


def finance_balance_transaction(
    bt: Mapping[str, Any],
    tz: tzinfo = UTC,
    metadata_keys: Sequence[str] = (),
    metadata_of: MetadataOf | None = None,
) -> dict[str, Any]:
    cur = str(bt["currency"])
    row = {
        "id": bt["id"],
        "account": bt["account"],
        "created": iso(bt["created"], tz),
        "available_on": iso(bt["available_on"], tz),
        "currency": cur,
        "type": bt["type"],
        "reporting_category": bt["reporting_category"],
        "status": bt["status"],
        "source": bt["source"],
        "description": bt["description"],
        "entry_id": bt.get("entry_id", ""),
    }
    row = money(row, cur, gross=bt["amount"], fee=bt["fee"], net=bt["net"])
    return row | _metadata(str(bt["account"]), metadata_keys, metadata_of)


def finance_payout(
    p: Mapping[str, Any],
    tz: tzinfo = UTC,
    metadata_keys: Sequence[str] = (),
    metadata_of: MetadataOf | None = None,
) -> dict[str, Any]:
    hold = p.get("hold") or {}
    row = {
        "id": p["id"],
        "account": p["account"],
        "created": iso(p["created"], tz),
        "updated": iso(p["updated"], tz),
        "currency": p["currency"],
        "status": p["status"],
        "failure_code": p["failure_code"] or "",
        "hold_reason": hold.get("reason_code") or "",
        "stripe_payout_id": p.get("stripe_payout_id") or "",
        "arrival_date": iso(p["arrival_date"], tz) if p.get("arrival_date") else "",
        "destination": p.get("destination") or "",
        "failure_message": p.get("failure_message") or "",
        # Stripe's metadata of the payout, as JSON with sorted keys ("{}": none).
        "metadata": json.dumps(p.get("metadata") or {}, sort_keys=True),
    }
    row = money(row, str(p["currency"]), amount=p["amount"])
    return row | _metadata(str(p["account"]), metadata_keys, metadata_of)


def statement_rows(statement: Mapping[str, Any], tz: tzinfo = UTC) -> Iterator[dict[str, Any]]:
    """An opening row, each movement with the balance after it, a closing row."""
    cur = str(statement["currency"])
    balance = int(statement["opening_balance"])
    edge = {"account": statement["account"], "currency": cur}
    yield money(
        edge | {"row": "opening_balance", "created": iso(statement["from"], tz)},
        cur, net=balance, balance=balance,
    )  # fmt: skip
    for movement in statement["movements"]:
        balance += int(movement["net"])
        row = finance_balance_transaction(movement, tz) | {"row": "movement"}
        yield money(row, cur, balance=balance)
    if balance != int(statement["closing_balance"]):  # the statement's own sum, re-derived
        raise ExportError("the statement's closing balance does not add up", "to", "internal")
    yield money(
        edge | {"row": "closing_balance", "created": iso(statement["to"], tz)},
        cur, net=balance, balance=balance,
    )  # fmt: skip


def balance_change_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    for r in rows:
        base = {k: r[k] for k in ("account", "currency", "reporting_category", "count")}
        yield money(base, str(r["currency"]), gross=r["gross"], fee=r["fee"], net=r["net"])


def summary_rows(
    rows: Iterable[Mapping[str, Any]],
    metadata_keys: Sequence[str] = (),
    metadata_of: MetadataOf | None = None,
) -> Iterator[dict[str, Any]]:
    for r in rows:
        base = {k: r[k] for k in ("account", "currency", "count")}
        amounts = {m: int(r[m]) for m in SUMMARY_MONEY_ALL}
        row = money(base, str(r["currency"]), **amounts)
        yield row | _metadata(str(r["account"]), metadata_keys, metadata_of)
