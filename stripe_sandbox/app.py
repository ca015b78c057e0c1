"""HTTP for the sandbox: Stripe's `/v1` paths and encoding, plus `/_sandbox` control routes.

Requests are decoded as stripe-python sends them (form-encoded bodies, `a[b]=c`, `expand[0]=…`,
`Stripe-Account`, `Idempotency-Key`), answered as Stripe answers (JSON objects, list objects,
the error envelope, `Request-Id`, `Idempotent-Replayed: true`). Handlers run under the state's
lock: `/v1` ones on the event loop, control routes in a worker thread; webhook deliveries
triggered by control routes run outside the lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stripe_sandbox import (
    accounts,
    captures,
    disputes,
    drift,
    faults,
    payments,
    payout_reversals,
    payouts,
    requirements,
    reserves,
    state,
    topup_failures,
    transfers,
    webhooks,
)
from stripe_sandbox.errors import StripeApiError, bad_param, invalid, unauthorized
from stripe_sandbox.forms import Params, parse_pairs
from stripe_sandbox.state import SandboxState
from stripe_sandbox.store import Ctx, Handler, Obj, RequestInfo

log = logging.getLogger("sluice.stripe_sandbox")

BODY_SIZE_MAX = 1_000_000
API_METHODS = ("GET", "POST", "DELETE")
IDEMPOTENCY_KEY_LENGTH_MAX = 255
EXPAND_DEPTH_MAX = 4


@dataclass
class HttpResult:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, indent=2).encode()


@dataclass(frozen=True)
class ApiRoute:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return re.compile(f"^{regex}$")


def _api_routes() -> list[ApiRoute]:
    """Stripe's /v1 paths: each resource module keeps the table of the routes it serves."""
    tables = (
        accounts.ROUTES,
        payments.ROUTES,
        captures.ROUTES,
        payout_reversals.ROUTES,
        state.ROUTES,
        transfers.ROUTES,
        payouts.ROUTES,
        disputes.ROUTES,
        reserves.ROUTES,
        webhooks.ROUTES,
    )
    return [
        ApiRoute(method, _compile(path), handler) for t in tables for method, path, handler in t
    ]


API_ROUTES = _api_routes()


# --- the /v1 API ----------------------------------------------------------------------------------


def handle_api(
    state: SandboxState, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> HttpResult:
    """Serves one `/v1` request (synchronously, under the state's lock)."""
    with state.lock:
        request_id = state.ids.new("req_")
        # Undocumented: a requested Stripe-Version is ignored; the sandbox renders one version.
        response_headers = {"Request-Id": request_id, "Stripe-Version": state.settings.api_version}
        try:
            fault = state.faults.take(method, path)  # before anything: it changes nothing
            if fault is not None:
                raise fault
            result = _serve(state, request_id, method, path, query, headers, body)
        except StripeApiError as exc:
            result = HttpResult(exc.status, exc.body())
        except Exception:
            log.exception("sandbox error on %s %s", method, path)
            error = StripeApiError(500, "api_error", "The sandbox failed on this request.")
            result = HttpResult(500, error.body())
    result.headers = {**response_headers, **result.headers}
    return result


def _serve(
    state: SandboxState,
    request_id: str,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> HttpResult:
    _authenticate(state, headers.get("authorization"))
    scope = state.check_scope(headers.get("stripe-account"))
    route, path_params = _match(method, path)
    pairs = parse_qsl(query, keep_blank_values=True)
    if method == "POST":
        pairs += parse_qsl(body.decode(), keep_blank_values=True)
    # Only POSTs use keys (Stripe ignores them on GET and DELETE).
    # Undocumented: keys are scoped per (account acted as, key): reused under another
    # Stripe-Account, a key starts a new request.
    key = headers.get("idempotency-key") if method == "POST" else None
    fingerprint = json.dumps([method, path, sorted(pairs)])
    if key is not None:
        replay = _idempotent_replay(state, scope, key, fingerprint)
        if replay is not None:
            return replay
    params = Params(parse_pairs(pairs))
    ctx = Ctx(scope, state.platform_id, RequestInfo(request_id, key))
    saved = True
    with state.serving(ctx.request):
        try:
            obj = route.handler(state, ctx, params, **path_params)
            rendered = state.render(obj) if "_seq" in obj else obj
            result = HttpResult(200, _expand(state, rendered, params.expand()))
        except StripeApiError as exc:
            result, saved = HttpResult(exc.status, exc.body()), exc.saved
    if key is not None:
        result.headers["Idempotency-Key"] = key
        if saved:
            state.idempotency[(scope, key)] = {
                "fingerprint": fingerprint,
                "status": result.status,
                "body": result.body,
                "at": state.clock.now(),
            }
    return result


def _authenticate(state: SandboxState, authorization: str | None) -> None:
    if not authorization:
        raise unauthorized(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY')."
        )
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if key != state.secret_key:
        shown = f"{key[:8]}{'*' * 8}{key[-4:]}" if len(key) > 12 else "***"
        raise unauthorized(f"Invalid API Key provided: {shown}")


def _match(method: str, path: str) -> tuple[ApiRoute, dict[str, str]]:
    known_path = False
    for route in API_ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        known_path = True
        if route.method == method:
            return route, found.groupdict()
    detail = "" if not known_path else " (that path exists with another method)"
    raise StripeApiError(
        404,
        "invalid_request_error",
        f"Unrecognized request URL ({method}: {path}){detail}. The sandbox serves the part of "
        "Stripe's API listed in stripe_sandbox/__init__.py.",
        saved=False,
    )


def _idempotent_replay(
    state: SandboxState, scope: str, key: str, fingerprint: str
) -> HttpResult | None:
    if len(key) > IDEMPOTENCY_KEY_LENGTH_MAX:
        raise bad_param(
            f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_LENGTH_MAX} characters.",
            "Idempotency-Key",
        )
    entry = state.idempotency.get((scope, key))
    if entry is None or entry["at"] + state.settings.idempotency_key_ttl_s <= state.clock.now():
        return None
    if entry["fingerprint"] != fingerprint:
        raise StripeApiError(
            400,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
            saved=False,
        )
    headers = {"Idempotency-Key": key, "Idempotent-Replayed": "true"}
    return HttpResult(entry["status"], entry["body"], headers)


def _expand(state: SandboxState, rendered: Obj, paths: list[str]) -> Obj:
    for path in paths:
        parts = path.split(".")
        if len(parts) > EXPAND_DEPTH_MAX:
            raise bad_param(
                f"You cannot expand more than {EXPAND_DEPTH_MAX} levels of a property.", "expand"
            )
        rendered = _expand_node(state, rendered, parts)
    return rendered


def _expand_node(state: SandboxState, node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if isinstance(node, list):
        return [_expand_node(state, item, parts) for item in node]
    if not isinstance(node, dict) or parts[0] not in node:
        return node
    head, rest = parts[0], parts[1:]
    value = node[head]
    if isinstance(value, str) and value in state.objects:
        value = state.render(state.objects[value])
    node[head] = _expand_node(state, value, rest)
    return node


# --- /_sandbox control routes ---------------------------------------------------------------------


def handle_control(
    state: SandboxState, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> HttpResult:
    """Sandbox controls (not Stripe's): clock, webhooks, reset, forced outcomes."""
    try:
        params = Params(_control_params(query, headers, body))
        return HttpResult(200, _control(state, method, path, params))
    except StripeApiError as exc:
        return HttpResult(exc.status, exc.body())


def _control_params(query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if not body:
        return data
    if headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError:
            raise bad_param("The body is not valid JSON.", "body") from None
        if not isinstance(decoded, dict):
            raise bad_param("The body must be a JSON object.", "body")
        data.update({k: _as_param(v) for k, v in decoded.items()})
    else:
        data.update(parse_pairs(parse_qsl(body.decode(), keep_blank_values=True)))
    return data


def _as_param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _control(state: SandboxState, method: str, path: str, p: Params) -> Any:
    route = f"{method} {path}"
    if route == "GET /_sandbox/clock":
        return {"now": state.clock.now(), "iso": state.clock.isoformat()}
    if route == "POST /_sandbox/clock/advance":
        p.reject_unknown(("seconds", "deliver_webhooks"))
        seconds = p.required_int("seconds", minimum=0)
        return state.advance(seconds, deliver=p.bool("deliver_webhooks", default=True))
    if route == "GET /_sandbox/info":
        return info(state)
    if route == "POST /_sandbox/webhooks/flush":
        return state.flush()
    if route in ("GET /_sandbox/webhooks/chaos", "POST /_sandbox/webhooks/chaos"):
        with state.lock:
            if method == "POST":
                return state.set_chaos(p)
            return state.chaos.__dict__
    if route == "GET /_sandbox/webhooks/attempts":
        with state.lock:
            return {"attempts": list(state.attempts)}
    if path == "/_sandbox/faults":
        return faults.control(state, method, p)
    if path.startswith("/_sandbox/drift/"):
        return drift.control(state, method, path, p)
    if path.startswith("/_sandbox/topups/"):
        return topup_failures.control(state, method, path, p)
    if path.startswith("/_sandbox/accounts/") and path.endswith("/reserves"):
        return reserves.control(state, method, path, p)
    if path.startswith("/_sandbox/accounts/"):
        return requirements.control(state, method, path, p)
    if route == "POST /_sandbox/reset":
        state.reset()
        return info(state)
    forced = re.fullmatch(r"POST /_sandbox/(payouts|disputes)/([^/]+)/(fail|resolve)", route)
    if forced is not None:
        return _force(state, forced.group(1), forced.group(2), forced.group(3), p)
    raise StripeApiError(404, "invalid_request_error", f"Unrecognized sandbox route ({route}).")


def _force(state: SandboxState, kind: str, object_id: str, action: str, p: Params) -> Obj:
    with state.lock:
        obj = state.objects.get(object_id)
        if kind == "payouts" and action == "fail" and obj and obj["object"] == "payout":
            p.reject_unknown(("failure_code",))
            state.fail_payout(obj, p.str("failure_code", default="could_not_process") or "")
            state.announce_available()  # the returned funds
            return state.render(obj)
        if kind == "disputes" and action == "resolve" and obj and obj["object"] == "dispute":
            p.reject_unknown(("outcome",))
            state.resolve_dispute(obj, p.choice("outcome", ("won", "lost"), default="won") or "")
            state.announce_available()  # a won dispute's reinstated funds
            return state.render(obj)
    raise invalid(f"No {kind[:-1]} {object_id} to {action}.", code="resource_missing")


def info(state: SandboxState) -> dict[str, Any]:
    with state.lock:
        return {
            "secret_key": state.secret_key,
            "platform_account": state.platform_id,
            "application": state.application_id,
            "api_version": state.settings.api_version,
            "now": state.clock.now(),
            "webhook_delivery": state.settings.webhook_delivery,
        }


# --- ASGI -----------------------------------------------------------------------------------------


def create_sandbox_app(state: SandboxState) -> ASGIApp:
    """The ASGI app serving `state` (Stripe's `/v1` subset and `/_sandbox` controls)."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        path, query = request.url.path, request.url.query
        headers = {k.lower(): v for k, v in request.headers.items()}
        if len(body) > BODY_SIZE_MAX:
            result = HttpResult(413, invalid("Request body too large.").body())
        elif path.startswith("/_sandbox/"):
            result = await run_in_threadpool(
                handle_control, state, request.method, path, query, headers, body
            )
        else:
            result = handle_api(state, request.method, path, query, headers, body)
        return Response(
            result.encoded(),
            status_code=result.status,
            headers=result.headers,
            media_type="application/json",
        )

    routes = [Route("/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])]
    controls = Starlette(routes=routes)
    controls.state.sandbox = state

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Stripe's API straight on ASGI (``_asgi_api``); the control routes (and anything
        unusual) through Starlette."""
        if (
            scope["type"] != "http"
            or scope["method"] not in API_METHODS
            or scope.get("path", "").startswith("/_sandbox/")
            or scope.get("root_path")
        ):
            await controls(scope, receive, send)
            return
        await _asgi_api(state, scope, receive, send)

    return app


async def _asgi_body(receive: Receive) -> tuple[bytes, int] | None:
    """The request's body (kept up to BODY_SIZE_MAX) and its full size; None: the client left.
    Read to its end, as Starlette reads it, so the connection stays usable."""
    chunks = []
    size = 0
    more = True
    while more:  # bounded by the client's body; memory by BODY_SIZE_MAX
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= BODY_SIZE_MAX:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks), size


async def _asgi_api(state: SandboxState, scope: Scope, receive: Receive, send: Send) -> None:
    """One `/v1` request without Starlette, whose layers were a fifth of the sandbox's CPU a
    request (the workers bench), answered as the Starlette endpoint answers it."""
    read = await _asgi_body(receive)
    if read is None:
        return
    body, size = read
    if size > BODY_SIZE_MAX:
        result = HttpResult(413, invalid("Request body too large.").body())
    else:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        # On the event loop, not in a worker thread: a /v1 request only computes, in memory,
        # under the state's lock (every holder only computes under it; webhooks are sent
        # outside it), and the requests are serialised by that lock anyway. The hop to a
        # thread and back was a quarter of the sandbox's CPU a request.
        result = handle_api(state, scope["method"], scope["path"], query, headers, body)
    encoded = result.encoded()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
    response_headers = [
        (b"content-length", str(len(encoded)).encode()),
        (b"content-type", b"application/json"),
        *extra,
    ]
    await send(
        {"type": "http.response.start", "status": result.status, "headers": response_headers}
    )
    await send({"type": "http.response.body", "body": encoded})
