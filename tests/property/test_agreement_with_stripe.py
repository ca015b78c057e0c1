"""The agreement property: whatever valid Stripe Connect history happens, Sluice agrees with
Stripe, after every step, for every account and currency.

A Hypothesis ``RuleBasedStateMachine`` plays random, valid histories through the Stripe sandbox
(``stripe_sandbox``) with the real ``stripe`` SDK over HTTP; the operations and their replay live
in ``tests/property/agreement_support.py``. Per example: a sandbox configuration is drawn (card
fee rule, dispute fee, ``dispute_fee_refunded_on_win`` true or false, platform delay 2-3 days,
payout submit delay and transit days, dispute resolution delay, seed), then a fresh sandbox, a
fresh store (a SQLite file, or a new PostgreSQL schema), and Sluice's own FastAPI app on uvicorn.

Operations (amounts in minor units; the machine reads the sandbox to draw valid ones, and an
operation the sandbox refuses with a Stripe error is kept in the history and skipped):
connected accounts (delay 2-7 days, manual, daily or weekly payouts, a bank account among
Stripe's test numbers: ok, account_closed, insufficient_funds, debit_not_authorized,
invalid_currency, paid-then-failed); destination charges with ``application_fee_amount``, with
``transfer_data[amount]`` or neither, with and without ``on_behalf_of``; direct charges
(``Stripe-Account``) with an application fee; separate charges, sometimes with Sluice's
``sluice_split`` metadata (Sluice then issues the transfers itself); platform top-ups; transfers
sourced from a separate charge (``source_transaction``) or drawn on the available balance (card
funds, or top-up funds with ``source_type=bank_account``); partial and full refunds
with ``reverse_transfer`` and ``refund_application_fee`` where Stripe allows them; transfer
reversals (of destination-charge transfers too, with or without ``refund_application_fee``);
application fee refunds; disputes (``pm_card_createDispute``) won or lost through
``/_sandbox/disputes/{id}/resolve``, Stripe's winning/losing test evidence, or closing, and
unanswered ones lost when their evidence is due; clock advances by days and by hours; manual
payouts on connected accounts, canceled or failed (``/_sandbox/payouts/{id}/fail``) at once now
and then, failing at arrival by their bank account, or automatic; cards that settle later, at
once (``pm_card_bypassPending``) or are declined; webhook chaos (``/_sandbox/webhooks/chaos``:
duplicates, reordering, delays). Every run has two variants: a US platform in usd, and a
Japanese platform settling in jpy (zero-decimal) with Japanese accounts; the sandbox refuses a
charge in a currency the platform does not settle in (``platform_settlement_currencies=()``).

Delivery is real: the sandbox (``webhook_delivery="manual"``) signs each event and POSTs it to
Sluice's ``POST /webhooks/stripe`` (a platform endpoint and a Connect endpoint), which verifies
and stores it; the test then folds the inbox (``Folder.process``). After every operation it
flushes and folds until both are quiet, and when deliveries are scheduled later (chaos delays,
retries) it moves the sandbox clock to them: nothing is left undelivered when it compares (at
most ATTEMPTS_MAX + 40 rounds, so an event Sluice keeps refusing ends ``failed``). Duplicates and
reordered batches come from the sandbox's chaos; delays make later events arrive first, so
Sluice folds genuinely out of order. Then the read models catch up (``Projector.run_once``).

What is compared after every step (``Player.findings``), each kind raised as its own exception
so Hypothesis tells them apart:

1. balances: for the platform and every connected account, for every currency any side knows:
   the ledger's ``Balance`` (pending, available, reserved), the read model ``rm_balances`` as
   ``sluice balance`` reads it (``projections.queries.balance``), and the sandbox's
   ``GET /v1/balance`` (``Stripe-Account`` for connected accounts; reserved 0) are equal;
2. inbox: every delivery was answered 200 by Sluice's endpoint, and no stored event is left
   ``failed`` or ``parked`` (Sluice refused a Stripe fact);
3. transactions: every balance transaction Sluice shows (``projections.queries
   .list_balance_transactions``, all pages) against the sandbox's ``GET /v1/balance_transactions``
   (all pages), grouped per (account, currency, Stripe object) and summed: ``amount``, fees by
   ``fee_details`` type, and ``net``;
4. payouts: ``sluice payouts`` (``rm_payouts``) against ``GET /v1/payouts`` of each connected
   account: amount, currency, status and failure code of every payout;
5. timing: per group as in 3., net by (``created``, ``available_on``, ``status``).

The mapping of 3. and 5. (the shapes differ; grouping makes them comparable, summing keeps every
cent accounted for):

- Stripe's source id names the group, except on a connected account: a transfer's payment
  (``py_…``, type ``payment``) goes to its transfer (``py.source_transfer``, ``tr_…``), and a
  refund of such a payment (type ``payment_refund``, ``re_…``) to its reversal
  (``refund.source_transfer_reversal``, ``trr_…``); Sluice books those lines under the ``tr_``
  and ``trr_`` ids already.
- Sluice books an application fee as its own line (type ``application_fee``, source ``fee_…``)
  on the connected account; Stripe carries it as a fee of the destination's payment, or of the
  direct charge. That line joins the group of the fee's payment (``fee.charge``: a ``py_`` → its
  ``tr_``, a direct ``ch_`` itself), and its amount counts as an ``application_fee`` fee (amount
  0, fee +F, net -F), so amount, fee and net compare exactly (Stripe: amount T, fee F, net T-F).
  On the platform both sides show the fee as its own ``application_fee`` (source ``fee_``).
- Everything else is one to one by source: ``ch_`` charges (fee = card fee, plus the
  application fee on a direct charge), ``tr_`` transfers, ``re_`` refunds, ``trr_`` reversals,
  ``fr_`` fee refunds (both sides), ``dp_`` disputes (withdrawal and reinstatement summed: fee
  +D then -D or 0), ``po_`` payouts with their failure or cancellation, ``tu_`` top-ups (the
  platform). A line without a source
  is a group of its own, so it never matches.
- Timing: a line available when it was created is available from then: an ``available_on``
  before ``created`` (Stripe dates a transfer sourced from an already available charge by the
  charge) compares as ``created``.

Not compared, and why: balance transaction ``id`` (Sluice derives its own ``txn_`` ids),
``type`` and ``reporting_category`` (they follow the different shapes above: Sluice's
destination line is a ``payment`` of category ``transfer``, Stripe's a ``payment`` of category
``charge``; application fee lines have no Stripe counterpart), how many lines a group has (same
reason), ``description``, ``fee_details`` descriptions and ``application``, ``exchange_rate``
and ``balance_type`` (no conversion, one balance type), the balance's ``source_types`` split
(Sluice keeps none), payout ``arrival_date`` and status timeline (not in the read model), and
the platform's own payouts, and transfers sourced from destination or direct charges
(not generated: Sluice models ``source_transaction`` on separate charges only). Connected
accounts pay their own card fees (``controller.fees.payer=account``), as Sluice's money model
assumes.

Budget (CI, 2 cores): ``SLUICE_AGREEMENT_EXAMPLES`` histories (default 8) of up to
``SLUICE_AGREEMENT_STEPS`` operations (default 40) per currency and store, derandomized (the
same histories every run), without shrinking: a failure prints the history as drawn, cut at the
failing step, ready to paste. Measured on a 2-core machine (shared with other test runs):
about 65 s for both currencies on SQLite and 110 s on PostgreSQL (~0.1-0.2 s per operation,
deliveries, fold and checks included; ~5 s and ~10 s per 60-step history in long runs).
Environment:

- ``SLUICE_AGREEMENT_EXAMPLES=200 SLUICE_AGREEMENT_STEPS=60``: a long run;
- ``SLUICE_AGREEMENT_RANDOM=1``: new random histories each run, with Hypothesis's example
  database in ``.hypothesis/agreement`` (a failure found is replayed first next time);
- ``SLUICE_AGREEMENT_SHRINK=1``: let Hypothesis shrink failures (up to ~5 minutes per kind,
  and it makes slow progress on these histories: pasting the printed case into
  ``test_agreement_cases.py`` and running that with the same variable shrinks it greedily,
  faster);
- ``SLUICE_AGREEMENT_CHECKS=balances,inbox``: compare only some kinds (all by default);
- ``SLUICE_AGREEMENT_LOG=path``: append every history played (JSON lines) for coverage.

A failure reports the step and operation, the sandbox clock and configuration, each disagreement
(ledger / read model / sandbox per account and currency; for transactions both sides' lines),
the inbox rows left failed or parked, the fold's refusals and flags, and the whole history as a
regression case: keep it in ``tests/property/test_agreement_cases.py``.
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.property.agreement_support import (
    BANKS,
    CATEGORIES,
    DAY_S,
    HOUR_S,
    PAYOUT_FAILURE_CODES,
    Config,
    Player,
    StoreOpener,
    postgres_stores,
    sqlite_stores,
)

EXAMPLES = int(os.environ.get("SLUICE_AGREEMENT_EXAMPLES", "8"))
STEPS = int(os.environ.get("SLUICE_AGREEMENT_STEPS", "40"))
SHRINK = os.environ.get("SLUICE_AGREEMENT_SHRINK", "") == "1"
RANDOM = os.environ.get("SLUICE_AGREEMENT_RANDOM", "") == "1"
CHECKS = tuple(
    c.strip()
    for c in os.environ.get("SLUICE_AGREEMENT_CHECKS", ",".join(CATEGORIES)).split(",")
    if c.strip()
)
ACCOUNTS_MAX = 4

FEE_RULES = {
    "usd": [(290, 30), (340, 30), (150, 0), (0, 0)],
    "jpy": [(360, 0), (250, 0), (360, 30)],
}
DISPUTE_FEES = {"usd": [1500, 2000, 0], "jpy": [1500, 2000, 0]}
# Mostly cards that succeed; a decline now and then (Stripe refuses it: the step is skipped).
CARDS = st.sampled_from(["visa", "bypass", "dispute", "visa", "bypass", "mastercard", "declined"])
AMOUNTS = st.one_of(st.integers(50, 5_000), st.integers(5_000, 300_000))
PERCENT = st.integers(1, 100)
PART = st.one_of(st.none(), PERCENT)  # None: all of what is left (no amount sent)
PICK = st.integers(0, 99)  # which of the existing objects (modulo their number)
INTERVALS = st.sampled_from(["manual", "manual", "daily", "weekly:friday"])


@st.composite
def configs(draw: st.DrawFn, currency: str) -> Config:
    """A sandbox configuration: Stripe's policies that the sandbox has to pick, drawn."""
    bps, fixed = draw(st.sampled_from(FEE_RULES[currency]))
    return Config(
        currency=currency,
        seed=draw(st.integers(0, 2**16)),
        dispute_fee_refunded_on_win=draw(st.booleans()),
        platform_delay_days=draw(st.sampled_from([2, 2, 3])),
        fee_bps=bps,
        fee_fixed=fixed,
        dispute_fee=draw(st.sampled_from(DISPUTE_FEES[currency])),
        payout_submit_delay_s=draw(st.sampled_from([3600, 600, 7200])),
        payout_transit_days=draw(st.integers(1, 3)),
        dispute_resolution_delay_s=draw(st.sampled_from([3600, 600, 7200])),
    )


def share(total: int, percent: int | None) -> int | None:
    """``percent`` of ``total`` (at least 1), or None for all of it."""
    return None if percent is None else max(1, total * percent // 100)


class AgreementMachine(RuleBasedStateMachine):
    """Random valid histories through the sandbox; Sluice must agree after every step."""

    stores: StoreOpener
    currency: str

    def __init__(self) -> None:
        super().__init__()
        self.player: Player | None = None
        self.counters: dict[str, itertools.count[int]] = defaultdict(itertools.count)

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def p(self) -> Player:
        assert self.player is not None
        return self.player

    def label(self, kind: str) -> str:
        return f"{kind}{next(self.counters[kind])}"

    def do(self, name: str, **params: Any) -> str:
        return self.p.apply((name, params))

    @staticmethod
    def pick(labels: list[str], n: int, fits: Callable[[str], bool] | None = None) -> str:
        """The ``n``-th label (modulo), or with ``fits`` the first from there that fits (the
        ``n``-th when none does: the sandbox will refuse it, and the step is skipped)."""
        start = n % len(labels)
        if fits is not None:
            for label in labels[start:] + labels[:start]:
                if fits(label):
                    return label
        return labels[start]

    def has(self, what: str) -> bool:
        return self.player is not None and bool(self.labels(what))

    def labels(self, what: str) -> list[str]:
        p = self.p
        if what == "accounts":
            return list(p.accounts)
        if what == "charges":
            return list(p.charges)
        if what == "separate":
            return [k for k, c in p.charges.items() if c.kind == "separate"]
        if what == "with_fee":
            return [k for k, c in p.charges.items() if c.application_fee]
        if what == "disputed":
            return [k for k, c in p.charges.items() if c.disputed]
        if what == "transfers":
            return list(p.transfers)
        if what == "payouts":
            return list(p.payouts)
        raise KeyError(what)

    # --- the history ----------------------------------------------------------------------------

    @initialize(data=st.data(), delay=st.integers(2, 7))
    def start(self, data: st.DataObject, delay: int) -> None:
        config = data.draw(configs(self.currency), label="config")
        self.player = Player(config, self.stores).start()
        self.do("account", label=self.label("A"), delay_days=delay, bank="ok", interval="manual")

    @precondition(lambda self: self.player is not None and len(self.p.accounts) < ACCOUNTS_MAX)
    @rule(delay=st.integers(2, 7), bank=st.sampled_from(sorted(BANKS)), interval=INTERVALS)
    def open_account(self, delay: int, bank: str, interval: str) -> None:
        self.do("account", label=self.label("A"), delay_days=delay, bank=bank, interval=interval)

    @precondition(lambda self: self.has("accounts"))
    @rule(
        n=PICK,
        amount=AMOUNTS,
        card=CARDS,
        mode=st.sampled_from(["fee", "transfer_amount", "plain"]),
        percent=PERCENT,
        on_behalf_of=st.booleans(),
    )
    def destination_charge(
        self, n: int, amount: int, card: str, mode: str, percent: int, on_behalf_of: bool
    ) -> None:
        params: dict[str, Any] = {}
        if mode == "fee" and amount * percent // 400:
            params["application_fee"] = amount * percent // 400  # up to a quarter
        elif mode == "transfer_amount":
            params["transfer_amount"] = max(1, amount * percent // 100)
        if on_behalf_of:
            params["on_behalf_of"] = True
        self.do(
            "destination_charge",
            label=self.label("C"),
            to=self.pick(self.labels("accounts"), n),
            amount=amount,
            card=card,
            **params,
        )

    @precondition(lambda self: self.has("accounts"))
    @rule(n=PICK, amount=AMOUNTS, card=CARDS, percent=st.integers(0, 100))
    def direct_charge(self, n: int, amount: int, card: str, percent: int) -> None:
        fee = amount * percent // 400
        self.do(
            "direct_charge",
            label=self.label("C"),
            on=self.pick(self.labels("accounts"), n),
            amount=amount,
            card=card,
            **({"application_fee": fee} if fee else {}),
        )

    @precondition(lambda self: self.player is not None)
    @rule(
        amount=AMOUNTS,
        card=CARDS,
        split=st.one_of(st.none(), st.none(), st.tuples(PICK, st.integers(500, 9_000))),
    )
    def separate_charge(self, amount: int, card: str, split: tuple[int, int] | None) -> None:
        params: dict[str, Any] = {}
        if split is not None and self.has("accounts"):
            n, bps = split
            params["split"] = [(self.pick(self.labels("accounts"), n), bps)]
        self.do("separate_charge", label=self.label("C"), amount=amount, card=card, **params)

    @precondition(lambda self: self.has("accounts"))
    @rule(
        n=PICK,
        source=st.one_of(st.none(), PICK),
        percent=PERCENT,
        source_type=st.sampled_from(["card", "card", "bank_account"]),
    )
    def transfer(self, n: int, source: int | None, percent: int, source_type: str) -> None:
        """Sourced from a separate charge, or drawn on the platform's available balance (card
        funds, or a top-up's bank_account funds)."""
        to = self.pick(self.labels("accounts"), n)
        separate = self.labels("separate")
        available = self.p.stripe_balance(None, source_type)[1]
        if separate and (source is not None or available <= 0):
            charge = self.pick(separate, source or n, lambda c: self.p.sourceable(c) > 0)
            left = self.p.sourceable(charge)
            amount = max(1, left * percent // 100)
            self.do("transfer", label=self.label("T"), to=to, amount=amount, source=charge)
            return
        amount = max(1, available * percent // 100) if available > 0 else percent
        typed = {"source_type": source_type} if source_type != "card" else {}
        self.do("transfer", label=self.label("T"), to=to, amount=amount, **typed)

    @precondition(lambda self: self.has("charges"))
    @rule(n=PICK, part=PART, reverse=st.booleans(), refund_fee=st.booleans())
    def refund(self, n: int, part: int | None, reverse: bool, refund_fee: bool) -> None:
        label = self.pick(self.labels("charges"), n, lambda c: self.p.refundable(c) > 0)
        charge = self.p.charges[label]
        refund_fee = refund_fee and charge.application_fee
        # A destination charge's fee is refunded only with its transfer reversed (Stripe's rule).
        reverse = charge.kind == "destination" and (reverse or refund_fee)
        self.do(
            "refund",
            charge=label,
            amount=share(self.p.refundable(label), part),
            reverse_transfer=reverse,
            refund_application_fee=refund_fee,
        )

    @precondition(lambda self: self.has("transfers"))
    @rule(n=PICK, part=PART, refund_fee=st.booleans())
    def reverse_transfer(self, n: int, part: int | None, refund_fee: bool) -> None:
        label = self.pick(
            self.labels("transfers"),
            n,
            lambda t: (
                self.p.reversible(t) > 0
                and self.p.stripe_balance(self.p.transfers[t].destination)[1] > 0
            ),
        )
        left = self.p.reversible(label)
        available = self.p.stripe_balance(self.p.transfers[label].destination)[1]
        if part is None and left > available:
            part = 100
        amount = share(min(left, available) if available > 0 else left, part)
        self.do(
            "reverse_transfer", transfer=label, amount=amount, refund_application_fee=refund_fee
        )

    @precondition(lambda self: self.has("with_fee"))
    @rule(n=PICK, part=PART)
    def refund_application_fee(self, n: int, part: int | None) -> None:
        label = self.pick(self.labels("with_fee"), n, lambda c: self.p.fee_refundable(c) > 0)
        amount = share(self.p.fee_refundable(label), part)
        self.do("refund_application_fee", charge=label, amount=amount)

    @precondition(lambda self: self.has("disputed"))
    @rule(
        n=PICK,
        outcome=st.sampled_from(["won", "lost"]),
        via=st.sampled_from(["sandbox", "evidence", "close"]),
    )
    def resolve_dispute(self, n: int, outcome: str, via: str) -> None:
        open_ = ("needs_response", "warning_needs_response")
        still = ("needs_response", "warning_needs_response", "under_review")
        statuses = still if via == "sandbox" else open_
        disputed = self.labels("disputed")
        label = self.pick(disputed, n, lambda c: self.p.dispute_status(c) in statuses)
        outcome = "lost" if via == "close" else outcome  # closing is accepting: lost
        self.do("resolve_dispute", charge=label, outcome=outcome, via=via)

    @precondition(lambda self: self.player is not None)
    @rule(amount=AMOUNTS)
    def topup(self, amount: int) -> None:
        """The platform tops its balance up from its bank (available some days later)."""
        self.do("topup", label=self.label("U"), amount=amount)

    @precondition(lambda self: self.player is not None)
    @rule(days=st.integers(1, 10))
    def advance_days(self, days: int) -> None:
        self.do("advance", seconds=days * DAY_S)

    @precondition(lambda self: self.player is not None)
    @rule(hours=st.integers(1, 23))
    def advance_hours(self, hours: int) -> None:
        self.do("advance", seconds=hours * HOUR_S)

    @precondition(lambda self: self.has("accounts"))
    @rule(n=PICK, percent=PERCENT, then=st.sampled_from([None, None, "cancel", "fail"]))
    def payout(self, n: int, percent: int, then: str | None) -> None:
        """A manual payout; now and then canceled or failed at once (a step of its own)."""
        label = self.pick(
            self.labels("accounts"),
            n,
            lambda a: self.p.stripe_balance(self.p.accounts[a].id)[1] > 0,
        )
        account = self.p.accounts[label].id
        typed: dict[str, str] = {}
        available = self.p.stripe_balance(account, "card")[1]
        if available <= 0 and self.p.stripe_balance(account, "bank_account")[1] > 0:
            typed["source_type"] = "bank_account"  # funds transferred from top-ups
            available = self.p.stripe_balance(account, "bank_account")[1]
        amount = max(1, available * percent // 100) if available > 0 else percent
        payout = self.label("P")
        self.do("payout", label=payout, account=label, amount=amount, **typed)
        if then == "cancel":
            self.check()
            self.do("cancel_payout", payout=payout)
        elif then == "fail":
            self.check()
            self.do("fail_payout", payout=payout, code=PAYOUT_FAILURE_CODES[percent % 4])

    @precondition(lambda self: self.has("payouts"))
    @rule(n=PICK)
    def cancel_payout(self, n: int) -> None:
        payouts = self.labels("payouts")
        pending = self.pick(payouts, n, lambda p: self.p.payout_status(p) == "pending")
        self.do("cancel_payout", payout=pending)

    @precondition(lambda self: self.has("payouts"))
    @rule(n=PICK, code=st.sampled_from(PAYOUT_FAILURE_CODES))
    def fail_payout(self, n: int, code: str) -> None:
        failable = ("pending", "in_transit", "paid")
        label = self.pick(self.labels("payouts"), n, lambda p: self.p.payout_status(p) in failable)
        self.do("fail_payout", payout=label, code=code)

    @precondition(lambda self: self.player is not None)
    @rule(
        duplicate=st.sampled_from([0.0, 0.3, 1.0]),
        duplicate_count=st.integers(1, 2),
        reorder=st.booleans(),
        delay=st.sampled_from([0, 0, 60, 900, 3600]),
    )
    def chaos(self, duplicate: float, duplicate_count: int, reorder: bool, delay: int) -> None:
        self.do(
            "chaos",
            duplicate=duplicate,
            duplicate_count=duplicate_count,
            reorder=reorder,
            delay_seconds=delay,
        )

    # --- the property ---------------------------------------------------------------------------

    def check(self) -> None:
        if self.player is not None:
            self.player.assert_agrees(CHECKS)

    @invariant()
    def sluice_agrees_with_the_sandbox(self) -> None:
        self.check()

    def teardown(self) -> None:
        if self.player is not None:
            self.player.close()


def machine(stores: StoreOpener, currency: str) -> Callable[[], AgreementMachine]:
    class Machine(AgreementMachine):
        pass

    Machine.stores = staticmethod(stores)  # type: ignore[assignment]
    Machine.currency = currency
    Machine.__name__ = Machine.__qualname__ = f"AgreementMachine_{currency}"
    return Machine


def agreement_settings() -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if SHRINK:
        phases.append(Phase.shrink)
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not RANDOM,
        database=DirectoryBasedExampleDatabase(".hypothesis/agreement") if RANDOM else None,
        phases=phases,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def run(stores: StoreOpener, currency: str) -> None:
    run_state_machine_as_test(machine(stores, currency), settings=agreement_settings())


@pytest.mark.slow
@pytest.mark.parametrize("currency", ["usd", "jpy"])
def test_sluice_agrees_with_stripe_on_sqlite(tmp_path: Path, currency: str) -> None:
    run(sqlite_stores(tmp_path), currency)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("currency", ["usd", "jpy"])
def test_sluice_agrees_with_stripe_on_postgres(postgres_url: str, currency: str) -> None:
    run(postgres_stores(postgres_url), currency)
