"""Running the sandbox: in-process for tests (`Sandbox`), or as a server (`run_sandbox`).

with Sandbox(seed=7, webhook_delivery="manual") as sb:
    client = sb.client()                       # stripe.StripeClient pointed at sb.base_url
    client.v1.payment_intents.create({...})
    sb.advance(2 * 86_400)                     # pending → available, payouts move, webhooks
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import asdict, replace
from typing import Any

import uvicorn

from stripe_sandbox.app import create_sandbox_app, info
from stripe_sandbox.clock import SandboxClock
from stripe_sandbox.settings import SandboxSettings
from stripe_sandbox.state import SandboxState

log = logging.getLogger("sluice.stripe_sandbox")

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
DISPATCH_IDLE_S = 0.05
DEFAULT_PORT = 12111  # stripe-mock's port, so tools that default to it find the sandbox


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket with TCP_NODELAY, which accepted connections inherit: without it, replies
    on kept-alive connections (stripe-python reuses them) wait ~40 ms for a delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


class WebhookDispatcher:
    """Sends due webhooks from a background thread ("background" delivery mode)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(SHUTDOWN_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.state.lock:
                    batch = self.state.take_due_deliveries()
                if batch:
                    self.state.send(batch)
                else:
                    self._stop.wait(DISPATCH_IDLE_S)
            except Exception:
                log.exception("webhook dispatcher failed; continuing")
                self._stop.wait(DISPATCH_IDLE_S)


class Sandbox:
    """The sandbox served over real HTTP on 127.0.0.1, in a background thread.

    `Sandbox(settings=None, *, host="127.0.0.1", port=0, **overrides)`: `overrides` are
    `SandboxSettings` fields (seed, processing_fees, webhook_delivery, …); port 0 picks a free one.
    """

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Any,
    ) -> None:
        self.settings = replace(settings or SandboxSettings(), **overrides)
        self.state = SandboxState(self.settings)
        self.app = create_sandbox_app(self.state)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._dispatcher: WebhookDispatcher | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        sock = listening_socket(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Stripe sandbox did not start")
            time.sleep(0.005)
        if self.settings.webhook_delivery == "background":
            self._dispatcher = WebhookDispatcher(self.state)
            self._dispatcher.start()
        return self

    def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(SHUTDOWN_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests and tools need ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def secret_key(self) -> str:
        return self.state.secret_key

    @property
    def platform_account_id(self) -> str:
        return self.state.platform_id

    @property
    def clock(self) -> SandboxClock:
        return self.state.clock

    def client(self, **kwargs: Any) -> Any:
        """A `stripe.StripeClient` for this sandbox (kwargs as StripeClient's, e.g.
        `stripe_account`, `max_network_retries`)."""
        import stripe

        return stripe.StripeClient(self.secret_key, base_addresses={"api": self.base_url}, **kwargs)

    def advance(self, seconds: int, *, deliver: bool = True) -> dict[str, Any]:
        """Moves the sandbox clock; see `SandboxState.advance`."""
        return self.state.advance(seconds, deliver=deliver)

    def flush(self) -> dict[str, Any]:
        """Delivers every webhook due now, synchronously."""
        return self.state.flush()

    def reset(self) -> None:
        self.state.reset()

    def arm_fault(
        self,
        error: str,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        """The next ``count`` /v1 calls (of ``method``, under ``path``) fail with ``error``;
        see ``stripe_sandbox.faults``."""
        with self.state.lock:
            fault = self.state.faults.arm(error, count, method=method, path=path, code=code)
            return asdict(fault)

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def info(self) -> dict[str, Any]:
        return {**info(self.state), "base_url": self.base_url}


def run_sandbox(host: str = "127.0.0.1", port: int = DEFAULT_PORT, **settings: Any) -> None:
    """Serves the sandbox until interrupted (what `sluice sandbox --port N` runs).

    `settings` are `SandboxSettings` fields, as values or command-line strings (see
    `SandboxSettings.from_options`); unknown names are an error.
    """
    state = SandboxState(SandboxSettings.from_options(**settings))
    dispatcher = None
    if state.settings.webhook_delivery == "background":
        dispatcher = WebhookDispatcher(state)
        dispatcher.start()
    details = info(state)
    print(
        f"Stripe sandbox on http://{host}:{port}\n"
        f"  secret key        {details['secret_key']}\n"
        f"  platform account  {details['platform_account']}\n"
        f"  api version       {details['api_version']}\n"
        f"  clock             {state.clock.isoformat()} (POST /_sandbox/clock/advance)",
        flush=True,
    )
    try:
        config = uvicorn.Config(create_sandbox_app(state), log_level="warning", lifespan="off")
        uvicorn.Server(config).run(sockets=[listening_socket(host, port)])
    finally:
        if dispatcher is not None:
            dispatcher.stop()


def main(port: int = DEFAULT_PORT) -> None:
    run_sandbox(port=port)
