"""Benchmarks through real ``sluice serve`` processes: several processes on one hot platform
account, and webhook ingest beside an empty route of the same server.

- hot account: ``--processes`` serve processes (default 4) and ``--clients`` HTTP clients
  (default 64, keep-alive, spread over the processes) post routed payments, every one of them
  through the one platform account; beside one process with the same clients in the same run.
  Every valid payment must be accepted: any 409 or 5xx is counted and fails the row. Afterwards
  the journal must balance and hold exactly the accepted payments.
- webhook ingest: signed ``POST /webhooks/stripe`` (signature check + store) beside
  ``GET /healthz`` (says ``ok``, touches nothing) on the same processes, same clients.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import ROOT, Schemas, percentile

SERVE_START_TIMEOUT_S = 90
HTTP_TIMEOUT_S = 60
REQUESTS_PER_CLIENT_MAX = 1_000_000  # the loop ends at the deadline; this only bounds it
SELLERS = 20
WEBHOOK_SECRET = "whsec_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """One ``sluice serve --no-projector`` subprocess, its output kept in a temporary log."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="sluice-bench-serve-", suffix=".log")[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "serve", "--port", str(self.port),
             "--no-projector"],
            cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_up(self) -> None:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"sluice serve exited: {self.log.read_text()[-2000:]}")
            try:
                if call(self.port, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"sluice serve on {self.port} did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self.log.unlink(missing_ok=True)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def start_servers(url: str, processes: int) -> list[Serve]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env |= {
        "SLUICE_DATABASE_URL": url,
        "SLUICE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SLUICE_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    servers = [Serve(env) for _ in range(processes)]
    try:
        for server in servers:
            server.wait_up()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def prepare_store(url: str) -> str:
    """Sluice's tables at ``url``; returns an admin key."""
    from adapters.bootstrap import init_database, read_model
    from adapters.keys import create_key
    from adapters.settings import Settings

    settings = Settings(database_url=url)
    init_database(settings)
    view = read_model(settings)
    try:
        return create_key(view, "admin")[1]
    finally:
        view.datastore.close()


def post_json(port: int, path: str, body: Any, key: str, idem: str, conn: Any = None) -> int:
    headers = {
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": idem,
        "Content-Type": "application/json",
    }
    return call(port, "POST", path, json.dumps(body).encode(), headers, conn)[0]


def open_sellers(port: int, key: str, sellers: list[str]) -> None:
    for account in ("acct_platform", *sellers):
        kind = "platform" if account == "acct_platform" else "connected"
        status = post_json(port, "/v1/accounts", {"id": account, "kind": kind}, key, f"o-{account}")
        if status != 200:
            raise SystemExit(f"opening {account}: HTTP {status}")
        if kind == "connected":
            update = {"charges_enabled": True, "payouts_enabled": True}
            status = post_json(port, f"/v1/accounts/{account}", update, key, f"e-{account}")
            if status != 200:
                raise SystemExit(f"enabling {account}: HTTP {status}")


@dataclass
class Tally:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # of the 2xx answers
    failures: list[str] = field(default_factory=list)
    accepted_amounts: list[tuple[int, int]] = field(default_factory=list)  # (amount, app fee)


def drive(
    ports: list[int], clients: int, seconds: float, one: Callable[[int, int, Any], tuple[int, Any]]
) -> dict[str, Any]:
    """``clients`` threads, client i on ports[i % n] over one keep-alive connection, calling
    ``one(client, n, conn)`` until the shared deadline; returns rates and status counts."""
    tallies = [Tally() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    box: dict[str, float] = {}

    def client(i: int) -> None:
        port = ports[i % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
        tally = tallies[i]
        barrier.wait(60)
        for n in range(REQUESTS_PER_CLIENT_MAX):
            began = time.perf_counter()
            if began >= box["deadline"]:
                break
            try:
                status, accepted = one(i, n, conn)
            except (OSError, http.client.HTTPException) as error:
                tally.failures.append(f"{type(error).__name__}: {error}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
                continue
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                tally.latencies.append(time.perf_counter() - began)
                if accepted is not None:
                    tally.accepted_amounts.append(accepted)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    box["start"] = time.perf_counter()
    box["deadline"] = box["start"] + seconds
    barrier.wait(60)
    for thread in threads:
        thread.join(seconds + HTTP_TIMEOUT_S + 30)
    elapsed = time.perf_counter() - box["start"]
    statuses: dict[int, int] = {}
    for t in tallies:
        for status, count in t.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    latencies = [x for t in tallies for x in t.latencies]
    ok = len(latencies)
    return {
        "seconds": elapsed,
        "ok": ok,
        "per_s": ok / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "conflicts_409": statuses.get(409, 0),
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "transport_failures": sum(len(t.failures) for t in tallies),
        "failure_samples": [f for t in tallies for f in t.failures][:5],
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "accepted": [a for t in tallies for a in t.accepted_amounts],
    }


# Hot account ------------------------------------------------------------------------------------


def payment_body(client: int, n: int) -> dict[str, Any]:
    amount = 500 + (client * 7919 + n * 104_729) % 49_500
    return {
        "charge_type": "destination",
        "amount": amount,
        "currency": "usd",
        "stripe_fee": 30 + (amount * 29 + 500) // 1000,
        "application_fee_amount": amount // 10,
        "account": f"acct_hot{(client + n) % SELLERS:03d}",
        "available_on": (int(time.time()) // 86_400 + 2) * 86_400,
    }


def hot_account_run(
    conninfo: str, schemas: Schemas, processes: int, clients: int, seconds: float
) -> dict[str, Any]:
    """One measurement: a fresh store, ``processes`` servers, payments through the platform."""
    url = f"{conninfo}?schema={schemas.name(f'hot_p{processes}')}"
    key = prepare_store(url)
    servers = start_servers(url, processes)
    try:
        ports = [s.port for s in servers]
        open_sellers(ports[0], key, [f"acct_hot{i:03d}" for i in range(SELLERS)])
        run_id = uuid.uuid4().hex[:8]

        def one(client: int, n: int, conn: Any) -> tuple[int, Any]:
            body = payment_body(client, n)
            status = post_json(
                ports[client % len(ports)], "/v1/payments", body, key,
                f"hot-{run_id}-{client}-{n}", conn,
            )  # fmt: skip
            return status, (body["amount"], body["application_fee_amount"])

        result = drive(ports, clients, seconds, one)
    finally:
        for server in servers:
            server.stop()
    result |= {"processes": processes, "clients": clients}
    result["ledger"] = check_ledger(url, result.pop("accepted"))
    return result


def check_ledger(url: str, accepted: list[tuple[int, int]]) -> dict[str, Any]:
    """The journal balances per currency and holds every accepted payment exactly once."""
    from adapters.bootstrap import bootstrap
    from adapters.settings import Settings
    from ledger.ids import WORLD
    from ledger.journal import CUSTOMER_FUNDS

    ledger = bootstrap(Settings(database_url=url))
    try:
        per_currency, per_book = ledger.journal_totals()
        customer = -sum(amount for amount, _ in accepted)
        recorded = per_book.get((WORLD, CUSTOMER_FUNDS, "usd"), 0)
        balanced = all(total == 0 for total in per_currency.values())
        return {
            "balanced": balanced,
            "customer_funds_expected": customer,
            "customer_funds_recorded": recorded,
            "ok": balanced and recorded == customer,
        }
    finally:
        ledger.close()


def measure_hot_account(
    conninfo: str, schemas: Schemas, processes: int, clients: int, seconds: float
) -> dict[str, Any]:
    """One process, then ``processes``, same clients, same run."""
    single = hot_account_run(conninfo, schemas, 1, clients, seconds)
    several = hot_account_run(conninfo, schemas, processes, clients, seconds)
    return {"one_process": single, "several": several}


# Webhook ingest ---------------------------------------------------------------------------------


def signed_event(n: int, run_id: str) -> tuple[bytes, str]:
    event = {
        "id": f"evt_bench{run_id}{n:09d}",
        "object": "event",
        "type": "payout.paid",
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": {"id": f"po_bench{run_id}{n:09d}", "object": "payout",
                            "amount": 1000, "currency": "usd", "status": "paid"}},
    }  # fmt: skip
    payload = json.dumps(event).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(
        WEBHOOK_SECRET.encode(), stamp.encode() + b"." + payload, hashlib.sha256
    ).hexdigest()
    return payload, f"t={stamp},v1={digest}"


def measure_webhooks(
    conninfo: str, schemas: Schemas, processes: int, clients: int, seconds: float
) -> dict[str, Any]:
    url = f"{conninfo}?schema={schemas.name('webhooks')}"
    prepare_store(url)
    servers = start_servers(url, processes)
    run_id = uuid.uuid4().hex[:8]
    try:
        ports = [s.port for s in servers]

        def webhook(client: int, n: int, conn: Any) -> tuple[int, Any]:
            payload, signature = signed_event(client * 10_000_000 + n, run_id)
            headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
            port = ports[client % len(ports)]
            return call(port, "POST", "/webhooks/stripe", payload, headers, conn)[0], None

        def empty(client: int, n: int, conn: Any) -> tuple[int, Any]:
            return call(ports[client % len(ports)], "GET", "/healthz", conn=conn)[0], None

        # Alternating, so that load from other work falls on both alike.
        rounds: dict[str, list[dict[str, Any]]] = {"webhook": [], "empty": []}
        for _ in range(2):
            rounds["empty"].append(drive(ports, clients, seconds / 2, empty))
            rounds["webhook"].append(drive(ports, clients, seconds / 2, webhook))
    finally:
        for server in servers:
            server.stop()
    out: dict[str, Any] = {"processes": processes, "clients": clients}
    for name, runs in rounds.items():
        ok = sum(r["ok"] for r in runs)
        elapsed = sum(r["seconds"] for r in runs)
        out[name] = {
            "per_s": ok / elapsed,
            "ok": ok,
            "statuses": [r["statuses"] for r in runs],
            "p50_ms": max(r["p50_ms"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs),
        }
        for r in runs:
            r.pop("accepted", None)
    return out
