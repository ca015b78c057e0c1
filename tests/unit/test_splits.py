"""Split rules: parts always add up to the payment; shares are off by at most one minor unit."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ledger.errors import SplitRuleError
from ledger.ids import PLATFORM_ACCOUNT_ID
from ledger.splits import BPS_WHOLE, SPLIT_PARTS_MAX, SplitPart, allocate, check_rule


@st.composite
def split_rules(draw: st.DrawFn) -> tuple[int, list[SplitPart]]:
    """A valid (amount, parts) pair: distinct accounts, shares ≤ 100%, fixed parts ≤ amount."""
    amount = draw(st.integers(min_value=1, max_value=99_999_999))
    count = draw(st.integers(min_value=1, max_value=8))
    bps_left = BPS_WHOLE
    fixed_left = amount
    parts: list[SplitPart] = []
    for n in range(count):
        if draw(st.booleans()) and fixed_left > 0:
            fixed = draw(st.integers(min_value=1, max_value=fixed_left))
            fixed_left -= fixed
            parts.append(SplitPart(f"acct_{n}", fixed_minor=fixed))
        elif bps_left > 0:
            bps = draw(st.integers(min_value=1, max_value=bps_left))
            bps_left -= bps
            parts.append(SplitPart(f"acct_{n}", share_bps=bps))
    assume(parts)
    return amount, parts


def _quota(amount: int, parts: list[SplitPart], bps: int) -> Fraction:
    distributable = amount - sum(p.fixed_minor or 0 for p in parts)
    return Fraction(distributable * bps, BPS_WHOLE)


@given(split_rules())
def test_split_parts_always_sum_to_the_whole(rule: tuple[int, list[SplitPart]]) -> None:
    amount, parts = rule
    allocated = allocate(amount, parts)
    platform_remainder = amount - sum(allocated.values())
    assert set(allocated) == {p.account_id for p in parts}
    assert PLATFORM_ACCOUNT_ID not in allocated
    assert all(share >= 0 for share in allocated.values())
    assert platform_remainder >= 0
    assert sum(allocated.values()) + platform_remainder == amount


@given(split_rules())
def test_each_share_part_is_within_one_minor_unit_of_its_exact_quota(
    rule: tuple[int, list[SplitPart]],
) -> None:
    amount, parts = rule
    allocated = allocate(amount, parts)
    for part in parts:
        if part.share_bps is not None:
            assert abs(allocated[part.account_id] - _quota(amount, parts, part.share_bps)) < 1
    platform_bps = BPS_WHOLE - sum(p.share_bps or 0 for p in parts)
    platform_remainder = amount - sum(allocated.values())
    assert abs(platform_remainder - _quota(amount, parts, platform_bps)) < 1


@given(split_rules())
def test_fixed_parts_are_allocated_exactly(rule: tuple[int, list[SplitPart]]) -> None:
    amount, parts = rule
    allocated = allocate(amount, parts)
    for part in parts:
        if part.fixed_minor is not None:
            assert allocated[part.account_id] == part.fixed_minor


@given(split_rules())
def test_allocation_is_deterministic(rule: tuple[int, list[SplitPart]]) -> None:
    amount, parts = rule
    assert allocate(amount, parts) == allocate(amount, list(parts))


def test_largest_remainder_examples() -> None:
    thirds = [SplitPart("acct_a", share_bps=3333), SplitPart("acct_b", share_bps=3333)]
    # 100 * 3333 / 10000 = 33.33 each, platform 33.34 → the platform gets the leftover unit.
    assert allocate(100, thirds) == {"acct_a": 33, "acct_b": 33}
    halves = [SplitPart("acct_a", share_bps=5000), SplitPart("acct_b", share_bps=5000)]
    # 101 / 2 = 50.5 each: the tie goes to the earlier part.
    assert allocate(101, halves) == {"acct_a": 51, "acct_b": 50}
    mixed = [SplitPart("acct_a", fixed_minor=200), SplitPart("acct_b", share_bps=7000)]
    assert allocate(1000, mixed) == {"acct_a": 200, "acct_b": 560}


def test_a_rule_may_give_everything_away() -> None:
    parts = [SplitPart("acct_a", share_bps=BPS_WHOLE)]
    assert allocate(12345, parts) == {"acct_a": 12345}
    assert allocate(500, [SplitPart("acct_a", fixed_minor=500)]) == {"acct_a": 500}


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([], id="empty"),
        pytest.param(
            [SplitPart("acct_a", share_bps=6000), SplitPart("acct_b", share_bps=4001)],
            id="over-100-percent",
        ),
        pytest.param([SplitPart("acct_a", share_bps=10_001)], id="one-part-over-100-percent"),
        pytest.param([SplitPart("acct_a", share_bps=100, fixed_minor=5)], id="both"),
        pytest.param([SplitPart("acct_a")], id="neither"),
        pytest.param(
            [SplitPart("acct_a", share_bps=100), SplitPart("acct_a", fixed_minor=5)],
            id="duplicate-account",
        ),
        pytest.param([SplitPart("acct_a", share_bps=0)], id="zero-share"),
        pytest.param([SplitPart("acct_a", fixed_minor=-5)], id="negative-fixed"),
        pytest.param([SplitPart("acct_a", share_bps=12.5)], id="float-share"),  # type: ignore[arg-type]
        pytest.param([SplitPart("acct_a", fixed_minor=True)], id="bool-fixed"),
        pytest.param([SplitPart("seller_a", share_bps=100)], id="not-an-account-id"),
        pytest.param(
            [SplitPart(f"acct_{n}", share_bps=1) for n in range(SPLIT_PARTS_MAX + 1)],
            id="too-many-parts",
        ),
    ],
)
def test_invalid_split_rules_raise_split_rule_error(parts: list[SplitPart]) -> None:
    with pytest.raises(SplitRuleError) as caught:
        check_rule(parts)
    assert caught.value.code == "split_rule_invalid"
    with pytest.raises(SplitRuleError):
        allocate(1_000, parts)


def test_fixed_parts_over_the_amount_raise_split_rule_error() -> None:
    parts = [SplitPart("acct_a", fixed_minor=600), SplitPart("acct_b", fixed_minor=401)]
    check_rule(parts)  # the rule itself is fine; it does not fit this payment
    with pytest.raises(SplitRuleError) as caught:
        allocate(1_000, parts)
    assert caught.value.code == "split_rule_invalid"
    assert allocate(1_001, parts) == {"acct_a": 600, "acct_b": 401}


@given(
    amount=st.integers(min_value=1, max_value=10_000),
    extra=st.integers(min_value=1, max_value=10_000),
)
def test_fixed_total_above_the_amount_is_always_refused(amount: int, extra: int) -> None:
    with pytest.raises(SplitRuleError):
        allocate(amount, [SplitPart("acct_a", fixed_minor=amount + extra)])
