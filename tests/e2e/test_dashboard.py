"""The finance dashboard and the API docs in a real browser: `sluice demo` books a marketplace,
`sluice serve` serves it, and headless Chromium (Debian's, driven by Playwright) signs in, sees
the demo's accounts with the balances the API gives, opens an account, downloads its CSV, and
saves a screenshot per run under var/screenshots/. An account key sees its own account only.
Nothing the browser loads comes from outside this machine: any other request fails the test.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.integration.http_support import Client
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_TIMEOUT_S = 300
SERVER_START_TIMEOUT_S = 30
PAGE_TIMEOUT_MS = 20_000
LOCAL = re.compile(r"^(https?|ws)://127\.0\.0\.1(:\d+)?/|^(data|blob|about):")


def _cli(*args: str, url: str, cwd: Path) -> str:
    env = os.environ | {"SLUICE_DATABASE_URL": url, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _key(role: str, url: str, cwd: Path) -> str:
    found = re.search(
        r"sk_sluice_[A-Za-z0-9_-]+", _cli("keys", "create", "--role", role, url=url, cwd=cwd)
    )
    assert found, "sluice keys create prints the key"
    return found.group(0)


@dataclass
class Demo:
    base: str
    api: Client
    keys: dict[str, str]
    accounts: dict[str, str] = field(default_factory=dict)  # name → acct_ id


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not Path(CHROMIUM).exists():  # .ci/run installs it; locally this skips with the fix
        require_service("chromium", f"no {CHROMIUM}: apt-get install -y chromium")
    work = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{work / 'demo.db'}"
    _cli("demo", "--seed", "3", url=url, cwd=work)
    keys = {"finance": _key("finance", url, work)}
    port = free_port()
    env = os.environ | {"SLUICE_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        api = Client(f"127.0.0.1:{port}", keys["finance"])
        _wait_ready(api)
        listed = api.get("/v1/accounts?limit=100").json()["data"]
        names = {a["name"]: a["id"] for a in listed if a["name"]}
        keys["bonsai"] = _key(f"account:{names['Bonsai Goods']}", url, work)
        yield Demo(f"http://127.0.0.1:{port}", api, keys, names)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=SERVER_START_TIMEOUT_S)


def _wait_ready(api: Client) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if api.get("/readyz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("sluice serve did not become ready")


@dataclass
class Browser:
    context: Any
    outside: list[str]  # requests to anywhere but this server (each one is a failure)

    def page(self) -> Any:
        page = self.context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        return page


@pytest.fixture
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="sluice-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
                accept_downloads=True,
            )
            outside: list[str] = []

            def guard(route: Any) -> None:
                if LOCAL.match(route.request.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            try:
                yield Browser(context, outside)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert outside == [], f"the browser reached outside this machine: {outside}"


def _sign_in(browser: Browser, demo: Demo, key: str) -> Any:
    page = browser.page()
    page.goto(f"{demo.base}/dashboard")
    assert page.url.endswith("/dashboard/login")  # no key yet: the sign-in page
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_selector("#balances")
    return page


def _shown_balances(page: Any) -> dict[tuple[str, str, str], int]:
    cells = page.eval_on_selector_all(
        "#balances td[data-book]",
        "cells => cells.map(c => [c.parentElement.dataset.account,"
        " c.parentElement.dataset.currency, c.dataset.book, c.dataset.amount])",
    )
    return {(a, cur, book): int(amount) for a, cur, book, amount in cells}


def _api_balances(demo: Demo, accounts: list[str]) -> dict[tuple[str, str, str], int]:
    out = {}
    for account in accounts:
        body = demo.api.get(f"/v1/balances/{account}").json()
        for book in ("pending", "available", "reserved"):
            for item in body[book]:
                out[(account, item["currency"], book)] = item["amount"]
    return out


def _screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_finance_sees_the_demo_accounts_with_the_balances_the_api_gives(
    demo: Demo, browser: Browser
) -> None:
    page = _sign_in(browser, demo, demo.keys["finance"])
    names = page.inner_text("#accounts")
    for name in ("Alpine Goods", "Bonsai Goods", "Cobalt Goods", "Dune Goods", "Ember Goods"):
        assert name in names
    shown = _shown_balances(page)
    accounts = sorted({account for account, _, _ in shown})
    assert set(demo.accounts.values()) <= set(accounts)
    assert shown == _api_balances(demo, accounts)
    assert page.locator("figure.chart svg").count() == 2  # usd and jpy
    legend = page.inner_text("figure.chart >> nth=0")
    for flow in ("Gross volume", "Stripe fees", "Refunds", "Disputes", "Payouts"):
        assert flow in legend
    assert "account_closed" in page.inner_text("#payouts")  # the bounced payout, with its code
    assert page.locator("#lag tr[data-projection='balances']").count() == 1
    assert _screenshot(page, "dashboard").stat().st_size > 10_000


def _shown_rows(page: Any, selector: str, fields: str) -> list[list[str]]:
    return list(page.eval_on_selector_all(selector, f"rows => rows.map(r => [{fields}])"))


def _shown_exposure(page: Any) -> dict[tuple[str, str, str], int]:
    cells = page.eval_on_selector_all(
        "#exposure td[data-book]",
        "cells => cells.map(c => [c.parentElement.dataset.account,"
        " c.parentElement.dataset.currency, c.dataset.book, c.dataset.amount])",
    )
    return {(a, cur, book): int(amount) for a, cur, book, amount in cells}


def _api_exposure(body: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    books = ("available", "reserved", "negative_balance", "platform_exposure")
    return {(r["account"], r["currency"], b): r[b] for r in body["data"] for b in books}


def test_finance_sees_open_breaks_clearing_books_and_exposure_as_the_api_gives_them(
    demo: Demo, browser: Browser
) -> None:
    page = _sign_in(browser, demo, demo.keys["finance"])
    shown_breaks = dict(
        _shown_rows(page, "#open-breaks tr[data-break]", "r.dataset.break, r.dataset.count")
    )
    assert len(shown_breaks) == 6  # every break name, open or not
    for name, count in shown_breaks.items():
        listed = demo.api.get(f"/v1/reconciliation/breaks?status=open&name={name}&limit=100")
        assert int(count) == len(listed.json()["data"]), name
    shown_clearing = _shown_rows(
        page,
        "#clearing tr[data-account]",
        "r.dataset.account, r.dataset.currency, r.dataset.amount",
    )
    clearing = demo.api.get("/v1/reconciliation/clearing").json()["data"]
    assert [(a, c, int(amount)) for a, c, amount in shown_clearing] == [
        (b["account"], b["currency"], b["amount"]) for b in clearing
    ]
    exposure = demo.api.get("/v1/risk/exposure").json()
    shown = _shown_exposure(page)
    assert shown == _api_exposure(exposure) and shown
    assert {account for account, _, _ in shown} <= set(demo.accounts.values())
    totals = _shown_rows(page, "#exposure tr[data-total]", "r.dataset.total, r.dataset.amount")
    assert [(c, int(a)) for c, a in totals] == [
        (t["currency"], t["amount"]) for t in exposure["total_platform_exposure"]
    ]
    page.locator("#open-breaks").scroll_into_view_if_needed()
    assert _screenshot(page, "dashboard-risk", full_page=False).stat().st_size > 10_000
    page.click("#open-breaks tr[data-break='amount_mismatch'] a")
    page.wait_for_selector("#breaks")
    assert page.inner_text("#break-name") == "amount_mismatch"
    listed = demo.api.get("/v1/reconciliation/breaks?status=open&name=amount_mismatch&limit=100")
    shown_ids = page.eval_on_selector_all(
        "#breaks tr[data-break]", "rows => rows.map(r => r.dataset.break)"
    )
    assert shown_ids == [b["id"] for b in listed.json()["data"]]


def test_an_account_opens_to_its_balance_transactions_and_downloads_them(
    demo: Demo, browser: Browser
) -> None:
    page = _sign_in(browser, demo, demo.keys["finance"])
    account = demo.accounts["Alpine Goods"]
    page.click(f"#accounts tr[data-account='{account}'] a")
    page.wait_for_selector("#transactions")
    assert page.inner_text("#account-name") == "Alpine Goods"
    shown = page.eval_on_selector_all(
        "#transactions tr[data-transaction]", "rows => rows.map(r => r.dataset.transaction)"
    )
    listed = demo.api.get(f"/v1/balance_transactions?account={account}&limit=100").json()
    assert shown == [t["id"] for t in listed["data"]] and shown
    with page.expect_download() as download_info:
        page.click("#transactions-csv")
    download = download_info.value
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [r["id"] for r in rows] == shown
    assert [int(r["net"]) for r in rows] == [t["net"] for t in listed["data"]]
    _screenshot(page, "dashboard-account")


def test_an_account_key_sees_only_its_own_account(demo: Demo, browser: Browser) -> None:
    own = demo.accounts["Bonsai Goods"]
    page = _sign_in(browser, demo, demo.keys["bonsai"])
    assert {account for account, _, _ in _shown_balances(page)} == {own}
    assert page.locator("#accounts tr[data-account]").count() == 1
    other = demo.accounts["Alpine Goods"]
    response = page.goto(f"{demo.base}/dashboard/accounts/{other}")
    assert response.status == 404 and "No such account" in page.inner_text("main")
    response = page.goto(f"{demo.base}/dashboard/accounts/{other}/balance_transactions.csv")
    assert response.status == 404
    csv_text = page.request.get(f"{demo.base}/dashboard/balances.csv").text()
    assert {row["account"] for row in csv.DictReader(io.StringIO(csv_text))} == {own}
    page.goto(f"{demo.base}/dashboard")
    assert {account for account, _, _ in _shown_exposure(page)} == {own}
    assert _shown_exposure(page) == _api_exposure(
        demo.api.get(f"/v1/risk/exposure?account={own}").json()
    )
    response = page.goto(f"{demo.base}/dashboard/breaks/no_such_break")
    assert response.status == 404


def test_an_unknown_key_is_refused_and_signing_out_forgets_the_key(
    demo: Demo, browser: Browser
) -> None:
    page = browser.page()
    page.goto(f"{demo.base}/dashboard/login")
    page.fill("#key", "sk_sluice_" + "x" * 43)
    page.click("#sign-in")
    assert "unknown or revoked" in page.inner_text("[role=alert]")
    page = _sign_in(browser, demo, demo.keys["finance"])
    page.click("text=Sign out")
    page.wait_for_selector("#key")
    page.goto(f"{demo.base}/dashboard")
    assert page.url.endswith("/dashboard/login")


def test_the_api_docs_render_from_packaged_assets(demo: Demo, browser: Browser) -> None:
    page = browser.page()
    page.goto(f"{demo.base}/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".swagger-ui .opblock").count() >= 25
    assert "/v1/accounts" in page.inner_text(".swagger-ui")
    page.goto(f"{demo.base}/redoc")
    page.wait_for_selector("text=Accounts, newest first", state="attached")
    assert "Sluice" in page.title()
    _screenshot(page, "redoc", full_page=False)
