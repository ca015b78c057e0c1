"""A faulty network in front of the Stripe sandbox, for the fault tests only: an HTTP proxy
that forwards Sluice's Stripe calls to the sandbox, each after an optional delay, and fails
some of them on purpose (the sandbox itself is left alone):

- ``500-before``: answers 500 (Stripe's ``api_error`` envelope) without forwarding;
- ``500-after``: forwards (the sandbox acts), then answers 500: the caller cannot know;
- ``timeout-before`` / ``timeout-after``: holds the connection past the caller's timeout, then
  closes it, with or without having forwarded.

``plan(n, method, path)`` picks the fate of the n-th call; ``injected`` counts what was done.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PASS, E500_BEFORE, E500_AFTER = "pass", "500-before", "500-after"
TIMEOUT_BEFORE, TIMEOUT_AFTER = "timeout-before", "timeout-after"
FORWARD_TIMEOUT_S = 30  # the sandbox answers in milliseconds; 30 s is a broken sandbox
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

Plan = Callable[[int, str, str], str]


def always_pass(_: int, __: str, ___: str) -> str:
    return PASS


class StripeProxy:
    def __init__(
        self, upstream: str, *, plan: Plan = always_pass, delay_s: float = 0.0, hang_s: float = 2.0
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.plan = plan
        self.delay_s = delay_s
        self.hang_s = hang_s  # longer than the caller's timeout
        self.calls = 0
        self.injected: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _handle(self) -> None:
                try:
                    proxy.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the caller died or gave up: nothing to tell

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self._lock:
            self.calls += 1
            n = self.calls
        fate = self.plan(n, req.command, req.path)
        with self._lock:
            self.injected[fate] = self.injected.get(fate, 0) + 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if fate == TIMEOUT_BEFORE:
            self._hang(req)
            return
        if fate == E500_BEFORE:
            self._error(req)
            return
        status, headers, payload = self._forward(req, body)
        if fate == TIMEOUT_AFTER:
            self._hang(req)
            return
        if fate == E500_AFTER:
            self._error(req)
            return
        req.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_HEADERS:
                req.send_header(name, value)
        req.send_header("Content-Length", str(len(payload)))
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(payload)
        req.close_connection = True

    def _forward(
        self, req: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=FORWARD_TIMEOUT_S
        )
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_HEADERS}
            conn.request(req.command, req.path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _error(self, req: BaseHTTPRequestHandler) -> None:
        payload = json.dumps(
            {"error": {"type": "api_error", "message": "injected by the fault proxy"}}
        ).encode()
        req.send_response(500)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(payload)
        req.close_connection = True

    def _hang(self, req: BaseHTTPRequestHandler) -> None:
        time.sleep(self.hang_s)  # the caller gave up by now
        req.close_connection = True

    def start(self) -> StripeProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@contextmanager
def stripe_proxy(upstream: str, **kwargs: Any) -> Iterator[StripeProxy]:
    proxy = StripeProxy(upstream, **kwargs).start()
    try:
        yield proxy
    finally:
        proxy.stop()
