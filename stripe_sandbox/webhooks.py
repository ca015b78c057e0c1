"""Events (`/v1/events`), webhook endpoints (`/v1/webhook_endpoints`) and signed delivery.

Each event is queued once per matching endpoint: platform events go to endpoints created without
`connect`, events of connected accounts (`event.account`) to endpoints with `connect=true`. A
delivery POSTs the event's JSON with `Stripe-Signature: t=<unix>,v1=<hex>`, the HMAC-SHA256 of
`f"{t}.{body}"` under the endpoint's `whsec_…` secret (what `stripe.Webhook.construct_event`
checks); `t` is wall-clock time, because receivers compare it with their own clock. A non-2xx
answer (or no answer within `webhook_timeout_s`) is retried after `webhook_retry_delays_s` of
sandbox time, then given up (`pending_webhooks` stays above zero). Chaos settings duplicate,
delay and reorder deliveries, reproducibly for a given seed.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from stripe_sandbox.drift import drop_probability
from stripe_sandbox.errors import bad_param, invalid
from stripe_sandbox.forms import Params, merge_metadata
from stripe_sandbox.settings import DUPLICATE_COUNT_MAX, Chaos
from stripe_sandbox.store import Ctx, Handler, Obj, SandboxCore, require_platform

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
ATTEMPTS_KEPT_MAX = 10_000


@dataclass(order=True)
class Delivery:
    due_at: int
    seq: int
    event_id: str = field(compare=False)
    endpoint_id: str = field(compare=False)
    attempt: int = field(compare=False)


@dataclass
class Outgoing:
    """A delivery taken from the queue, ready to send outside the state lock."""

    delivery: Delivery
    url: str
    secret: str
    payload: str
    generation: int


def signature_header(payload: str, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def post(outgoing: Outgoing, timeout_s: float) -> tuple[int | None, str | None]:
    """Sends one delivery; returns (HTTP status or None, error text or None)."""
    body = outgoing.payload.encode()
    request = urllib.request.Request(
        outgoing.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": signature_header(
                outgoing.payload, outgoing.secret, int(time.time())
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


class WebhooksMixin(SandboxCore):
    def _init_webhooks(self) -> None:
        # Bumped by each reset, so outcomes of deliveries sent before it are ignored.
        self._generation = getattr(self, "_generation", 0) + 1
        self._deliveries: list[Delivery] = []
        self._delivered: set[tuple[str, str]] = set()
        self.chaos = self.settings.chaos  # what the sandbox was started with (reset: again)
        self._rng = random.Random(self.chaos.seed)
        self.attempts: list[dict[str, Any]] = []

    # --- endpoints -------------------------------------------------------------------------------

    def create_webhook_endpoint(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Webhook endpoints")
        p.reject_unknown(
            ("url", "enabled_events", "connect", "api_version", "description", "metadata")
        )
        url = _checked_url(p.required_str("url"))
        events = _checked_events(p.str_list("enabled_events"))
        endpoint = {
            "id": self.ids.new("we_"),
            "object": "webhook_endpoint",
            # Null: events are rendered in the account's default version. It cannot be updated.
            "api_version": _checked_api_version(p.str("api_version")),
            "application": None,
            "created": self.clock.now(),
            "description": p.str("description"),
            "enabled_events": events,
            "livemode": False,
            "metadata": merge_metadata({}, p.metadata()),
            "secret": None,
            "status": "enabled",
            "url": url,
            "_connect": p.bool("connect"),
            "_secret": self.ids.new("whsec_"),
        }
        self.put(endpoint, self.platform_id)
        return endpoint

    def render_new_endpoint(self, endpoint: Obj) -> Obj:
        """Like Stripe, the secret is shown only in the response that creates the endpoint."""
        rendered = self.render(endpoint)
        rendered["secret"] = endpoint["_secret"]
        return rendered

    def retrieve_webhook_endpoint(self, ctx: Ctx, endpoint_id: str) -> Obj:
        endpoint = self.find("webhook_endpoint", endpoint_id, ctx.scope, "webhook endpoint")
        if endpoint.get("_deleted"):
            raise invalid(f"No such webhook endpoint: '{endpoint_id}'", code="resource_missing")
        return endpoint

    def update_webhook_endpoint(self, ctx: Ctx, endpoint_id: str, p: Params) -> Obj:
        endpoint = self.retrieve_webhook_endpoint(ctx, endpoint_id)
        p.reject_unknown(("url", "enabled_events", "description", "disabled", "metadata"))
        if p.has("url"):
            endpoint["url"] = _checked_url(p.required_str("url"))
        if p.has("enabled_events"):
            endpoint["enabled_events"] = _checked_events(p.str_list("enabled_events"))
        if p.has("disabled"):
            endpoint["status"] = "disabled" if p.bool("disabled") else "enabled"
        if p.has("description"):  # an empty string unsets it, as Stripe's `Literal['']`
            endpoint["description"] = p.str("description")
        endpoint["metadata"] = merge_metadata(endpoint["metadata"], p.metadata())
        return endpoint

    def delete_webhook_endpoint(self, ctx: Ctx, endpoint_id: str) -> Obj:
        endpoint = self.retrieve_webhook_endpoint(ctx, endpoint_id)
        endpoint["_deleted"] = True
        self._deliveries = [d for d in self._deliveries if d.endpoint_id != endpoint_id]
        heapq.heapify(self._deliveries)
        return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}

    def list_webhook_endpoints(self, ctx: Ctx, p: Params) -> Obj:
        require_platform(ctx, "Webhook endpoints")
        p.reject_unknown(("limit", "starting_after", "ending_before"))
        items = [
            e for e in self.stored(self.platform_id, "webhook_endpoint") if not e.get("_deleted")
        ]
        return self.page(items, p, "/v1/webhook_endpoints", "webhook endpoint")

    # --- events ----------------------------------------------------------------------------------

    def retrieve_event(self, ctx: Ctx, event_id: str) -> Obj:
        return self.find("event", event_id, ctx.scope, "event")

    def list_events(self, ctx: Ctx, p: Params) -> Obj:
        p.reject_unknown(
            (
                "type",
                "types",
                "created",
                "delivery_success",
                "limit",
                "starting_after",
                "ending_before",
            )
        )
        single, several = p.str("type"), p.str_list("types")
        success = p.bool("delivery_success") if p.has("delivery_success") else None

        def keep(event: Obj) -> bool:
            if single is not None and not _type_matches(event["type"], single):
                return False
            if several is not None and not any(_type_matches(event["type"], t) for t in several):
                return False
            return success is None or (event["pending_webhooks"] == 0) == success

        return self.page(self.stored(ctx.scope, "event"), p, "/v1/events", "event", keep)

    # --- delivery --------------------------------------------------------------------------------

    def _on_event(self, event: Obj) -> None:
        connect = "account" in event
        endpoints = [
            e
            for e in self.stored(self.platform_id, "webhook_endpoint")
            if not e.get("_deleted")
            and e["status"] == "enabled"
            and e["_connect"] == connect
            and any(_type_matches(event["type"], t) for t in e["enabled_events"])
        ]
        event["pending_webhooks"] = len(endpoints)
        if self.chaos.drop and self._rng.random() < self.chaos.drop:
            return  # drift: Stripe lost this event; only reconciliation will find its movement
        due = event["created"] + self.chaos.delay_seconds
        for endpoint in endpoints:
            copies = 1
            if self.chaos.duplicate and self._rng.random() < self.chaos.duplicate:
                copies += self.chaos.duplicate_count
            for _ in range(copies):
                self._queue(Delivery(due, next(self._seq), event["id"], endpoint["id"], 1))

    def _queue(self, delivery: Delivery) -> None:
        heapq.heappush(self._deliveries, delivery)

    def next_delivery_due(self) -> int | None:
        return self._deliveries[0].due_at if self._deliveries else None

    def take_due_deliveries(self) -> list[Outgoing]:
        now = self.clock.now()
        batch = []
        while self._deliveries and self._deliveries[0].due_at <= now:
            delivery = heapq.heappop(self._deliveries)
            endpoint = self.objects[delivery.endpoint_id]
            if endpoint.get("_deleted") or endpoint["status"] != "enabled":
                continue
            payload = json.dumps(self.render(self.objects[delivery.event_id]), indent=2)
            batch.append(
                Outgoing(delivery, endpoint["url"], endpoint["_secret"], payload, self._generation)
            )
        if self.chaos.reorder:
            self._rng.shuffle(batch)
        return batch

    def record_delivery(self, outgoing: Outgoing, status: int | None, error: str | None) -> bool:
        """Books one attempt's outcome; schedules the retry of a failed one. True on success."""
        delivery = outgoing.delivery
        ok = status is not None and 200 <= status < 300
        if outgoing.generation != self._generation:
            return ok
        retry_at = None
        if ok:
            key = (delivery.event_id, delivery.endpoint_id)
            if key not in self._delivered:
                self._delivered.add(key)
                event = self.objects[delivery.event_id]
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
        elif delivery.attempt <= len(self.settings.webhook_retry_delays_s):
            retry_at = self.clock.now() + self.settings.webhook_retry_delays_s[delivery.attempt - 1]
            self._queue(
                Delivery(
                    retry_at,
                    next(self._seq),
                    delivery.event_id,
                    delivery.endpoint_id,
                    delivery.attempt + 1,
                )
            )
        if len(self.attempts) >= ATTEMPTS_KEPT_MAX:
            del self.attempts[: ATTEMPTS_KEPT_MAX // 2]
        self.attempts.append(
            {
                "event": delivery.event_id,
                "type": self.objects[delivery.event_id]["type"],
                "endpoint": delivery.endpoint_id,
                "attempt": delivery.attempt,
                "status": status,
                "error": error,
                "attempted_at": self.clock.now(),
                "retry_at": retry_at,
            }
        )
        return ok

    def set_chaos(self, p: Params) -> dict[str, Any]:
        p.reject_unknown(
            ("duplicate", "duplicate_count", "reorder", "delay_seconds", "seed", "drop")
        )
        duplicate = p.str("duplicate")
        probability = float(duplicate) if duplicate is not None else 0.0
        if not 0.0 <= probability <= 1.0:
            raise bad_param("duplicate is a probability between 0 and 1.", "duplicate")
        self.chaos = Chaos(
            duplicate=probability,
            duplicate_count=p.int(
                "duplicate_count", default=1, minimum=1, maximum=DUPLICATE_COUNT_MAX
            )
            or 1,
            reorder=p.bool("reorder"),
            delay_seconds=p.int("delay_seconds", default=0, minimum=0) or 0,
            seed=p.int("seed", default=0) or 0,
            drop=drop_probability(p),
        )
        self._rng = random.Random(self.chaos.seed)
        return asdict(self.chaos)


def _type_matches(event_type: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def _checked_events(events: list[str] | None) -> list[str]:
    """`enabled_events`: `["*"]`, or event types (`charge.succeeded`; a trailing `.*` takes a
    family). Undocumented: Stripe refuses names outside its own list of types; the sandbox,
    which knows no such list, refuses only what cannot be an event type."""
    if not events:
        raise bad_param(
            "Missing required param: enabled_events.", "enabled_events", "parameter_missing"
        )
    for index, event in enumerate(events):
        if event != "*" and not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*\.([a-z_]+|\*)", event):
            raise bad_param(
                f"Invalid enabled_events[{index}]: {event!r} is not an event type.",
                f"enabled_events[{index}]",
            )
    return events


def _checked_api_version(version: str | None) -> str | None:
    """Stripe's versions are dates, with a release name since 2024 (`2026-10-28.endive`)."""
    if version is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", version):
        raise bad_param(f"Invalid api_version: {version}", "api_version")
    return version


def _checked_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise bad_param(f"Invalid URL: {url}", "url", "url_invalid")
    return url


# The /v1 routes this resource serves: (method, path template, handler(state, ctx, params, **path)).
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/events", WebhooksMixin.list_events),
    ("GET", "/v1/events/{event}", lambda st, c, p, event: st.retrieve_event(c, event)),
    (
        "POST",
        "/v1/webhook_endpoints",
        lambda st, c, p: st.render_new_endpoint(st.create_webhook_endpoint(c, p)),
    ),
    ("GET", "/v1/webhook_endpoints", WebhooksMixin.list_webhook_endpoints),
    (
        "GET",
        "/v1/webhook_endpoints/{endpoint}",
        lambda st, c, p, endpoint: st.retrieve_webhook_endpoint(c, endpoint),
    ),
    (
        "POST",
        "/v1/webhook_endpoints/{endpoint}",
        lambda st, c, p, endpoint: st.update_webhook_endpoint(c, endpoint, p),
    ),
    (
        "DELETE",
        "/v1/webhook_endpoints/{endpoint}",
        lambda st, c, p, endpoint: st.delete_webhook_endpoint(c, endpoint),
    ),
]
