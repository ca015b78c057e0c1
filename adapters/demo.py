"""`sluice demo`: a small marketplace run through the Stripe sandbox, booked from its webhooks.

Everything a platform would do happens against the sandbox with the real `stripe` SDK over HTTP:
sellers onboard, customers pay (direct, destination and separate charges in usd and jpy), a
refund reverses its transfer, a dispute is lost, time passes, payouts go out and one bounces.
The sandbox signs webhooks and posts them to Sluice's own HTTP endpoint; Sluice stores them,
folds them into the ledger and finally compares every account's books with Stripe's balance.

Deterministic per seed: a second run with the same seed on the same store replays every
command (same Stripe ids, same idempotency keys) and records nothing new.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.settings import Settings
from adapters.stripe.folding import Folder
from adapters.stripe.gateway import StripeClientGateway, idempotency_key
from ledger import commands as c
from ledger.application import CommandResult, Ledger
from ledger.journal import AVAILABLE, PENDING
from ledger.money import format_minor
from projections.store import ReadModel

PAYMENTS_PER_RUN = 24
HELD_PAYMENT = 200  # the number of the payment authorized first and captured later
PAYOUT_DAYS = 7  # one week of daily payout runs: daily, weekly and monthly slots all come up
DAY_S = 86_400
FOLD_PASSES_MAX = 10
SANDBOX_SEED = 2026  # fixed, so Stripe's ids are the same on every run


DEMO_MARKER = "demo:platform"  # the demo's first command: marks a store the demo wrote


class DemoStoreError(Exception):
    """The store holds history that is not this demo's: refuse rather than mix them."""


def store_state(ledger: Ledger) -> str:
    """``empty``, ``demo`` (written by an earlier demo run) or ``other``."""
    if next(ledger.iter_events(), None) is None:
        return "empty"
    return "demo" if ledger.has_command(DEMO_MARKER) else "other"


def prepare_store(database_url: str, ledger: Ledger) -> str | None:
    """Makes room for a new run: a SQLite store an earlier demo wrote is moved aside (never
    deleted) to ``<file>.previous``; any other history is refused. Returns where it went."""
    state = store_state(ledger)
    if state == "empty":
        return None
    if state == "other" or not database_url.startswith("sqlite:///"):
        raise DemoStoreError(
            "this store already holds history; the demo runs on an empty store, e.g. "
            "--database-url sqlite:///./var/demo.db"
        )
    ledger.close()
    path = Path(database_url.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.replace(path.with_name(path.name + ".previous" + suffix))
    return f"{path}.previous"


PLATFORM_COUNTRY = "US"  # the sandbox platform's (SandboxSettings.platform_country)


@dataclass(frozen=True)
class Seller:
    name: str
    country: str
    currency: str
    interval: str
    delay_days: int
    bank_account: str = "000123456789"  # Stripe's test account that pays out fine
    weekly_anchor: str | None = None
    monthly_anchor: int | None = None


SELLERS = (
    Seller("alpine", "US", "usd", "daily", 2),
    Seller("bonsai", "JP", "jpy", "weekly", 7, weekly_anchor="friday"),
    Seller("cobalt", "US", "usd", "monthly", 3, monthly_anchor=15),
    # Stripe's test number for a closed bank account: its payout fails, the funds come back and
    # further payouts pause until the bank account is updated.
    Seller("dune", "US", "usd", "daily", 2, bank_account="000111111113"),
    Seller("ember", "US", "usd", "manual", 2),  # paid out only on request
)


@dataclass
class DemoRun:
    seed: int
    results: list[CommandResult] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)  # seller name → acct_ id
    payouts: list[str] = field(default_factory=list)
    webhooks_folded: int = 0
    agreement: list[tuple[str, str, int, int, int, int]] = field(default_factory=list)
    # Stripe's GET /v1/balance at instants during the run, for an auditor's replay to match:
    # (instant, Sluice's account id, currency, pending, available).
    stripe_balances: list[tuple[datetime, str, str, int, int]] = field(default_factory=list)
    reserves: list[str] = field(default_factory=list)  # a reserve held and released, told
    holds: list[str] = field(default_factory=list)  # a payment held, then captured, told
    instant: list[str] = field(default_factory=list)  # an Instant Payout and its fees, told

    @property
    def agree(self) -> bool:
        return all(lp == sp and la == sa for _, _, lp, la, sp, sa in self.agreement)


def stripe_fee_settings() -> dict[str, Any]:
    """The demo's Stripe: its card fees (Sluice records what it reports), and a platform that
    holds a JPY bank account beside its USD one, so it settles jpy charges without conversion."""
    from stripe_sandbox import parse_fee_rules

    return {
        "processing_fees": parse_fee_rules("usd=290+30,jpy=360+0"),
        "platform_settlement_currencies": ("jpy",),
        # The platform's price on an Instant Payout (payout monetization): 1% to the platform.
        "payout_platform_fees": parse_fee_rules("instant=100+0"),
    }


class Demo:
    def __init__(self, ledger: Ledger, view: ReadModel, settings: Settings, seed: int) -> None:
        self.ledger = ledger
        self.view = view
        self.settings = settings
        self.seed = seed
        self.rng = random.Random(seed)
        self.run = DemoRun(seed)

    # Plumbing -------------------------------------------------------------------------------

    def _key(self, *parts: object) -> str:
        return "demo:" + ":".join(str(p) for p in (self.seed, *parts))

    def _now(self) -> datetime:
        """The sandbox's clock: the demo's time is Stripe's time."""
        return datetime.fromtimestamp(self.sandbox.clock.now(), UTC)

    def _execute(self, cmd: c.Command) -> CommandResult:
        result = self.ledger.execute(cmd)
        self.run.results.append(result)
        return result

    def check_store(self) -> None:
        """The sandbox starts empty, so the demo needs an empty store (see ``prepare_store``)."""
        if store_state(self.ledger) != "empty":
            raise DemoStoreError(
                "this store already holds history; the demo runs on an empty store, e.g. "
                "--database-url sqlite:///./var/demo.db"
            )
        self._execute(
            c.OpenAccount(
                idempotency_key=DEMO_MARKER,
                effective_at=self._now(),
                account_id=self.settings.platform_account_id,
                kind="platform",
            )
        )

    def fold(self) -> None:
        """Delivers every due webhook and folds the inbox, again until both are quiet: folding
        can itself make Stripe send events (Sluice's split transfers)."""
        for _ in range(FOLD_PASSES_MAX):
            delivered = int(self.sandbox.flush().get("delivered", 0))
            report = self.folder.process(self.view)
            self.run.webhooks_folded += report.processed
            if not (delivered or report.processed or report.parked):
                break

    # The story --------------------------------------------------------------------------------

    def play(self, sandbox: Any) -> DemoRun:
        self.sandbox = sandbox
        # One time axis: everything the ledger records during the demo (the workers' payouts
        # included, which take no instant of their own) is stamped with Stripe's clock.
        self.ledger.clock = self._now
        self.client = sandbox.client()
        self.gateway = StripeClientGateway(
            sandbox.secret_key, api_base=sandbox.base_url, max_network_retries=2
        )
        self.folder = Folder(self.ledger, self.gateway, self.settings)
        self.check_store()
        self.onboard()
        charges = self.take_payments()
        self.hold_then_capture()
        self.refund_and_dispute(charges)
        self.fold()
        self.sandbox.advance(10 * DAY_S)  # past every available_on: balance.available events
        self.fold()
        hold_id = self.hold_in_reserve()
        self.pay_out_instantly()
        self.open_second_currency()
        self.snapshot_stripe_balances()
        for _ in range(PAYOUT_DAYS):  # the workers pay each seller out on its own schedule
            self.pay_out()
            self.sandbox.advance(DAY_S)
            self.fold()
            self.snapshot_stripe_balances()
        self.sandbox.advance(5 * DAY_S)  # the last payouts arrive, or bounce
        self.fold()
        self.snapshot_stripe_balances()
        self.late_payments()
        self.fold()
        self.tell_reserve(hold_id)
        self.compare()
        return self.run

    def onboard(self) -> None:
        for s in SELLERS:
            account = self.client.v1.accounts.create(
                {
                    "country": s.country,
                    "default_currency": s.currency,
                    "controller": {"fees": {"payer": "account"}, "losses": {"payments": "stripe"}},
                    "capabilities": {
                        "card_payments": {"requested": True},
                        "transfers": {"requested": True},
                    },
                    # Sluice decides payouts by its own schedule; Stripe's stays manual.
                    "settings": {"payouts": {"schedule": {"interval": "manual"}}},
                    "external_account": {
                        "object": "bank_account",
                        "country": s.country,
                        "currency": s.currency,
                        "account_number": s.bank_account,
                        "routing_number": "110000000",
                    },
                    "metadata": {"sluice_demo": s.name},
                    "email": f"{s.name}@sellers.example",
                    "business_profile": {"name": f"{s.name.title()} Goods"},
                },
                {"idempotency_key": self._key("account", s.name)},
            )
            self.run.accounts[s.name] = account.id
            now = self._now()
            self._execute(
                c.OpenAccount(
                    idempotency_key=self._key("open", s.name),
                    effective_at=now,
                    account_id=account.id,
                    country=s.country,
                    default_currency=s.currency,
                )
            )
            self.folder.sync_account(account.id)  # charges and payouts enabled, as at Stripe
            self._execute(
                c.SetPayoutSchedule(
                    idempotency_key=self._key("schedule", s.name),
                    effective_at=now,
                    account_id=account.id,
                    interval=s.interval,
                    delay_days=s.delay_days,
                    weekly_anchor=s.weekly_anchor,
                    monthly_anchor=s.monthly_anchor,
                    minimum_minor={s.currency: 500 if s.currency == "usd" else 1_000},
                )
            )

    def _pay(self, n: int, params: dict[str, Any], account: str | None = None) -> Any:
        options: dict[str, Any] = {"idempotency_key": self._key("pi", n)}
        if account:
            options["stripe_account"] = account
        base = {
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"sluice_demo_payment": str(n)},
        }
        return self.client.v1.payment_intents.create(base | params, options)

    def take_payments(self) -> dict[str, list[Any]]:
        charges: dict[str, list[Any]] = {"destination": [], "direct": [], "separate": []}
        kinds = ("destination", "direct", "separate")
        for n in range(PAYMENTS_PER_RUN):
            kind = kinds[n % 3]
            currency = "jpy" if n % 4 == 1 else "usd"
            local = [s for s in SELLERS if s.currency == currency]
            seller = self.rng.choice(local)
            acct = self.run.accounts[seller.name]
            amount = self.rng.randint(8, 400) * (100 if currency == "jpy" else 125)
            params: dict[str, Any] = {"amount": amount, "currency": currency}
            if kind == "destination":
                params |= {
                    "transfer_data": {"destination": acct},
                    "application_fee_amount": amount // 10,
                }
                if n % 6 == 0 or seller.country != PLATFORM_COUNTRY:
                    # Across regions Stripe needs the seller as the settlement merchant.
                    params["on_behalf_of"] = acct
                intent = self._pay(n, params)
            elif kind == "direct":
                intent = self._pay(n, params | {"application_fee_amount": amount // 10}, acct)
            else:
                partner = self.rng.choice([s for s in SELLERS if s is not seller])
                split = [
                    {"account": acct, "share_bps": 6_000},
                    {"account": self.run.accounts[partner.name], "share_bps": 3_000},
                ]
                params |= {"transfer_group": f"order_{self.seed}_{n}"}
                if n == 5:  # this customer will dispute the charge, and the platform will lose
                    params["payment_method"] = "pm_card_createDispute"
                intent = self._pay(n, params | {"metadata": {"sluice_split": json.dumps(split)}})
            charges[kind].append(intent)
        return charges

    def hold_then_capture(self) -> None:
        """A payment authorized now and captured later, for less (manual capture): while held it
        is the platform's ``authorized`` figure, never available; the capture books only what
        Stripe captured, and the rest of the hold is released."""
        from adapters.stripe.holds import authorized_minor

        seller = SELLERS[0]
        acct, currency = self.run.accounts[seller.name], seller.currency
        amount = 16_000
        intent = self._pay(
            HELD_PAYMENT,
            {
                "amount": amount,
                "currency": currency,
                "capture_method": "manual",
                "transfer_data": {"destination": acct},
                "application_fee_amount": amount // 10,
            },
        )
        self.fold()
        platform = self.settings.platform_account_id
        held = authorized_minor(self.ledger, platform, currency)
        captured = amount * 3 // 4
        self.client.v1.payment_intents.capture(
            intent.id,
            {"amount_to_capture": captured},
            {"idempotency_key": self._key("capture", HELD_PAYMENT)},
        )
        self.fold()
        left = authorized_minor(self.ledger, platform, currency)

        def shown(n: int) -> str:
            return f"{format_minor(n, currency)} {currency}"

        self.run.holds.append(
            f"payment {intent.latest_charge} to {acct}: {shown(amount)} authorized (held, not"
            f" available: the platform's authorized figure was {shown(held)}), then"
            f" {shown(captured)} captured and {shown(amount - captured)} released (authorized"
            f" now: {shown(left)})"
        )

    def refund_and_dispute(self, charges: dict[str, list[Any]]) -> None:
        refunded = charges["destination"][0]
        self.gateway.create_refund(
            charge=str(refunded.latest_charge),
            amount=refunded.amount // 2 // 10 * 10,
            reverse_transfer=True,
            refund_application_fee=True,
            idempotency_key=idempotency_key("demo", str(self.seed), "refund"),
        )
        self.fold()  # the dispute exists once the disputed charge's events are in
        for dispute in self.client.v1.disputes.list({"limit": 10}).data:
            self.client.v1.disputes.update(
                dispute.id,
                {"evidence": {"uncategorized_text": "losing_evidence"}},
                {"idempotency_key": self._key("evidence", dispute.id)},
            )

    def hold_in_reserve(self) -> str | None:
        """Stripe holds a quarter of the first seller's available funds in reserve for a day
        (the sandbox's control stands in for Stripe's risk team); the ledger books it into the
        seller's reserved book, the payouts leave it alone, and its release is folded too."""
        import urllib.request

        seller = SELLERS[0]
        account = self.run.accounts[seller.name]
        balance = self.client.v1.balance.retrieve({}, {"stripe_account": account}).to_dict()
        amount = _amount(balance, "available", seller.currency) // 4
        if amount <= 0:
            return None
        body = {"amount": amount, "currency": seller.currency}
        body["release_after"] = self.sandbox.clock.now() + DAY_S
        request = urllib.request.Request(
            f"{self.sandbox.base_url}/_sandbox/accounts/{account}/reserves",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            hold = json.loads(response.read())
        self.fold()
        found = self.ledger.get_balance(account, seller.currency)
        reserved = found.reserved_minor if found is not None else 0
        until = datetime.fromtimestamp(body["release_after"], UTC).isoformat()
        self.run.reserves.append(
            f"reserve {hold['id']}: Stripe held {format_minor(amount, seller.currency)}"
            f" {seller.currency} of {account} (the ledger's reserved book:"
            f" {format_minor(reserved, seller.currency)}), to release after {until}"
        )
        return str(hold["id"])

    def tell_reserve(self, hold_id: str | None) -> None:
        from eventsourcing.application import AggregateNotFoundError

        from ledger.risk import reserve_aggregate_id

        if hold_id is None:
            return
        try:
            reserve = self.ledger.repository.get(reserve_aggregate_id(hold_id))
        except AggregateNotFoundError:
            self.run.reserves.append(f"reserve {hold_id}: not in the ledger")
            return
        released = sum(reserve.releases.values())
        currency = reserve.currency
        self.run.reserves.append(
            f"reserve {hold_id}: released {format_minor(released, currency)} {currency} back to"
            f" available (still held: {format_minor(reserve.held_minor, currency)})"
        )

    def open_second_currency(self) -> None:
        """A seller paid on a schedule that holds yen beside its dollars adds a JPY bank
        account: from then on the workers pay each currency to the bank for that currency."""
        for seller in SELLERS:
            account = self.run.accounts[seller.name]
            on = {"stripe_account": account}
            held = _amount(self.client.v1.balance.retrieve({}, on).to_dict(), "available", "jpy")
            if seller.interval != "manual" and seller.currency != "jpy" and held > 0:
                break
        else:
            return
        self.client.v1.accounts.external_accounts.create(
            account,
            {
                "external_account": {
                    "object": "bank_account",
                    "country": seller.country,
                    "currency": "jpy",
                    "account_number": seller.bank_account,
                    "routing_number": "110000000",
                }
            },
            {"idempotency_key": self._key("jpy-bank", seller.name)},
        )
        self.fold()
        self.run.instant.append(
            f"second currency: {account} ({seller.name}) holds {format_minor(held, 'jpy')} jpy"
            f" beside {seller.currency}; with a jpy bank account it is paid out in both"
        )

    def pay_out_instantly(self) -> None:
        """The manual seller asks for half its balance now (an Instant Payout): Stripe takes
        its instant fee, the platform its payout fee; the ledger books both as reported."""
        seller = next(s for s in SELLERS if s.interval == "manual")
        account = self.run.accounts[seller.name]
        on = {"stripe_account": account}
        balance = self.client.v1.balance.retrieve({}, on).to_dict()
        amount = _amount(balance, "available", seller.currency) // 2
        if amount <= 0:
            return
        payout = self.client.v1.payouts.create(
            {"amount": amount, "currency": seller.currency, "method": "instant"},
            {**on, "idempotency_key": self._key("instant", seller.name)},
        )
        self.fold()
        found = self.ledger.get_payout(str(payout.id))
        stripe_fee, platform_fee = (
            format_minor(int(getattr(found, name, 0) or 0), seller.currency)
            for name in ("stripe_fee_minor", "application_fee_minor")
        )
        self.run.instant.append(
            f"instant payout {payout.id}: {format_minor(amount, seller.currency)}"
            f" {seller.currency} to {account}; Stripe's fee {stripe_fee}, the platform's"
            f" payout fee {platform_fee} (its revenue)"
        )

    def pay_out(self) -> None:
        """Today's payout slot, run by the workers' own jobs in-process (no broker needed):
        each account's schedule, minimum and bank status decide; Stripe gets each payout once."""
        from adapters.jobs import Context, pay_out_by_schedule

        context = Context(self.settings, self.ledger, self.view, self.gateway)
        self.run.payouts += pay_out_by_schedule(context, self._now())

    def late_payments(self) -> None:
        """Sales after the payouts, still pending when the demo ends."""
        for n, s in enumerate(SELLERS):
            amount = self.rng.randint(8, 400) * (100 if s.currency == "jpy" else 125)
            self._pay(
                100 + n,
                {
                    "amount": amount,
                    "currency": s.currency,
                    "application_fee_amount": amount // 10,
                    "transfer_data": {"destination": self.run.accounts[s.name]},
                    **(
                        {"on_behalf_of": self.run.accounts[s.name]}
                        if s.country != PLATFORM_COUNTRY
                        else {}
                    ),
                },
            )

    def _holders(self) -> list[tuple[str, str | None]]:
        """(Sluice's account id, Stripe's ``Stripe-Account``: None for the platform)."""
        return [(self.settings.platform_account_id, None)] + [
            (acct, acct) for acct in self.run.accounts.values()
        ]

    def snapshot_stripe_balances(self) -> None:
        """Stripe's balances now, every account and currency; then the clock moves on a second,
        so nothing recorded later shares the snapshot's instant (an auditor's ``--as-of`` it)."""
        at = self._now()
        for sluice_id, stripe_id in self._holders():
            options = {"stripe_account": stripe_id} if stripe_id else {}
            balance = self.client.v1.balance.retrieve({}, options).to_dict()
            currencies = {b["currency"] for b in (*balance["available"], *balance["pending"])}
            for currency in sorted(currencies):
                pending = _amount(balance, "pending", currency)
                available = _amount(balance, "available", currency)
                self.run.stripe_balances.append((at, sluice_id, currency, pending, available))
        self.sandbox.advance(1)

    def compare(self) -> None:
        """Every account's ledger balance beside Stripe's ``GET /v1/balance``: reconciliation's
        balance agreement (``adapters.reconcile``, as `sluice reconcile balances` shows it)."""
        from adapters.reconcile import balance_agreement

        accounts = [sluice_id for sluice_id, _ in self._holders()]
        _, rows = balance_agreement(self.ledger, self.gateway, self.settings, accounts)
        self.run.agreement += [
            (
                r.account,
                r.currency,
                r.ledger_pending,
                r.ledger_available,
                r.stripe_pending,
                r.stripe_available,
            )
            for r in rows
        ]


def _amount(balance: dict[str, Any], kind: str, currency: str) -> int:
    return sum(int(b["amount"]) for b in balance[kind] if b["currency"] == currency)


@contextmanager
def sandbox_and_webhooks(settings: Settings, app_factory: Any) -> Iterator[tuple[Any, Settings]]:
    """The in-process sandbox, Sluice's HTTP endpoint on a free port, and both wired together."""
    from adapters.http.server import serving
    from stripe_sandbox import Sandbox

    # Manual delivery: webhooks go out (over HTTP, signed) when the demo flushes or advances
    # the clock, so a fold never races deliveries still in flight.
    with Sandbox(seed=SANDBOX_SEED, webhook_delivery="manual", **stripe_fee_settings()) as sandbox:
        settings = settings.model_copy(
            update={
                "stripe_api_key": sandbox.secret_key,
                "stripe_api_base": sandbox.base_url,
                "stripe_platform_account_id": sandbox.platform_account_id,
            }
        )
        with serving(app_factory(settings)) as base_url:
            client = sandbox.client()
            secrets = []
            for connect in (False, True):  # platform events, and connected accounts' events
                endpoint = client.v1.webhook_endpoints.create(
                    {
                        "url": f"{base_url}/webhooks/stripe",
                        "enabled_events": ["*"],
                        "connect": connect,
                    }
                )
                secrets.append(str(endpoint.secret))
            settings.stripe_webhook_secret = ",".join(secrets)
            yield sandbox, settings


def balance_rows(ledger: Ledger) -> list[tuple[str, str, int, int]]:
    """(account, currency, pending, available) for every balance the journal knows of."""
    _, per_book = ledger.journal_totals()
    keys = sorted({(o, cur) for (o, book, cur) in per_book if book in (PENDING, AVAILABLE)})
    rows = []
    for owner, currency in keys:
        balance = ledger.get_balance(owner, currency)
        if balance is not None:
            rows.append((owner, currency, balance.pending_minor, balance.available_minor))
    return rows
