"""SIGKILL of ``sluice serve`` in the middle of a stream of writes, restarted on the same port:
every acknowledged write is in the ledger once, every write retried with its key applied once,
and the read models (its embedded projector, killed too) equal a replay of the events."""

from __future__ import annotations

import time

import pytest

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from tests.faults.support import (
    Serve,
    Writes,
    audit_verify,
    check_writes_exactly_once,
    fresh_schema,
    open_accounts,
    prepare_store,
    sluice_env,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

KILLS = 2  # serve is killed this many times, each mid-stream
WRITE_S = 1.5  # writes between kills


def test_sigkill_serve_mid_stream(postgres_url: str) -> None:
    with fresh_schema(postgres_url) as url:
        key = prepare_store(url)
        env = sluice_env(SLUICE_DATABASE_URL=url)
        serve = Serve(env, projector=True).start()
        try:
            open_accounts(serve.address, key, "acct_a")
            writes = Writes([serve.address], key, "acct_a", threads=4).start()
            for _ in range(KILLS):
                time.sleep(WRITE_S)
                serve.kill9()
                serve.start()  # same port: the writers' retries reach the new process
            time.sleep(WRITE_S)
            writes.stop()
        finally:
            serve.stop()
        assert writes.statuses.get(0, 0) > 0, f"no write saw the process die: {writes.statuses}"
        ledger = bootstrap(Settings(database_url=url))
        try:
            check_writes_exactly_once(ledger, writes, "acct_a")
        finally:
            ledger.close()
        audit_verify(env)
        print(
            f"\n[faults] kill -9 serve x{KILLS}: {len(writes.acked)} writes acknowledged"
            f" ({len(writes.retried)} retried), statuses {writes.statuses}"
        )
