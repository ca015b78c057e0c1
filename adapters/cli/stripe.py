"""`sluice stripe`: set up and check the Stripe webhook endpoints and keys Sluice relies on.

The logic is in ``adapters.stripe.setup``; this module reads the settings and options, builds a
``stripe.StripeClient`` and prints. Errors are one line and exit 2; ``check`` exits 1 when a
check fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from adapters.cli.common import console

if TYPE_CHECKING:
    from adapters.settings import Settings
    from adapters.stripe.setup import Finding, SetupResult

stripe_app = typer.Typer(
    no_args_is_help=True, help="Stripe: set up and check the webhook endpoints and keys"
)

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Sluice's public base URL, e.g. https://sluice.example.com (default: "
        "SLUICE_PUBLIC_URL)",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="A key allowed to manage webhook endpoints (default: the settings')"
    ),
]
ApiBase = Annotated[
    str | None,
    typer.Option("--api-base", help="Stripe's API base (default: the settings'; the sandbox's)"),
]
MARKS = {"ok": "[green]✓[/]", "problem": "[red]✗[/]", "warning": "[yellow]![/]"}


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_settings() -> Settings:
    from pydantic import ValidationError

    from adapters.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        _fail(f"settings: {first.get('msg', error)}")


def _client(settings: Settings, api_key: str, api_base: str | None) -> Any:
    import stripe

    if not api_key:
        _fail("no Stripe API key: set SLUICE_STRIPE_API_KEY or pass --api-key")
    base = api_base or settings.stripe_api_base
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base} if base else None,
        max_network_retries=settings.stripe_max_network_retries,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_s),
    )


@stripe_app.command("setup")
def setup_cmd(
    url: BaseUrl = None,
    api_key: ApiKey = None,
    api_base: ApiBase = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would change; change nothing")] = False,
    recreate: Annotated[
        bool,
        typer.Option(help="Replace both endpoints (new secrets; fixes a wrong API version)"),
    ] = False,
) -> None:
    """Create or update the platform and Connect webhook endpoints (safe to run again)."""
    import stripe

    from adapters.stripe import setup

    settings = _load_settings()
    url = url or settings.public_url
    if not url:
        _fail("--url: give Sluice's public base URL (or set SLUICE_PUBLIC_URL)")
    client = _client(settings, api_key or settings.stripe_api_key, api_base)
    try:
        setup.webhook_url(url)
        result = setup.setup(client, url, dry_run=dry_run, recreate=recreate)
    except ValueError as error:
        _fail(f"--url: {error}")
    except stripe.StripeError as error:
        _fail(f"Stripe: {error.user_message or error}")
    _print_setup(result)


def _print_setup(result: SetupResult) -> None:
    from adapters.stripe.setup import PINNED_API_VERSION, ROLES

    would = "would be " if result.dry_run else ""
    for action in result.actions:
        done = {"keep": "kept", "create": "created", "update": "updated", "recreate": "recreated"}
        endpoint = result.endpoint_ids.get(action.role, "(new)")
        why = f" ({'; '.join(action.reasons)})" if action.reasons else ""
        verb = done[action.verb] if action.verb == "keep" else would + done[action.verb]
        console.print(
            f"{action.role} endpoint {endpoint}: {verb}{why}", highlight=False, soft_wrap=True
        )
    for warning in result.warnings:
        console.print(f"[yellow]![/] {warning}", highlight=False, soft_wrap=True)
    console.print(
        f"events rendered in API version {PINNED_API_VERSION}", highlight=False, soft_wrap=True
    )
    if result.dry_run:
        return
    for role in ROLES:
        if role in result.secrets:
            console.print(f"{role} secret: {result.secrets[role]}", highlight=False, soft_wrap=True)
        else:
            console.print(
                f"{role} secret: unchanged (the existing one stands)",
                highlight=False,
                soft_wrap=True,
            )
    if result.secrets:
        console.print(
            "Add the new secret(s) to SLUICE_STRIPE_WEBHOOK_SECRET (comma-separated, one per "
            "endpoint; keep a replaced one there until the new one is deployed). Stripe shows a "
            "secret only once; `--recreate` makes new ones.",
            highlight=False,
            soft_wrap=True,
        )


@stripe_app.command("check")
def check_cmd(
    url: BaseUrl = None,
    api_key: ApiKey = None,
    api_base: ApiBase = None,
) -> None:
    """Check the key, the platform account, both endpoints and the webhook secret (exit 1 on
    any problem)."""
    import stripe

    from adapters.stripe import setup

    settings = _load_settings()
    key = api_key or settings.stripe_api_key
    url = url or settings.public_url
    if url is not None:
        try:
            setup.webhook_url(url)
        except ValueError as error:
            _fail(f"--url: {error}")
    expected = setup.Expected(
        api_key=key,
        # The configured mode: the settings' key's, or SLUICE_STRIPE_LIVEMODE; else any.
        livemode=settings.livemode
        if settings.stripe_api_key or settings.stripe_livemode is not None
        else None,
        platform_account_id=settings.stripe_platform_account_id,
        webhook_secret=settings.stripe_webhook_secret,
        base_url=url,
    )
    try:
        # Without a key there is nothing to ask Stripe: the key's check says so.
        client = _client(settings, key, api_base) if key else None
        findings = setup.check(client, expected) if client else [setup.key_mode(expected)]
    except stripe.APIConnectionError as error:
        findings = [setup.Finding(setup.PROBLEM, f"cannot reach Stripe: {error.user_message}")]
    except stripe.StripeError as error:
        findings = [setup.Finding(setup.PROBLEM, f"Stripe: {error.user_message or error}")]
    _print_findings(findings)
    if setup.problems(findings):
        raise typer.Exit(1)


def _print_findings(findings: list[Finding]) -> None:
    for finding in findings:
        console.print(f"{MARKS[finding.status]} {finding.message}", highlight=False, soft_wrap=True)
    failed = sum(f.status == "problem" for f in findings)
    console.print(
        "all good" if not failed else f"{failed} problem(s)", highlight=False, soft_wrap=True
    )


# `sluice stripe import` (adopting Sluice on a running platform) lives in its own module.
from adapters.cli.stripe_import import import_cmd  # noqa: E402

stripe_app.command("import")(import_cmd)
