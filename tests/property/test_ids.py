"""Ids are uuid5 over their natural keys, forever: the fast derivation in ``ledger.ids`` gives
exactly what ``uuid.uuid5`` gives, for any key (an id that changed would orphan every event
recorded under the old one)."""

from __future__ import annotations

from uuid import uuid5

from hypothesis import given
from hypothesis import strategies as st

from ledger import ids

keys = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(st.sampled_from(["py", "tr", "txn", "po", "fee"]), st.lists(keys, min_size=1, max_size=3))
def test_ids_are_uuid5_of_their_natural_keys(prefix: str, natural_key: list[str]) -> None:
    name = "|".join((prefix, *natural_key))
    expected = uuid5(ids.NAMESPACE, name)
    assert ids._uuid5_bytes(name) == expected.bytes
    ids.object_id.cache_clear()
    ids.aggregate_id.cache_clear()
    assert ids.object_id(prefix, *natural_key) == f"sl_{prefix}_{expected.hex[:24]}"
    assert ids.aggregate_id(prefix, *natural_key) == expected


def test_known_ids_are_unchanged() -> None:
    """Pinned values, as uuid.uuid5 derived them before: an account, a balance, a payment."""
    assert str(ids.account_aggregate_id("acct_platform")) == "d67e976f-6ba5-5755-baac-d28d9a61c3d2"
    assert str(ids.balance_aggregate_id("acct_a", "usd")) == "9b21d721-bd18-5184-91cb-be971576bb5d"
    assert ids.object_id("py", "k1") == "sl_py_7340bd84d6d55a0685030c5a"
