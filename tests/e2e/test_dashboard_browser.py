"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against
the real app on a loopback port.

Known data is made through the use cases with a fake clock (purchases, a referral, proxy sessions
at fixed times), a user and an operator log in through the login form, and the charts are read
back from Chart.js itself (`Chart.getChart(canvas).data`), so the test checks what is drawn, not
what the page meant to draw. Screenshots of every page land in `test-artifacts/` at the
repository root for a person to look at.

Chromium comes from the `chromium` package (`.ci/run` installs it when missing), never from
`playwright install`. Without it, or without the `playwright` package, the test is skipped with
the reason, unless ZENZEFI_REQUIRE_SERVICES=1 (as in CI), where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import services_required
from tests.proxy.conftest import ServerThread, free_port
from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.clock import FixedClock
from zenzefi_core.domain import TransactionType
from zenzefi_core.domain.proxy import UsageDelta
from zenzefi_core.security import fast_password_hasher, hash_access_token
from zenzefi_core.services.accounts import CreateSuperuser
from zenzefi_core.services.bundles import BundleOrder, BundleQuery, ListBundles, PurchaseBundle
from zenzefi_core.services.proxy import (
    CloseIdleSessions,
    ProxyAccess,
    ProxyPolicy,
    ProxyRequest,
    RecordUsage,
)
from zenzefi_core.services.tokens import PurchaseToken, TokenOrder
from zenzefi_core.services.users import RegisterUser, Registration
from zenzefi_core.services.wallet import post_entry
from zenzefi_core.settings import (
    AuthSettings,
    DatabaseSettings,
    RateLimitSettings,
    Settings,
)

CHROMIUM = Path(os.environ.get("ZENZEFI_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery"
SECRET_KEY = "dashboard-test-secret-" + "x" * 48
#: Long enough for any page to load its data; the whole test takes a few seconds.
WAIT_MS = 10_000


def _unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason}; ZENZEFI_REQUIRE_SERVICES=1 demands it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _unavailable(f"the playwright package is missing ({error}); pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass(frozen=True)
class Session:
    """A proxy session as the analytics count it: by the moment it started."""

    user: str
    started_at: datetime
    requests: int
    bytes_transferred: int


@dataclass(frozen=True)
class Sale:
    at: datetime
    kind: str  # "token" or "bundle"
    price: Decimal


@dataclass
class Story:
    """What happened, for the expected figures; the app is told the same through use cases."""

    now: datetime
    sessions: list[Session] = field(default_factory=list)
    sales: list[Sale] = field(default_factory=list)
    bonuses: list[tuple[datetime, Decimal]] = field(default_factory=list)
    signups: list[datetime] = field(default_factory=list)


class World:
    """The running app, its fake clock, and the use cases that write the story."""

    def __init__(self, core: Core, clock: FixedClock) -> None:
        self.core = core
        self.clock = clock
        self.story = Story(now=clock.now())
        self.access = ProxyAccess(
            core.uow, clock, core.access_cache, ProxyPolicy(), core.policy.referrals
        )

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)

    def register(self, name: str, *, ref: str | None = None, deposit: str = "0") -> UUID:
        user = RegisterUser(self.core.uow, self.clock, self.core.hasher)(
            Registration(
                email=f"{name}@example.com", username=name, password=PASSWORD, referral_code=ref
            )
        )
        self.story.signups.append(self.clock.now())
        if Decimal(deposit):
            with self.core.uow() as uow:
                post_entry(
                    uow,
                    self.clock,
                    user_id=user.id,
                    amount=Decimal(deposit),
                    transaction_type=TransactionType.DEPOSIT,
                    description="Opening deposit",
                    reference_type="test",
                    reference_id=str(user.id),
                )
                uow.commit()
        return user.id

    def buy_token(self, user_id: UUID, hours: int) -> str:
        bought = PurchaseToken(self.core.uow, self.clock, self.core.policy)(
            TokenOrder(user_id=user_id, duration_hours=hours)
        )
        self.story.sales.append(Sale(self.clock.now(), "token", bought.token.price_paid))
        assert bought.plaintext is not None
        return bought.plaintext

    def buy_bundle(self, user_id: UUID, name: str) -> None:
        [bundle] = [
            b for b in ListBundles(self.core.uow)(BundleQuery(active_only=True)) if b.name == name
        ]
        PurchaseBundle(self.core.uow, self.clock, self.core.policy)(
            BundleOrder(user_id=user_id, bundle_id=bundle.id)
        )
        self.story.sales.append(Sale(self.clock.now(), "bundle", bundle.total_price))

    def use(
        self,
        user: str,
        token: str,
        device: str,
        requests: int,
        bytes_in: int,
        *,
        busy_for: timedelta = timedelta(minutes=1),
        referrer_bonus: str = "0",
    ) -> None:
        """Open a session on `device` now (activating the token on its first use, which pays
        the referrer `referrer_bonus`) and record its traffic, as the proxy's flush would, the
        last request `busy_for` later."""
        grant = self.access.authorize(
            ProxyRequest(token_hash=hash_access_token(token), device_id=device)
        )
        if Decimal(referrer_bonus):
            self.story.bonuses.append((self.clock.now(), Decimal(referrer_bonus)))
        bytes_out = 3 * bytes_in
        RecordUsage(self.core.uow)(
            [
                UsageDelta(
                    session_id=grant.session_id,
                    requests=requests,
                    bytes_in=bytes_in,
                    bytes_out=bytes_out,
                    last_activity=self.clock.now() + busy_for,
                )
            ]
        )
        self.story.sessions.append(Session(user, self.clock.now(), requests, bytes_in + bytes_out))


def write_story(world: World) -> None:
    """Alice has used the proxy over three days, holds tokens in every state and referred Bob,
    who bought a bundle and a token today and used the proxy once."""
    now = world.story.now
    world.at(now - timedelta(days=4))
    alice = world.register("alice", deposit="500.00")
    CreateSuperuser(world.core.uow, world.clock, world.core.hasher)(
        email="admin@example.com", username="admin", password=PASSWORD
    )
    world.story.signups.append(world.clock.now())

    # A one-hour token used three days ago: expired now.
    world.at(now - timedelta(days=3) + timedelta(hours=2))
    short = world.buy_token(alice, 1)
    world.use("alice", short, "desk-0001", requests=5, bytes_in=500)

    # A week token, first used two days ago, used since from two devices in turn.
    world.at(now - timedelta(days=2) + timedelta(hours=1))
    week = world.buy_token(alice, 168)
    world.use("alice", week, "desk-0001", requests=40, bytes_in=1_000)
    world.at(now - timedelta(hours=5, minutes=30))
    world.use("alice", week, "laptop-0002", requests=12, bytes_in=2_000)
    world.at(now - timedelta(minutes=30))
    world.use("alice", week, "desk-0001", requests=7, bytes_in=250, busy_for=timedelta(minutes=30))

    # Bob joins through Alice's code and buys; Alice earns 10 % of each purchase, paid when
    # the token it came from is first used: the 1 h token's 0.10 now, the bundle's 8.10 pending.
    world.at(now - timedelta(hours=4, minutes=10))
    with world.core.uow() as uow:
        code = uow.users.get(alice)
    assert code is not None
    bob = world.register("bob", ref=code.referral_code, deposit="200.00")
    world.at(now - timedelta(hours=3, minutes=20))
    world.buy_bundle(bob, "Starter Pack")
    world.at(now - timedelta(hours=2, minutes=15))
    bobs = world.buy_token(bob, 1)
    world.use("bob", bobs, "bob-pc-0001", requests=3, bytes_in=100, referrer_bonus="0.10")

    # A day token Alice has not used yet.
    world.at(now - timedelta(minutes=50))
    world.buy_token(alice, 24)
    world.at(now)
    # The session-cleanup job: only Alice's last session, busy until now, stays open.
    CloseIdleSessions(world.core.uow, world.clock)()


@dataclass
class Running:
    url: str
    core: Core
    story: Story
    api: httpx.Client

    def login(self, email: str) -> dict[str, str]:
        response = self.api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("dashboard")
    # On the hour, so that hourly buckets start on the hour however the window is cut; and
    # real time, so that login tokens signed by this clock are valid for the browser.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    clock = FixedClock(now)
    settings = Settings(
        data_dir=directory / "data",
        secret_key=SecretStr(SECRET_KEY),
        database=DatabaseSettings(url=f"sqlite:///{directory / 'zenzefi.db'}"),
        rate_limit=RateLimitSettings(login_attempts=10_000, register_attempts=10_000),
        auth=AuthSettings(token_minutes=180),
    )
    core = Core.from_settings(settings, clock=clock, hasher=fast_password_hasher())
    server = ServerThread(create_app(settings, core), free_port())
    server.start()  # migrates and seeds the default bundles
    world = World(core, clock)
    write_story(world)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        yield Running(server.url, core, world.story, api)
    server.stop()
    core.close()


def _in(bucket: dict[str, Any], moment: datetime) -> bool:
    start = datetime.fromisoformat(bucket["start"])
    end = datetime.fromisoformat(bucket["end"])
    return start <= moment < end


def _per_bucket(series: list[dict[str, Any]], events: list[tuple[datetime, Any]]) -> list[Any]:
    """Sum each event into the bucket holding its moment, using the buckets the API reported."""
    totals: list[Any] = [0] * len(series)
    for moment, value in events:
        for index, bucket in enumerate(series):
            if _in(bucket, moment):
                totals[index] += value
    return totals


def _chart(page: Any, canvas: str) -> dict[str, Any]:
    data: dict[str, Any] = page.evaluate(
        """(id) => {
            const chart = Chart.getChart(document.getElementById(id));
            return chart && {
                labels: chart.data.labels,
                datasets: chart.data.datasets.map((d) => ({label: d.label, data: d.data})),
                width: chart.width,
                height: chart.height,
            };
        }""",
        canvas,
    )
    assert data, f"no chart drawn on #{canvas}"
    assert data["width"] > 100, data
    assert data["height"] > 100, data
    return data


def _dataset(chart: dict[str, Any], label: str) -> list[Any]:
    [dataset] = [d for d in chart["datasets"] if d["label"] == label]
    return list(dataset["data"])


def _buckets(period: str) -> int:
    return {"day": 24, "week": 7, "month": 30}[period]


def _new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900},
        timezone_id="UTC",
        locale="en-GB",
        reduced_motion="reduce",
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    return context, page, problems


def _log_in(page: Any, url: str, email: str, password: str = PASSWORD) -> None:
    page.wait_for_selector("#login-form", state="visible", timeout=WAIT_MS)
    page.fill("#login-email", email)
    page.fill("#login-password", password)
    page.click("#login-submit")


def _ready(page: Any) -> None:
    page.wait_for_selector("#main[data-state=ready]", timeout=WAIT_MS)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_user_logs_in_and_sees_usage_tokens_and_referrals(browser: Any, running: Running) -> None:
    story = running.story
    context, page, problems = _new_page(browser)
    try:
        page.goto(f"{running.url}/dashboard")
        _log_in(page, running.url, "alice@example.com", "not the password")
        page.wait_for_selector("#login-message:not([hidden])", timeout=WAIT_MS)
        assert page.inner_text("#login-message") == "Wrong email or password."
        _shot(page, "dashboard-login")
        problems.clear()  # the browser reports the refused login's 401 as an error

        _log_in(page, running.url, "alice@example.com")
        _ready(page)
        headers = running.login("alice@example.com")
        alice = [s for s in story.sessions if s.user == "alice"]
        for period in ("day", "week", "month"):
            if period != "day":
                page.click(f"#usage button[data-period={period}]")
            page.wait_for_selector(f"#usage[data-period={period}]", timeout=WAIT_MS)
            usage = running.api.get(
                "/api/v1/analytics/usage", params={"period": period}, headers=headers
            ).json()
            series = usage["series"]
            assert len(series) == _buckets(period)
            chart = _chart(page, "usage-chart")
            assert len(chart["labels"]) == _buckets(period)
            requests = _per_bucket(series, [(s.started_at, s.requests) for s in alice])
            volume = _per_bucket(series, [(s.started_at, s.bytes_transferred) for s in alice])
            assert _dataset(chart, "Requests") == requests
            assert _dataset(chart, "Data transferred") == volume
            assert page.inner_text("#total-requests") == f"{sum(requests):,}"
            assert (
                page.get_attribute(f"#usage button[data-period={period}]", "aria-pressed") == "true"
            )
            _shot(page, f"dashboard-user-{period}")
        # The known figures themselves, so the test fails if everything were zero.
        assert sum(_dataset(_chart(page, "usage-chart"), "Requests")) == 5 + 40 + 12 + 7
        page.click("#usage button[data-period=day]")
        page.wait_for_selector("#usage[data-period=day]", timeout=WAIT_MS)
        day = _dataset(_chart(page, "usage-chart"), "Requests")
        assert day == [0] * 18 + [12, 0, 0, 0, 0, 7], "Alice's sessions 5.5 h and 0.5 h ago"

        assert page.inner_text("#balance") == "381.10 ZNC"  # 500 - 1 - 100 - 18 + 0.10
        assert page.inner_text("#active-sessions") == "1"  # the others were closed as idle
        assert page.inner_text("#active-tokens") == "2"  # the unused day token and the week one
        assert page.inner_text("#referral-count") == "1"
        assert page.inner_text("#referral-earned") == "0.10 ZNC"
        assert page.inner_text("#referral-pending") == "8.10 ZNC"
        with running.core.uow() as uow:
            me = uow.users.get_by_email("alice@example.com")
        assert me is not None
        assert page.inner_text("#referral-code") == me.referral_code
        assert page.inner_text("#referees-table tbody td:first-child") == "bob"
        rows = page.eval_on_selector_all(
            "#tokens-table tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.innerText))",
        )
        assert [(r[2], r[3], r[4]) for r in rows] == [
            ("24 h", "Ready", "1 d 0 h from first use"),
            ("168 h", "Active", "5 d 1 h"),  # first used 2 days less 1 hour ago
            ("1 h", "Expired", "—"),
        ]
        # A user who is not an operator is told so on the admin page.
        page.goto(f"{running.url}/dashboard/admin")
        page.wait_for_selector("#main[data-state=error]", timeout=WAIT_MS)
        assert "not a superuser" in page.inner_text("#page-message")
        assert page.is_hidden("#content")
        _shot(page, "dashboard-admin-refused")
        assert problems == []
    finally:
        context.close()


def test_an_operator_sees_revenue_purchases_traffic_and_top_users(
    browser: Any, running: Running
) -> None:
    story = running.story
    context, page, problems = _new_page(browser)
    try:
        # A login that has run out (here: a token the server never signed) brings the form back.
        page.goto(f"{running.url}/dashboard/admin")
        page.evaluate("sessionStorage.setItem('zenzefi.token', 'not-a-token')")
        page.reload()
        _log_in(page, running.url, "admin@example.com")
        _ready(page)
        problems.clear()  # the browser reports the stale token's 401 as an error
        headers = running.login("admin@example.com")
        for period in ("day", "week", "month"):
            if period != "day":
                page.click(f"#content .periods button[data-period={period}]")
            page.wait_for_selector(f"#content[data-period={period}]", timeout=WAIT_MS)
            stats = running.api.get(
                "/api/v1/analytics/admin/global-stats", params={"period": period}, headers=headers
            ).json()
            series = stats["series"]
            assert len(series) == _buckets(period)
            revenue = _chart(page, "revenue-chart")
            assert len(revenue["labels"]) == _buckets(period)
            expected_revenue = _per_bucket(series, [(s.at, s.price) for s in story.sales])
            assert _dataset(revenue, "Revenue (ZNC)") == [float(v) for v in expected_revenue]
            assert _dataset(revenue, "Referral bonuses (ZNC)") == [
                float(v) for v in _per_bucket(series, story.bonuses)
            ]
            purchases = _chart(page, "purchases-chart")
            for kind, label in (("token", "Tokens"), ("bundle", "Bundles")):
                sold = [(s.at, 1) for s in story.sales if s.kind == kind]
                assert _dataset(purchases, label) == _per_bucket(series, sold)
            traffic = _chart(page, "traffic-chart")
            used = [(s.started_at, s.requests) for s in story.sessions]
            assert _dataset(traffic, "Proxy requests") == _per_bucket(series, used)
            _shot(page, f"dashboard-admin-{period}")

        # Month: everything in the story, in figures and in the top-users table.
        assert page.inner_text("#revenue") == "201.00 ZNC"  # 1 + 100 + 81 + 1 + 18
        assert page.inner_text("#bonuses") == "0.10 ZNC"
        assert page.inner_text("#token-purchases") == "4"
        assert page.inner_text("#bundle-purchases") == "1"
        assert page.inner_text("#proxy-requests") == "67"
        top = page.eval_on_selector_all(
            "#top-users tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
        )
        assert [(r[1], r[2]) for r in top] == [
            ("alice@example.com", "64"),
            ("bob@example.com", "3"),
        ]
        assert problems == []

        page.click("#logout")
        page.wait_for_selector("#login-form", state="visible", timeout=WAIT_MS)
        assert page.evaluate("sessionStorage.getItem('zenzefi.token')") is None
    finally:
        context.close()
