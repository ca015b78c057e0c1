"""`sluice keys list|revoke|rotate` against the real HTTP server: the CLI runs as a process on
the same PostgreSQL schema the server reads; a revoked key gets 401 within the server's key
refresh, a rotated key works through its grace and stops at its end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.bootstrap import init_database, read_model
from adapters.http.app import create_app
from adapters.keys import KeyInfo, list_keys
from adapters.settings import Settings
from tests.integration.http_support import Client, running
from tests.support import drop_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
REFRESH_S = 0.5  # the server's key refresh: a revoked key stops within it
STOPS_WITHIN_S = REFRESH_S + 2.0  # plus a reload's own time on a loaded machine
CLI_TIMEOUT_S = 60
POLL_S = 0.05
GRACE_S = 15  # long enough for a few CLI processes on a loaded machine to run within it
KEY_LINE = re.compile(r"^(sk_sluice_\S+)$", re.MULTILINE)
CREATED = re.compile(r"created (key_[0-9a-f]{16}) with role")


@dataclass
class Server:
    settings: Settings
    address: str

    def status(self, key: str) -> int:
        return Client(self.address, key).get("/v1/status").status

    def error_code(self, key: str) -> str:
        reply = Client(self.address, key).get("/v1/status")
        return str(reply.error["code"])


@pytest.fixture(scope="module")
def server(postgres_url: str) -> Iterator[Server]:
    name = f"keys_{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url=f"{postgres_url}?schema={name}", http_key_refresh_s=REFRESH_S)
    try:
        init_database(settings)
        with running(create_app(settings, run_projector=False)) as address:
            yield Server(settings, address)
    finally:
        drop_postgres_schema(postgres_url, name)


def sluice(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_DATABASE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "adapters.cli",
            *args,
            "--database-url",
            server.settings.database_url,
        ],
        check=False,  # the callers assert on the exit code
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def created(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(key id, key) from `keys create|rotate` output."""
    assert done.returncode == 0, done.stdout + done.stderr
    ids, keys = CREATED.findall(done.stdout), KEY_LINE.findall(done.stdout)
    assert len(ids) == 1 and len(keys) == 1, done.stdout
    return ids[0], keys[0]


def _keys(server: Server) -> list[KeyInfo]:
    view = read_model(server.settings)
    try:
        return list_keys(view)
    finally:
        view.datastore.close()  # type: ignore[attr-defined]


def stops_within(server: Server, key: str, limit_s: float) -> float:
    """Seconds until ``key`` gets 401 (polled, bounded by ``limit_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if server.status(key) == 401:
            return time.monotonic() - started
        time.sleep(POLL_S)
    pytest.fail(f"the key still worked {limit_s} s later")


def test_a_revoked_key_gets_401_within_the_key_refresh(server: Server) -> None:
    key_id, key = created(sluice(server, "keys", "create", "--role", "finance", "--label", "bi"))
    assert server.status(key) == 200

    revoked = sluice(server, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert f"revoked {key_id}" in revoked.stdout
    stops_within(server, key, STOPS_WITHIN_S)
    assert server.error_code(key) == "api_key_invalid"

    again = sluice(server, "keys", "revoke", key_id)  # revoking twice changes nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert server.status(key) == 401


def test_keys_list_shows_id_role_label_and_state_but_never_the_secret(server: Server) -> None:
    key_id, key = created(sluice(server, "keys", "create", "--role", "auditor", "--label", "ext"))
    listed = sluice(server, "keys", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    row = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert "auditor" in row and "ext" in row and "active" in row
    assert key not in listed.stdout and key[len("sk_sluice_") :] not in listed.stdout
    import hashlib

    assert hashlib.sha256(key.encode()).hexdigest() not in listed.stdout


def test_rotate_gives_a_new_key_with_the_same_role_and_the_old_one_stops_after_its_grace(
    server: Server,
) -> None:
    old_id, old_key = created(
        sluice(server, "keys", "create", "--role", "account:acct_rot", "--label", "shop")
    )
    assert server.status(old_key) == 403  # an account key may not read /v1/status: known, though

    rotated = sluice(server, "keys", "rotate", old_id, "--grace", f"{GRACE_S}s")
    new_id, new_key = created(rotated)
    assert new_id != old_id and new_key != old_key
    assert f"{old_id} stops working at" in rotated.stdout
    # During the grace both work; a 403 (not 401) proves the key is known and its role kept.
    assert server.status(new_key) == 403
    assert server.status(old_key) == 403
    listed = sluice(server, "keys", "list").stdout
    old_row = next(line for line in listed.splitlines() if line.count(old_id) == 1)
    assert "grace" in old_row and new_id in old_row
    new_row = next(line for line in listed.splitlines() if line.strip().startswith(f"│ {new_id}"))
    assert "account:acct_rot" in new_row and "shop" in new_row

    stops_at = next(k.revoked for k in _keys(server) if k.id == old_id)
    assert stops_at is not None
    time.sleep(max(0.0, stops_at - time.time() - 1))  # until just before the grace ends
    assert server.status(old_key) == 403  # still in its grace
    stops_within(server, old_key, 1 + STOPS_WITHIN_S)
    assert server.status(new_key) == 403

    twice = sluice(server, "keys", "rotate", old_id)
    assert twice.returncode == 2
    assert twice.stdout.strip().splitlines() == [
        f"error {old_id} is revoked: create a new key instead"
    ]


def test_rotate_without_grace_stops_the_old_key_within_the_refresh(server: Server) -> None:
    old_id, old_key = created(sluice(server, "keys", "create", "--role", "admin"))
    assert server.status(old_key) == 200
    _, new_key = created(sluice(server, "keys", "rotate", old_id))
    stops_within(server, old_key, STOPS_WITHIN_S)
    assert server.status(new_key) == 200


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_an_unknown_key_id_is_one_line_and_exit_2(server: Server, command: str) -> None:
    done = sluice(server, "keys", command, "key_0000000000000000")
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [
        "error no API key 'key_0000000000000000' (see `sluice keys list`)"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_bad_grace_is_one_line_and_exit_2(server: Server) -> None:
    key_id, _ = created(sluice(server, "keys", "create", "--role", "finance"))
    for grace in ("1y", "-5", "31d"):
        done = sluice(server, "keys", "rotate", key_id, "--grace", grace)
        assert done.returncode == 2, (grace, done.stdout)
        assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    listed = sluice(server, "keys", "list").stdout
    assert "replaced" not in next(line for line in listed.splitlines() if key_id in line)
