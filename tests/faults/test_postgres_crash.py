"""kill -9 of PostgreSQL (the postmaster and every backend at once) under a stream of writes
through ``sluice serve``, and again while a projector catches up on a backlog. After the
restart (crash recovery): every acknowledged write is in the ledger exactly once, every write
retried with its key was applied once, and ``sluice audit verify`` finds the read models equal
to a replay of the events."""

from __future__ import annotations

import threading
import time

import pytest

from adapters.bootstrap import bootstrap, follow_log, read_model
from adapters.settings import Settings
from projections.runner import Projector
from tests.faults.support import (
    Serve,
    Writes,
    audit_verify,
    check_writes_exactly_once,
    open_accounts,
    prepare_store,
    private_postgres,
    request,
    sluice_env,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

WRITE_BEFORE_CRASH_S = 2.0
# PostgreSQL stays dead this long: past the request deadline (REQUEST_TIMEOUT_S), so the writes
# in flight answer 503 and the client retries them with their keys. (A shorter outage is
# absorbed inside Sluice: the pool waits for a connection, eventsourcing retries.)
DOWN_S = 3.0
REQUEST_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 2.0  # the default: readiness says "unreachable" within it
WRITE_AFTER_RESTART_S = 2.0
CATCH_UP_BATCH = 20  # small batches: the catch-up lasts long enough to be killed mid-way
CATCH_UP_S = 120  # the projector must reach the head within this after the restart


def test_kill9_postgres_under_writes_then_during_catch_up(postgres_tools: None) -> None:
    with private_postgres() as pg:
        url = f"{pg.url}?schema=faults"
        key = prepare_store(url)
        env = sluice_env(
            SLUICE_DATABASE_URL=url,
            SLUICE_HTTP_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
            SLUICE_POSTGRES_POOL_WAIT_S='{"api": 1}',
        )
        # No projector in serve: the writes leave a backlog for the second crash.
        serve = Serve(env, projector=False).start()
        try:
            open_accounts(serve.address, key, "acct_a")

            # 1. A stream of writes; PostgreSQL killed and restarted under it.
            writes = Writes([serve.address], key, "acct_a", threads=4).start()
            time.sleep(WRITE_BEFORE_CRASH_S)
            acked_before = len(writes.acked)
            killed = pg.postmaster()
            pg.kill9()
            asked = time.monotonic()
            status, _, body = request(serve.address, "GET", "/readyz")
            waited = time.monotonic() - asked
            assert (status, body["error"]["code"]) == (503, "store_unreachable"), body
            assert waited < READY_TIMEOUT_S + 1.0, waited
            assert request(serve.address, "GET", "/healthz")[0] == 200
            time.sleep(max(0.0, DOWN_S - waited))
            pg.start()
            assert pg.postmaster() != killed
            time.sleep(WRITE_AFTER_RESTART_S)
            writes.stop()
        finally:
            serve.stop()
        assert 0 < acked_before < len(writes.acked)
        # Writes in flight when PostgreSQL died waited for it to come back: either answered
        # 503 and retried by the client, or retried inside Sluice (eventsourcing retries a
        # lost connection) and acknowledged late.
        assert writes.slowest_s >= DOWN_S, (writes.slowest_s, writes.statuses)
        assert writes.retried, f"no write was retried by the client: {writes.statuses}"

        settings = Settings(database_url=url)
        ledger = bootstrap(settings)
        try:
            check_writes_exactly_once(ledger, writes, "acct_a")
            head = int(ledger.recorder.max_notification_id() or 0)

            # 2. A projector catching up on the backlog; PostgreSQL killed mid-way.
            view = read_model(settings)
            projector = Projector(ledger, view, batch_size=CATCH_UP_BATCH)
            stop = threading.Event()
            runner = threading.Thread(
                target=follow_log, args=(projector, stop, 30.0), name="catch-up", daemon=True
            )
            runner.start()
            try:

                def mid_way() -> bool:
                    positions = [projector.position(n) for n in projector.projections]
                    return max(positions) > 0 and min(positions) < head

                wait_until(mid_way, 60, "the catch-up to be under way")
                pg.kill9()
                time.sleep(DOWN_S)
                pg.start()

                def caught_up() -> bool:
                    try:
                        return all(projector.position(n) >= head for n in projector.projections)
                    except Exception:  # the pool is reconnecting: ask again
                        return False

                wait_until(caught_up, CATCH_UP_S, "the projector to reach the head")
            finally:
                stop.set()
                runner.join(30)
                view.datastore.close()
            check_writes_exactly_once(ledger, writes, "acct_a")
        finally:
            ledger.close()
        audit_verify(env)
        print(
            f"\n[faults] kill -9 postgres: {len(writes.acked)} writes acknowledged"
            f" ({len(writes.retried)} retried by the client, slowest {writes.slowest_s:.1f} s),"
            f" statuses {writes.statuses}, head {head}"
        )
