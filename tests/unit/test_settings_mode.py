"""The mode comes from the Stripe key; a setting that contradicts it refuses to start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.settings import Settings, key_livemode


@pytest.mark.parametrize(
    ("key", "live"),
    [
        ("sk_live_abc", True),
        ("rk_live_abc", True),
        ("sk_test_abc", False),
        ("rk_test_abc", False),
        ("", None),
        ("whsec_abc", None),
    ],
)
def test_the_key_says_which_mode(key: str, live: bool | None) -> None:
    assert key_livemode(key) is live


def test_a_live_key_means_live_mode_without_any_setting() -> None:
    assert Settings(stripe_api_key="sk_live_abc").livemode
    assert not Settings(stripe_api_key="sk_test_abc").livemode
    assert not Settings().livemode  # no key: test mode, as Stripe's own tooling defaults
    assert Settings(stripe_livemode=True).livemode  # no key to say otherwise


@pytest.mark.parametrize(("key", "setting"), [("sk_live_abc", False), ("rk_test_abc", True)])
def test_a_setting_the_key_contradicts_refuses_to_start_with_one_line(
    key: str, setting: bool
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(stripe_api_key=key, stripe_livemode=setting)
    (error,) = refused.value.errors()
    assert "contradicts" in error["msg"] and "\n" not in error["msg"]


def test_an_agreeing_setting_is_accepted() -> None:
    assert Settings(stripe_api_key="sk_live_abc", stripe_livemode=True).livemode
