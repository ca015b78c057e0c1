"""Failures that are not refusals (issue 11, item 2), end to end: the Stripe sandbox over real
HTTP answers the next calls with Stripe's own errors (``POST /_sandbox/faults``), the real
stripe SDK raises them, ``StripeClientGateway`` classifies them, and the jobs
(``adapters.jobs``, run in-process) act on them against a real PostgreSQL store:

* hold (401, 403, ``account_invalid``, 400 ``idempotency_error``): nothing fails, no money
  moves; the payout or routing is held with Stripe's code, listed as held, and carried on by
  the sweeper once the problem is gone (the fault spent);
* retry (429, 500): TransientError (the actor retries), the payout stays pending, never failed;
* refuse: the payout fails and its funds return to available; a routing transfer raises.

Refunds and transfer reversals are only called outbound by the demo today, so they are tested
at the gateway: each fault gives its class, and a faulted request is never remembered under
its Idempotency-Key (the same key later makes exactly one refund or reversal).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner

from adapters.bootstrap import bootstrap
from adapters.cli import app as cli_app
from adapters.jobs import (
    Context,
    TransientError,
    hold_retry_after,
    route_payment_body,
    submit_payout_body,
    sweep_body,
)
from adapters.stripe.errors import HOLD, REFUSE, RETRY
from adapters.stripe.folding import Folder
from adapters.stripe.gateway import GatewayError, StripeClientGateway
from adapters.stripe.translate import SPLIT_METADATA_KEY
from ledger.application import Ledger
from ledger.ids import object_id
from ledger.payouts import FAILED, HELD, PENDING_STATUS, Payout
from projections import queries
from projections.runner import Projector
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import (
    BANK_OK,
    Store,
    Target,
    fold_all,
    fresh_store,
    inbox_rows,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)

pytestmark = pytest.mark.postgres

FUNDS = 3_000
PAYOUT = 1_200
ATTEMPTS_MAX = 5  # what an actor's retries stand for here: a bound, not a wait
# Past every backoff the tests meet (a held item retried after 1 minute the first time).
LATER = timedelta(minutes=2)
HOLDS = {  # fault → the code the ledger records
    "invalid_api_key": "authentication_error",
    "api_key_expired": "api_key_expired",
    "account_invalid": "account_invalid",
    "permission": "permission_error",
    "idempotency_error": "idempotency_error",
}


@dataclass
class World:
    sb: Sandbox
    target: Target
    gateway: StripeClientGateway
    store: Store
    ahead_ledgers: dict[timedelta, Ledger] = field(default_factory=dict)

    def ctx(self, ahead: timedelta | None = None) -> Context:
        """The jobs' context; ``ahead``: on a Ledger whose clock runs that far ahead (the
        sweeper's backoff has passed) over the same store."""
        ledger = self.store.ledger
        if ahead is not None:
            if ahead not in self.ahead_ledgers:
                self.ahead_ledgers[ahead] = bootstrap(
                    self.store.settings, clock=lambda: datetime.now(UTC) + ahead
                )
            ledger = self.ahead_ledgers[ahead]
        return Context(self.store.settings, ledger, self.store.view, self.gateway)

    def arm(self, error: str, path: str, *, count: int = 1, code: str | None = None) -> Any:
        """Arms a sandbox fault over HTTP, as an operator or another process would."""
        fields: dict[str, Any] = {"error": error, "count": count, "method": "POST", "path": path}
        if code is not None:
            fields["code"] = code
        return self.control("POST", fields)

    def control(self, method: str, fields: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.sb.base_url}/_sandbox/faults",
            data=json.dumps(fields).encode() if fields is not None else None,
            headers={"content-type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fold(self, account: str) -> None:
        store_events(self.store.view, sandbox_events(self.sb, [None, account]))
        # Routing plans are recorded only: route_payment_body carries them out, as the relay asks.
        folder = Folder(self.store.ledger, self.gateway, self.store.settings, route_inline=False)
        assert not any(r.errors for r in fold_all(folder, self.store.view))

    def funded(self, amount: int = FUNDS) -> str:
        account = self.target.account(BANK_OK)
        self.target.pay(amount, "pm_card_bypassPending", transfer_data={"destination": account})
        self.fold(account)
        assert self.available(account) == amount
        return account

    def available(self, account: str) -> int:
        balance = self.store.ledger.get_balance(account, "usd")
        assert balance is not None
        return balance.available_minor

    def request_payout(self, account: str, amount: int = PAYOUT) -> str:
        payout_id = object_id("po", "error-classes", account)
        self.store.ledger.request_payout(
            idempotency_key=f"test:{payout_id}",
            account_id=account,
            currency="usd",
            amount_minor=amount,
            payout_id=payout_id,
        )
        return payout_id

    def payout(self, payout_id: str) -> Payout:
        payout = self.store.ledger.get_payout(payout_id)
        assert payout is not None
        return payout

    def project(self) -> None:
        projector = Projector(self.store.ledger, self.store.view, ["payouts", "routing_holds"])
        for name in projector.projections:
            projector.catch_up(name)


@pytest.fixture(scope="module")
def world(postgres_url: str) -> Iterator[World]:
    with Sandbox(seed=211, webhook_delivery="manual") as sb:
        # No SDK retries: one armed fault is one failed call.
        gateway = sandbox_gateway(sb, timeout_s=10, max_network_retries=0)
        target = Target("sandbox", sb.client(), gateway, sb)
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            world = World(sb, target, gateway, store)
            try:
                yield world
            finally:
                for ledger in world.ahead_ledgers.values():
                    ledger.close()


@pytest.fixture(autouse=True)
def _no_fault_left(world: World) -> Iterator[None]:
    yield
    armed = world.control("GET")["data"]
    world.control("DELETE")
    assert armed == [], f"a test left faults armed: {armed}"


def _failures(world: World, payout_id: str) -> list[Any]:
    return [
        e
        for _, e in world.store.ledger.iter_events()
        if isinstance(e, Payout.Failed) and e.payout_id == payout_id
    ]


def _sweep(ctx: Context, **kwargs: Any) -> tuple[list[str], list[str]]:
    """One in-process sweep; returns (payouts it would submit, payments it would route)."""
    submits: list[str] = []
    routes: list[str] = []
    sweep_body(ctx, submits.append, lambda: None, enqueue_route=routes.append, **kwargs)
    return submits, routes


# --- payouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(HOLDS))
def test_a_key_or_permission_error_holds_the_payout_moves_no_money_and_it_proceeds_once_fixed(
    world: World, fault: str
) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.project()
    held_before = queries.hold_counts(world.store.view)["payouts"]
    world.arm(fault, "/v1/payouts")

    assert submit_payout_body(world.ctx(), payout_id) is None
    payout = world.payout(payout_id)
    assert (payout.status, payout.hold_code, payout.stripe_payout_id) == (HELD, HOLDS[fault], None)
    assert not _failures(world, payout_id)  # nothing refused: the funds did not come back
    assert world.available(account) == FUNDS - PAYOUT  # still in transit, where they were
    assert world.gateway.list_payouts(account=account) == []  # and nothing left for the bank
    world.project()
    [listed] = [
        p
        for p in queries.list_payouts(world.store.view, status=HELD, account=account).data
        if p["id"] == payout_id
    ]
    assert listed["hold"]["reason_code"] == HOLDS[fault] and listed["hold"]["message"]
    assert queries.hold_counts(world.store.view)["payouts"] == held_before + 1

    # The sweeper leaves it alone until its backoff passed, then submits it again; the fault
    # is spent (the key was fixed), so Stripe takes it this time.
    assert payout_id not in _sweep(world.ctx())[0]
    assert payout_id in _sweep(world.ctx(ahead=LATER))[0]
    stripe_id = submit_payout_body(world.ctx(ahead=LATER), payout_id)
    assert stripe_id is not None and stripe_id.startswith("po_")
    payout = world.payout(payout_id)
    assert payout.status == PENDING_STATUS and payout.stripe_payout_id == stripe_id
    assert [str(s) for s, _ in payout.history] == [PENDING_STATUS, HELD, PENDING_STATUS]
    assert [p.id for p in world.gateway.list_payouts(account=account)] == [stripe_id]
    world.project()
    [row] = [p for p in queries.list_payouts(world.store.view, account=account).data]
    assert row["status"] == PENDING_STATUS and row["hold"] is None
    assert [step["status"] for step in row["timeline"]] == ["pending", "held", "pending"]
    assert queries.hold_counts(world.store.view)["payouts"] == held_before


def test_sluice_payouts_status_held_lists_held_payouts_with_their_reason(world: World) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.arm("api_key_expired", "/v1/payouts")
    assert submit_payout_body(world.ctx(), payout_id) is None
    world.project()
    env = {"SLUICE_DATABASE_URL": world.store.settings.database_url, "COLUMNS": "400"}
    args = ["payouts", "--account", account, "--status"]
    listed = CliRunner().invoke(cli_app, [*args, "held"], env=env)
    assert listed.exit_code == 0, listed.output
    assert payout_id in listed.output and "api_key_expired: Expired API Key" in listed.output
    pending = CliRunner().invoke(cli_app, [*args, "pending"], env=env)
    assert pending.exit_code == 0 and payout_id not in pending.output
    assert CliRunner().invoke(cli_app, [*args, "stuck"], env=env).exit_code != 0
    assert submit_payout_body(world.ctx(ahead=LATER), payout_id) is not None  # leave it done


def test_a_payout_held_again_waits_longer_before_the_next_attempt(world: World) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.arm("account_invalid", "/v1/payouts", count=2)
    assert submit_payout_body(world.ctx(), payout_id) is None
    assert submit_payout_body(world.ctx(ahead=LATER), payout_id) is None  # still broken
    payout = world.payout(payout_id)
    assert payout.hold_count == 2 and payout.status == HELD
    world.project()
    # The second hold was recorded LATER ahead: a sweep at that clock is too early for it.
    assert payout_id not in _sweep(world.ctx(ahead=LATER))[0]
    assert payout_id in _sweep(world.ctx(ahead=LATER + hold_retry_after(2)))[0]
    assert submit_payout_body(world.ctx(ahead=2 * LATER + LATER), payout_id) is not None
    assert world.available(account) == FUNDS - PAYOUT and not _failures(world, payout_id)


@pytest.mark.parametrize("fault", ["rate_limit", "api_error"])
def test_a_rate_limit_or_stripe_outage_is_retried_and_then_the_payout_is_submitted(
    world: World, fault: str
) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.arm(fault, "/v1/payouts", count=2)
    outcomes: list[str] = []
    for _ in range(ATTEMPTS_MAX):
        try:
            stripe_id = submit_payout_body(world.ctx(), payout_id)
        except TransientError:
            outcomes.append("retry")
            assert world.payout(payout_id).status == PENDING_STATUS  # never failed, never held
            continue
        outcomes.append("submitted")
        break
    assert outcomes == ["retry", "retry", "submitted"]
    assert [p.id for p in world.gateway.list_payouts(account=account)] == [stripe_id]
    assert world.payout(payout_id).stripe_payout_id == stripe_id
    assert not _failures(world, payout_id)


def test_a_payout_still_failing_past_the_retries_stays_pending_for_the_sweeper(
    world: World,
) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.arm("api_error", "/v1/payouts", count=ATTEMPTS_MAX)
    for _ in range(ATTEMPTS_MAX):  # every retry the actor has: all fail
        with pytest.raises(TransientError):
            submit_payout_body(world.ctx(), payout_id)
    assert world.payout(payout_id).status == PENDING_STATUS
    assert world.available(account) == FUNDS - PAYOUT and not _failures(world, payout_id)
    world.project()
    assert payout_id in _sweep(world.ctx(), older_than=timedelta(0))[0]
    assert submit_payout_body(world.ctx(), payout_id) is not None


@pytest.mark.parametrize("code", ["balance_insufficient", "payouts_not_allowed"])
def test_a_refused_payout_fails_and_returns_its_funds(world: World, code: str) -> None:
    account = world.funded()
    payout_id = world.request_payout(account)
    world.arm("refusal", "/v1/payouts", code=code)
    assert submit_payout_body(world.ctx(), payout_id) is None
    payout = world.payout(payout_id)
    assert (payout.status, payout.failure_code) == (FAILED, f"stripe_{code}")
    assert world.available(account) == FUNDS  # returned
    assert world.gateway.list_payouts(account=account) == []
    # Failed is final: the sweeper does not send it again.
    world.project()
    assert payout_id not in _sweep(world.ctx(ahead=LATER), older_than=timedelta(0))[0]


# --- routing (split transfers) -----------------------------------------------------------------


def _split_charge(world: World) -> tuple[str, str]:
    """A separate charge whose metadata splits 60 % to a new seller, folded: its routing is
    planned, not carried out (route_payment does that)."""
    seller = world.target.account(BANK_OK)
    split = json.dumps([{"account": seller, "share_bps": 6000}])
    intent = world.target.pay(
        5000, transfer_group=f"order-{seller}", metadata={SPLIT_METADATA_KEY: split}
    )
    charge = str(intent.latest_charge)
    world.fold(seller)
    payment = world.store.ledger.get_payment(charge)
    assert payment is not None and payment.planned_routing == {seller: 3000}
    return charge, seller


def _transfers_to(world: World, seller: str) -> list[Any]:
    return list(world.target.client.v1.transfers.list({"destination": seller}).data)


def test_a_permission_error_holds_the_routing_until_the_sweeper_carries_it_on(
    world: World,
) -> None:
    charge, seller = _split_charge(world)
    world.project()
    held_before = queries.hold_counts(world.store.view)["routings"]
    world.arm("account_invalid", "/v1/transfers")
    assert route_payment_body(world.ctx(), charge) == []
    payment = world.store.ledger.get_payment(charge)
    assert payment is not None and payment.routing_held is not None
    assert payment.routing_held["reason_code"] == "account_invalid"
    assert payment.routing_held["destination"] == seller
    assert payment.sourced_transfers == {} and _transfers_to(world, seller) == []
    world.project()
    assert queries.hold_counts(world.store.view)["routings"] == held_before + 1
    assert charge in [r["payment"] for r in queries.held_routings(world.store.view, 100)]

    assert charge not in _sweep(world.ctx())[1]
    assert charge in _sweep(world.ctx(ahead=LATER))[1]
    [made] = route_payment_body(world.ctx(ahead=LATER), charge)
    assert [t.id for t in _transfers_to(world, seller)] == [made]
    payment = world.store.ledger.get_payment(charge)
    assert payment is not None and payment.routing_held is None
    assert set(payment.sourced_transfers) == {made}
    world.project()
    assert queries.hold_counts(world.store.view)["routings"] == held_before
    assert route_payment_body(world.ctx(), charge) == []  # done: nothing more, ever


def test_a_rate_limited_routing_is_retried_and_then_made(world: World) -> None:
    charge, seller = _split_charge(world)
    world.arm("rate_limit", "/v1/transfers")
    with pytest.raises(TransientError):
        route_payment_body(world.ctx(), charge)
    payment = world.store.ledger.get_payment(charge)
    assert payment is not None and payment.routing_held is None  # a blip holds nothing
    [made] = route_payment_body(world.ctx(), charge)
    assert [t.id for t in _transfers_to(world, seller)] == [made]


def test_a_refused_routing_transfer_raises_as_before_and_holds_nothing(world: World) -> None:
    charge, seller = _split_charge(world)
    world.arm("refusal", "/v1/transfers", code="transfers_not_allowed")
    with pytest.raises(GatewayError) as refused:
        route_payment_body(world.ctx(), charge)
    assert refused.value.failure_class == REFUSE
    assert refused.value.code == "stripe_transfers_not_allowed"
    payment = world.store.ledger.get_payment(charge)
    assert payment is not None and payment.routing_held is None
    assert payment.sourced_transfers == {} and _transfers_to(world, seller) == []


# --- refunds and transfer reversals, at the gateway --------------------------------------------

GATEWAY_CASES = [  # fault, code, the SDK's exception, the class
    ("invalid_api_key", None, stripe.AuthenticationError, HOLD),
    ("account_invalid", None, stripe.PermissionError, HOLD),
    ("permission", None, stripe.PermissionError, HOLD),
    ("idempotency_error", None, stripe.IdempotencyError, HOLD),
    ("rate_limit", None, stripe.RateLimitError, RETRY),
    ("api_error", None, stripe.APIError, RETRY),
    ("refusal", "charge_already_refunded", stripe.InvalidRequestError, REFUSE),
    ("card_declined", None, stripe.CardError, REFUSE),
]


@pytest.fixture(scope="module")
def paid(world: World) -> tuple[str, str]:
    """A destination charge (to refund) and its transfer (to reverse), funds available."""
    seller = world.target.account(BANK_OK)
    intent = world.target.pay(
        20_000, "pm_card_bypassPending", transfer_data={"destination": seller}
    )
    charge = world.gateway.retrieve("charge", str(intent.latest_charge)).data
    return str(charge["id"]), str(charge["transfer"])


@pytest.mark.parametrize(("fault", "code", "sdk_class", "expected"), GATEWAY_CASES)
def test_each_refund_failure_gets_its_class_and_the_key_stays_free(
    world: World, paid: tuple[str, str], fault: str, code: str | None, sdk_class: Any, expected: str
) -> None:
    charge, _ = paid
    key = f"test:refund:{fault}"
    world.arm(fault, "/v1/refunds", code=code)
    with pytest.raises(GatewayError) as caught:
        world.gateway.create_refund(charge=charge, amount=100, idempotency_key=key)
    assert type(caught.value.__cause__) is sdk_class
    assert caught.value.failure_class == expected
    # The faulted request changed nothing and was not kept under its key: the same key now
    # makes the refund, once.
    refund = world.gateway.create_refund(charge=charge, amount=100, idempotency_key=key)
    again = world.gateway.create_refund(charge=charge, amount=100, idempotency_key=key)
    assert again.id == refund.id
    assert [r.id for r in world.gateway.list_refunds(charge=charge)].count(refund.id) == 1


@pytest.mark.parametrize(("fault", "code", "sdk_class", "expected"), GATEWAY_CASES)
def test_each_reversal_failure_gets_its_class_and_the_key_stays_free(
    world: World, paid: tuple[str, str], fault: str, code: str | None, sdk_class: Any, expected: str
) -> None:
    _, transfer = paid
    key = f"test:reversal:{fault}"
    before = world.gateway.retrieve("transfer", transfer).data["amount_reversed"]
    world.arm(fault, f"/v1/transfers/{transfer}/reversals", code=code)
    with pytest.raises(GatewayError) as caught:
        world.gateway.reverse_transfer(transfer, amount=100, idempotency_key=key)
    assert type(caught.value.__cause__) is sdk_class
    assert caught.value.failure_class == expected
    assert world.gateway.retrieve("transfer", transfer).data["amount_reversed"] == before
    reversal = world.gateway.reverse_transfer(transfer, amount=100, idempotency_key=key)
    assert world.gateway.reverse_transfer(transfer, amount=100, idempotency_key=key).id == (
        reversal.id
    )
    assert world.gateway.retrieve("transfer", transfer).data["amount_reversed"] == before + 100


# --- the sandbox's faults themselves ------------------------------------------------------------


def test_faults_match_their_method_and_path_count_down_and_are_bounded(world: World) -> None:
    world.arm("rate_limit", "/v1/payouts", count=2)
    assert world.gateway.retrieve_balance()["object"] == "balance"  # a GET elsewhere: served
    [armed] = world.control("GET")["data"]
    assert (armed["error"], armed["remaining"], armed["method"]) == ("rate_limit", 2, "POST")
    assert world.control("DELETE")["data"] == []
    for bad in ({"error": "nonsense"}, {"error": "rate_limit", "count": 1001}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            world.control("POST", bad)
        assert refused.value.code == 400
    assert world.control("GET")["data"] == []


# --- folding webhooks ------------------------------------------------------------------------


def test_a_key_error_while_folding_holds_the_event_until_the_key_works_again(world: World) -> None:
    """The folder refetches each event's object: a 401 then is the deployment's problem, not the
    event's. The event is held (never failed, however many passes), retried a minute later."""
    from adapters.stripe import inbox

    account = world.target.account(BANK_OK)
    intent = world.target.pay(1000, "pm_card_bypassPending", transfer_data={"destination": account})
    charge = str(intent.latest_charge)
    events = [
        e
        for e in sandbox_events(world.sb, [None, account])
        if e["type"] == "charge.succeeded" and e["data"]["object"]["id"] == charge
    ]
    assert events and store_events(world.store.view, events) == len(events)
    ids = {e["id"] for e in events}
    folder = Folder(world.store.ledger, world.gateway, world.store.settings, route_inline=False)

    def statuses() -> set[str]:
        return {r["status"] for i, r in inbox_rows(world.store.view).items() if i in ids}

    world.control("POST", {"error": "invalid_api_key", "count": 1000, "method": "GET"})
    for _ in range(3):  # more passes change nothing: held is not a step towards failed
        folder.process(world.store.view)
        assert statuses() == {inbox.HELD}
        with world.store.view.write(None) as tx:  # the minute passes
            tx.execute(
                "UPDATE sl_stripe_events SET processed = processed - %s WHERE status = %s",
                (inbox.HELD_RETRY_S + 1, inbox.HELD),
            )
    world.control("DELETE")
    assert world.store.ledger.get_payment(charge) is None
    report = folder.process(world.store.view)
    assert report.errors == [] and statuses() == {inbox.PROCESSED}
    assert world.store.ledger.get_payment(charge) is not None
