"""How often a payout's submission reads the payout from the store, on PostgreSQL.

The worker loads the payout (``submit_payout_body``), calls Stripe, then records Stripe's id with
``Ledger.submit_payout``. The command's batch probes the payout's head version with its accounts
and balances, so the copy the worker's load cached is used when it is current: one read of the
payout's events per submission, not two. A copy that is not current (another process moved the
payout since) is never used: the command sees the newer state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from adapters.bootstrap import bootstrap
from ledger.application import Ledger
from ledger.errors import InvalidTransitionError
from ledger.ids import object_id, payout_aggregate_id
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import (
    BANK_OK,
    Store,
    Target,
    fold_all,
    fresh_store,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)
from workers.context import Context

pytestmark = pytest.mark.postgres


class Funded:
    def __init__(self, sb: Sandbox, store: Store, gateway: Any, other: Ledger) -> None:
        self.sb, self.store, self.gateway, self.other = sb, store, gateway, other
        target = Target("sandbox", sb.client(), gateway, sb)
        self.account = target.account(BANK_OK)
        target.pay(5000, "pm_card_bypassPending", transfer_data={"destination": self.account})
        store_events(store.view, sandbox_events(sb, [None, self.account]))
        fold_all(store.folder(gateway), store.view)

    def requested_elsewhere(self, n: int) -> str:
        """A payout requested by another process's ledger (as the API or the scheduler does):
        this process has nothing of it cached."""
        payout_id = object_id("po", "reads", self.account, str(n))
        self.other.request_payout(
            idempotency_key=f"reads:{self.account}:{n}",
            account_id=self.account,
            currency="usd",
            amount_minor=100,
            payout_id=payout_id,
        )
        return payout_id


@pytest.fixture(scope="module")
def funded(postgres_url: str) -> Iterator[Funded]:
    with (
        Sandbox(seed=57, webhook_delivery="manual") as sb,
        fresh_store(postgres_url, **sandbox_settings(sb)) as store,
    ):
        other = bootstrap(store.settings)
        try:
            yield Funded(sb, store, sandbox_gateway(sb), other)
        finally:
            other.close()


def count_reads(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> dict[UUID, int]:
    """Counts the reads of each aggregate's events through ``ledger``'s event store (the
    reconstruction of an uncached aggregate and the fast-forward of a cached one both go
    through it)."""
    reads: dict[UUID, int] = {}
    store = ledger.repository.event_store
    original = store.get

    def get(originator_id: UUID, *args: Any, **kwargs: Any) -> Any:
        reads[originator_id] = reads.get(originator_id, 0) + 1
        return original(originator_id, *args, **kwargs)

    monkeypatch.setattr(store, "get", get)
    return reads


def test_a_submission_reads_the_payout_once(
    funded: Funded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.jobs import submit_payout_body

    ledger = funded.store.ledger
    ctx = Context(funded.store.settings, ledger, funded.store.view, funded.gateway)
    for n in range(3):  # the first with the process's caches cold, then warm
        payout_id = funded.requested_elsewhere(n)
        reads = count_reads(ledger, monkeypatch)
        stripe_id = submit_payout_body(ctx, payout_id)
        assert stripe_id is not None and stripe_id.startswith("po_")
        # The worker's load read it; the command used that copy (its probed head matched).
        assert reads.get(payout_aggregate_id(payout_id)) == 1, reads
        monkeypatch.undo()
        submitted = funded.other.get_payout(payout_id)
        assert submitted is not None and submitted.stripe_payout_id == stripe_id
        # A repeat (at-least-once delivery) finds the id recorded and calls Stripe no more.
        assert submit_payout_body(ctx, payout_id) == stripe_id
    stripe_ids = {p.id for p in funded.gateway.list_payouts(account=funded.account)}
    assert len(stripe_ids) == 3


def test_a_cached_copy_another_process_moved_on_is_not_used(funded: Funded) -> None:
    """This process cached the payout pending; another process records its Stripe id (the
    webhook fold, say); recording another id here must see that one and be refused, whether
    the probe finds the newer head or the insert conflicts on the version and runs again."""
    ledger = funded.store.ledger
    payout_id = funded.requested_elsewhere(100)
    cached = ledger.get_payout(payout_id)  # cached, pending, at the version it was requested
    assert cached is not None and cached.stripe_payout_id is None
    funded.other.submit_payout(
        idempotency_key=f"fold:{payout_id}", payout_id=payout_id, stripe_payout_id="po_first"
    )
    with pytest.raises(InvalidTransitionError):
        ledger.submit_payout(
            idempotency_key=f"submit:{payout_id}",
            payout_id=payout_id,
            stripe_payout_id="po_second",
        )
    for reader in (ledger, funded.other):
        after = reader.get_payout(payout_id)
        assert after is not None and after.stripe_payout_id == "po_first"
