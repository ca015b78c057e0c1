"""The engine's aggregate copies (``ledger.engine._detached_copy``): a command works on copies,
so a rejected one leaves the batch and the cache as they were. The copy skips ``deepcopy`` for
immutable scalars; these properties hold it to what ``deepcopy`` guarantees that matters here:
an equal state that shares no mutable container with the original."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from ledger.balances import Balance
from ledger.engine import _copied, _detached_copy
from ledger.events import When


@dataclass
class Mutable:  # an object the fast path does not know: it must go through deepcopy
    items: list[int] = field(default_factory=list)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.tuples(inner, inner),
        st.sets(st.integers(), max_size=3),
        st.builds(Mutable, st.lists(st.integers(), max_size=3)),
    ),
    max_leaves=20,
)


def mutable_ids(value: Any) -> set[int]:
    """Identities of every mutable object reachable from ``value``."""
    found: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, dict, set, Mutable)):
            found.add(id(item))
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, (list, tuple, set)):
            stack += item
        elif isinstance(item, Mutable):
            stack.append(item.items)
    return found


@given(values)
def test_a_copy_is_equal_and_shares_nothing_mutable(value: Any) -> None:
    copied = _copied(value)
    assert copied == value
    assert type(copied) is type(value)
    assert not mutable_ids(copied) & mutable_ids(value)


@given(st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 30)), min_size=1, max_size=8))
def test_changing_a_detached_balance_leaves_the_original_as_it_was(lots: list[Any]) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    original = Balance.open("acct_a", "usd", When(now, now))
    for amount, day in lots:
        on = datetime.combine(date(2026, 2, 1 + day % 28), datetime.min.time(), tzinfo=UTC)
        original.post(When(now, now), [f"e{amount}"], amount, 0, 0, on, discretionary=False)
    before = {key: _copied(value) for key, value in vars(original).items()}
    copy = _detached_copy(original)
    assert copy is not original and type(copy) is Balance
    assert copy.id == original.id and copy.version == original.version
    assert copy.lots == original.lots and copy.pending_events == original.pending_events
    copy.post(When(now, now), ["later"], 0, 7, 0, None, discretionary=False)
    copy.lots[0][1] += 1
    assert vars(original) == before
    assert copy.version == original.version + 1
    assert isinstance(copy.id, UUID)
