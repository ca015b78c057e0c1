"""Payouts in every currency an account holds, the conversions Stripe makes for them, and
Stripe's fee on a payout (an Instant Payout's).

An account keeps one external account per currency (Stripe's ``default_for_currency``); a
balance in a currency with an external account is paid out to it. A balance in the account's
default currency with no external account in that currency is paid out cross-border: Stripe
converts it to the currency of the account's bank and reports the rate on the payout's balance
transaction. Both sides and the rate are Stripe's numbers, recorded as a fact
(``PayoutConverted``) and booked through the world's ``fx`` book, so each currency's journal
still sums to zero; Sluice never re-derives a converted amount.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.accounts import EXTERNAL_ACCOUNT_STATUSES, ConnectedAccount
from ledger.errors import InvalidParameterError, PayoutNotFoundError
from ledger.facts import Fact
from ledger.ids import payout_aggregate_id
from ledger.money import check_amount, check_currency
from ledger.payouts import Payout

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.commands import Message
    from ledger.engine import Scope

EXTERNAL_ACCOUNTS_MAX = 32  # one per currency; Stripe's settlement currencies are fewer
# Stripe reports ``exchange_rate`` as a decimal number; kept as its text, never as a float.
EXCHANGE_RATE_PATTERN = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")


@dataclass(frozen=True, kw_only=True)
class ExternalAccountsReported(Fact):
    """The account's external accounts at Stripe: per currency, the status of its default one
    (``default_for_currency``). Replaces what was reported before, whole."""

    name = "external_accounts_reported"
    account_id: str
    by_currency: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class PayoutConverted(Fact):
    """Stripe converted a payout for a bank in another currency: ``amount_minor`` left the
    balance in the payout's currency, ``bank_amount_minor`` of ``bank_currency`` went on its
    way, at ``exchange_rate`` (amount times rate = bank amount, as Stripe's balance transaction
    states it; a decimal string)."""

    name = "payout_converted"
    payout_id: str
    amount_minor: int
    bank_currency: str
    bank_amount_minor: int
    exchange_rate: str


@dataclass(frozen=True, kw_only=True)
class PayoutFeeCharged(Fact):
    """Stripe's fee on a payout (an Instant Payout's), from its balance transaction's ``fee``:
    taken from the account's available balance with the payout."""

    name = "payout_fee_charged"
    payout_id: str
    stripe_fee_minor: int
    # The platform's fee on the payout (payout monetization: Stripe's application fee with
    # fee_source type payout), credited to the platform's available balance as its revenue.
    application_fee_minor: int = 0
    platform_account_id: str | None = None
    application_fee_id: str | None = None  # Stripe's fee_ object for it


def check_exchange_rate(rate: object) -> str:
    """A positive decimal string such as ``"1.0825"``."""
    if (
        not isinstance(rate, str)
        or not EXCHANGE_RATE_PATTERN.fullmatch(rate)
        or not rate.strip("0.")
    ):
        raise InvalidParameterError(
            "exchange_rate is a positive decimal string such as 1.0825", param="exchange_rate"
        )
    return rate


def external_accounts_of(account: ConnectedAccount) -> dict[str, str] | None:
    """Currency → status of the account's external account in it; None: never reported (an
    account recorded before external accounts were kept)."""
    found: Any = getattr(account, "external_accounts", None)
    return dict(found) if isinstance(found, dict) else None


def payable_in(account: ConnectedAccount, currency: str) -> bool:
    """Whether a balance in ``currency`` can be paid out: to the external account for that
    currency, or, in the default currency, cross-border (Stripe converts it)."""
    banks = external_accounts_of(account)
    return currency == account.default_currency or (banks is not None and currency in banks)


def bank_errored(account: ConnectedAccount, currency: str) -> bool:
    """A payout to this currency's external account bounced: Stripe pauses payouts to it. The
    default currency's bank is the account's own ``external_account_status`` (as before
    external accounts were kept per currency); another currency's, its entry here."""
    if currency == account.default_currency:
        return account.external_account_status == "errored"
    return (external_accounts_of(account) or {}).get(currency) == "errored"


def _external_accounts_reported(s: Scope, f: ExternalAccountsReported) -> dict[str, str]:
    if not isinstance(f.by_currency, dict) or len(f.by_currency) > EXTERNAL_ACCOUNTS_MAX:
        raise InvalidParameterError(
            f"by_currency maps at most {EXTERNAL_ACCOUNTS_MAX} currencies to a status",
            param="by_currency",
        )
    for currency, status in f.by_currency.items():
        check_currency(currency, "by_currency")
        if status not in EXTERNAL_ACCOUNT_STATUSES:
            raise InvalidParameterError(
                f"by_currency[{currency}] must be one of {', '.join(EXTERNAL_ACCOUNT_STATUSES)}",
                param="by_currency",
            )
    s.account(f.account_id).set_external_accounts(s.when, dict(sorted(f.by_currency.items())))
    return {"account": f.account_id}


def _payout_converted(s: Scope, f: PayoutConverted) -> dict[str, str]:
    payout = s.find(payout_aggregate_id(str(f.payout_id)), Payout)
    if payout is None:
        raise PayoutNotFoundError(f"no such payout: {f.payout_id}", param="payout")
    check_currency(f.bank_currency, "bank_currency")
    check_amount(f.amount_minor, payout.currency)
    check_amount(f.bank_amount_minor, f.bank_currency, "bank_amount_minor")
    rate = check_exchange_rate(f.exchange_rate)
    if f.bank_currency == payout.currency:
        raise InvalidParameterError(
            "a conversion is into another currency than the payout's", param="bank_currency"
        )
    if f.amount_minor != payout.amount_minor:
        # The payout's own balance transaction: another amount is another payout (a bug).
        raise InvalidParameterError(
            f"payout {payout.payout_id} took {payout.amount_minor}, not {f.amount_minor}",
            param="amount_minor",
        )
    payout.convert(f.bank_currency, f.bank_amount_minor, rate, s.when)
    return {"payout": payout.payout_id}


def _payout_fee_charged(s: Scope, f: PayoutFeeCharged) -> dict[str, str]:
    payout = s.find(payout_aggregate_id(str(f.payout_id)), Payout)
    if payout is None:
        raise PayoutNotFoundError(f"no such payout: {f.payout_id}", param="payout")
    stripe_fee = check_amount(
        f.stripe_fee_minor, payout.currency, "stripe_fee_minor", allow_zero=True
    )
    platform_fee = check_amount(
        f.application_fee_minor, payout.currency, "application_fee_minor", allow_zero=True
    )
    if stripe_fee + platform_fee == 0:
        raise InvalidParameterError("a payout fee is positive", param="stripe_fee_minor")
    platform = None
    if platform_fee:
        platform = s.account(str(f.platform_account_id), "platform_account_id")
        if platform.kind != "platform":
            raise InvalidParameterError(
                f"{platform.account_id} is not the platform", param="platform_account_id"
            )
    fee_id = f.application_fee_id
    if fee_id is not None and (not isinstance(fee_id, str) or not fee_id.startswith("fee_")):
        raise InvalidParameterError(
            "application_fee_id is Stripe's fee_ id", param="application_fee_id"
        )
    payout.charge_fee(
        stripe_fee, s.when, platform_fee, platform.account_id if platform else None, fee_id
    )
    return {"payout": payout.payout_id}


HANDLERS: dict[type[Message], Callable[[Scope, Any], dict[str, str]]] = {
    ExternalAccountsReported: _external_accounts_reported,
    PayoutConverted: _payout_converted,
    PayoutFeeCharged: _payout_fee_charged,
}
