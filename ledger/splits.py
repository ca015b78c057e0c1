"""Split rules: divide a payment between sellers (and the platform) so the parts sum exactly.

A rule is a list of parts, each either a fixed amount or a share in basis points of what is
left after the fixed parts. The platform implicitly holds the remaining share. Shares are
rounded by the largest remainder method: every part gets the floor of its exact quota, and the
leftover minor units go to the largest fractional remainders (ties to the earlier part, the
platform last). So the parts always sum to the whole and no part is off by more than one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import SplitRuleError
from ledger.ids import PLATFORM_ACCOUNT_ID

BPS_WHOLE = 10_000
SPLIT_PARTS_MAX = 50


@dataclass(frozen=True, slots=True)
class SplitPart:
    account_id: str
    share_bps: int | None = None
    fixed_minor: int | None = None


def check_rule(parts: list[SplitPart]) -> None:
    if not parts:
        raise SplitRuleError("a split rule needs at least one part", param="split")
    if len(parts) > SPLIT_PARTS_MAX:
        raise SplitRuleError(f"a split rule has at most {SPLIT_PARTS_MAX} parts", param="split")
    seen: set[str] = set()
    for i, part in enumerate(parts):
        param = f"split[{i}]"
        if not isinstance(part.account_id, str) or not part.account_id.startswith("acct_"):
            raise SplitRuleError("each part names an account (acct_…)", param=param)
        if part.account_id in seen:
            raise SplitRuleError(f"{part.account_id} appears twice in the split", param=param)
        seen.add(part.account_id)
        if (part.share_bps is None) == (part.fixed_minor is None):
            raise SplitRuleError("each part has either share_bps or fixed_amount", param=param)
        value = part.share_bps if part.share_bps is not None else part.fixed_minor
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SplitRuleError("split amounts and shares are positive integers", param=param)
    total_bps = sum(p.share_bps or 0 for p in parts)
    if total_bps > BPS_WHOLE:
        raise SplitRuleError("shares add up to more than 100%", param="split")


def allocate(amount_minor: int, parts: list[SplitPart]) -> dict[str, int]:
    """Seller amounts (accounts → minor units); the platform keeps ``amount - sum(result)``."""
    check_rule(parts)
    fixed_total = sum(p.fixed_minor or 0 for p in parts)
    if fixed_total > amount_minor:
        raise SplitRuleError(
            f"fixed parts ({fixed_total}) exceed the payment amount ({amount_minor})",
            param="split",
        )
    distributable = amount_minor - fixed_total
    shares = [(p.account_id, p.share_bps or 0) for p in parts]
    shares.append((PLATFORM_ACCOUNT_ID, BPS_WHOLE - sum(bps for _, bps in shares)))
    floors = [(distributable * bps) // BPS_WHOLE for _, bps in shares]
    remainders = [(distributable * bps) % BPS_WHOLE for _, bps in shares]
    leftover = distributable - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        floors[i] += 1
    result: dict[str, int] = {}
    for part, (account, _), share in zip(parts, shares, floors, strict=False):
        result[account] = (part.fixed_minor or 0) + share
    return result
