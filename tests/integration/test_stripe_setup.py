"""`sluice stripe setup` and `sluice stripe check` against the sandbox over HTTP, with the real
stripe SDK: the functions of adapters/stripe/setup.py and the command line alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner

from adapters.cli import app
from adapters.stripe import setup
from stripe_sandbox import Sandbox

BASE_URL = "https://sluice.example.com"
URL = BASE_URL + "/webhooks/stripe"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=11, webhook_delivery="manual") as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.reset()  # no endpoints, a fresh platform
    return sandbox


@pytest.fixture
def client(sb: Sandbox) -> Any:
    return sb.client(max_network_retries=0)


def expected(sb: Sandbox, secrets: dict[str, str], **changes: Any) -> setup.Expected:
    values: dict[str, Any] = {
        "api_key": sb.secret_key,
        "livemode": False,
        "platform_account_id": sb.platform_account_id,
        "webhook_secret": ",".join(secrets.values()),
        "base_url": BASE_URL,
    }
    return setup.Expected(**{**values, **changes})


def problems(findings: list[setup.Finding]) -> list[str]:
    return [f.message for f in findings if f.status == setup.PROBLEM]


def warnings(findings: list[setup.Finding]) -> list[str]:
    return [f.message for f in findings if f.status == setup.WARNING]


def endpoint_of(client: Any, role: str) -> Any:
    (endpoint,) = setup.by_role(setup.list_endpoints(client))[role]
    return endpoint


def cli(sb: Sandbox, args: list[str], **env: str) -> Any:
    """Runs `sluice …` with the sandbox as the settings' Stripe (env overrides them)."""
    base = {
        "SLUICE_STRIPE_API_KEY": sb.secret_key,
        "SLUICE_STRIPE_API_BASE": sb.base_url,
        "SLUICE_STRIPE_PLATFORM_ACCOUNT_ID": sb.platform_account_id,
    }
    return CliRunner().invoke(app, args, env={**base, **env})


# Setup ------------------------------------------------------------------------------------------


def test_setup_creates_both_endpoints_and_check_then_finds_nothing_wrong(
    sb: Sandbox, client: Any
) -> None:
    result = setup.setup(client, BASE_URL)

    assert [(a.role, a.verb) for a in result.actions] == [
        ("platform", "create"),
        ("connect", "create"),
    ]
    assert set(result.secrets) == {"platform", "connect"}
    assert all(s.startswith("whsec_") for s in result.secrets.values())
    for role, events in (
        ("platform", setup.PLATFORM_EVENT_TYPES),
        ("connect", setup.CONNECT_EVENT_TYPES),
    ):
        endpoint = endpoint_of(client, role)
        assert (endpoint.url, endpoint.status) == (URL, "enabled")
        assert endpoint.api_version == stripe.api_version == setup.PINNED_API_VERSION
        assert sorted(endpoint.enabled_events) == list(events)
        assert endpoint.metadata.to_dict() == {"sluice_endpoint": role}
        assert endpoint.secret is None  # shown once, at creation
    findings = setup.check(client, expected(sb, result.secrets))
    assert problems(findings) == warnings(findings) == []
    assert len(findings) == 7  # mode, key, account, read access, two endpoints, secret


def test_setup_run_twice_keeps_the_same_two_endpoints(sb: Sandbox, client: Any) -> None:
    first = setup.setup(client, BASE_URL)
    again = setup.setup(client, BASE_URL)

    assert [a.verb for a in again.actions] == ["keep", "keep"]
    assert again.secrets == {}  # nothing created: the existing secrets stand
    assert again.endpoint_ids == first.endpoint_ids
    assert len(setup.list_endpoints(client)) == 2


def test_setup_repairs_a_disabled_endpoint_missing_events_at_the_wrong_url(
    sb: Sandbox, client: Any
) -> None:
    first = setup.setup(client, BASE_URL)
    connect = first.endpoint_ids["connect"]
    client.v1.webhook_endpoints.update(
        connect,
        {
            "disabled": True,
            "enabled_events": ["charge.succeeded"],
            "url": "https://old.example.com/x",
        },
    )

    repaired = setup.setup(client, BASE_URL)

    assert [a.verb for a in repaired.actions] == ["keep", "update"]
    assert repaired.endpoint_ids["connect"] == connect and repaired.secrets == {}
    assert problems(setup.check(client, expected(sb, first.secrets))) == []


def test_a_wrong_api_version_needs_recreate_which_replaces_the_endpoint_and_its_secret(
    sb: Sandbox, client: Any
) -> None:
    first = setup.setup(client, BASE_URL)
    old = first.endpoint_ids["platform"]
    client.v1.webhook_endpoints.delete(old)
    stale = client.v1.webhook_endpoints.create(
        {
            "url": URL,
            "enabled_events": list(setup.PLATFORM_EVENT_TYPES),
            "api_version": "2024-06-20",
            "metadata": {"sluice_endpoint": "platform"},
        }
    )

    kept = setup.setup(client, BASE_URL)
    assert kept.actions[0].verb != "recreate" and kept.secrets == {}
    assert "Stripe cannot update it" in "; ".join(kept.actions[0].reasons)
    recreated = setup.setup(client, BASE_URL, recreate=True)

    assert [a.verb for a in recreated.actions] == ["recreate", "recreate"]
    assert set(recreated.secrets) == {"platform", "connect"}
    assert recreated.secrets["connect"] != first.secrets["connect"]
    ids = {e.id for e in setup.list_endpoints(client)}
    assert len(ids) == 2 and stale.id not in ids and first.endpoint_ids["connect"] not in ids
    assert endpoint_of(client, "platform").api_version == setup.PINNED_API_VERSION


def test_dry_run_changes_nothing(sb: Sandbox, client: Any) -> None:
    result = setup.setup(client, BASE_URL, dry_run=True)
    assert [a.verb for a in result.actions] == ["create", "create"]
    assert setup.list_endpoints(client) == [] and result.secrets == {}


class Receiver:
    """Sluice's public address, as far as Stripe sees it: records each POST's path and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((self.path, self.headers["Stripe-Signature"], body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_endpoints_deliver_the_platforms_and_the_connected_accounts_events_to_sluice(
    sb: Sandbox, client: Any
) -> None:
    receiver = Receiver()
    try:
        secrets = setup.setup(client, receiver.base_url).secrets
        seller = client.v1.accounts.create({"type": "express", "country": "US"}).id
        client.v1.payment_intents.create(  # a direct charge: the seller's, with the platform's fee
            {
                "amount": 1000,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "application_fee_amount": 100,
            },
            options={"stripe_account": seller},
        )
        client.v1.topups.create({"amount": 500, "currency": "usd"})
        sb.flush()
    finally:
        receiver.close()
    by_secret: dict[str, list[Any]] = {"platform": [], "connect": []}
    for path, signature, body in receiver.requests:
        assert path == "/webhooks/stripe"
        for role, secret in secrets.items():
            try:
                by_secret[role].append(stripe.Webhook.construct_event(body, signature, secret))
            except stripe.SignatureVerificationError:
                continue
    platform, connect = by_secret["platform"], by_secret["connect"]
    assert len(platform) + len(connect) == len(receiver.requests)  # each signed by one endpoint
    assert {"application_fee.created", "topup.created"} <= {e.type for e in platform}
    assert {e.type for e in platform} <= set(setup.PLATFORM_EVENT_TYPES)
    assert all(getattr(e, "account", None) is None for e in platform)
    assert "charge.succeeded" in {e.type for e in connect}
    assert {e.account for e in connect} == {seller}
    assert {e.type for e in connect} <= set(setup.CONNECT_EVENT_TYPES)


# Check: each misconfiguration is named --------------------------------------------------------


def _delete(role: str) -> Callable[[Any, dict[str, str]], None]:
    def act(client: Any, ids: dict[str, str]) -> None:
        client.v1.webhook_endpoints.delete(ids[role])

    return act


def _update(role: str, **params: Any) -> Callable[[Any, dict[str, str]], None]:
    def act(client: Any, ids: dict[str, str]) -> None:
        client.v1.webhook_endpoints.update(ids[role], params)

    return act


def _old_api_version(client: Any, ids: dict[str, str]) -> None:
    client.v1.webhook_endpoints.delete(ids["connect"])
    client.v1.webhook_endpoints.create(
        {
            "url": URL,
            "enabled_events": list(setup.CONNECT_EVENT_TYPES),
            "connect": True,
            "api_version": "2024-06-20",
            "metadata": {"sluice_endpoint": "connect"},
        }
    )


# (name, change at Stripe, change of Sluice's configuration, CLI args and env, what check says)
MISCONFIGURATIONS: list[tuple[str, Any, dict[str, Any], dict[str, str], str]] = [
    ("missing platform endpoint", _delete("platform"), {}, {}, "the platform endpoint is missing"),
    ("missing connect endpoint", _delete("connect"), {}, {}, "the connect endpoint is missing"),
    (
        "missing event types",
        _update("connect", enabled_events=["charge.succeeded", "account.updated"]),
        {},
        {},
        # Every Connect type but the two kept (a count that grows with the fold's types).
        f"misses {len(setup.CONNECT_EVENT_TYPES) - 2} event types: "
        "account.application.authorized, account.external_account.created",
    ),
    ("disabled endpoint", _update("platform", disabled=True), {}, {}, "is disabled"),
    (
        "wrong API version",
        _old_api_version,
        {},
        {},
        "renders events in API version 2024-06-20, not " + stripe.api_version,
    ),
    (
        "wrong URL",
        _update("platform", url="https://old.example.com/webhooks/stripe"),
        {},
        {},
        "points at https://old.example.com/webhooks/stripe, not " + URL,
    ),
    (
        "key of the wrong mode",
        None,
        {"livemode": True},
        {"SLUICE_STRIPE_LIVEMODE": "true", "SLUICE_STRIPE_API_KEY": ""},
        "the API key is a test-mode key, but Sluice is configured for live mode",
    ),
    (
        "wrong platform account",
        None,
        {"platform_account_id": "acct_someoneelse"},
        {"SLUICE_STRIPE_PLATFORM_ACCOUNT_ID": "acct_someoneelse"},
        ", but SLUICE_STRIPE_PLATFORM_ACCOUNT_ID is acct_someoneelse",
    ),
    (
        "rejected key",
        None,
        {"api_key": "sk_test_notthesandboxkey"},
        {"SLUICE_STRIPE_API_KEY": "sk_test_notthesandboxkey"},
        "Stripe refused the API key",
    ),
    (
        "one webhook secret only",
        None,
        {"webhook_secret": "whsec_one"},
        {"SLUICE_STRIPE_WEBHOOK_SECRET": "whsec_one"},
        "holds 1 secret; the platform and the Connect endpoint each sign with their own",
    ),
    (
        "no webhook secret",
        None,
        {"webhook_secret": ""},
        {"SLUICE_STRIPE_WEBHOOK_SECRET": ""},
        "no webhook secret: set SLUICE_STRIPE_WEBHOOK_SECRET",
    ),
]


@pytest.mark.parametrize(
    ("change", "configured", "env", "said"),
    [case[1:] for case in MISCONFIGURATIONS],
    ids=[case[0] for case in MISCONFIGURATIONS],
)
def test_check_names_each_misconfiguration_in_one_line_and_exits_1(
    sb: Sandbox,
    client: Any,
    change: Any,
    configured: dict[str, Any],
    env: dict[str, str],
    said: str,
) -> None:
    result = setup.setup(client, BASE_URL)
    if change is not None:
        change(client, result.endpoint_ids)
    want = expected(sb, result.secrets, **configured)
    checker = sb.client(max_network_retries=0) if "api_key" not in configured else None
    checker = checker or stripe.StripeClient(
        want.api_key, base_addresses={"api": sb.base_url}, max_network_retries=0
    )

    found = problems(setup.check(checker, want))

    assert len(found) == 1 and said in found[0], found
    # The command line says the same, in one line marked ✗, and exits 1.
    args = ["stripe", "check", "--url", BASE_URL]
    if env.get("SLUICE_STRIPE_API_KEY") == "":
        args += ["--api-key", sb.secret_key]  # the configured mode comes from the setting
    secrets = {"SLUICE_STRIPE_WEBHOOK_SECRET": want.webhook_secret}
    ran = cli(sb, args, **{**secrets, **env})
    assert ran.exit_code == 1, ran.output
    assert next(line for line in ran.output.splitlines() if said in line).startswith("✗ ")
    assert "1 problem(s)" in ran.output


def test_check_warns_of_extra_event_types_without_failing(sb: Sandbox, client: Any) -> None:
    result = setup.setup(client, BASE_URL)
    extra = [*setup.PLATFORM_EVENT_TYPES, "customer.created"]
    client.v1.webhook_endpoints.update(result.endpoint_ids["platform"], {"enabled_events": extra})

    findings = setup.check(client, expected(sb, result.secrets))

    assert problems(findings) == []
    assert any("also receives customer.created" in w for w in warnings(findings))


# The command line ---------------------------------------------------------------------------------


def test_the_command_line_sets_up_prints_the_secrets_and_then_checks_clean(sb: Sandbox) -> None:
    dry = cli(sb, ["stripe", "setup", "--url", BASE_URL, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "platform endpoint (new): would be created" in dry.output

    first = cli(sb, ["stripe", "setup", "--url", BASE_URL])
    assert first.exit_code == 0, first.output
    secrets = [
        line.split(": ")[1] for line in first.output.splitlines() if " secret: whsec_" in line
    ]
    assert len(secrets) == 2
    again = cli(sb, ["stripe", "setup", "--url", BASE_URL])
    assert again.exit_code == 0, again.output
    assert again.output.count("(the existing one stands)") == 2
    assert len(setup.list_endpoints(sb.client())) == 2

    checked = cli(
        sb, ["stripe", "check", "--url", BASE_URL], SLUICE_STRIPE_WEBHOOK_SECRET=",".join(secrets)
    )
    assert checked.exit_code == 0, checked.output
    assert checked.output.count("✓ ") == 7 and "all good" in checked.output
    # SLUICE_PUBLIC_URL stands in for --url, in check as in setup.
    moved = cli(sb, ["stripe", "check"], SLUICE_PUBLIC_URL="https://elsewhere.example.com")
    assert moved.exit_code == 1 and "elsewhere.example.com" in moved.output, moved.output
    configured = cli(sb, ["stripe", "setup"], SLUICE_PUBLIC_URL=BASE_URL)
    assert configured.exit_code == 0 and configured.output.count("stands") == 2, configured.output
    # Without --url, the endpoints must still point at Sluice's route.
    unanchored = cli(sb, ["stripe", "check"], SLUICE_STRIPE_WEBHOOK_SECRET=",".join(secrets))
    assert unanchored.exit_code == 0, unanchored.output
    keyless = cli(sb, ["stripe", "check"], SLUICE_STRIPE_API_KEY="")
    assert keyless.exit_code == 1, keyless.output
    assert "✗ no API key: set SLUICE_STRIPE_API_KEY" in keyless.output


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--url", "sluice.example.com"], {}, "error --url: not a base URL: 'sluice.example.com'"),
        (["--url", BASE_URL], {"SLUICE_STRIPE_API_KEY": "sk_test_wrong"}, "error Stripe: "),
        (["--url", BASE_URL], {"SLUICE_STRIPE_API_KEY": ""}, "error no Stripe API key"),
        ([], {}, "error --url: give Sluice's public base URL (or set SLUICE_PUBLIC_URL)"),
    ],
    ids=["bad url", "rejected key", "no key", "no url"],
)
def test_setup_errors_are_one_line_and_exit_2(
    sb: Sandbox, args: list[str], env: dict[str, str], said: str
) -> None:
    ran = cli(sb, ["stripe", "setup", *args], **env)
    assert ran.exit_code == 2, ran.output
    assert ran.output.strip().startswith(said) and len(ran.output.strip().splitlines()) == 1
    assert ran.exception is None or isinstance(ran.exception, SystemExit)


# The sandbox's webhook endpoints, as Stripe's ------------------------------------------------


def test_sandbox_webhook_endpoints_follow_stripes_api(client: Any) -> None:
    made = [
        client.v1.webhook_endpoints.create(
            {"url": URL, "enabled_events": ["*"], "description": f"n{n}", "connect": n == 1}
        )
        for n in range(3)
    ]
    assert all(e.secret and e.secret.startswith("whsec_") for e in made)  # only at creation
    assert client.v1.webhook_endpoints.retrieve(made[0].id).secret is None
    assert made[0].api_version is None  # the account's default version unless pinned
    first = client.v1.webhook_endpoints.list({"limit": 2})
    rest = client.v1.webhook_endpoints.list({"limit": 2, "starting_after": first.data[-1].id})
    assert first.has_more and not rest.has_more  # newest first, paged
    assert [e.id for e in [*first.data, *rest.data]] == [e.id for e in reversed(made)]

    updated = client.v1.webhook_endpoints.update(made[0].id, {"description": "", "disabled": True})
    assert (updated.description, updated.status) == (None, "disabled")
    for params, param in (
        ({"api_version": "2024-06-20"}, "api_version"),  # fixed at creation, as at Stripe
        ({"connect": True}, "connect"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.webhook_endpoints.update(made[0].id, params)
        assert refused.value.param == param
    for params, param in (
        ({"enabled_events": ["charge succeeded"]}, "enabled_events[0]"),
        ({"enabled_events": ["*"], "api_version": "latest"}, "api_version"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.webhook_endpoints.create({"url": URL, **params})
        assert refused.value.param == param
    client.v1.webhook_endpoints.delete(made[0].id)
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.webhook_endpoints.retrieve(made[0].id)
    assert gone.value.code == "resource_missing"


def test_check_names_each_resource_a_restricted_key_may_not_read(sb: Sandbox, client: Any) -> None:
    """A restricted key without Read on payouts and disputes: named now, before the first
    webhook whose object Sluice could not refetch."""
    result = setup.setup(client, BASE_URL)
    for path in ("/v1/payouts", "/v1/disputes"):
        sb.arm_fault("permission", count=1, method="GET", path=path)
    try:
        findings = setup.check(client, expected(sb, result.secrets))
    finally:
        sb.clear_faults()
    [problem] = problems(findings)
    assert problem.startswith("the key may not read: Disputes (") and "; Payouts (" in problem
    assert problem.endswith(": give it Read")
    again = setup.check(client, expected(sb, result.secrets))
    assert problems(again) == []
