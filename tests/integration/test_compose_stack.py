"""The compose file's stack, run as local processes: each Sluice service's exact command line
and environment are read from ``docker-compose --profile sandbox config`` and started against
the real local PostgreSQL (a fresh schema), RabbitMQ (a fresh queue prefix) and the sandbox
service's own command, with the compose hostnames mapped to 127.0.0.1 and each port moved to a
free one. A destination charge made with the real stripe SDK at the sandbox reaches the API by
signed webhook; the sandbox clock moves; the scheduler, relay and workers pay the seller out;
the API's payouts list shows it paid. Every process's metrics port answers, and every line the
processes log on stderr is JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.integration.stripe_support import BANK_OK, bank
from tests.support import delete_queues, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SLUICE = [sys.executable, "-m", "adapters.cli"]
CONFIG_TIMEOUT_S = 60
ONE_SHOT_TIMEOUT_S = 120  # db init, stripe setup
HEALTHY_WAIT_S = 60.0  # a process's health check passes (imports, connections, locks)
# The scheduler ticks every 10 s (its compose command); a payout takes a release, an
# evaluation, the relay and a submission: a few ticks, with room for a slow shared machine.
PAYOUT_WAIT_S = 180.0
POLL_S = 0.5
STOP_WAIT_S = 15.0  # SIGTERM, then SIGKILL for the process group
DAY_S = 86_400
AMOUNT, FEE = 10_000, 1_000


def compose_config() -> dict[str, Any]:
    import yaml

    exe = shutil.which("docker-compose")
    if exe is None:
        require_service("docker-compose", "not on PATH (apt-get install -y docker-compose)")
    # The defaults in the file, not this machine's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    result = subprocess.run(
        [exe, "--profile", "sandbox", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CONFIG_TIMEOUT_S,
        check=True,
    )
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@dataclass
class Stack:
    services: dict[str, Any]
    database_url: str
    rabbitmq_url: str
    prefix: str
    logs: Path
    ports: dict[str, int] = field(default_factory=dict)
    health_ports: dict[str, int] = field(default_factory=dict)  # each process's --health-port
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # Compose → local: hostnames to 127.0.0.1, each service's container ports to free ones.

    def local(self, service: str, text: str) -> str:
        own = self.ports[service]  # a health check's URL is the service's own port
        health = self.health_ports[service]
        text = re.sub(r"127\.0\.0\.1:9200\b", f"127.0.0.1:{health}", text)
        text = re.sub(r"127\.0\.0\.1:(8000|9100|9191|12111)\b", f"127.0.0.1:{own}", text)
        text = text.replace("http://api:8000", f"http://127.0.0.1:{self.ports['api']}")
        text = text.replace("http://sandbox:12111", f"http://127.0.0.1:{self.ports['sandbox']}")
        return text.replace("0.0.0.0", "127.0.0.1")

    def argv(self, service: str) -> list[str]:
        command = [str(a) for a in self.services[service]["command"]]
        assert command[0] == "sluice", command  # every service runs the one image's CLI
        own = str(self.ports[service])
        args = [own if a in ("8000", "9100", "9191", "12111") else a for a in command[1:]]
        args = [str(self.health_ports[service]) if a == "9200" else a for a in args]
        return SLUICE + [self.local(service, a) for a in args]

    def env(self, service: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        for name, value in (self.services[service].get("environment") or {}).items():
            env[name] = self.local(service, str(value))
        if "SLUICE_DATABASE_URL" in env:
            assert "@postgres:5432/" in self.services[service]["environment"]["SLUICE_DATABASE_URL"]
            env["SLUICE_DATABASE_URL"] = self.database_url
        if "SLUICE_BROKER_URL" in env:
            assert "@rabbitmq:5672" in self.services[service]["environment"]["SLUICE_BROKER_URL"]
            env["SLUICE_BROKER_URL"] = self.rabbitmq_url
        env["SLUICE_QUEUE_PREFIX"] = self.prefix
        # The stack's eight processes share the suite's PostgreSQL (100 connections) with the
        # test process: small pools, which this light load never fills (compose keeps its own).
        env["SLUICE_POSTGRES_POOL_SIZE"] = "2"
        env["SLUICE_POSTGRES_MAX_OVERFLOW"] = "3"
        env["dramatiq_prom_db"] = str(self.logs / "prometheus")  # a directory of this run's own
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self, service: str) -> None:
        stderr = (self.logs / f"{service}.stderr").open("wb")
        self.procs[service] = subprocess.Popen(
            self.argv(service),
            cwd=ROOT,
            env=self.env(service),
            stdout=(self.logs / f"{service}.stdout").open("wb"),
            stderr=stderr,
            start_new_session=True,  # its own process group: the workers fork children
        )

    def run_once(self, service: str) -> None:
        self.start(service)
        code = self.procs[service].wait(timeout=ONE_SHOT_TIMEOUT_S)
        assert code == 0, f"{service} exited {code}: {self.tail(service)}"

    def healthy(self, service: str) -> None:
        """Runs the service's compose health check (mapped) until it passes."""
        test = [self.local(service, str(a)) for a in self.services[service]["healthcheck"]["test"]]
        assert test[0] == "CMD" and test[1] == "python", test
        deadline = time.monotonic() + HEALTHY_WAIT_S
        while time.monotonic() < deadline:
            assert self.procs[service].poll() is None, f"{service} died: {self.tail(service)}"
            probe = subprocess.run(
                [sys.executable, *test[2:]], cwd=ROOT, capture_output=True, timeout=10, check=False
            )
            if probe.returncode == 0:
                return
            time.sleep(POLL_S)
        raise AssertionError(f"{service} not healthy in {HEALTHY_WAIT_S}s: {self.tail(service)}")

    def tail(self, service: str) -> str:
        path = self.logs / f"{service}.stderr"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # forked workers may outlive the master
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_WAIT_S)


def drop_schema(postgres_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def stack(postgres_url: str, rabbitmq_url: str, tmp_path_factory: Any) -> Iterator[Stack]:
    config = compose_config()
    schema = f"stack_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    s = Stack(
        services=config["services"],
        database_url=f"{postgres_url}{separator}schema={schema}",
        rabbitmq_url=rabbitmq_url,
        prefix=f"stack{uuid.uuid4().hex[:8]}_",
        logs=tmp_path_factory.mktemp("stack"),
    )
    (s.logs / "prometheus").mkdir()
    s.ports = {name: free_port() for name in s.services}
    s.health_ports = {name: free_port() for name in s.services}
    try:
        yield s
    finally:
        s.stop()
        drop_schema(postgres_url, schema)
        delete_queues(rabbitmq_url, s.prefix)


def started(stack: Stack) -> Stack:
    """In the compose file's dependency order: migrate, sandbox, api, the endpoints at the
    sandbox, then projector, relay, workers, and the scheduler once the projector is up."""
    stack.run_once("migrate")
    stack.start("sandbox")
    stack.healthy("sandbox")
    stack.start("api")
    stack.healthy("api")
    stack.run_once("sandbox-setup")
    for service in ("projector", "relay", "worker"):
        stack.start(service)
    stack.healthy("projector")
    stack.start("scheduler")
    for service in ("relay", "worker", "scheduler"):
        stack.healthy(service)
    return stack


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def get_json(url: str, key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of a family's series whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        series, _, label_text = head.partition("{")
        if series != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def test_the_compose_stack_pays_a_seller_out_from_a_sandbox_charge(stack: Stack) -> None:
    import stripe

    from adapters.bootstrap import read_model
    from adapters.keys import create_key
    from adapters.settings import Settings

    started(stack)
    sandbox_env = stack.env("api")
    sandbox_url = sandbox_env["SLUICE_STRIPE_API_BASE"]
    client = stripe.StripeClient(
        sandbox_env["SLUICE_STRIPE_API_KEY"], base_addresses={"api": sandbox_url}
    )
    account = client.v1.accounts.create(
        {
            "country": "US",
            "controller": {"fees": {"payer": "account"}, "losses": {"payments": "stripe"}},
            "capabilities": {
                "card_payments": {"requested": True},
                "transfers": {"requested": True},
            },
            # Sluice pays out by its own schedule; Stripe's stays manual.
            "settings": {"payouts": {"schedule": {"interval": "manual"}}},
            "external_account": bank(BANK_OK),
        }
    ).id
    client.v1.payment_intents.create(
        {
            "amount": AMOUNT,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "application_fee_amount": FEE,
            "transfer_data": {"destination": account},
        }
    )
    # Stripe's clock past available_on, before Sluice (on the real clock, weeks ahead of the
    # sandbox's) asks Stripe for a payout of the funds.
    advance(sandbox_url, 3 * DAY_S)
    view = read_model(Settings(database_url=stack.database_url))
    try:
        _, key = create_key(view, "admin")
    finally:
        view.datastore.close()
    api = f"http://127.0.0.1:{stack.ports['api']}"

    def payouts() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = get_json(f"{api}/v1/payouts?account={account}", key)["data"]
        return found

    first = wait_for("a payout requested", payouts, PAYOUT_WAIT_S)
    assert [p["amount"] for p in first] == [AMOUNT - FEE], first
    advance(sandbox_url, 3 * DAY_S)  # in transit, then arrived: payout.paid
    paid = wait_for(
        "the payout paid",
        lambda: [p for p in payouts() if p["status"] == "paid"],
        PAYOUT_WAIT_S,
    )
    assert paid[0]["amount"] == AMOUNT - FEE
    assert_metrics_moved(stack)
    assert_every_line_is_json(stack)


def advance(sandbox_url: str, seconds: int) -> None:
    body = json.dumps({"seconds": seconds}).encode()
    request = urllib.request.Request(
        f"{sandbox_url}/_sandbox/clock/advance",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def assert_metrics_moved(stack: Stack) -> None:
    api = scrape(stack.ports["api"])
    webhook = sample(
        api, "sluice_http_requests_total", route="/webhooks/stripe", method="POST", status="200"
    )
    assert webhook >= 1, "the sandbox's webhooks were counted"
    assert sample(api, "sluice_http_requests_total", route="/v1/payouts", status="200") >= 2
    assert sample(api, "sluice_payouts", status="paid") == 1
    assert sample(api, "sluice_metrics_store_up") == 1
    assert 'status="held"' in api  # always present, 0 until a payout is held
    projector = scrape(stack.ports["projector"])
    assert 'sluice_projection_lag_events{projection="payouts"}' in projector
    relay = scrape(stack.ports["relay"])
    assert sample(relay, "sluice_relay_lag_events", relay="default") >= 0
    assert "sluice_relay_lag_events{" in relay
    scheduler = scrape(stack.ports["scheduler"])
    assert sample(scheduler, "sluice_broker_up") == 1
    assert f'sluice_queue_dead_letters{{queue="{stack.prefix}payouts"}}' in scheduler
    workers = scrape(stack.ports["worker"])
    assert (
        sample(
            workers,
            "dramatiq_messages_total",
            queue_name=f"{stack.prefix}payouts",
            actor_name="submit_payout",
        )
        >= 1
    )
    assert sample(workers, "sluice_commands_total", outcome="ok") >= 1, "commands counted"


def assert_every_line_is_json(stack: Stack) -> None:
    for service in ("api", "projector", "relay", "scheduler", "worker"):
        text = (stack.logs / f"{service}.stderr").read_text(errors="replace").splitlines()
        assert text, f"{service} logged nothing"
        for line in text:
            record = json.loads(line)
            assert {"timestamp", "level", "logger", "event"} <= set(record), (service, line)
