"""Account profiles (name, email, metadata): recorded whole as ``ConnectedAccount.ProfileSet``,
checked against Stripe's metadata limits, and read from Stripe's account objects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.stripe.translate import account_profile
from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def make_ledger() -> Ledger:
    app = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: T0)
    assert app.execute(c.OpenAccount(idempotency_key="o", effective_at=T0, account_id="acct_a")).ok
    return app


def profile(key: str, **fields: object) -> c.SetAccountProfile:
    return c.SetAccountProfile(idempotency_key=key, effective_at=T0, account_id="acct_a", **fields)  # type: ignore[arg-type]


def test_a_profile_replaces_the_previous_one_whole() -> None:
    app = make_ledger()
    first = profile("1", display_name="Kiln", email="a@kiln.example", metadata=(("tier", "gold"),))
    assert app.execute(first).ok
    assert app.execute(profile("2", display_name="Kiln & Clay")).ok
    account = app.get_account("acct_a")
    assert account is not None
    assert (account.name, account.email, account.metadata) == ("Kiln & Clay", None, {})


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": tuple((f"k{i}", "v") for i in range(51))},  # Stripe: 50 keys at most
        {"metadata": (("k" * 41, "v"),)},  # keys up to 40 characters
        {"metadata": (("k", "v" * 501),)},  # values up to 500
        {"metadata": (("k", "line\nbreak"),)},
        {"display_name": "x" * 256},
        {"email": "nul\x00@example"},
    ],
)
def test_profiles_outside_stripes_limits_are_refused_and_record_nothing(fields: dict) -> None:
    app = make_ledger()
    with pytest.raises(InvalidParameterError):
        app.execute(profile("bad", **fields))
    account = app.get_account("acct_a")
    assert account is not None and account.metadata == {} and account.name is None


def test_stripes_account_object_gives_name_email_and_metadata() -> None:
    acct = {
        "business_profile": {"name": None},
        "settings": {"dashboard": {"display_name": "Kiln"}},
        "email": "a@kiln.example",
        "metadata": {"tier": "gold"},
    }
    assert account_profile(acct) == {
        "name": "Kiln",
        "email": "a@kiln.example",
        "metadata": {"tier": "gold"},
    }
    person = {"individual": {"first_name": "Ada", "last_name": "Lovelace"}, "metadata": {}}
    assert account_profile(person)["name"] == "Ada Lovelace"
    assert account_profile({}) == {"name": None, "email": None, "metadata": {}}


def test_stripe_text_that_the_ledger_would_refuse_is_tidied_not_parked() -> None:
    acct = {"business_profile": {"name": "Kiln\nClay" + "x" * 300}, "metadata": {"k": "a\tb"}}
    got = account_profile(acct)
    assert got["name"].startswith("Kiln Clay") and len(got["name"]) == 255
    assert got["metadata"] == {"k": "a b"}
    app = make_ledger()
    metadata = tuple(got["metadata"].items())
    assert app.execute(profile("tidy", display_name=got["name"], metadata=metadata)).ok
