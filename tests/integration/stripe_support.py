"""Helpers for the Stripe-edge tests: targets (the sandbox or Stripe's test mode), throwaway
PostgreSQL stores, sandbox event streams, webhook signing, and the ledger's observable state."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import stripe

from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.settings import Settings
from adapters.stripe import inbox
from adapters.stripe.folding import ATTEMPTS_MAX, Folder
from adapters.stripe.gateway import StripeClientGateway
from ledger.application import Ledger
from ledger.balances import Balance
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.transfers import Transfer
from projections.store import ReadModel
from stripe_sandbox import Sandbox

DAY_S = 86_400
PLATFORM = "acct_platform"  # Sluice's id of the platform (Settings.platform_account_id)
ROUTING = "110000000"
BANK_OK = "000123456789"
BANK_CLOSED = "000111111113"  # payouts fail with account_closed
BANK_PAID_THEN_FAILED = "000111111116"  # paid first, then failed with no_account
# What the brief (and Sluice's money model) expects of connected accounts in the sandbox.
SANDBOX_CONTROLLER = {"fees": {"payer": "account"}, "losses": {"payments": "stripe"}}
LIVE_ENV = ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET")
LIVE_CAPABILITY_WAIT_S = 30.0


def bank(number: str = BANK_OK) -> dict[str, str]:
    return {
        "object": "bank_account",
        "country": "US",
        "currency": "usd",
        "routing_number": ROUTING,
        "account_number": number,
    }


def on(account: str | None) -> dict[str, str] | None:
    return {"stripe_account": account} if account else None


def live_credentials() -> tuple[str, str] | None:
    """Stripe test-mode credentials from the environment, or None (the live target skips)."""
    key, secret = (os.environ.get(name, "") for name in LIVE_ENV)
    if not key or not secret:
        return None
    if not key.startswith("sk_test_"):
        raise RuntimeError("STRIPE_API_KEY must be a test-mode key (sk_test_…)")
    return key, secret


# Targets --------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the gateway suite runs: the sandbox (always) or Stripe's test mode (with a key)."""

    name: str
    client: Any  # stripe.StripeClient
    gateway: StripeClientGateway
    sandbox: Sandbox | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def live(self) -> bool:
        return self.sandbox is None

    def key(self, *parts: str) -> str:
        """An idempotency key unique to this run (Stripe remembers keys for 24 hours)."""
        return ":".join(("edge", self.run, *parts))

    def account(self, number: str = BANK_OK) -> str:
        params: dict[str, Any] = {
            "country": "US",
            "capabilities": {
                "card_payments": {"requested": True},
                "transfers": {"requested": True},
            },
            "settings": {"payouts": {"schedule": {"interval": "manual"}}},
            "external_account": bank(number),
        }
        if not self.live:
            account = self.client.v1.accounts.create({**params, "controller": SANDBOX_CONTROLLER})
            return str(account.id)
        # Stripe's test mode: a platform-controlled (custom) account with Stripe's test identity
        # data, which Stripe verifies at once, so transfers and payouts are enabled.
        account = self.client.v1.accounts.create(
            {
                **params,
                "controller": {
                    "fees": {"payer": "application"},
                    "losses": {"payments": "application"},
                    "requirement_collection": "application",
                    "stripe_dashboard": {"type": "none"},
                },
                "business_type": "individual",
                "business_profile": {"mcc": "5734", "url": "https://example.com"},
                "email": f"edge+{self.run}@example.com",
                "individual": {
                    "first_name": "Jenny",
                    "last_name": "Rosen",
                    "email": f"edge+{self.run}@example.com",
                    "phone": "0000000000",
                    "dob": {"day": 1, "month": 1, "year": 1901},
                    "address": {
                        "line1": "address_full_match",
                        "city": "San Francisco",
                        "state": "CA",
                        "postal_code": "94103",
                        "country": "US",
                    },
                    "id_number": "000000000",
                    "ssn_last_4": "0000",
                },
                "tos_acceptance": {"date": int(time.time()), "ip": "127.0.0.1"},
            }
        )
        deadline = time.monotonic() + LIVE_CAPABILITY_WAIT_S
        while (account.capabilities or {}).get("transfers") != "active":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{account.id}: transfers capability not active in time")
            time.sleep(1)
            account = self.client.v1.accounts.retrieve(account.id)
        return str(account.id)

    def pay(self, amount: int, method: str = "pm_card_visa", **params: Any) -> Any:
        """A confirmed PaymentIntent (``options=`` for request options such as stripe_account)."""
        options = params.pop("options", None)
        body = {"amount": amount, "currency": "usd", "payment_method": method, "confirm": True}
        if self.live:
            body["payment_method_types"] = ["card"]
        return self.client.v1.payment_intents.create({**body, **params}, options)

    def advance(self, seconds: int) -> bool:
        """Moves the sandbox clock; False (nothing done) on Stripe, which has no such control."""
        if self.sandbox is None:
            return False
        self.sandbox.advance(seconds)
        return True


def sandbox_gateway(sb: Sandbox, **kwargs: Any) -> StripeClientGateway:
    return StripeClientGateway(sb.secret_key, api_base=sb.base_url, **kwargs)


# Stores ---------------------------------------------------------------------------------------


@dataclass
class Store:
    settings: Settings
    ledger: Ledger
    view: ReadModel

    def folder(self, gateway: Any) -> Folder:
        return Folder(self.ledger, gateway, self.settings)


def _drop_schema(base_url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_settings(postgres_url: str, **overrides: Any) -> Iterator[Settings]:
    """Settings on a new ``?schema=`` of the test database (tables created), dropped after."""
    schema = f"edge_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    settings = Settings(database_url=f"{postgres_url}{separator}schema={schema}", **overrides)
    try:
        init_database(settings)
        yield settings
    finally:
        _drop_schema(postgres_url, schema)


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    ledger = bootstrap(settings)
    view = read_model(settings)
    try:
        yield Store(settings, ledger, view)
    finally:
        ledger.close()
        view.datastore.close()


@contextmanager
def fresh_store(postgres_url: str, **overrides: Any) -> Iterator[Store]:
    with fresh_settings(postgres_url, **overrides) as settings, open_store(settings) as store:
        yield store


def sandbox_settings(sb: Sandbox, **overrides: Any) -> dict[str, Any]:
    """Settings fields that point Sluice at the sandbox."""
    return {
        "stripe_api_key": sb.secret_key,
        "stripe_api_base": sb.base_url,
        "stripe_platform_account_id": sb.platform_account_id,
        **overrides,
    }


def fold_all(folder: Folder, view: ReadModel, passes: int = ATTEMPTS_MAX) -> list[Any]:
    """Inbox passes until nothing is due (at most ``passes``); returns the pass reports."""
    reports = []
    for _ in range(passes):
        reports.append(folder.process(view))
        if not inbox.due(view, 1):
            break
    return reports


def inbox_rows(view: ReadModel) -> dict[str, dict[str, Any]]:
    with view.read() as tx:
        tx.execute(
            "SELECT event_id, type, status, attempts, outcome, last_error FROM sl_stripe_events"
        )
        return {r["event_id"]: dict(r) for r in tx.all()}


def inbox_total(view: ReadModel) -> int:
    return sum(n for per_type in inbox.counts(view).values() for n in per_type.values())


# Sandbox event streams ------------------------------------------------------------------------


def sandbox_events(sb: Sandbox, accounts: Iterable[str | None] = (None,)) -> list[dict[str, Any]]:
    """Every event of the platform (None) and the given connected accounts, as Stripe's JSON,
    oldest first (lists come newest first; ties keep the sandbox's own order)."""
    events: list[dict[str, Any]] = []
    for account in accounts:
        page_of: list[dict[str, Any]] = []
        after = None
        while True:
            query = "limit=100" + (f"&starting_after={after}" if after else "")
            headers = {"Authorization": f"Bearer {sb.secret_key}"}
            if account:
                headers["Stripe-Account"] = account
            request = urllib.request.Request(f"{sb.base_url}/v1/events?{query}", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                page = json.loads(response.read())
            page_of.extend(page["data"])
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        events.extend(reversed(page_of))
    events.sort(key=lambda e: e["created"])  # stable: keeps per-account order on ties
    return events


def raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()


def store_events(view: ReadModel, events: Iterable[dict[str, Any]]) -> int:
    """Stores events as the webhook route would (after verification); returns how many were new."""
    return sum(inbox.store(view, event, raw(event)) for event in events)


# Webhooks over HTTP ---------------------------------------------------------------------------


def signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@dataclass
class WebhookReply:
    status: int
    body: dict[str, Any]


def post_webhook(address: str, payload: bytes, header: str | None) -> WebhookReply:
    host, port = address.rsplit(":", 1)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if header is not None:
        headers["Stripe-Signature"] = header
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/webhooks/stripe", body=payload, headers=headers)
        response = conn.getresponse()
        return WebhookReply(response.status, json.loads(response.read() or b"null"))
    finally:
        conn.close()


# Observable state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerState:
    """What must not depend on the order or repetition of Stripe's events."""

    balances: dict[tuple[str, str], tuple[int, int, int]]  # (account, currency) → pend/avail/res
    totals: dict[tuple[str, str, str], int]  # (owner, book, currency) → Σ postings
    per_currency: dict[str, int]
    payments: frozenset[str]
    transfers: frozenset[str]
    payouts: dict[str, str]  # payout id → status
    refunds: frozenset[str]


def ledger_state(ledger: Ledger) -> LedgerState:
    keys: set[tuple[str, str]] = set()
    payments: set[str] = set()
    transfers: set[str] = set()
    payout_ids: set[str] = set()
    for _, event in ledger.iter_events():
        if isinstance(event, Balance.Opened):
            keys.add((event.account_id, event.currency))
        elif isinstance(event, Payment.Captured):
            payments.add(event.payment_id)
        elif isinstance(event, Transfer.Created):
            transfers.add(event.transfer_id)
        elif isinstance(event, Payout.Requested):
            payout_ids.add(event.payout_id)
    balances = {}
    for account, currency in keys:
        b = ledger.get_balance(account, currency)
        assert b is not None
        balances[(account, currency)] = (b.pending_minor, b.available_minor, b.reserved_minor)
    payouts = {}
    for payout_id in payout_ids:
        payout = ledger.get_payout(payout_id)
        assert payout is not None
        payouts[payout_id] = payout.status
    refunds = set()
    for payment_id in payments:
        payment = ledger.get_payment(payment_id)
        assert payment is not None
        refunds |= set(payment.refunds)
    per_currency, totals = ledger.journal_totals()
    return LedgerState(
        balances=balances,
        totals={k: v for k, v in totals.items() if v},
        per_currency=per_currency,
        payments=frozenset(payments),
        transfers=frozenset(transfers),
        payouts=payouts,
        refunds=frozenset(refunds),
    )


def stripe_balance(client: Any, account: str | None) -> dict[str, tuple[int, int]]:
    """Stripe's ``GET /v1/balance`` as {currency: (pending, available)}."""
    balance = client.v1.balance.retrieve({}, on(account)).to_dict()
    out: dict[str, list[int]] = {}
    for kind, index in (("pending", 0), ("available", 1)):
        for row in balance.get(kind, []):
            out.setdefault(row["currency"], [0, 0])[index] += int(row["amount"])
    return {currency: (p, a) for currency, (p, a) in out.items()}


def ledger_balance(ledger: Ledger, account: str) -> dict[str, tuple[int, int]]:
    """The ledger's balances of one account as {currency: (pending, available)}, zeros left out."""
    out = {}
    for (owner, currency), (pending, available, _) in ledger_state(ledger).balances.items():
        if owner == account and (pending or available):
            out[currency] = (pending, available)
    return out


def nonzero(balances: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {c: v for c, v in balances.items() if any(v)}


def stripe_error(error: BaseException) -> stripe.StripeError | None:
    cause = error.__cause__
    return cause if isinstance(cause, stripe.StripeError) else None
