"""The finance dashboard at ``/dashboard``: server-rendered pages over the same read models as
the API, signed in with an API key and scoped by its role.

- Sign-in: the key is posted once and kept in an HttpOnly, SameSite=Strict cookie scoped to
  ``/dashboard``; every page checks it against the key cache, as the API does. ``admin``,
  ``finance`` and ``auditor`` keys see every account; an ``account:`` key sees its own only (any
  other account is "not found", as in the API).
- Charts are SVG drawn on the server by pygal (a PyPI package: no JavaScript, nothing fetched by
  the browser, so no CDN at run time); templates and CSS ship inside the package
  (``adapters/http/templates``, ``adapters/http/static``).
- Every table shown has its CSV download (the same rows, amounts in minor units).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import pygal
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pygal.style import Style
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.export import to_csv
from adapters.http.support import Sluice, ctx
from adapters.keys import Principal
from ledger.errors import SluiceError
from ledger.money import exponent, format_minor
from ledger.reconciliation import BREAK_NAMES
from projections import dashboard as q
from projections.accounts import all_accounts, list_accounts
from projections.queries import list_balance_transactions

HERE = Path(__file__).parent
COOKIE = "sluice_dashboard_key"
BASE = "/dashboard"
KEY_LEN_MAX = 200
ACCOUNTS_SHOWN = 1_000
TRANSACTIONS_SHOWN = 100
LOGIN_BODY_MAX = 4_096
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
CHART_STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#9aa5b1",
    colors=("#2f6fde", "#9b59b6", "#e67e22", "#c0392b", "#16a085"),
    font_family="sans-serif",
)
BALANCE_COLUMNS = "account name currency pending available reserved".split()
TRANSACTION_COLUMNS = (
    "id type reporting_category amount fee net currency status created available_on source".split()
)
PAYOUT_COLUMNS = "id account amount currency status failure_code created updated".split()
CLEARING_COLUMNS = "account name currency amount".split()
EXPOSURE_COLUMNS = (
    "account name currency available reserved negative_balance losses_covered_by"
    " platform_exposure".split()
)
BREAK_COLUMNS = (
    "id account currency name stripe_object stripe_ref ledger_ref difference_amount"
    " difference_fee difference_net clearing first_seen detail".split()
)

router = APIRouter(include_in_schema=False)
Ctx = Annotated[Sluice, Depends(ctx)]


class SignIn(Exception):
    """No key, or one the cache does not know: back to the sign-in page."""


class NotVisible(Exception):
    """An account the key may not see (or that does not exist): 404, revealing nothing."""


# The pages load only from this server: Redoc's bundle links its logo on a CDN, and the policy
# keeps the browser from fetching it (or anything else from outside). Inline styles and the
# docs' inline start-up scripts are the pages' own.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
PAGES = (BASE, "/docs", "/redoc")


class ContentSecurity:
    """ASGI middleware: the Content-Security-Policy header on the dashboard and docs pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PAGES):
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"content-security-policy", CSP.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_policy)


def mount(app: FastAPI) -> None:
    app.add_middleware(ContentSecurity)
    app.include_router(router)
    app.mount(f"{BASE}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    @app.exception_handler(SignIn)
    async def _sign_in(_: Request, __: SignIn) -> Response:
        return RedirectResponse(f"{BASE}/login", status_code=303)

    @app.exception_handler(NotVisible)
    async def _not_visible(request: Request, __: NotVisible) -> Response:
        return _page(request, "missing.html", {"title": "Not found"}, status=404)


async def principal(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > KEY_LEN_MAX:
        raise SignIn()
    sluice: Sluice = request.app.state.sluice
    found = await sluice.keys.lookup(token) if sluice.keys is not None else None
    if found is None:
        raise SignIn()
    return found


Who = Annotated[Principal, Depends(principal)]


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    html = TEMPLATES.get_template(name).render(base=BASE, request=request, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _csv(rows: list[dict[str, Any]], columns: list[str], filename: str) -> Response:
    return Response(
        to_csv(rows, columns),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def money(amount: int, currency: str) -> str:
    try:
        return f"{format_minor(amount, currency)} {currency}"
    except SluiceError:  # an unknown currency in a read model: show the minor units as they are
        return f"{amount} {currency} (minor units)"


def day(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M")


TEMPLATES.filters["money"] = lambda amount, currency: money(int(amount), str(currency))
TEMPLATES.filters["day"] = day


# Sign-in ------------------------------------------------------------------------------------


@router.get(f"{BASE}/login", name="dashboard_login_page")
def login_page(request: Request) -> Response:
    return _page(request, "login.html", {"title": "Sign in", "error": None})


@router.post(f"{BASE}/login", name="dashboard_login")
async def login(request: Request) -> Response:
    body = await request.body()
    fields = dict(parse_qsl(body[:LOGIN_BODY_MAX].decode("utf-8", "replace")))
    token = fields.get("key", "").strip()
    sluice: Sluice = request.app.state.sluice
    found = None
    if token and len(token) <= KEY_LEN_MAX and sluice.keys is not None:
        found = await sluice.keys.lookup(token)
    if found is None:
        context = {"title": "Sign in", "error": "That key is unknown or revoked."}
        return _page(request, "login.html", context, status=401)
    response = RedirectResponse(BASE, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path=BASE,
        secure=request.url.scheme == "https",
    )
    return response


@router.post(f"{BASE}/logout", name="dashboard_logout")
def logout() -> Response:
    response = RedirectResponse(f"{BASE}/login", status_code=303)
    response.delete_cookie(COOKIE, path=BASE)
    return response


# Pages --------------------------------------------------------------------------------------


def _lag(s: Sluice) -> list[dict[str, Any]]:
    head = s.ledger.recorder.max_notification_id() or 0
    return [
        {"name": name, "position": s.projector.position(name)}
        | {"behind": max(0, head - s.projector.position(name))}
        for name in s.projector.projections
    ]


@router.get(BASE, name="dashboard")
def overview(request: Request, s: Ctx, who: Who) -> Response:
    own = who.account
    accounts = all_accounts(s.view, ACCOUNTS_SHOWN)
    if own is not None:
        accounts = [a for a in accounts if a["id"] == own]
    context = {
        "title": "Overview",
        "who": who,
        "accounts": accounts,
        "balances": q.balances(s.view, own),
        "charts": charts(q.flows(s.view, own)),
        "payouts": q.recent_payouts(s.view, own),
        "lag": _lag(s),
        "breaks": q.open_breaks(s.view, own),
        "clearing": q.clearing(s.view, own),
        "exposure": q.exposure(s.view, own),
    }
    return _page(request, "overview.html", context)


@router.get(BASE + "/clearing.csv", name="dashboard_clearing_csv")
def clearing_csv(s: Ctx, who: Who) -> Response:
    return _csv(q.clearing(s.view, who.account), CLEARING_COLUMNS, "clearing.csv")


@router.get(BASE + "/exposure.csv", name="dashboard_exposure_csv")
def exposure_csv(s: Ctx, who: Who) -> Response:
    return _csv(q.exposure(s.view, who.account)["data"], EXPOSURE_COLUMNS, "exposure.csv")


@router.get(BASE + "/breaks/{name}", name="dashboard_breaks")
def breaks_page(name: str, request: Request, s: Ctx, who: Who) -> Response:
    """The open breaks of one name (an account key: its own account's only)."""
    if name not in BREAK_NAMES:
        raise NotVisible()
    context = {
        "title": f"Open breaks: {name}",
        "who": who,
        "name": name,
        "breaks": q.breaks_shown(s.view, who.account, name),
    }
    return _page(request, "breaks.html", context)


@router.get(BASE + "/breaks/{name}/breaks.csv", name="dashboard_breaks_csv")
def breaks_csv(name: str, s: Ctx, who: Who) -> Response:
    if name not in BREAK_NAMES:
        raise NotVisible()
    rows = [_break_row(b) for b in q.breaks_shown(s.view, who.account, name)]
    return _csv(rows, BREAK_COLUMNS, f"breaks-{name}.csv")


def _break_row(brk: dict[str, Any]) -> dict[str, Any]:
    difference = brk["difference"]
    parts = ("amount", "fee", "net")
    return brk | {f"difference_{part}": difference.get(part, 0) for part in parts}


@router.get(BASE + "/balances.csv", name="dashboard_balances_csv")
def balances_csv(s: Ctx, who: Who) -> Response:
    return _csv(q.balances(s.view, who.account), BALANCE_COLUMNS, "balances.csv")


@router.get(BASE + "/payouts.csv", name="dashboard_payouts_csv")
def payouts_csv(s: Ctx, who: Who) -> Response:
    return _csv(q.recent_payouts(s.view, who.account), PAYOUT_COLUMNS, "payouts.csv")


def _visible(s: Sluice, who: Principal, account_id: str) -> dict[str, Any]:
    if who.account is not None and who.account != account_id:
        raise NotVisible()
    found = list_accounts(s.view, account=account_id, limit=1).data
    if not found:
        raise NotVisible()
    return found[0]


def _transactions(s: Sluice, account_id: str) -> list[dict[str, Any]]:
    page = list_balance_transactions(s.view, account=account_id, limit=TRANSACTIONS_SHOWN)
    return page.data


@router.get(BASE + "/accounts/{account_id}", name="dashboard_account")
def account_page(account_id: str, request: Request, s: Ctx, who: Who) -> Response:
    account = _visible(s, who, account_id)
    context = {
        "title": account["name"] or account_id,
        "who": who,
        "account": account,
        "balances": q.balances(s.view, account_id),
        "charts": charts(q.flows(s.view, account_id)),
        "transactions": _transactions(s, account_id),
        "payouts": q.recent_payouts(s.view, account_id),
    }
    return _page(request, "account.html", context)


@router.get(BASE + "/accounts/{account_id}/balance_transactions.csv", name="dashboard_txn_csv")
def account_csv(account_id: str, s: Ctx, who: Who) -> Response:
    _visible(s, who, account_id)
    return _csv(_transactions(s, account_id), TRANSACTION_COLUMNS, f"{account_id}.csv")


# Charts -------------------------------------------------------------------------------------

LABELS = {
    "gross_volume": "Gross volume",
    "fees": "Stripe fees",
    "refunds": "Refunds",
    "disputes": "Disputes",
    "payouts": "Payouts",
}


def charts(series: dict[str, dict[str, dict[str, int]]]) -> list[dict[str, Any]]:
    """One bar chart per currency: each flow per day, in the currency's major units."""
    out = []
    for currency, days in series.items():
        scale = 10 ** _exponent(currency)
        chart = pygal.Bar(
            style=CHART_STYLE,
            height=320,
            width=900,
            js=[],  # pygal's tooltips script is on a CDN: none
            disable_xml_declaration=True,
            x_label_rotation=30,
            legend_at_bottom=True,
            show_minor_x_labels=False,
            x_labels_major_every=max(1, len(days) // 10),
            title=f"Money in and out per day ({currency})",
        )
        chart.x_labels = list(days)
        for flow, label in LABELS.items():
            chart.add(label, [days[d][flow] / scale for d in days])
        out.append({"currency": currency, "svg": chart.render(is_unicode=True)})
    return out


def _exponent(currency: str) -> int:
    try:
        return exponent(currency)
    except SluiceError:
        return 0
