"""Money: integer minor units of a lowercase currency, Stripe's amount limit, no mixing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import (
    AmountTooLargeError,
    CurrencyMismatchError,
    InvalidAmountError,
    SluiceError,
    UnknownCurrencyError,
)
from ledger.money import (
    AMOUNT_MINOR_MAX,
    EXPONENTS,
    Money,
    check_amount,
    check_currency,
    exponent,
    format_minor,
)

SOME_CURRENCIES = ("usd", "eur", "jpy", "krw", "kwd", "bhd", "isk")


@pytest.mark.parametrize(
    ("currency", "expected"),
    [("jpy", 0), ("krw", 0), ("usd", 2), ("eur", 2), ("isk", 2), ("kwd", 3), ("bhd", 3)],
)
def test_exponent_is_the_number_of_minor_unit_digits(currency: str, expected: int) -> None:
    assert exponent(currency) == expected


@pytest.mark.parametrize("currency", ["USD", "Usd", "xyz", "", "us", "usdd", " usd"])
def test_unknown_or_uppercase_currency_is_rejected_by_exponent(currency: str) -> None:
    with pytest.raises(UnknownCurrencyError) as caught:
        exponent(currency)
    assert caught.value.code == "currency_unknown"
    assert caught.value.param == "currency"


@pytest.mark.parametrize("currency", ["USD", "JPY", "xyz", "", None, 840, b"usd"])
def test_check_currency_rejects_anything_but_a_known_lowercase_code(currency: object) -> None:
    with pytest.raises(UnknownCurrencyError) as caught:
        check_currency(currency)
    assert caught.value.code == "currency_unknown"


def test_check_currency_names_the_param_at_fault() -> None:
    with pytest.raises(UnknownCurrencyError) as caught:
        check_currency("EUR", "default_currency")
    assert caught.value.param == "default_currency"


@pytest.mark.parametrize("currency", SOME_CURRENCIES)
def test_check_currency_returns_a_known_currency_unchanged(currency: str) -> None:
    assert check_currency(currency) == currency


def test_every_known_currency_is_lowercase_and_has_an_exponent_of_0_2_or_3() -> None:
    assert EXPONENTS
    for currency, exp in EXPONENTS.items():
        assert currency == currency.lower()
        assert len(currency) == 3
        assert exp in (0, 2, 3)


@pytest.mark.parametrize("currency", ["USD", "xyz"])
def test_money_refuses_an_unknown_currency(currency: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        Money(100, currency)


@pytest.mark.parametrize("amount", [1.0, 1.5, True, "100", None])
def test_money_refuses_non_integer_amounts(amount: object) -> None:
    with pytest.raises(InvalidAmountError) as caught:
        Money(amount, "usd")  # type: ignore[arg-type]
    assert caught.value.code == "amount_invalid"


@pytest.mark.parametrize(
    "combine",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
    ],
    ids=["add", "sub", "lt", "le"],
)
def test_mixing_currencies_in_money_arithmetic_raises_currency_mismatch(combine) -> None:
    with pytest.raises(CurrencyMismatchError) as caught:
        combine(Money(100, "usd"), Money(100, "eur"))
    assert caught.value.code == "currency_mismatch"


def test_money_arithmetic_within_a_currency() -> None:
    assert Money(150, "usd") + Money(50, "usd") == Money(200, "usd")
    assert Money(150, "usd") - Money(200, "usd") == Money(-50, "usd")
    assert -Money(7, "jpy") == Money(-7, "jpy")
    assert Money(1, "usd") < Money(2, "usd")
    assert Money(2, "usd") <= Money(2, "usd")
    assert not Money(3, "usd") <= Money(2, "usd")


def test_money_is_immutable() -> None:
    money = Money(100, "usd")
    with pytest.raises(AttributeError):
        money.amount_minor = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("amount", "error", "code"),
    [
        (0, InvalidAmountError, "amount_invalid"),
        (-1, InvalidAmountError, "amount_invalid"),
        (-99_999_999, InvalidAmountError, "amount_invalid"),
        (1.0, InvalidAmountError, "amount_invalid"),
        (10.5, InvalidAmountError, "amount_invalid"),
        (True, InvalidAmountError, "amount_invalid"),
        (False, InvalidAmountError, "amount_invalid"),
        ("100", InvalidAmountError, "amount_invalid"),
        (None, InvalidAmountError, "amount_invalid"),
        (AMOUNT_MINOR_MAX + 1, AmountTooLargeError, "amount_too_large"),
        (10**12, AmountTooLargeError, "amount_too_large"),
    ],
)
def test_check_amount_rejects_bad_amounts_with_the_right_code(
    amount: object, error: type[SluiceError], code: str
) -> None:
    with pytest.raises(error) as caught:
        check_amount(amount, "usd")
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.param == "amount"


def test_check_amount_names_the_param_at_fault() -> None:
    with pytest.raises(InvalidAmountError) as caught:
        check_amount(-5, "usd", "stripe_fee")
    assert caught.value.param == "stripe_fee"


@pytest.mark.parametrize("amount", [1, 2, 1_000, 99_999_998, 99_999_999])
def test_check_amount_accepts_positive_integers_up_to_eight_digits(amount: int) -> None:
    assert AMOUNT_MINOR_MAX == 99_999_999
    assert check_amount(amount, "usd") == amount
    assert check_amount(amount, "jpy") == amount


def test_check_amount_allows_zero_only_when_asked() -> None:
    assert check_amount(0, "usd", allow_zero=True) == 0
    with pytest.raises(InvalidAmountError):
        check_amount(0, "usd")
    with pytest.raises(InvalidAmountError):
        check_amount(-1, "usd", allow_zero=True)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (0, "usd", "0.00"),
        (5, "usd", "0.05"),
        (1250, "usd", "12.50"),
        (-1250, "usd", "-12.50"),
        (123456789, "usd", "1,234,567.89"),
        (1000, "jpy", "1,000"),
        (-1000, "jpy", "-1,000"),
        (7, "jpy", "7"),
        (1234, "kwd", "1.234"),
        (5, "kwd", "0.005"),
        (-1, "kwd", "-0.001"),
        (100, "isk", "1.00"),
    ],
)
def test_format_minor_renders_decimal_text(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text
    assert Money(amount, currency).format() == text


def test_format_minor_refuses_an_unknown_currency() -> None:
    with pytest.raises(UnknownCurrencyError):
        format_minor(100, "USD")


amounts = st.integers(min_value=-(10**12), max_value=10**12)
currencies = st.sampled_from(SOME_CURRENCIES)


@given(currency=currencies, a=amounts, b=amounts, c=amounts)
def test_money_addition_is_associative_and_commutative_within_a_currency(
    currency: str, a: int, b: int, c: int
) -> None:
    x, y, z = Money(a, currency), Money(b, currency), Money(c, currency)
    assert (x + y) + z == x + (y + z)
    assert x + y == y + x
    assert (x + y).amount_minor == a + b
    assert (x + y).currency == currency
    assert x - y == x + (-y)


@given(a=amounts, b=amounts, currencies=st.lists(currencies, min_size=2, max_size=2, unique=True))
def test_money_addition_across_currencies_always_raises(
    a: int, b: int, currencies: list[str]
) -> None:
    with pytest.raises(CurrencyMismatchError):
        Money(a, currencies[0]) + Money(b, currencies[1])


@given(amount=st.integers(min_value=-(10**15), max_value=10**15), currency=currencies)
def test_format_minor_round_trips_to_the_same_number_of_minor_units(
    amount: int, currency: str
) -> None:
    text = format_minor(amount, currency).replace(",", "")
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) == exponent(currency)
    value = int(whole) * 10 ** exponent(currency) + (int(frac) if frac else 0)
    assert (-value if text.startswith("-") else value) == amount
