"""The agreement property's machinery: plays Stripe Connect histories through the sandbox with the
real ``stripe`` SDK, delivers the sandbox's signed webhooks to Sluice's own endpoint over HTTP,
folds them, catches the read models up, and compares Sluice with the sandbox.

A history is a list of operations, plain data that prints as Python and replays exactly::

    ("account", {"label": "A0", "delay_days": 4, "bank": "ok", "interval": "manual"})
    ("separate_charge", {"label": "C0", "amount": 56_736, "card": "visa"})
    ("transfer", {"label": "T0", "to": "A0", "amount": 1_996, "source": "C0"})

Objects are named by labels (``A…`` accounts, ``C…`` charges, ``C…/tr`` a destination charge's
transfer, ``T…`` transfers, ``P…`` payouts); an operation naming a label that does not exist (its
creation was refused, or shrunk away) is skipped, and so is one the sandbox refuses with a Stripe
error. ``Player`` runs one history on a fresh sandbox and a fresh store; ``replay`` runs a fixed
list (the regression cases), checking after every step. See the docstring of
``tests/property/test_agreement_with_stripe.py`` for what is compared and why.
"""

from __future__ import annotations

import itertools
import json
import os
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from unittest import mock

import stripe

from adapters import bootstrap as bootstrap_module
from adapters.bootstrap import init_database, read_model
from adapters.http.app import create_app
from adapters.http.server import serving
from adapters.settings import Settings
from adapters.stripe import inbox
from adapters.stripe.folding import ATTEMPTS_MAX, SPLIT_METADATA_KEY, PassReport
from projections import queries
from projections.runner import Projector
from stripe_sandbox import FeeRule, Sandbox, SandboxSettings
from stripe_sandbox.settings import START_TIME
from tests.integration.stripe_support import (
    PLATFORM,
    ROUTING,
    SANDBOX_CONTROLLER,
    Store,
    inbox_rows,
    open_store,
    sandbox_gateway,
    sandbox_settings,
)
from tests.support import drop_postgres_schema

DAY_S = 86_400
HOUR_S = 3_600
# Stripe's test bank accounts (routing 110000000) by what their payouts do.
BANKS = {
    "ok": "000123456789",
    "closed": "000111111113",  # fails at arrival: account_closed
    "insufficient_funds": "000222222227",
    "debit_not_authorized": "000333333335",
    "invalid_currency": "000444444440",
    "paid_then_failed": "000111111116",  # paid, then failed (no_account) a day later
}
CARDS = {
    "visa": "pm_card_visa",  # pending until available_on
    "bypass": "pm_card_bypassPending",  # available at once
    "dispute": "pm_card_createDispute",  # succeeds, then disputed
    "declined": "pm_card_chargeDeclined",  # 402: the operation is refused (skipped)
    "mastercard": "pm_card_mastercard",
}
PAYOUT_FAILURE_CODES = ("could_not_process", "account_closed", "no_account", "declined")
COUNTRIES = {"usd": "US", "jpy": "JP"}
SETTLE_ROUNDS_MAX = ATTEMPTS_MAX + 40  # flush → fold rounds before comparing (bounded)
PAGE = 100

Op = tuple[str, dict[str, Any]]


# Configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One sandbox configuration (a Stripe policy per run), and the currency the platform
    settles in (``usd``, or ``jpy`` with a Japanese platform and Japanese accounts)."""

    currency: str = "usd"
    seed: int = 0
    dispute_fee_refunded_on_win: bool = True
    platform_delay_days: int = 2
    fee_bps: int = 290
    fee_fixed: int = 30
    dispute_fee: int = 1500
    payout_submit_delay_s: int = 3600
    payout_transit_days: int = 2
    dispute_resolution_delay_s: int = 3600

    @property
    def country(self) -> str:
        return COUNTRIES[self.currency]

    def sandbox_settings(self) -> SandboxSettings:
        rule = FeeRule(self.fee_bps, self.fee_fixed)
        # Stripe's refusals the sandbox leaves off by default (when this sandbox has them): no
        # charge in a currency the platform does not settle in, no destination charge across
        # regions without on_behalf_of.
        known = {f.name for f in fields(SandboxSettings)}
        strict = {
            name: value
            for name, value in (
                ("platform_settlement_currencies", ()),
                ("cross_region_destination_needs_on_behalf_of", True),
            )
            if name in known
        }
        return SandboxSettings(
            **strict,
            seed=self.seed,
            platform_country=self.country,
            platform_currency=self.currency,
            platform_delay_days=self.platform_delay_days,
            processing_fees={self.currency: rule},
            fallback_processing_fee=rule,
            dispute_fees={self.currency: self.dispute_fee},
            fallback_dispute_fee=self.dispute_fee,
            dispute_fee_refunded_on_win=self.dispute_fee_refunded_on_win,
            payout_submit_delay_s=self.payout_submit_delay_s,
            payout_transit_days=self.payout_transit_days,
            dispute_resolution_delay_s=self.dispute_resolution_delay_s,
            webhook_delivery="manual",
        )

    def source(self) -> str:
        defaults = Config()
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(defaults, f.name) or f.name == "currency"
        ]
        return f"Config({', '.join(changed)})"


# Stores -----------------------------------------------------------------------------------------

StoreOpener = Callable[[dict[str, Any]], AbstractContextManager[Settings]]


def create_tables(settings: Settings) -> None:
    """``init_database``, closing the read model it opens and leaves open (on PostgreSQL that
    is a connection pool per store: a long run would exhaust the server's connections)."""
    opened: list[Any] = []

    def read_model_kept(*args: Any, **kwargs: Any) -> Any:
        view = read_model(*args, **kwargs)
        opened.append(view)
        return view

    try:
        with mock.patch.object(bootstrap_module, "read_model", read_model_kept):
            init_database(settings)
    finally:
        for view in opened:
            view.datastore.close()


def sqlite_stores(directory: Path) -> StoreOpener:
    """A new SQLite file per history (deleted afterwards)."""
    counter = itertools.count()

    @contextmanager
    def open_one(overrides: dict[str, Any]) -> Iterator[Settings]:
        path = directory / f"agreement-{next(counter)}.db"
        settings = Settings(database_url=f"sqlite:///{path}", **overrides)
        create_tables(settings)
        try:
            yield settings
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    return open_one


def postgres_stores(postgres_url: str) -> StoreOpener:
    """A new schema of the test database per history (dropped afterwards)."""

    @contextmanager
    def open_one(overrides: dict[str, Any]) -> Iterator[Settings]:
        schema = f"agreement_{uuid.uuid4().hex[:12]}"
        separator = "&" if "?" in postgres_url else "?"
        url = f"{postgres_url}{separator}schema={schema}"
        try:
            settings = Settings(database_url=url, **overrides)
            create_tables(settings)
            yield settings
        finally:
            drop_postgres_schema(postgres_url, schema)

    return open_one


# The registry of what a history made -------------------------------------------------------------


@dataclass
class AccountRef:
    id: str
    bank: str
    delay_days: int


@dataclass
class ChargeRef:
    id: str
    kind: str  # separate | destination | direct
    account: str | None  # the destination (destination) or the account charged (direct)
    amount: int
    application_fee: bool
    disputed: bool

    @property
    def options(self) -> dict[str, str] | None:
        return {"stripe_account": self.account} if self.kind == "direct" and self.account else None


@dataclass
class TransferRef:
    id: str
    destination: str
    amount: int
    source: str | None  # label of the source charge


@dataclass
class PayoutRef:
    id: str
    account: str


class Skip(Exception):
    """The operation cannot run in this history (an unknown label, nothing to act on)."""


# Comparison results ------------------------------------------------------------------------------


class Disagreement(AssertionError):
    """Sluice and the sandbox disagree (subclasses name what: Hypothesis tells bugs apart by
    exception type and the line that raised, so each kind is shrunk and reported on its own)."""


class BalanceDisagreement(Disagreement):
    """Ledger, read model and ``GET /v1/balance`` differ for some account and currency."""


class InboxDisagreement(Disagreement):
    """Sluice refused to fold a Stripe fact: inbox rows left failed or parked."""


class TransactionDisagreement(Disagreement):
    """Balance transactions differ in amount, fee or net for some Stripe object."""


class PayoutDisagreement(Disagreement):
    """Payouts differ in amount, currency, status or failure code (``sluice payouts``)."""


class TimingDisagreement(Disagreement):
    """Balance transactions differ in created, available_on or status for some Stripe object."""


class SluiceCrashed(AssertionError):
    """Delivering or folding raised (not a refusal: an exception Sluice does not handle)."""


CATEGORIES = ("balances", "inbox", "transactions", "payouts", "timing")


@dataclass
class Group:
    """One Stripe object's balance transactions on one account, summed (see the mapping in the
    property's docstring): amount, fees by type, net, and net by (created, available_on, status)."""

    amount: int = 0
    fees: Counter[str] = field(default_factory=Counter)
    net: int = 0
    timeline: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    rows: list[str] = field(default_factory=list)

    def add(
        self,
        *,
        amount: int,
        fees: dict[str, int],
        net: int,
        created: int,
        available_on: int,
        status: str,
        row: str,
    ) -> None:
        self.amount += amount
        self.fees.update(fees)
        self.net += net
        # Funds available when their BT was made are available from then: an earlier
        # available_on (Stripe dates a transfer from an already available charge by the charge)
        # says nothing more.
        self.timeline[(created, max(available_on, created), status)] += net
        self.rows.append(row)

    def money(self) -> tuple[int, dict[str, int], int]:
        return self.amount, {k: v for k, v in sorted(self.fees.items()) if v}, self.net

    def when(self) -> dict[tuple[int, int, str], int]:
        return {k: v for k, v in sorted(self.timeline.items()) if v}


@dataclass
class Findings:
    step: int
    op: Op | None
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    balance_table: list[str] = field(default_factory=list)
    inbox: list[str] = field(default_factory=list)

    def worst(self, categories: Sequence[str]) -> str | None:
        return next((c for c in CATEGORIES if c in categories and self.problems.get(c)), None)


def when(seconds: int | None) -> str:
    """A sandbox instant as day+time since the sandbox's start (2026-11-02T00:00Z is d0)."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds) - START_TIME, DAY_S)
    return f"d{days}+{rest // HOUR_S:02d}:{rest % HOUR_S // 60:02d}:{rest % 60:02d}"


# The player --------------------------------------------------------------------------------------


class Player:
    """Runs one history: a fresh sandbox (``config``), a fresh Sluice store, Sluice's HTTP app
    receiving the sandbox's webhooks, the inbox folded and the read models caught up after every
    operation, and the comparison (``findings``/``assert_agrees``)."""

    def __init__(self, config: Config, stores: StoreOpener) -> None:
        self.config = config
        self.stores = stores
        self.stack = ExitStack()
        self.history: list[tuple[Op, str]] = []
        self.accounts: dict[str, AccountRef] = {}
        self.charges: dict[str, ChargeRef] = {}
        self.transfers: dict[str, TransferRef] = {}
        self.payouts: dict[str, PayoutRef] = {}
        self.fold_errors: list[str] = []
        self._keys: dict[tuple[str, str, str], str] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Player:
        try:
            self.sb = self.stack.enter_context(Sandbox(self.config.sandbox_settings()))
            self.settings = self.stack.enter_context(self.stores(sandbox_settings(self.sb)))
            store: Store = self.stack.enter_context(open_store(self.settings))
            self.ledger, self.view = store.ledger, store.view
            app = create_app(self.settings, ledger=self.ledger, view=self.view, run_projector=False)
            base_url = self.stack.enter_context(serving(app))
            self.client = self.sb.client(max_network_retries=0)
            self.endpoints = [
                self.client.v1.webhook_endpoints.create(
                    {
                        "url": f"{base_url}/webhooks/stripe",
                        "enabled_events": ["*"],
                        "connect": connect,  # the platform's events, and connected accounts'
                    }
                )
                for connect in (False, True)
            ]
            self.settings.stripe_webhook_secret = ",".join(str(e.secret) for e in self.endpoints)
            self.folder = store.folder(sandbox_gateway(self.sb, timeout_s=10))
            self.projector = Projector(self.ledger, self.view)
        except BaseException:
            self.stack.close()
            raise
        return self

    def close(self) -> None:
        log = os.environ.get("SLUICE_AGREEMENT_LOG")
        if log:  # one JSON line per history: what ran, and what each operation did
            with open(log, "a", encoding="utf-8") as out:
                steps = [[name, params, outcome] for (name, params), outcome in self.history]
                out.write(json.dumps({"config": self.config.source(), "steps": steps}) + "\n")
        self.stack.close()

    def __enter__(self) -> Player:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations ----------------------------------------------------------------------------

    def apply(self, op: Op) -> str:
        """Runs one operation (a Stripe refusal or a missing label skips it), then delivers every
        webhook due and folds until quiet. Returns the outcome (kept in ``history``)."""
        name, params = op
        handler = getattr(self, f"_op_{name}")
        try:
            outcome = handler(**params) or "ok"
        except stripe.StripeError as error:
            if isinstance(error, stripe.APIConnectionError) or (error.http_status or 0) >= 500:
                raise  # the sandbox broke: not a refusal
            message = error.user_message or str(error)
            outcome = f"refused by Stripe: {type(error).__name__}: {message}"
        except urllib.error.HTTPError as error:  # a /_sandbox control route said no
            if error.code >= 500:
                raise
            outcome = f"refused by the sandbox: {error.code} {error.read().decode()[:200]}"
        except Skip as why:
            outcome = f"skipped: {why}"
        self.history.append((op, outcome))
        try:
            self.settle()
        except Exception as error:
            raise SluiceCrashed(
                f"delivering or folding after {op!r} raised {type(error).__name__}: {error}\n\n"
                + self.case_source()
            ) from error
        return outcome

    def settle(self) -> None:
        """Delivers every due webhook (over HTTP, signed) and folds the inbox, again until both
        are quiet; deliveries scheduled later (chaos delays, retries) are waited for by moving
        the sandbox clock to them. Bounded: a refused event ends ``failed`` after ATTEMPTS_MAX
        passes. Then the read models catch up."""
        for _ in range(SETTLE_ROUNDS_MAX):
            flushed = self.control("/_sandbox/webhooks/flush")
            report: PassReport = self.folder.process(self.view)
            self.fold_errors.extend(report.errors)
            self.fold_errors.extend(getattr(report, "flagged", []))
            moved = flushed["attempted"] or report.processed or sum(report.ignored.values())
            if moved or report.parked:
                continue
            due = flushed.get("next_delivery_at")
            if flushed["scheduled"] and due is not None:
                self.control("/_sandbox/clock/advance", {"seconds": max(0, due - self.now())})
                continue
            break
        self.projector.run_once()

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.sb.base_url}{path}",
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def now(self) -> int:
        return int(self.sb.clock.now())

    def _account(self, label: str) -> AccountRef:
        if label not in self.accounts:
            raise Skip(f"no account {label}")
        return self.accounts[label]

    def _charge(self, label: str) -> ChargeRef:
        if label not in self.charges:
            raise Skip(f"no charge {label}")
        return self.charges[label]

    def _transfer(self, label: str) -> TransferRef:
        if label not in self.transfers:
            raise Skip(f"no transfer {label}")
        return self.transfers[label]

    def _payout(self, label: str) -> PayoutRef:
        if label not in self.payouts:
            raise Skip(f"no payout {label}")
        return self.payouts[label]

    def _op_account(self, label: str, delay_days: int, bank: str, interval: str) -> None:
        schedule: dict[str, Any] = {"interval": interval, "delay_days": delay_days}
        if interval.startswith("weekly:"):
            schedule |= {"interval": "weekly", "weekly_anchor": interval.split(":", 1)[1]}
        account = self.client.v1.accounts.create(
            {
                "country": self.config.country,
                "default_currency": self.config.currency,
                "controller": SANDBOX_CONTROLLER,
                "capabilities": {
                    "card_payments": {"requested": True},
                    "transfers": {"requested": True},
                },
                "settings": {"payouts": {"schedule": schedule}},
                "external_account": {
                    "object": "bank_account",
                    "country": self.config.country,
                    "currency": self.config.currency,
                    "routing_number": ROUTING,
                    "account_number": BANKS[bank],
                },
            }
        )
        self.accounts[label] = AccountRef(str(account.id), bank, delay_days)

    def _pay(self, amount: int, card: str, options: Any = None, **extra: Any) -> Any:
        body = {
            "amount": amount,
            "currency": self.config.currency,
            "payment_method": CARDS[card],
            "confirm": True,
            **extra,
        }
        return self.client.v1.payment_intents.create(body, options)

    def _op_separate_charge(
        self, label: str, amount: int, card: str, split: list[tuple[str, int]] | None = None
    ) -> None:
        extra: dict[str, Any] = {}
        if split:
            parts = [{"account": self._account(acct).id, "share_bps": bps} for acct, bps in split]
            extra["metadata"] = {SPLIT_METADATA_KEY: json.dumps(parts)}
        intent = self._pay(amount, card, **extra)
        self.charges[label] = ChargeRef(
            str(intent.latest_charge), "separate", None, amount, False, card == "dispute"
        )

    def _op_destination_charge(
        self,
        label: str,
        to: str,
        amount: int,
        card: str,
        application_fee: int | None = None,
        transfer_amount: int | None = None,
        on_behalf_of: bool = False,
    ) -> None:
        account = self._account(to).id
        transfer_data: dict[str, Any] = {"destination": account}
        extra: dict[str, Any] = {"transfer_data": transfer_data}
        if transfer_amount is not None:
            transfer_data["amount"] = transfer_amount
        if application_fee is not None:
            extra["application_fee_amount"] = application_fee
        if on_behalf_of:
            extra["on_behalf_of"] = account
        intent = self._pay(amount, card, **extra)
        charge_id = str(intent.latest_charge)
        self.charges[label] = ChargeRef(
            charge_id, "destination", account, amount, bool(application_fee), card == "dispute"
        )
        charge = self.client.v1.charges.retrieve(charge_id)
        moved = transfer_amount if transfer_amount is not None else amount
        self.transfers[f"{label}/tr"] = TransferRef(str(charge.transfer), account, moved, None)

    def _op_direct_charge(
        self, label: str, on: str, amount: int, card: str, application_fee: int | None = None
    ) -> None:
        account = self._account(on).id
        extra = {} if application_fee is None else {"application_fee_amount": application_fee}
        intent = self._pay(amount, card, {"stripe_account": account}, **extra)
        self.charges[label] = ChargeRef(
            str(intent.latest_charge),
            "direct",
            account,
            amount,
            bool(application_fee),
            card == "dispute",
        )

    def _op_transfer(
        self,
        label: str,
        to: str,
        amount: int,
        source: str | None = None,
        source_type: str | None = None,
    ) -> None:
        account = self._account(to).id
        body: dict[str, Any] = {
            "amount": amount,
            "currency": self.config.currency,
            "destination": account,
        }
        if source is not None:
            body["source_transaction"] = self._charge(source).id
        if source_type is not None:  # the balance it draws on: card, or bank_account (top-ups)
            body["source_type"] = source_type
        transfer = self.client.v1.transfers.create(body)
        self.transfers[label] = TransferRef(str(transfer.id), account, amount, source)

    def _op_refund(
        self,
        charge: str,
        amount: int | None = None,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
    ) -> str:
        ref = self._charge(charge)
        body: dict[str, Any] = {"charge": ref.id}
        if amount is not None:
            body["amount"] = amount
        if reverse_transfer:
            body["reverse_transfer"] = True
        if refund_application_fee:
            body["refund_application_fee"] = True
        refund = self.client.v1.refunds.create(body, ref.options)
        return f"ok {refund.id}"

    def _op_reverse_transfer(
        self, transfer: str, amount: int | None = None, refund_application_fee: bool = False
    ) -> str:
        ref = self._transfer(transfer)
        body: dict[str, Any] = {}
        if amount is not None:
            body["amount"] = amount
        if refund_application_fee:
            body["refund_application_fee"] = True
        reversal = self.client.v1.transfers.reversals.create(ref.id, body)
        return f"ok {reversal.id}"

    def _op_refund_application_fee(self, charge: str, amount: int | None = None) -> str:
        ref = self._charge(charge)
        fee = self.client.v1.charges.retrieve(ref.id, {}, ref.options).application_fee
        if not fee:
            raise Skip(f"{charge} has no application fee")
        body = {} if amount is None else {"amount": amount}
        refund = self.client.v1.application_fees.refunds.create(str(fee), body)
        return f"ok {refund.id}"

    def _op_resolve_dispute(self, charge: str, outcome: str, via: str) -> str:
        ref = self._charge(charge)
        found = self.client.v1.disputes.list({"charge": ref.id}, ref.options).data
        if not found:
            raise Skip(f"{charge} has no dispute")
        dispute_id = str(found[0].id)
        if via == "sandbox":
            self.control(f"/_sandbox/disputes/{dispute_id}/resolve", {"outcome": outcome})
        elif via == "evidence":  # Stripe's test evidence: resolved a little later
            text = "winning_evidence" if outcome == "won" else "losing_evidence"
            self.client.v1.disputes.update(
                dispute_id, {"evidence": {"uncategorized_text": text}}, ref.options
            )
        else:  # accept it: lost at once
            self.client.v1.disputes.close(dispute_id, {}, ref.options)
        return f"ok {dispute_id}"

    def _op_topup(self, label: str, amount: int) -> str:
        topup = self.client.v1.topups.create({"amount": amount, "currency": self.config.currency})
        return f"ok {topup.id}"

    def _op_advance(self, seconds: int) -> None:
        self.control("/_sandbox/clock/advance", {"seconds": seconds})

    def _op_payout(
        self, label: str, account: str, amount: int, source_type: str | None = None
    ) -> None:
        acct = self._account(account).id
        body: dict[str, Any] = {"amount": amount, "currency": self.config.currency}
        if source_type is not None:
            body["source_type"] = source_type
        payout = self.client.v1.payouts.create(body, {"stripe_account": acct})
        self.payouts[label] = PayoutRef(str(payout.id), acct)

    def _op_cancel_payout(self, payout: str) -> None:
        ref = self._payout(payout)
        self.client.v1.payouts.cancel(ref.id, {}, {"stripe_account": ref.account})

    def _op_fail_payout(self, payout: str, code: str) -> None:
        ref = self._payout(payout)
        self.control(f"/_sandbox/payouts/{ref.id}/fail", {"failure_code": code})

    def _op_chaos(
        self, duplicate: float, duplicate_count: int, reorder: bool, delay_seconds: int
    ) -> None:
        self.control(
            "/_sandbox/webhooks/chaos",
            {
                "duplicate": duplicate,
                "duplicate_count": duplicate_count,
                "reorder": reorder,
                "delay_seconds": delay_seconds,
                "seed": len(self.history),
            },
        )

    # --- what the machine asks to draw valid amounts -----------------------------------------

    def stripe_balance(
        self, account: str | None, source_type: str | None = None
    ) -> tuple[int, int]:
        """(pending, available) at the sandbox, of one source type or all of them."""
        options = {"stripe_account": account} if account else None
        balance = self.client.v1.balance.retrieve({}, options).to_dict()

        def total(kind: str) -> int:
            rows = [r for r in balance[kind] if r["currency"] == self.currency]
            if source_type is None:
                return sum(int(r["amount"]) for r in rows)
            return sum(int((r.get("source_types") or {}).get(source_type, 0)) for r in rows)

        return total("pending"), total("available")

    @property
    def currency(self) -> str:
        return self.config.currency

    def refundable(self, label: str) -> int:
        ref = self.charges[label]
        charge = self.client.v1.charges.retrieve(ref.id, {}, ref.options)
        return int(charge.amount_captured) - int(charge.amount_refunded)

    def reversible(self, label: str) -> int:
        transfer = self.client.v1.transfers.retrieve(self.transfers[label].id)
        return int(transfer.amount) - int(transfer.amount_reversed)

    def fee_refundable(self, label: str) -> int:
        ref = self.charges[label]
        fee_id = self.client.v1.charges.retrieve(ref.id, {}, ref.options).application_fee
        if not fee_id:
            return 0
        fee = self.client.v1.application_fees.retrieve(str(fee_id))
        return int(fee.amount) - int(fee.amount_refunded)

    def payout_status(self, label: str) -> str:
        ref = self.payouts[label]
        payout = self.client.v1.payouts.retrieve(ref.id, {}, {"stripe_account": ref.account})
        return str(payout.status)

    def dispute_status(self, label: str) -> str | None:
        ref = self.charges[label]
        found = self.client.v1.disputes.list({"charge": ref.id}, ref.options).data
        return str(found[0].status) if found else None

    def sourceable(self, label: str) -> int:
        """What is left of a charge for transfers sourced from it (Sluice's split transfers
        included; reversals free nothing)."""
        charge = self.charges[label].id
        listed = self.client.v1.transfers.list({"limit": PAGE}).auto_paging_iter()
        used = sum(int(t.amount) for t in listed if t.source_transaction == charge)
        return self.charges[label].amount - used

    # --- comparison ----------------------------------------------------------------------------

    def holders(self) -> list[tuple[str, str | None, str]]:
        """(Sluice's account id, Stripe's Stripe-Account or None, label) of every account."""
        return [(PLATFORM, None, "platform")] + [
            (ref.id, ref.id, label) for label, ref in self.accounts.items()
        ]

    def findings(self) -> Findings:
        found = Findings(len(self.history), self.history[-1][0] if self.history else None)
        self._compare_balances(found)
        self._compare_inbox(found)
        self._compare_transactions(found)
        self._compare_payouts(found)
        return found

    def assert_agrees(self, categories: Sequence[str] = CATEGORIES) -> None:
        found = self.findings()
        worst = found.worst(categories)
        if worst is None:
            return
        report = self.report(found, categories)
        # One raise per kind, each on its own line (Hypothesis tells bugs apart by that line).
        if worst == "balances":
            raise BalanceDisagreement(report)
        if worst == "inbox":
            raise InboxDisagreement(report)
        if worst == "transactions":
            raise TransactionDisagreement(report)
        if worst == "payouts":
            raise PayoutDisagreement(report)
        raise TimingDisagreement(report)

    def _compare_balances(self, found: Findings) -> None:
        for sluice_id, stripe_id, label in self.holders():
            options = {"stripe_account": stripe_id} if stripe_id else None
            raw = self.client.v1.balance.retrieve({}, options).to_dict()
            theirs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for kind, index in (("pending", 0), ("available", 1)):
                for row in raw[kind]:
                    theirs[row["currency"]][index] += int(row["amount"])
            view = queries.balance(self.view, sluice_id)
            read: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for kind, index in (("pending", 0), ("available", 1), ("reserved", 2)):
                for row in view[kind]:
                    read[row["currency"]][index] += int(row["amount"])
            for currency in sorted({*theirs, *read, self.currency}):
                balance = self.ledger.get_balance(sluice_id, currency)
                ledger = (
                    (balance.pending_minor, balance.available_minor, balance.reserved_minor)
                    if balance is not None
                    else (0, 0, 0)
                )
                model = tuple(read[currency])
                stripe_side = (*theirs[currency], 0)
                same = ledger == model == stripe_side
                mark = "  " if same else "≠ "
                found.balance_table.append(
                    f"{mark}{label:<9} {currency}  ledger {_pa(ledger)}   read model "
                    f"{_pa(model)}   sandbox {_pa(stripe_side)}"
                )
                if not same:
                    found.problems["balances"].append(
                        f"{label} ({sluice_id}) {currency}: ledger {_pa(ledger)}, read model "
                        f"{_pa(model)}, sandbox GET /v1/balance {_pa(stripe_side)}"
                    )

    def _compare_inbox(self, found: Findings) -> None:
        with self.sb.state.lock:
            attempts = list(self.sb.state.attempts)
        for attempt in attempts:  # every delivery Sluice's endpoint did not accept
            if attempt["status"] != 200:
                line = (
                    f"delivery of {attempt['event']} {attempt['type']} (attempt "
                    f"{attempt['attempt']}) answered {attempt['status']}: {attempt['error']}"
                )
                found.inbox.append(line)
                found.problems["inbox"].append(line)
        for row in sorted(inbox_rows(self.view).values(), key=lambda r: r["event_id"]):
            if row["status"] in (inbox.PROCESSED, inbox.IGNORED):
                continue
            line = (
                f"{row['event_id']} {row['type']} {row['status']} after {row['attempts']} "
                f"attempt(s): {textwrap.shorten(str(row['last_error']), 300)}"
            )
            found.inbox.append(line)
            found.problems["inbox"].append(line)

    def _compare_transactions(self, found: Findings) -> None:
        for sluice_id, stripe_id, label in self.holders():
            ours = self._sluice_groups(sluice_id, stripe_id)
            theirs = self._stripe_groups(stripe_id)
            for key in sorted(ours.keys() | theirs.keys()):
                mine, stripes = ours.get(key, Group()), theirs.get(key, Group())
                currency, source = key
                where = f"{label} {currency} {source}"
                rows = _rows_text(mine, stripes)
                if mine.money() != stripes.money():
                    found.problems["transactions"].append(
                        f"{where}: (amount, fees, net) Sluice {_money(mine)} != sandbox "
                        f"{_money(stripes)}\n{rows}"
                    )
                elif mine.when() != stripes.when():
                    found.problems["timing"].append(
                        f"{where}: net by (created, available_on, status) Sluice "
                        f"{_timeline(mine)} != sandbox {_timeline(stripes)}\n{rows}"
                    )

    def _compare_payouts(self, found: Findings) -> None:
        for sluice_id, stripe_id, label in self.holders():
            if stripe_id is None:
                continue  # the platform pays nothing out in these histories
            theirs = {
                str(p.id): (p.amount, p.currency, p.status, p.failure_code)
                for p in self.client.v1.payouts.list(
                    {"limit": PAGE}, {"stripe_account": stripe_id}
                ).auto_paging_iter()
            }
            ours: dict[str, tuple[Any, ...]] = {}
            after = None
            while True:
                page = queries.list_payouts(
                    self.view, account=sluice_id, limit=PAGE, starting_after=after
                )
                for p in page.data:
                    ours[str(p["id"])] = (
                        p["amount"],
                        p["currency"],
                        p["status"],
                        p["failure_code"],
                    )
                if not page.has_more:
                    break
                after = page.data[-1]["id"]
            for payout_id in sorted(ours.keys() | theirs.keys()):
                mine, stripes = ours.get(payout_id), theirs.get(payout_id)
                if mine != stripes:
                    found.problems["payouts"].append(
                        f"{label} {payout_id}: (amount, currency, status, failure_code) Sluice "
                        f"{mine} != sandbox {stripes}"
                    )

    def _sluice_groups(self, sluice_id: str, stripe_id: str | None) -> dict[tuple[str, str], Group]:
        groups: dict[tuple[str, str], Group] = defaultdict(Group)
        after = None
        while True:
            page = queries.list_balance_transactions(
                self.view, account=sluice_id, limit=PAGE, starting_after=after
            )
            for bt in page.data:
                fees: Counter[str] = Counter()
                for detail in bt["fee_details"]:
                    fees[detail["type"]] += int(detail["amount"])
                amount = int(bt["amount"])
                if stripe_id is not None and bt["type"] == "application_fee":
                    # Sluice books the application fee as its own line on the connected account;
                    # Stripe shows it as a fee of the payment (or charge) it was taken from.
                    fees["application_fee"] += -amount
                    amount = 0
                key = (bt["currency"], self._sluice_key(stripe_id, bt))
                groups[key].add(
                    amount=amount,
                    fees=dict(fees),
                    net=int(bt["net"]),
                    created=int(bt["created"]),
                    available_on=int(bt["available_on"] or bt["created"]),
                    status=str(bt["status"]),
                    row=_row("sluice ", bt),
                )
            if not page.has_more:
                return groups
            after = page.data[-1]["id"]

    def _stripe_groups(self, stripe_id: str | None) -> dict[tuple[str, str], Group]:
        groups: dict[tuple[str, str], Group] = defaultdict(Group)
        options = {"stripe_account": stripe_id} if stripe_id else None
        listed = self.client.v1.balance_transactions.list({"limit": PAGE}, options)
        for item in listed.auto_paging_iter():
            bt = item.to_dict()
            fees: Counter[str] = Counter()
            for detail in bt["fee_details"]:
                fees[detail["type"]] += int(detail["amount"])
            key = (bt["currency"], self._stripe_key(stripe_id, bt))
            groups[key].add(
                amount=int(bt["amount"]),
                fees=dict(fees),
                net=int(bt["net"]),
                created=int(bt["created"]),
                available_on=int(bt["available_on"] or bt["created"]),
                status=str(bt["status"]),
                row=_row("sandbox", bt),
            )
        return groups

    def _stripe_key(self, stripe_id: str | None, bt: dict[str, Any]) -> str:
        """The Stripe object a sandbox balance transaction belongs to, as Sluice names it."""
        source = bt.get("source")
        if not source:
            return f"<no source: {bt['type']} {bt['id']}>"
        source = str(source)
        if stripe_id is None:
            return source
        if source.startswith("py_"):  # a transfer's payment on its destination
            return self._lookup("py", stripe_id, source)
        if bt["type"] == "payment_refund":  # the destination's side of a transfer reversal
            return self._lookup("pyr", stripe_id, source)
        return source

    def _sluice_key(self, stripe_id: str | None, bt: dict[str, Any]) -> str:
        source = str(bt["source"])
        if stripe_id is not None and bt["type"] == "application_fee" and source.startswith("fee_"):
            return self._lookup("fee", stripe_id, source)  # the payment it was a fee of
        return source or f"<no source: {bt['type']} {bt['id']}>"

    def _lookup(self, kind: str, account: str, object_id: str) -> str:
        """py_ → its transfer (tr_); a destination payment refund → its reversal (trr_);
        an application fee (fee_) → the object whose BT carries it on ``account`` (the tr_ of a
        destination charge, or the direct charge's ch_). Cached: these links never change."""
        cache_key = (kind, account, object_id)
        if cache_key in self._keys:
            return self._keys[cache_key]
        options = {"stripe_account": account}
        if kind == "py":
            payment = self.client.v1.charges.retrieve(object_id, {}, options)
            found = str(payment.source_transfer)
        elif kind == "pyr":
            refund = self.client.v1.refunds.retrieve(object_id, {}, options)
            found = str(refund.source_transfer_reversal or object_id)
        else:
            fee = self.client.v1.application_fees.retrieve(object_id)
            charge = str(fee.charge)
            found = self._lookup("py", account, charge) if charge.startswith("py_") else charge
        self._keys[cache_key] = found
        return found

    # --- reporting -----------------------------------------------------------------------------

    def report(self, found: Findings, categories: Sequence[str] = CATEGORIES) -> str:
        lines = [
            f"Sluice disagrees with the Stripe sandbox after step {found.step}: {found.op!r}",
            f"sandbox clock {when(self.now())}; {self.config.source()}",
            "accounts: "
            + ", ".join(
                f"{name}={ref.id} (bank {ref.bank})" for name, ref in self.accounts.items()
            ),
            "",
        ]
        for category in CATEGORIES:
            problems = found.problems.get(category) or []
            if not problems:
                continue
            checked = "" if category in categories else " (not checked here)"
            lines.append(f"== {category}: {len(problems)} disagreement(s){checked}")
            lines.extend(problems[:12])
            if len(problems) > 12:
                lines.append(f"… and {len(problems) - 12} more")
            lines.append("")
        lines.append("== balances (pending / available / reserved):")
        lines.extend(found.balance_table)
        lines.append("")
        if self.fold_errors:
            lines.append("== the fold's refusals and flags so far (last 10):")
            lines.extend(textwrap.shorten(e, 300) for e in self.fold_errors[-10:])
            lines.append("")
        lines.append("== the history so far, as a regression case (see test_agreement_cases.py):")
        lines.append(self.case_source())
        return "\n".join(lines)

    def case_source(self) -> str:
        return case_source(self.config, self.history)


def case_source(config: Config, history: Sequence[tuple[Op, str]]) -> str:
    out = ["(", f"    {config.source()},", "    ["]
    for (name, params), outcome in history:
        args = ", ".join(f"{k!r}: {v!r}" for k, v in params.items())
        note = f"  # {textwrap.shorten(outcome, 80)}" if outcome else ""
        out.append(f"        ({name!r}, {{{args}}}),{note}")
    out += ["    ],", ")"]
    return "\n".join(out)


def _pa(values: Sequence[int]) -> str:
    text = f"{values[0]:>9} / {values[1]:>9}"
    return text + (f" / {values[2]}" if len(values) > 2 and values[2] else "")


def _money(group: Group) -> str:
    amount, fees, net = group.money()
    return f"({amount}, {fees or {}}, {net})"


def _timeline(group: Group) -> str:
    return (
        "{"
        + ", ".join(f"({when(c)}, {when(a)}, {s}): {n}" for (c, a, s), n in group.when().items())
        + "}"
    )


def _row(side: str, bt: dict[str, Any]) -> str:
    return (
        f"      {side} {bt['type']:<22} amount {bt['amount']:>9} fee {bt['fee']:>7} "
        f"net {bt['net']:>9} {bt['status']:<9} created {when(bt['created'])} "
        f"available_on {when(bt['available_on'])} source {bt['source']}"
    )


def _rows_text(mine: Group, stripes: Group) -> str:
    return "\n".join(mine.rows + stripes.rows) or "      (no rows)"


# Replaying a fixed history -----------------------------------------------------------------------


def replay(
    config: Config,
    ops: Sequence[Op],
    stores: StoreOpener,
    *,
    categories: Sequence[str] = CATEGORIES,
    after_each: Callable[[Player, Op, str], None] | None = None,
) -> Player:
    """Plays ``ops`` on a fresh sandbox and store, asserting agreement after every step (only
    the given categories); returns the closed player (its history says what each op did)."""
    with Player(config, stores) as player:
        player.assert_agrees(categories)
        for op in ops:
            outcome = player.apply(op)
            if after_each is not None:
                after_each(player, op, outcome)
            player.assert_agrees(categories)
    return player


def first_disagreement(
    config: Config, ops: Sequence[Op], stores: StoreOpener, categories: Sequence[str]
) -> tuple[str, int, list[tuple[Op, str]]] | None:
    """(kind, step, history so far) of the first disagreement when ``ops`` are replayed (kind:
    a category, or ``crash``), or None when Sluice agrees throughout."""
    with Player(config, stores) as player:
        for step, op in enumerate(ops, start=1):
            try:
                player.apply(op)
            except SluiceCrashed:
                return "crash", step, list(player.history)
            kind = player.findings().worst(categories)
            if kind is not None:
                return kind, step, list(player.history)
    return None


def shrink(
    config: Config,
    ops: Sequence[Op],
    stores: StoreOpener,
    categories: Sequence[str] = CATEGORIES,
    budget_s: float = 300.0,
) -> list[tuple[Op, str]]:
    """A failing history made small: operations after the failing step go, then each other
    operation (last first) that the same kind of disagreement does not need. Greedy and
    bounded by ``budget_s`` (Hypothesis's own shrinking is slow on these histories). Returns
    the small history with each operation's outcome, for ``case_source``."""
    found = first_disagreement(config, ops, stores, categories)
    if found is None:
        raise ValueError("the history agrees: nothing to shrink")
    kind, step, history = found
    kept = list(ops[:step])
    deadline = time.monotonic() + budget_s
    index = len(kept) - 2  # the failing operation itself stays
    while index >= 0 and time.monotonic() < deadline:
        trial = kept[:index] + kept[index + 1 :]
        again = first_disagreement(config, trial, stores, categories)
        if again is not None and again[0] == kind:
            kept, history = trial[: again[1]], again[2]
            index = min(index, len(kept) - 1)
        index -= 1
    return history
