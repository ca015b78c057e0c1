"""Sluice's side of Stripe's configuration: its two webhook endpoints and its key, set up, checked.

Stripe sends a Connect platform two streams (docs.stripe.com/connect/webhooks): *account*
webhooks for activity on the platform's own account (every charge but direct ones, transfers,
application fees, the platform's payouts and top-ups) and *Connect* webhooks (an endpoint created
with ``connect=true``) for activity on connected accounts (``account.updated``, direct charges and
their refunds and disputes, the accounts' payouts and balances); each event of the latter names
its account (``event.account``). Both endpoints post to the same Sluice route
(``POST /webhooks/stripe``), each signing with its own ``whsec_`` secret.

An endpoint's ``connect`` flag is not part of Stripe's webhook endpoint object, and neither its
``api_version`` nor its ``connect`` flag can be updated: so Sluice marks its endpoints with
metadata (``sluice_endpoint``: ``platform`` | ``connect``) to find them again, and recreates one
whose API version is wrong (``recreate``) rather than updating it. Stripe's API cannot roll an
endpoint's secret (the Dashboard can); recreating an endpoint is how to get a new one here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import stripe

from adapters.settings import key_livemode

WEBHOOK_PATH = "/webhooks/stripe"  # adapters/http/webhooks.py: both endpoints post here
PINNED_API_VERSION: str = stripe.api_version  # the version stripe-python 16 renders and reads
ROLE_METADATA_KEY = "sluice_endpoint"
PLATFORM, CONNECT = "platform", "connect"
ROLES = (PLATFORM, CONNECT)
DESCRIPTIONS = {
    PLATFORM: "Sluice: the platform account's events",
    CONNECT: "Sluice: connected accounts' events (Connect)",
}
ENDPOINTS_PAGE_SIZE = 100  # Stripe's largest list page
# Stripe allows 16 webhook endpoints per account; more pages than this means a runaway cursor.
ENDPOINT_PAGES_MAX = 5

# Which of the folded event types come on which endpoint (Stripe's split, see the docstring).
# Events about connected accounts themselves: the platform's own are ignored by the fold.
_ACCOUNT_EVENTS = frozenset(
    {
        "account.updated",
        "account.application.authorized",
        "capability.updated",
        "account.external_account.created",
        "account.external_account.updated",
        "account.external_account.deleted",
    }
)
# Money on either side: the platform's charges and payouts, or a connected account's direct
# charges, their refunds and disputes, its payouts and balance.
_EITHER_SIDE_EVENTS = frozenset(
    {
        "charge.succeeded",
        "charge.captured",
        "charge.expired",
        "payment_intent.succeeded",
        "payment_intent.amount_capturable_updated",
        "payment_intent.canceled",
        "charge.refunded",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refund.updated",
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_reinstated",
        "payout.created",
        "payout.updated",
        "payout.paid",
        "payout.failed",
        "payout.canceled",
        "balance.available",
        # Reserves Stripe holds on a balance and releases (adapters/stripe/reserves.py).
        "reserve.hold.created",
        "reserve.hold.updated",
        "reserve.release.created",
    }
)
# Only the platform has these: its transfers to sellers, the fees it collects, its top-ups.
_PLATFORM_ONLY_EVENTS = frozenset(
    {
        "transfer.created",
        "transfer.updated",
        "transfer.reversed",
        "application_fee.created",
        "application_fee.refunded",
        "application_fee.refund.updated",
        "topup.created",
        "topup.succeeded",
        "topup.failed",
        "topup.reversed",
    }
)
PLATFORM_EVENT_TYPES: tuple[str, ...] = tuple(sorted(_EITHER_SIDE_EVENTS | _PLATFORM_ONLY_EVENTS))
CONNECT_EVENT_TYPES: tuple[str, ...] = tuple(sorted(_EITHER_SIDE_EVENTS | _ACCOUNT_EVENTS))
# Every type the fold (adapters/stripe/folding.py, Folder.handlers) turns into facts; a unit
# test holds the two equal, so a handler added there without a subscription here fails.
FOLDED_EVENT_TYPES: tuple[str, ...] = tuple(sorted({*PLATFORM_EVENT_TYPES, *CONNECT_EVENT_TYPES}))
EVENT_TYPES = {PLATFORM: PLATFORM_EVENT_TYPES, CONNECT: CONNECT_EVENT_TYPES}


def webhook_url(base_url: str) -> str:
    """Sluice's webhook route under its public base URL (``https://sluice.example.com``)."""
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise ValueError(f"not a base URL: {base_url!r} (e.g. https://sluice.example.com)")
    return base + WEBHOOK_PATH


@dataclass(frozen=True)
class EndpointSpec:
    """What one of Sluice's webhook endpoints must be."""

    role: str
    url: str

    @property
    def connect(self) -> bool:
        return self.role == CONNECT

    @property
    def enabled_events(self) -> tuple[str, ...]:
        return EVENT_TYPES[self.role]

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.role]

    @property
    def metadata(self) -> dict[str, str]:
        return {ROLE_METADATA_KEY: self.role}


def specs(base_url: str) -> tuple[EndpointSpec, ...]:
    url = webhook_url(base_url)
    return tuple(EndpointSpec(role, url) for role in ROLES)


def list_endpoints(client: stripe.StripeClient) -> list[Any]:
    """Every webhook endpoint of the account, oldest first (Stripe lists newest first)."""
    found: list[Any] = []
    params: Any = {"limit": ENDPOINTS_PAGE_SIZE}
    for _ in range(ENDPOINT_PAGES_MAX):
        page = client.v1.webhook_endpoints.list(params)
        found.extend(page.data)
        if not page.has_more or not page.data:
            return found[::-1]
        params["starting_after"] = page.data[-1].id
    raise RuntimeError(f"more than {ENDPOINT_PAGES_MAX} pages of webhook endpoints")


def role_of(endpoint: Any) -> str | None:
    role = (endpoint.to_dict().get("metadata") or {}).get(ROLE_METADATA_KEY)
    return role if role in ROLES else None


def by_role(endpoints: list[Any]) -> dict[str, list[Any]]:
    """Sluice's endpoints (marked with metadata), per role, oldest first."""
    found: dict[str, list[Any]] = {role: [] for role in ROLES}
    for endpoint in endpoints:
        role = role_of(endpoint)
        if role is not None:
            found[role].append(endpoint)
    return found


# Set up -----------------------------------------------------------------------------------------


@dataclass
class Action:
    """One step of a setup: ``create``, ``update``, ``recreate`` (delete and create: what
    cannot be updated) or ``keep`` (already right)."""

    role: str
    verb: str
    endpoint_id: str | None
    changes: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass
class SetupResult:
    actions: list[Action]
    secrets: dict[str, str]  # role → whsec_ of an endpoint created in this run
    endpoint_ids: dict[str, str]
    warnings: list[str]
    dry_run: bool


def plan(endpoints: list[Any], base_url: str, *, recreate: bool = False) -> list[Action]:
    """What to do to make Sluice's two endpoints right (nothing is called)."""
    found = by_role(endpoints)
    actions = []
    for spec in specs(base_url):
        existing = found[spec.role][0] if found[spec.role] else None
        actions.append(_plan_one(spec, existing, recreate=recreate))
    return actions


def _plan_one(spec: EndpointSpec, existing: Any, *, recreate: bool) -> Action:
    if existing is None:
        return Action(spec.role, "create", None, reasons=["missing"])
    changes: dict[str, Any] = {}
    reasons = []
    if existing.url != spec.url:
        changes["url"] = spec.url
        reasons.append(f"url {existing.url} → {spec.url}")
    if sorted(existing.enabled_events) != list(spec.enabled_events):
        changes["enabled_events"] = list(spec.enabled_events)
        reasons.append("event types")
    if existing.status != "enabled":
        changes["disabled"] = False
        reasons.append("disabled → enabled")
    if existing.to_dict().get("description") != spec.description:
        changes["description"] = spec.description
    if existing.api_version != PINNED_API_VERSION:
        why = f"api_version {existing.api_version} → {PINNED_API_VERSION} (Stripe cannot update it)"
        if recreate:
            return Action(spec.role, "recreate", existing.id, reasons=[why])
        reasons.append(why + ": kept; --recreate replaces the endpoint")
    if recreate:
        return Action(spec.role, "recreate", existing.id, reasons=["--recreate: a new secret"])
    return Action(spec.role, "update" if changes else "keep", existing.id, changes, reasons)


def setup(
    client: stripe.StripeClient, base_url: str, *, dry_run: bool = False, recreate: bool = False
) -> SetupResult:
    """Creates or updates the platform and the Connect endpoint (idempotent: a second run keeps
    both). A recreated endpoint is created before the old one is deleted, so no event is missed
    (the inbox drops the duplicates on their ``evt_`` id)."""
    endpoints = list_endpoints(client)
    actions = plan(endpoints, base_url, recreate=recreate)
    warnings = _duplicates(endpoints)
    result = SetupResult(actions, {}, {}, warnings, dry_run)
    for action, spec in zip(actions, specs(base_url), strict=True):
        if action.endpoint_id is not None:
            result.endpoint_ids[spec.role] = action.endpoint_id
        if dry_run or action.verb == "keep":
            continue
        if action.verb == "update":
            changes: Any = action.changes
            client.v1.webhook_endpoints.update(str(action.endpoint_id), changes)
            continue
        created = _create(client, spec)
        result.secrets[spec.role] = str(created.secret)
        result.endpoint_ids[spec.role] = str(created.id)
        if action.verb == "recreate":
            client.v1.webhook_endpoints.delete(str(action.endpoint_id))
    return result


def _create(client: stripe.StripeClient, spec: EndpointSpec) -> Any:
    params: Any = {  # Any: the SDK types enabled_events as a Literal of every event type
        "url": spec.url,
        "enabled_events": list(spec.enabled_events),
        "connect": spec.connect,
        "api_version": PINNED_API_VERSION,
        "description": spec.description,
        "metadata": spec.metadata,
    }
    return client.v1.webhook_endpoints.create(params)


def _duplicates(endpoints: list[Any]) -> list[str]:
    found = by_role(endpoints)
    return [
        f"{len(found[role])} Sluice {role} endpoints ({', '.join(e.id for e in found[role])}):"
        f" setup keeps {found[role][0].id}; delete the others"
        for role in ROLES
        if len(found[role]) > 1
    ]


# Check ------------------------------------------------------------------------------------------

OK, PROBLEM, WARNING = "ok", "problem", "warning"


@dataclass(frozen=True)
class Finding:
    status: str  # OK | PROBLEM | WARNING
    message: str


@dataclass(frozen=True)
class Expected:
    """What Sluice is configured with (adapters.settings.Settings, or the command's options)."""

    api_key: str
    livemode: bool | None = None  # the configured mode; None: whatever the key says
    platform_account_id: str | None = None  # Stripe's acct_ of the platform
    webhook_secret: str = ""  # comma-separated whsec_ secrets
    base_url: str | None = None  # Sluice's public base URL; None: checked for the path only


def check(client: stripe.StripeClient, expected: Expected) -> list[Finding]:
    """Every check, one finding each, in plain words. A rejected key stops the checks that
    need it."""
    findings = [key_mode(expected)]
    try:
        account = client.v1.accounts.retrieve_current()
    except stripe.AuthenticationError as error:
        return [*findings, Finding(PROBLEM, f"Stripe refused the API key: {_said(error)}")]
    except stripe.PermissionError as error:
        return [*findings, Finding(PROBLEM, f"the key may not read the account: {_said(error)}")]
    findings.append(Finding(OK, f"the API key is accepted (account {account.id})"))
    findings.append(_platform_account(str(account.id), expected.platform_account_id))
    findings.append(read_access(client))
    try:
        endpoints = list_endpoints(client)
    except stripe.PermissionError as error:
        return [*findings, Finding(PROBLEM, f"the key may not list endpoints: {_said(error)}")]
    found = by_role(endpoints)
    url = webhook_url(expected.base_url) if expected.base_url else None
    for role in ROLES:
        findings.extend(_endpoint(role, found[role], url))
    findings.extend(_unmarked(endpoints, url))
    findings.append(_webhook_secret(expected.webhook_secret))
    return findings


# What Sluice reads at Stripe (folding refetches objects; reconcile and import list balance
# transactions and accounts), by the name Stripe's restricted-key editor gives each resource.
READ_RESOURCES: tuple[tuple[str, str], ...] = (
    ("Balance", "/v1/balance"),
    ("Balance transaction sources", "/v1/balance_transactions"),
    ("Charges", "/v1/charges"),
    ("PaymentIntents", "/v1/payment_intents"),
    ("Refunds", "/v1/refunds"),
    ("Disputes", "/v1/disputes"),
    ("Transfers", "/v1/transfers"),
    ("Application Fees", "/v1/application_fees"),
    ("Payouts", "/v1/payouts"),
    ("Top-ups", "/v1/topups"),
    ("Connected accounts", "/v1/accounts"),
    ("Events", "/v1/events"),
)


def read_access(client: stripe.StripeClient) -> Finding:
    """Reads one object of each resource Sluice reads: a restricted key missing one is named
    now, not at the first webhook it would hold. Writes (transfers, refunds, payouts) cannot be
    probed without moving money: a missing write permission holds the first payout or routing
    that needs it (``sluice payouts --status held`` shows the code)."""
    missing = []
    for name, path in READ_RESOURCES:
        params = {} if path == "/v1/balance" else {"limit": 1}
        try:
            client.raw_request("get", path, **params)
        except (stripe.PermissionError, stripe.AuthenticationError) as error:
            missing.append(f"{name} ({_said(error)})")
    if missing:
        return Finding(PROBLEM, "the key may not read: " + "; ".join(missing) + ": give it Read")
    names = ", ".join(name for name, _ in READ_RESOURCES)
    return Finding(OK, f"the key may read what Sluice reads ({names})")


def _said(error: stripe.StripeError) -> str:
    return str(error.user_message or error) or type(error).__name__


def _mode(live: bool) -> str:
    return "live" if live else "test"


def key_mode(expected: Expected) -> Finding:
    from_key = key_livemode(expected.api_key)
    if not expected.api_key:
        return Finding(PROBLEM, "no API key: set SLUICE_STRIPE_API_KEY (sk_… or rk_…)")
    if from_key is None:
        return Finding(PROBLEM, "the API key is not a Stripe secret or restricted key (sk_/rk_)")
    if expected.livemode is not None and expected.livemode != from_key:
        return Finding(
            PROBLEM,
            f"the API key is a {_mode(from_key)}-mode key, but Sluice is configured for "
            f"{_mode(expected.livemode)} mode (SLUICE_STRIPE_LIVEMODE)",
        )
    return Finding(OK, f"the API key is a {_mode(from_key)}-mode key, as configured")


def _platform_account(actual: str, configured: str | None) -> Finding:
    if configured is None:
        return Finding(
            WARNING,
            f"SLUICE_STRIPE_PLATFORM_ACCOUNT_ID is not set; the key's account is {actual}",
        )
    if configured != actual:
        return Finding(
            PROBLEM,
            f"the key belongs to {actual}, but SLUICE_STRIPE_PLATFORM_ACCOUNT_ID is {configured}",
        )
    return Finding(OK, f"the platform account is {actual}, as configured")


def _endpoint(role: str, endpoints: list[Any], url: str | None) -> Iterator[Finding]:
    name = f"the {role} endpoint"
    if not endpoints:
        yield Finding(PROBLEM, f"{name} is missing: run `sluice stripe setup --url …`")
        return
    if len(endpoints) > 1:
        yield Finding(WARNING, _duplicates(endpoints)[0])
    endpoint = endpoints[0]
    problems = list(_endpoint_problems(role, endpoint, url))
    for problem in problems:
        yield Finding(PROBLEM, f"{name} {endpoint.id} {problem}")
    extra = sorted(set(endpoint.enabled_events) - set(EVENT_TYPES[role]) - {"*"})
    if "*" in endpoint.enabled_events:
        yield Finding(WARNING, f"{name} {endpoint.id} receives every event type (*)")
    elif extra:
        yield Finding(WARNING, f"{name} {endpoint.id} also receives {', '.join(extra)}")
    if not problems:
        yield Finding(OK, f"{name} {endpoint.id} is enabled at {endpoint.url}")


def _endpoint_problems(role: str, endpoint: Any, url: str | None) -> Iterator[str]:
    if endpoint.status != "enabled":
        yield f"is {endpoint.status}"
    if url is not None and endpoint.url != url:
        yield f"points at {endpoint.url}, not {url}"
    elif url is None and not str(endpoint.url).endswith(WEBHOOK_PATH):
        yield f"points at {endpoint.url}, not at Sluice's {WEBHOOK_PATH}"
    enabled = set(endpoint.enabled_events)
    missing = [] if "*" in enabled else sorted(set(EVENT_TYPES[role]) - enabled)
    if missing:
        yield f"misses {len(missing)} event types: {', '.join(missing)}"
    if endpoint.api_version != PINNED_API_VERSION:
        yield (
            f"renders events in API version {endpoint.api_version or 'the account default'}, "
            f"not {PINNED_API_VERSION} (`sluice stripe setup --recreate`)"
        )


def _unmarked(endpoints: list[Any], url: str | None) -> Iterator[Finding]:
    """Endpoints at Sluice's route that setup did not make: events may arrive twice, or with
    a secret Sluice does not know."""
    for endpoint in endpoints:
        at_sluice = endpoint.url == url if url else str(endpoint.url).endswith(WEBHOOK_PATH)
        if role_of(endpoint) is None and at_sluice:
            yield Finding(
                WARNING,
                f"{endpoint.id} posts to {endpoint.url} but was not made by `sluice stripe "
                f"setup` (no {ROLE_METADATA_KEY} metadata)",
            )


def _webhook_secret(secrets: str) -> Finding:
    parts = [part.strip() for part in secrets.split(",") if part.strip()]
    if not parts:
        return Finding(PROBLEM, "no webhook secret: set SLUICE_STRIPE_WEBHOOK_SECRET (whsec_…)")
    wrong = [part[:6] + "…" for part in parts if not part.startswith("whsec_")]
    if wrong:
        return Finding(PROBLEM, f"SLUICE_STRIPE_WEBHOOK_SECRET holds non-whsec_ values: {wrong}")
    if len(parts) < len(ROLES):
        return Finding(
            PROBLEM,
            f"SLUICE_STRIPE_WEBHOOK_SECRET holds {len(parts)} secret; the platform and the "
            "Connect endpoint each sign with their own: configure both, comma-separated",
        )
    return Finding(OK, f"{len(parts)} webhook secrets are configured")


def problems(findings: list[Finding]) -> int:
    return sum(finding.status == PROBLEM for finding in findings)
