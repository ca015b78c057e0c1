"""The read side folds stored posting rows straight into book deltas (``row_book_deltas``);
everything else folds ``Posting``s (``book_deltas``). The two must agree on any rows, and a
row ``Posting.from_row`` refuses must be refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvariantViolation
from ledger.journal import Posting, book_deltas, row_book_deltas

_names = st.sampled_from(["acct_a", "acct_b", "world", "acct_platform"])
_books = st.sampled_from(["pending", "available", "reserved", "customer_funds", "stripe_fees"])
_currencies = st.sampled_from(["usd", "eur", "jpy"])
_amounts = st.integers(-(2**62), 2**62)
_good_rows = st.lists(st.tuples(_names, _books, _amounts, _currencies).map(list), max_size=12)


class _Str(str):
    """A str subclass: ``from_row`` accepts it (isinstance), the fast path hands it over."""


@given(rows=_good_rows, subclass=st.booleans())
def test_the_row_fold_equals_the_posting_fold(rows: list[list[Any]], subclass: bool) -> None:
    if subclass:
        rows = [[_Str(o), b, a, _Str(c)] for o, b, a, c in rows]
    want = book_deltas(Posting.from_row(r) for r in rows)
    got = row_book_deltas(rows)
    assert got == want
    assert [list(books.items()) for books in got.values()] == [
        list(books.items()) for books in want.values()
    ]  # the same keys in the same order, too


_bad_values = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.binary(max_size=3), st.just(1)
)


@given(rows=_good_rows, bad=_bad_values, field=st.integers(0, 3), at=st.integers(0, 12))
def test_a_row_from_row_refuses_is_refused(
    rows: list[list[Any]], bad: Any, field: int, at: int
) -> None:
    row = ["acct_a", "pending", 5, "usd"]
    row[field] = bad
    try:
        Posting.from_row(row)
    except InvariantViolation:
        refused = True
    else:
        refused = False
    rows.insert(min(at, len(rows)), row)
    if refused:
        with pytest.raises(InvariantViolation):
            row_book_deltas(rows)
        with pytest.raises(InvariantViolation):
            book_deltas(Posting.from_row(r) for r in rows)
    else:
        assert row_book_deltas(rows) == book_deltas(Posting.from_row(r) for r in rows)
