"""`GET /metrics`: the series move by what happened, the bearer token guards it, and a
database that is down or slow makes a scrape say so instead of failing."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine

from tests.api.conftest import Account, Accounts, ApiClient, make_settings, running
from tests.metrics import Samples, moved, parse, value
from zenzefi_api.app import create_app
from zenzefi_core.bootstrap import Core
from zenzefi_core.errors import StorageUnavailable
from zenzefi_core.security import fast_password_hasher
from zenzefi_core.services.events import record_event
from zenzefi_core.settings import MetricsSettings

BUNDLES = "/api/v1/bundles"


def scrape(client: ApiClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
def rita(accounts: Accounts) -> Account:
    return accounts.register("rita")


@pytest.fixture
def rick(client: ApiClient, accounts: Accounts, rita: Account) -> Account:
    code = client.get("/api/v1/users/me", headers=rita.headers).json()["referral_code"]
    account = accounts.register("rick", ref=code)
    accounts.post(account, "500.00")
    return account


def test_purchases_revenue_bonuses_and_ledger_entries_count_what_committed(
    client: ApiClient, rita: Account, rick: Account
) -> None:
    before = scrape(client)

    token = client.post(
        "/api/v1/tokens/purchase",
        json={"duration_hours": 24},
        headers={**rick.headers, "Idempotency-Key": "metrics-1"},
    )
    assert token.status_code == 201, token.text
    # A retried request returns the first result and charges nothing: it counts nothing.
    again = client.post(
        "/api/v1/tokens/purchase",
        json={"duration_hours": 24},
        headers={**rick.headers, "Idempotency-Key": "metrics-1"},
    )
    assert again.json()["id"] == token.json()["id"]
    starter = client.get(BUNDLES).json()["items"][0]
    bundle = client.post(f"{BUNDLES}/{starter['id']}/purchase", headers=rick.headers)
    assert bundle.status_code == 200, bundle.text
    # Refused for want of money: no ledger entry, nothing counted.
    poor = client.post("/api/v1/tokens/purchase", json={"duration_hours": 24}, headers=rita.headers)
    assert poor.status_code == 402

    after = scrape(client)
    token_price = float(token.json()["cost_znc"])
    bundle_price = float(bundle.json()["cost_znc"])
    assert moved(before, after, "zenzefi_purchases_total", {"kind": "token"}) == 1
    assert moved(before, after, "zenzefi_purchases_total", {"kind": "bundle"}) == 1
    assert moved(before, after, "zenzefi_purchase_revenue_znc_total", {"kind": "token"}) == (
        pytest.approx(token_price)
    )
    assert moved(before, after, "zenzefi_purchase_revenue_znc_total", {"kind": "bundle"}) == (
        pytest.approx(bundle_price)
    )
    # The referrer's bonuses are pending until a token is used: no bonus entry yet.
    assert moved(before, after, "zenzefi_referral_bonuses_total") == 0
    assert moved(before, after, "zenzefi_ledger_entries_total", {"type": "purchase"}) == 2
    assert moved(before, after, "zenzefi_ledger_entries_total", {"type": "referral_bonus"}) == 0
    assert moved(before, after, "zenzefi_ledger_znc_total", {"type": "purchase"}) == (
        pytest.approx(token_price + bundle_price)
    )

    # The first use of one of the bundle's tokens pays its share of the 10 % (no upstream is
    # configured here, so the proxy answers 502 once it has let the request in).
    client.allowed_server_errors.add(502)
    used = client.get(
        "/api/v1/proxy/certificates/filter",
        headers={"X-Access-Token": bundle.json()["tokens"][0]["token"], "X-Device-ID": "desk-0001"},
    )
    assert used.status_code == 502
    paid = scrape(client)
    share = round(bundle_price * 0.1, 2) / bundle.json()["tokens_generated"]
    assert moved(after, paid, "zenzefi_referral_bonuses_total") == 1
    assert moved(after, paid, "zenzefi_referral_bonus_znc_total") == pytest.approx(share)
    assert moved(after, paid, "zenzefi_ledger_entries_total", {"type": "referral_bonus"}) == 1

    # A refund is a ledger entry of its own (and cancels the pending bonus); revenue stays gross.
    refunded = client.delete(f"/api/v1/tokens/{token.json()['id']}", headers=rick.headers)
    assert refunded.status_code == 200
    last = scrape(client)
    assert moved(paid, last, "zenzefi_ledger_entries_total", {"type": "refund"}) == 1
    assert moved(paid, last, "zenzefi_ledger_entries_total", {"type": "referral_clawback"}) == 0
    assert moved(paid, last, "zenzefi_purchases_total", {"kind": "token"}) == 0


def test_http_requests_are_labelled_by_route_template_not_raw_path(
    client: ApiClient, rick: Account
) -> None:
    before = scrape(client)
    for _ in range(3):
        bought = client.post(
            "/api/v1/tokens/purchase", json={"duration_hours": 1}, headers=rick.headers
        ).json()
        assert client.delete(f"/api/v1/tokens/{bought['id']}", headers=rick.headers).is_success
    after = scrape(client)

    labels = {"method": "DELETE", "path": "/api/v1/tokens/{token_id}", "status_code": "200"}
    assert moved(before, after, "zenzefi_http_requests_total", labels) == 3
    assert moved(before, after, "zenzefi_http_request_duration_seconds_count", labels) == 3
    purchase = {**labels, "method": "POST", "path": "/api/v1/tokens/purchase", "status_code": "201"}
    assert moved(before, after, "zenzefi_http_requests_total", purchase) == 3
    assert not any(bought["id"] in dict(lbls).get("path", "") for _, lbls in after), (
        "a raw path became a label"
    )
    # Scrapes are not requests worth counting.
    assert not any(dict(labels).get("path") == "/metrics" for _, labels in after)


def test_the_system_gauges_come_from_the_database(
    client: ApiClient, core: Core, rick: Account
) -> None:
    # No broker in these tests: an event the worker consumes stays in the outbox (one nothing
    # consumes, such as this purchase's with no webhook endpoint, is stored dispatched).
    bought = client.post(
        "/api/v1/tokens/purchase", json={"duration_hours": 1}, headers=rick.headers
    )
    assert bought.status_code == 201
    with core.uow() as uow:
        record_event(uow, core.clock, "webhook.test", {"user_id": str(rick.id)}, user_id=rick.id)
        uow.commit()
    samples = scrape(client)
    assert value(samples, "zenzefi_database_up") == 1
    with core.uow() as uow:
        backlog = uow.outbox.backlog()
    assert value(samples, "zenzefi_outbox_pending_events") == backlog.pending > 0
    assert value(samples, "zenzefi_outbox_oldest_pending_age_seconds") >= 0
    assert value(samples, "zenzefi_proxy_open_sessions") == 0
    assert value(samples, "zenzefi_active_tokens") == 0


def test_a_scrape_survives_a_database_that_is_down(
    client: ApiClient, core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> None:
        raise StorageUnavailable()

    monkeypatch.setattr(core, "uow", down)
    samples = scrape(client)
    assert value(samples, "zenzefi_database_up") == 0
    assert ("zenzefi_outbox_pending_events", frozenset()) not in samples
    # What this process counted is still there.
    assert ("zenzefi_purchases_total", frozenset({("kind", "token")})) in samples


@pytest.fixture
def slow_settings(tmp_path: Path, engine: Engine):
    return make_settings(tmp_path, engine, health_timeout_seconds=0.2)


def test_a_scrape_does_not_wait_for_a_database_that_hangs(
    slow_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = Core.from_settings(slow_settings, hasher=fast_password_hasher())
    release = threading.Event()

    def hanging():
        release.wait(10)
        raise StorageUnavailable()

    try:
        with running(create_app(slow_settings, core)) as client:
            monkeypatch.setattr(core, "uow", hanging)
            samples = scrape(client)
            release.set()
            assert value(samples, "zenzefi_database_up") == 0
    finally:
        release.set()
        core.close()


@pytest.fixture
def guarded(tmp_path: Path, engine: Engine) -> Iterator[ApiClient]:
    settings = make_settings(
        tmp_path, engine, metrics=MetricsSettings(token=SecretStr("scrape-me"))
    )
    core = Core.from_settings(settings, hasher=fast_password_hasher())
    with running(create_app(settings, core)) as client:
        yield client
    core.close()


def test_the_metrics_token_guards_the_page(guarded: ApiClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic scrape-me"},
        {"Authorization": "Bearer scrape-me-not"},
    ):
        refused = guarded.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "zenzefi_" not in refused.text
    assert value(scrape(guarded, Authorization="Bearer scrape-me"), "zenzefi_database_up") == 1


def test_the_page_is_open_without_a_token_and_absent_from_the_schema(client: ApiClient) -> None:
    assert client.get("/metrics").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/metrics" not in schema["paths"]


def test_scrapes_stay_out_of_the_access_log_unless_they_fail(
    guarded: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zenzefi.access")
    assert guarded.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).is_success
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/health").is_success
    logged = [r.fields["path"] for r in caplog.records if r.name == "zenzefi.access"]  # type: ignore[attr-defined]
    assert logged == ["/metrics", "/health"]


ALERTS = Path(__file__).resolve().parents[2] / "docs" / "prometheus-alerts.yml"
#: A metric name in PromQL, and the label names its selector matches on.
SELECTOR = re.compile(r"\b(zenzefi_[a-z0-9_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exported(page: str) -> dict[str, set[str]]:
    """Every series name the page can hold (a histogram's `_bucket`, `_count` and `_sum`, a
    counter's `_total`), with the label names seen on it."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
        }.get(family.type, [""])
        for suffix in suffixes:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_the_alert_rules_use_only_exported_metrics(client: ApiClient) -> None:
    # The worker's metrics live in the same registry when it runs inside the API process.
    import zenzefi_worker.metrics  # noqa: F401

    # Litestar's HTTP metrics exist from the first request on.
    assert client.get("/health").status_code == 200
    available = exported(client.get("/metrics").text)
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    checked = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            text = rule["expr"] + " " + " ".join(rule["annotations"].values())
            for name, selector in SELECTOR.findall(text):
                assert name in available, f"{rule['alert']} uses {name}, which nobody exports"
                labels = set(MATCHER.findall(selector)) - {"le"}
                if available[name]:
                    assert labels <= available[name], (rule["alert"], name, labels)
                checked.append(name)
    assert {
        "zenzefi_proxy_upstream_latency_seconds_bucket",
        "zenzefi_http_requests_total",
        "zenzefi_outbox_oldest_pending_age_seconds",
        "zenzefi_webhook_deliveries_total",
        "zenzefi_proxy_token_checks_total",
    } <= set(checked)
