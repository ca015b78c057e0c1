"""Sluice's Prometheus metrics, all defined here (``prometheus-client``).

Counted as work happens (this process's default registry):
- ``sluice_http_requests_total{route,method,status}`` and ``sluice_http_request_duration_seconds``
  by route template (``/v1/accounts/{account_id}``, never the raw path, so ids make no series);
- ``sluice_commands_total{command,outcome}`` and ``sluice_command_duration_seconds``: every
  command and fact the ledger's engine ran (outcome ``ok``, ``replayed``, ``flagged``,
  ``refused``, ``error``), through the engine's observer hook (``ledger`` imports no Prometheus).

Read from the store on each scrape (``StoreCollector``, bounded by ``SCRAPE_TIMEOUT_S``: a
deadline closes a connection still busy past it, so a scrape never hangs; a failed read says
``sluice_metrics_store_up 0`` instead of failing the whole scrape):
- ``sluice_projection_lag_events`` / ``sluice_projection_lag_seconds{projection}``;
- ``sluice_relay_lag_events{relay}``: events after the relay's stored position, and
  ``sluice_relay_lag_seconds{relay}``: recorded-time distance from its last published event to
  the log's head (as for the read models);
- ``sluice_inbox_events{status}``: the webhook inbox (``pending`` is the backlog, ``parked``,
  ``failed`` needs a person);
- ``sluice_payouts{status}``: payouts by status from the read model, ``held`` included;
- ``sluice_reconciliation_breaks_open{name}``: open reconciliation breaks by name
  (``missing_in_ledger``, ``amount_mismatch``, …; read model ``rm_recon_breaks``).

Read from RabbitMQ on each scrape (``QueueCollector``, passive declares: nothing is created or
consumed): ``sluice_queue_messages{queue}``, ``sluice_queue_delayed_messages{queue}`` (``.DQ``)
and ``sluice_queue_dead_letters{queue}`` (``.XQ``).

Where: the API serves ``GET /metrics`` (see ``instrument``); the projector, relay and scheduler
serve theirs on ``--metrics-port`` / ``SLUICE_METRICS_PORT`` (``serve``); the dramatiq workers
use dramatiq's own Prometheus middleware (``dramatiq_*`` series), with these counters beside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from adapters import deadlines
from adapters.settings import Settings

log = logging.getLogger("sluice.metrics")

SCRAPE_TIMEOUT_S = 2.0  # one scrape's store reads together; Prometheus' default timeout is 10 s
BROKER_TIMEOUT_S = 2.0  # connect and socket timeouts of the queue-depth probe
UNMATCHED_ROUTE = "unmatched"  # 404s share one series: raw paths would make unbounded ones
LOGGED_PARAMS = ("account_id", "payout_id")  # path parameters an access line carries
PAYOUT_STATUSES = ("pending", "held", "in_transit", "paid", "failed", "canceled")
INBOX_STATUSES = ("pending", "parked", "processed", "ignored", "failed", "unparseable")

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "sluice_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "sluice_http_request_duration_seconds",
    "Time from a request's arrival to its response's last byte, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS_S,
)
COMMANDS = Counter(
    "sluice_commands_total",
    "Ledger commands and facts run, by name and outcome.",
    ["command", "outcome"],
)
COMMAND_LATENCY = Histogram(
    "sluice_command_duration_seconds",
    "Time to run and record a command's batch (group commit: the batch's time), by name and"
    " outcome.",
    ["command", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)


def metrics_port() -> int | None:
    """``SLUICE_METRICS_PORT`` (None: no metrics server)."""
    return Settings().metrics_port


def metrics_host() -> str:
    """Loopback unless told: a container sets ``SLUICE_METRICS_HOST=0.0.0.0``."""
    return Settings().metrics_host


def http_metrics_enabled() -> bool:
    return Settings().metrics_http


# Commands -------------------------------------------------------------------------------------


def _outcome(result: Any) -> str:
    if result is None:
        return "error"  # the batch raised (the store went away): nothing was recorded
    if result.error is not None:
        return "refused"
    if result.replayed:
        return "replayed"
    return "flagged" if "flagged" in result.ids else "ok"


def observe_command(name: str, result: Any, seconds: float) -> None:
    """The engine's observer (``ledger.engine.set_command_observer``): counts the command and
    logs its line (``adapters.logs.log_command``)."""
    from adapters.logs import log_command

    outcome = _outcome(result)
    COMMANDS.labels(name, outcome).inc()
    COMMAND_LATENCY.labels(name, outcome).observe(seconds)
    log_command(name, result, outcome, seconds)


def observe_commands() -> None:
    """Counts every command and fact this process's ledger engines run."""
    from ledger.engine import set_command_observer

    set_command_observer(observe_command)


# HTTP -----------------------------------------------------------------------------------------


def route_template(app: Any, scope: dict[str, Any]) -> str:
    """The matched route's path template; the router records it in the scope, else (a request
    answered before routing: 401, 413, 503) it is matched here the same way."""
    route = scope.get("route")
    if route is None:
        from starlette.routing import Match

        for candidate in app.router.routes:
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE


class HttpMetrics:
    """Counts and times every HTTP request (outermost middleware: it sees every answer,
    the deadline's 503s and the authentication's 401s included) and logs one access line."""

    def __init__(self, app: Any, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]  # if the app raises before answering, the server answers 500

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.monotonic() - started
            route, method = route_template(self.fastapi_app, scope), scope["method"]
            HTTP_REQUESTS.labels(route, method, str(status[0])).inc()
            HTTP_LATENCY.labels(route, method).observe(elapsed)
            ids = {k: v for k, v in scope.get("path_params", {}).items() if k in LOGGED_PARAMS}
            log.info(
                "http request",
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status[0],
                    "duration_ms": round(elapsed * 1000, 1),
                    **ids,
                },
            )


# Store gauges ---------------------------------------------------------------------------------


def _gauge(name: str, doc: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def projection_lag(ledger: Any, view: Any) -> Iterator[Metric]:
    from projections.runner import Projector

    statuses = Projector(ledger, view).status()
    yield _gauge(
        "sluice_projection_lag_events",
        "Events in the log the read model has not applied yet.",
        "projection",
        ((s.name, s.lag_events) for s in statuses),
    )
    yield _gauge(
        "sluice_projection_lag_seconds",
        "Recorded-time distance from the read model's last applied event to the log's head.",
        "projection",
        ((s.name, s.lag_seconds) for s in statuses),
    )


def _recorded_s(ledger: Any, position: int) -> float | None:
    """When the event at ``position`` (or the first one after it) was recorded, unix seconds."""
    page = ledger.recorder.select_notifications(start=max(1, position), limit=1)
    if not page:
        return None
    return float(ledger.mapper.to_domain_event(page[0]).timestamp.timestamp())


def relay_lag(ledger: Any, view: Any) -> Iterator[Metric]:
    head = ledger.recorder.max_notification_id() or 0
    with view.read() as tx:
        tx.execute("SELECT name, position FROM sl_relay_position")
        rows = tx.all()
    yield _gauge(
        "sluice_relay_lag_events",
        "Log positions after the relay's stored position (its events not yet published).",
        "relay",
        ((str(r["name"]), max(0, head - int(r["position"]))) for r in rows),
    )
    head_s = _recorded_s(ledger, head) if head else None
    lag_s: list[tuple[str, float]] = []
    for row in rows:
        position = int(row["position"])
        seen_s = _recorded_s(ledger, position) if position < head else None
        behind = 0.0 if seen_s is None or head_s is None else max(0.0, head_s - seen_s)
        lag_s.append((str(row["name"]), behind))
    yield _gauge(
        "sluice_relay_lag_seconds",
        "Recorded-time distance from the relay's last published event to the log's head.",
        "relay",
        lag_s,
    )


def _counts(view: Any, sql: str, known: Sequence[str]) -> list[tuple[str, float]]:
    with view.read() as tx:
        tx.execute(sql)
        found = {str(r["status"]): int(r["n"]) for r in tx.all()}
    return [(status, found.pop(status, 0)) for status in known] + sorted(found.items())


def inbox_events(_: Any, view: Any) -> Iterator[Metric]:
    sql = "SELECT status, COUNT(*) AS n FROM sl_stripe_events GROUP BY status"
    yield _gauge(
        "sluice_inbox_events",
        "Stored Stripe events by inbox status (pending: the backlog; failed: needs a person).",
        "status",
        _counts(view, sql, INBOX_STATUSES),
    )


def payouts_by_status(_: Any, view: Any) -> Iterator[Metric]:
    sql = "SELECT status, COUNT(*) AS n FROM rm_payouts GROUP BY status"
    yield _gauge(
        "sluice_payouts",
        "Payouts by status (read model); held: waiting on a configuration or permission fix.",
        "status",
        _counts(view, sql, PAYOUT_STATUSES),
    )


def reconciliation_breaks(_: Any, view: Any) -> Iterator[Metric]:
    from ledger.reconciliation import BREAK_NAMES, OPEN

    with view.read() as tx:
        tx.execute(
            "SELECT name AS status, COUNT(*) AS n FROM rm_recon_breaks WHERE status = %s"
            " GROUP BY name",
            (OPEN,),
        )
        found = {str(r["status"]): int(r["n"]) for r in tx.all()}
    names = [(name, found.pop(name, 0)) for name in BREAK_NAMES] + sorted(found.items())
    yield _gauge(
        "sluice_reconciliation_breaks_open",
        "Open reconciliation breaks (Sluice and Stripe disagree), by name.",
        "name",
        names,
    )


StorePart = Callable[[Any, Any], Iterator[Metric]]
ALL_STORE_PARTS: tuple[StorePart, ...] = (
    projection_lag,
    relay_lag,
    inbox_events,
    payouts_by_status,
    reconciliation_breaks,
)


class StoreCollector:
    """Gauges read from the store on each scrape, each part under one shared deadline."""

    def __init__(
        self,
        ledger: Any,
        view: Any,
        parts: Sequence[StorePart] = ALL_STORE_PARTS,
        timeout_s: float = SCRAPE_TIMEOUT_S,
    ) -> None:
        self.ledger, self.view, self.parts, self.timeout_s = ledger, view, parts, timeout_s

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = []
        up = 1.0
        with deadlines.within(self.timeout_s):
            for part in self.parts:
                try:
                    families.extend(part(self.ledger, self.view))
                except Exception as error:  # a table not created yet, the store away or slow
                    log.warning("metrics: %s failed: %s", part.__name__, error)
                    up = 0.0
        yield from families
        store_up = GaugeMetricFamily(
            "sluice_metrics_store_up", "1 when every store read of this scrape answered in time."
        )
        store_up.add_metric([], up)
        yield store_up


# Queues ---------------------------------------------------------------------------------------


class QueueCollector:
    """RabbitMQ queue depths by passive declare (a queue never declared reads as absent)."""

    def __init__(self, broker_url: str, queues: Sequence[str]) -> None:
        self.broker_url, self.queues = broker_url, list(queues)

    def _depths(self) -> dict[str, int]:
        import pika

        params = pika.URLParameters(self.broker_url)
        params.socket_timeout = BROKER_TIMEOUT_S
        params.blocked_connection_timeout = BROKER_TIMEOUT_S
        params.connection_attempts = 1
        conn = pika.BlockingConnection(params)
        depths: dict[str, int] = {}
        try:
            for name in (f"{q}{s}" for q in self.queues for s in ("", ".DQ", ".XQ")):
                channel = conn.channel()
                try:
                    declared = channel.queue_declare(name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:
                    continue  # not declared yet: nothing in it
                depths[name] = int(declared.method.message_count)
                channel.close()
        finally:
            conn.close()
        return depths

    def collect(self) -> Iterator[Metric]:
        up = 1.0
        try:
            depths = self._depths() if self.broker_url.startswith(("amqp", "amqps")) else {}
        except Exception as error:
            log.warning("metrics: queue depths failed: %s", error)
            depths, up = {}, 0.0
        for name, suffix, doc in (
            ("sluice_queue_messages", "", "Messages ready in the queue."),
            ("sluice_queue_delayed_messages", ".DQ", "Messages waiting out a delay or backoff."),
            ("sluice_queue_dead_letters", ".XQ", "Messages that exhausted their retries."),
        ):
            yield _gauge(name, doc, "queue", ((q, depths.get(q + suffix, 0)) for q in self.queues))
        broker_up = GaugeMetricFamily("sluice_broker_up", "1 when the queue depths were read.")
        broker_up.add_metric([], up)
        yield broker_up


# Exposition -----------------------------------------------------------------------------------


class _Union:
    """This process's counters and the given collectors as one (collected on each scrape)."""

    def __init__(self, collectors: Sequence[Any]) -> None:
        self.collectors = [REGISTRY, *collectors]

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def registry(*collectors: Any) -> CollectorRegistry:
    """A registry with the process's counters and ``collectors`` (one per app or process, so
    several apps in one process, as in tests, do not collide)."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Union(collectors))  # type: ignore[arg-type]
    return combined


def exposition(reg: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(reg), CONTENT_TYPE_LATEST


def instrument(app: Any, ledger: Any, view: Any) -> None:
    """The API's metrics: requests counted and timed, commands counted, and ``GET /metrics``
    with the store gauges unless ``SLUICE_METRICS_HTTP=false``. Added last, so outermost: they
    see every answer (the deadline's 503s, the authentication's 401s), and the request id
    (``adapters.logs.RequestContext``, outermost of all) is on the access line too.

    ``/metrics`` needs no key, like ``/healthz``: a scraper then needs no Sluice key with read
    access to money, and the series carry counts, lags and durations only (no ids, amounts or
    secrets). Where the API is public, keep ``/metrics`` behind the proxy or turn it off."""
    from starlette.requests import Request
    from starlette.responses import Response

    from adapters.logs import RequestContext

    observe_commands()
    app.add_middleware(HttpMetrics, fastapi_app=app)
    app.add_middleware(RequestContext)
    if not http_metrics_enabled():
        return
    reg = registry(StoreCollector(ledger, view))

    def metrics_endpoint(_: Request) -> Response:
        body, content_type = exposition(reg)
        return Response(body, media_type=content_type)

    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)


def serve(port: int | None, *collectors: Any) -> Any:
    """Serves this process's metrics and ``collectors`` on ``port`` (None: not at all) in a
    daemon thread; returns the server (``shutdown()`` stops it)."""
    observe_commands()
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=metrics_host(), registry=registry(*collectors))
    log.info("metrics on http://%s:%s/metrics", metrics_host(), port)
    return server
