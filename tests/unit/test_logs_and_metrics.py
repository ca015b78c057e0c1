"""The one log format (adapters/logs.py) and the engine's command observer (adapters/metrics.py)
on their own: a standard-library record comes out as one JSON line, secrets redacted; every
command the engine runs is counted with its outcome."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from adapters import logs, metrics
from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger.engine import set_command_observer
from ledger.errors import SluiceError


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


def test_a_stdlib_record_is_one_json_line_with_its_secrets_redacted(restore_logging: None) -> None:
    stream = io.StringIO()
    assert logs.configure("json", "INFO", process="relay", stream=stream) == "json"
    logging.getLogger("sluice.test").info(
        "paid %s", "po_1", extra={"payout_id": "po_1", "api_key": "sk_live_secret"}
    )
    logging.getLogger("sluice.test").debug("below the level")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "paid po_1" and record["level"] == "info"
    assert record["logger"] == "sluice.test" and record["process"] == "relay"
    assert record["payout_id"] == "po_1" and record["api_key"] == "[redacted]"
    assert "sk_live_secret" not in line


def test_console_is_chosen_for_a_terminal_and_an_unknown_format_is_refused(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    assert logs.configure(stream=Terminal()) == "console"
    assert logs.configure(stream=io.StringIO()) == "json"
    with pytest.raises(ValueError, match="log format"):
        logs.configure("xml", stream=io.StringIO())


def test_every_command_the_engine_runs_is_counted_with_its_outcome() -> None:
    ledger = bootstrap(Settings(database_url="memory://"))
    before = {
        outcome: metrics.COMMANDS.labels("open_account", outcome)._value.get()
        for outcome in ("ok", "replayed", "refused")
    }
    metrics.observe_commands()
    try:
        params = {"account_id": "acct_m1", "kind": "connected", "country": "US",
                  "default_currency": "usd"}  # fmt: skip
        ledger.open_account(idempotency_key="m1", **params)
        ledger.open_account(idempotency_key="m1", **params)  # the same key: a replay
        with pytest.raises(SluiceError):
            ledger.open_account(idempotency_key="m2", **params)  # the id is taken
    finally:
        set_command_observer(None)
        ledger.close()
    for outcome in ("ok", "replayed", "refused"):
        counted = metrics.COMMANDS.labels("open_account", outcome)._value.get()
        assert counted == before[outcome] + 1, outcome


def test_generated_request_ids_are_unique_and_not_repeated_by_a_forked_child() -> None:
    import os
    import re

    ids = [logs.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its next id and exits at once
        os.write(write, logs.new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child[:24] != ids[0][:24] and child not in ids
