"""The state machine's checks are not vacuous: fed tampered data, each of them fails."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.balances import Balance
from ledger.ids import WORLD, balance_aggregate_id
from ledger.payouts import TRANSITIONS
from tests.property.invariants import (
    check_balances_mirror_journal,
    check_books_conserved,
    check_entry_balanced,
    check_floor_after_discretionary_debit,
    check_payout_history,
    check_rebuilt_equals_live,
    check_same,
    check_within,
)
from tests.property.test_ledger_state_machine import LedgerMachine, memory_store
from tests.support import PLATFORM, aggregate_state

CHARGE = [
    (WORLD, "customer_funds", -1_000, "usd"),
    (WORLD, "stripe_fees", 59, "usd"),
    (PLATFORM, "pending", 941, "usd"),
]


def test_a_balanced_entry_passes_and_an_unbalanced_one_fails() -> None:
    check_entry_balanced("txn_ok", CHARGE)
    tampered = [*CHARGE[:2], (PLATFORM, "pending", 942, "usd")]
    with pytest.raises(AssertionError, match="does not sum to zero"):
        check_entry_balanced("txn_bad", tampered)


def test_an_entry_balanced_only_across_currencies_fails() -> None:
    with pytest.raises(AssertionError, match="jpy"):
        check_entry_balanced(
            "txn_mixed", [("acct_a", "available", -5, "usd"), ("acct_b", "available", 5, "jpy")]
        )


def test_an_empty_entry_or_a_float_posting_fails() -> None:
    with pytest.raises(AssertionError):
        check_entry_balanced("txn_empty", [])
    with pytest.raises(AssertionError):
        check_entry_balanced(
            "txn_float",
            [("acct_a", "available", -5.0, "usd"), ("acct_b", "available", 5, "usd")],  # type: ignore[list-item]
        )


def test_books_that_do_not_sum_to_zero_fail_conservation() -> None:
    check_books_conserved({"usd": 0, "jpy": 0})
    with pytest.raises(AssertionError, match="created or destroyed"):
        check_books_conserved({"usd": 0, "jpy": -1})


def test_a_balance_that_differs_from_the_journal_fails_the_mirror_check() -> None:
    per_book = {(PLATFORM, "pending", "usd"): 941, (WORLD, "customer_funds", "usd"): -1_000}
    check_balances_mirror_journal({(PLATFORM, "usd"): (941, 0, 0)}, per_book)
    with pytest.raises(AssertionError, match="journal says"):
        check_balances_mirror_journal({(PLATFORM, "usd"): (941, 1, 0)}, per_book)
    with pytest.raises(AssertionError, match="no Balance"):
        check_balances_mirror_journal({}, per_book)


def test_parts_over_their_whole_and_disagreeing_counts_fail() -> None:
    check_within("refunded", 1_000, 1_000)
    with pytest.raises(AssertionError):
        check_within("refunded", 1_001, 1_000)
    with pytest.raises(AssertionError):
        check_within("reversed", -1, 1_000)
    with pytest.raises(AssertionError):
        check_same("reversed", 400, 1_000)
    with pytest.raises(AssertionError):
        check_floor_after_discretionary_debit("payout", -1)


def test_a_payout_history_with_a_forbidden_transition_fails() -> None:
    check_payout_history("po_1", ["pending", "in_transit", "paid", "failed"], TRANSITIONS)
    with pytest.raises(AssertionError, match="in_transit to canceled"):
        check_payout_history("po_1", ["pending", "in_transit", "canceled"], TRANSITIONS)
    with pytest.raises(AssertionError, match="paid to in_transit"):
        check_payout_history("po_1", ["pending", "in_transit", "paid", "in_transit"], TRANSITIONS)
    with pytest.raises(AssertionError, match="start at pending"):
        check_payout_history("po_1", ["in_transit"], TRANSITIONS)
    with pytest.raises(AssertionError, match="expected"):
        check_payout_history("po_1", ["pending"], TRANSITIONS, expected=["pending", "failed"])


def test_a_rebuilt_aggregate_that_differs_fails() -> None:
    check_rebuilt_equals_live("x", {"a": 1}, {"a": 1})
    with pytest.raises(AssertionError, match="'a': \\(1, 2\\)"):
        check_rebuilt_equals_live("x", {"a": 1}, {"a": 2})


@pytest.fixture
def funded_machine() -> LedgerMachine:
    machine = LedgerMachine(memory_store)
    machine.opening_payments(funded=True)
    return machine


def test_the_machine_invariants_pass_on_an_untouched_ledger(funded_machine: LedgerMachine) -> None:
    machine = funded_machine
    machine.steps = 0  # a full sweep
    machine.every_journal_entry_sums_to_zero_and_all_books_balance()
    machine.every_balance_equals_its_journal_postings()
    machine.every_aggregate_rebuilt_from_its_events_equals_the_live_one()
    machine.refunds_transfers_and_reversals_stay_within_their_whole()
    machine.teardown()


def test_the_machine_notices_a_live_balance_that_drifted_from_its_events(
    funded_machine: LedgerMachine,
) -> None:
    """Tamper with the cached Balance (as a bug mutating state outside an event would): both
    the balance mirror and the rebuild check fail."""
    machine = funded_machine
    balance_id = balance_aggregate_id(PLATFORM, "usd")
    live = machine.app.repository.get(balance_id, deepcopy_from_cache=False)
    assert isinstance(live, Balance)
    live.available_minor += 1
    with pytest.raises(AssertionError, match="journal says"):
        machine.every_balance_equals_its_journal_postings()
    machine.touched.add(balance_id)
    with pytest.raises(AssertionError, match="rebuilt aggregate differs"):
        machine.every_aggregate_rebuilt_from_its_events_equals_the_live_one()
    machine.teardown()


def test_the_machine_notices_journal_totals_that_do_not_add_up(
    funded_machine: LedgerMachine,
) -> None:
    """Pretend the application reported totals with money created out of nothing."""
    machine = funded_machine
    totals, per_book = machine.app.journal_totals()
    machine._totals = (machine.last_position, {**totals, "usd": 1}, per_book)
    with pytest.raises(AssertionError):
        machine.every_journal_entry_sums_to_zero_and_all_books_balance()
    machine.teardown()


def test_aggregate_state_ignores_only_unsaved_events() -> None:
    stamp = datetime(2026, 1, 1, tzinfo=UTC)

    class Thing:
        def __init__(self, n: int) -> None:
            self._pending_events = [object()]
            self._modified_on = stamp
            self.n = n

    assert aggregate_state(Thing(1)) == aggregate_state(Thing(1))
    assert aggregate_state(Thing(1)) != aggregate_state(Thing(2))
