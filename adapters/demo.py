"""`sluice demo`: a small marketplace booked end to end on the embedded store, per-seed stable.

Account-level commands use fixed idempotency keys and money movements use keys derived from the
seed, so running the demo twice with one seed replays everything and records nothing new.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ledger import commands as c
from ledger.application import CommandResult, Ledger
from ledger.ids import PLATFORM_ACCOUNT_ID
from ledger.journal import AVAILABLE, PENDING
from ledger.splits import SplitPart

DEMO_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
PAYMENTS_PER_RUN = 24
DISPUTE_FEE_MINOR = {"usd": 1500, "jpy": 2000}


@dataclass(frozen=True)
class Seller:
    account_id: str
    country: str
    currency: str
    interval: str
    delay_days: int
    weekly_anchor: str | None = None
    monthly_anchor: int | None = None


SELLERS = (
    Seller("acct_alpine_outfitters", "US", "usd", "daily", 2),
    Seller("acct_bonsai_tokyo", "JP", "jpy", "weekly", 7, weekly_anchor="friday"),
    Seller("acct_cobalt_prints", "US", "usd", "monthly", 3, monthly_anchor=1),
    Seller("acct_dune_ceramics", "US", "usd", "manual", 2),  # its bank account rejects payouts
)


def stripe_fee(amount_minor: int, currency: str) -> int:
    """The demo's stand-in for Stripe's fee (recorded as given; Sluice never computes fees)."""
    if currency == "jpy":
        return amount_minor * 36 // 1000
    return amount_minor * 29 // 1000 + 30


class Demo:
    def __init__(self, app: Ledger, seed: int) -> None:
        self.app = app
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = DEMO_START
        self.results: list[CommandResult] = []

    def run(self, cmd: c.Command) -> CommandResult:
        result = self.app.execute(cmd)
        self.results.append(result)
        return result

    def key(self, *parts: object) -> str:
        return "demo:" + ":".join(str(p) for p in (self.seed, *parts))

    def tick(self, minutes: int = 7) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now

    def open_accounts(self) -> None:
        self.run(
            c.OpenAccount(
                idempotency_key="demo:open:platform",
                effective_at=self.now,
                account_id=PLATFORM_ACCOUNT_ID,
                kind="platform",
            )
        )
        self.run(
            c.SetPayoutSchedule(
                idempotency_key="demo:schedule:platform",
                effective_at=self.now,
                account_id=PLATFORM_ACCOUNT_ID,
                interval="manual",
                delay_days=2,
            )
        )
        for s in SELLERS:
            self.run(
                c.OpenAccount(
                    idempotency_key=f"demo:open:{s.account_id}",
                    effective_at=self.now,
                    account_id=s.account_id,
                    country=s.country,
                    default_currency=s.currency,
                )
            )
            self.run(
                c.UpdateAccount(
                    idempotency_key=f"demo:verify:{s.account_id}",
                    effective_at=self.now,
                    account_id=s.account_id,
                    verification_status="verified",
                    capabilities={"card_payments": "active", "transfers": "active"},
                    charges_enabled=True,
                    payouts_enabled=True,
                )
            )
            self.run(
                c.SetPayoutSchedule(
                    idempotency_key=f"demo:schedule:{s.account_id}",
                    effective_at=self.now,
                    account_id=s.account_id,
                    interval=s.interval,
                    delay_days=s.delay_days,
                    weekly_anchor=s.weekly_anchor,
                    monthly_anchor=s.monthly_anchor,
                    minimum_minor={s.currency: 500 if s.currency == "usd" else 1000},
                )
            )

    def take_payments(self) -> list[tuple[str, CommandResult]]:
        taken: list[tuple[str, CommandResult]] = []
        kinds = ("destination", "direct", "separate")
        for n in range(PAYMENTS_PER_RUN):
            kind = kinds[n % 3]
            currency = "jpy" if n % 4 == 1 else "usd"
            candidates = [s for s in SELLERS if s.currency == currency] or list(SELLERS)
            seller = self.rng.choice(candidates)
            amount = self.rng.randint(8, 400) * (100 if currency == "jpy" else 125)
            fee = stripe_fee(amount, currency)
            common = {
                "idempotency_key": self.key("pay", n),
                "effective_at": self.tick(),
                "currency": currency,
                "amount_minor": amount,
                "stripe_fee_minor": fee,
            }
            if kind == "separate":
                others = [s for s in SELLERS if s is not seller]
                partner = self.rng.choice(others)
                cmd: c.Command = c.RecordPayment(
                    charge_type="separate",
                    transfer_group=f"order_{self.seed}_{n}",
                    split=(
                        SplitPart(seller.account_id, share_bps=6_000),
                        SplitPart(partner.account_id, share_bps=3_000),
                    ),
                    **common,
                )
            else:
                cmd = c.RecordPayment(
                    charge_type=kind,
                    account_id=seller.account_id,
                    application_fee_minor=amount // 10,
                    **common,
                )
            taken.append((kind, self.run(cmd)))
        return taken

    def refund_and_dispute(self, taken: list[tuple[str, CommandResult]]) -> None:
        destination = next(r for kind, r in taken if kind == "destination")
        payment = self.app.get_payment(destination.ids["payment"])
        assert payment is not None
        self.run(
            c.RefundPayment(
                idempotency_key=self.key("refund"),
                effective_at=self.tick(),
                payment_id=payment.payment_id,
                amount_minor=payment.amount_minor // 2 // 10 * 10,
                reverse_transfer=True,
                refund_application_fee=True,
            )
        )
        separate = [r for kind, r in taken if kind == "separate"][-1]
        disputed = self.app.get_payment(separate.ids["payment"])
        assert disputed is not None
        self.run(
            c.OpenDispute(
                idempotency_key=self.key("dispute"),
                effective_at=self.tick(),
                payment_id=disputed.payment_id,
                fee_minor=DISPUTE_FEE_MINOR[disputed.currency],
            )
        )
        self.run(
            c.CloseDispute(
                idempotency_key=self.key("dispute", "lost"),
                effective_at=self.tick(60 * 24 * 3),
                payment_id=disputed.payment_id,
                won=False,
            )
        )

    def release_everything(self) -> None:
        self.now = DEMO_START + timedelta(days=10)
        for account in (PLATFORM_ACCOUNT_ID, *(s.account_id for s in SELLERS)):
            for currency in ("usd", "jpy"):
                self.run(
                    c.ReleaseFunds(
                        idempotency_key=self.key("release", account, currency),
                        effective_at=self.now,
                        account_id=account,
                        currency=currency,
                        until=self.now,
                    )
                )

    def pay_out(self) -> None:
        for s in SELLERS:
            balance = self.app.get_balance(s.account_id, s.currency)
            if balance is None or balance.available_minor <= 0:
                continue
            payout = self.run(
                c.RequestPayout(
                    idempotency_key=self.key("payout", s.account_id),
                    effective_at=self.tick(),
                    account_id=s.account_id,
                    currency=s.currency,
                    amount_minor=balance.available_minor,
                )
            )
            payout_id = payout.ids["payout"]
            self.run(
                c.MarkPayoutInTransit(
                    idempotency_key=self.key("transit", payout_id),
                    effective_at=self.tick(60),
                    payout_id=payout_id,
                )
            )
            if s.account_id == "acct_dune_ceramics":
                self.run(
                    c.FailPayout(
                        idempotency_key=self.key("fail", payout_id),
                        effective_at=self.tick(60 * 24),
                        payout_id=payout_id,
                        failure_code="no_account",
                    )
                )
            else:
                self.run(
                    c.MarkPayoutPaid(
                        idempotency_key=self.key("paid", payout_id),
                        effective_at=self.tick(60 * 24),
                        payout_id=payout_id,
                    )
                )

    def late_payments(self) -> None:
        """Sales after the release, still pending when the demo ends."""
        for n, seller in enumerate(SELLERS):
            amount = self.rng.randint(8, 400) * (100 if seller.currency == "jpy" else 125)
            self.run(
                c.RecordPayment(
                    idempotency_key=self.key("late", n),
                    effective_at=self.tick(),
                    charge_type="destination",
                    account_id=seller.account_id,
                    currency=seller.currency,
                    amount_minor=amount,
                    stripe_fee_minor=stripe_fee(amount, seller.currency),
                    application_fee_minor=amount // 10,
                )
            )

    def play(self) -> None:
        self.open_accounts()
        taken = self.take_payments()
        self.refund_and_dispute(taken)
        self.release_everything()
        self.pay_out()
        self.late_payments()


def balance_rows(app: Ledger) -> list[tuple[str, str, int, int]]:
    """(account, currency, pending, available) for every balance the journal knows of."""
    _, per_book = app.journal_totals()
    keys = sorted({(o, cur) for (o, book, cur) in per_book if book in (PENDING, AVAILABLE)})
    rows = []
    for owner, currency in keys:
        balance = app.get_balance(owner, currency)
        if balance is not None:
            rows.append((owner, currency, balance.pending_minor, balance.available_minor))
    return rows
