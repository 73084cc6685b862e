"""Browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's live server.

The Playwright sync API runs an event loop in the test thread, which trips Django's
async-safety check; this conftest is only imported for the e2e session, so the switch
below applies to it alone.
"""

import os
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from testing.wagtail_site import ensure_wagtail_site

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000
# Screenshots are taken at the width finance staff work at.
DESKTOP = {"width": 1440, "height": 900}
# ...and at the width of a phone, where hosts read their statements and staff check a queue.
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def wagtail_site(transactional_db):
    """live_server flushes tables: recreate Wagtail's root page and default Site."""
    ensure_wagtail_site()


@pytest.fixture
def live(live_server, wagtail_site, roles):
    return live_server.url


@pytest.fixture
def open_as(browser, live):
    """open_as(user, path) -> a page in a fresh browser context, signed in as `user`."""
    from django.conf import settings as django_settings
    from django.test import Client

    contexts = []

    def open_as(user, path="/admin/", *, viewport=None):
        client = Client()
        client.force_login(user)
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        context = browser.new_context(base_url=live, viewport=viewport or DESKTOP, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": cookie, "url": live}])
        contexts.append(context)
        page = context.new_page()
        page.goto(path)
        return page

    yield open_as
    for context in contexts:
        context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def shots(page, name: str) -> None:
    """Screenshots of the page at 1440 px (`name.png`) and 390 px (`name-390.png`); the
    page's own viewport is restored afterwards."""
    size = page.viewport_size
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-390")):
        page.set_viewport_size(viewport)
        if viewport is PHONE:
            # Wagtail's sidebar slides from its desktop state for a moment after the viewport
            # shrinks: wait until the admin's main column starts at the left edge.
            page.wait_for_function("(document.querySelector('#main')?.getBoundingClientRect().left ?? 0) < 60")
        shot(page, name + suffix)
    page.set_viewport_size(size)


@pytest.fixture
def pending_withdrawals(funded_wallet, bank_account):
    from finance.services import TransactionService

    return [
        TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal(amount))
        for amount in ("1500.00", "2000.00", "1000.00")
    ]


@pytest.fixture(scope="session")
def erlang_node(live_server):
    """The real Erlang messaging service, persisting into the live test server."""
    from django.conf import settings as django_settings

    from testing.erlang_node import ErlangNode

    node = ErlangNode(django_url=live_server.url, secret=django_settings.MESSAGING_SHARED_SECRET).start()
    yield node
    node.cleanup()


@pytest.fixture
def messaging(settings, erlang_node):
    settings.ERLANG_MESSAGING_URL = erlang_node.url
    return erlang_node


@pytest.fixture
def start_job_worker(live_server, transactional_db):
    """start_job_worker(**env) -> a real background-job worker (`manage.py run_worker`) on the test
    database, its sandbox webhooks and callbacks aimed at the live server; stopped after the test."""
    from testing.job_worker import JobWorkerProcess

    started = []

    def start(**env):
        worker = JobWorkerProcess(
            lease=5,
            DJANGO_API_URL=live_server.url,
            SANDBOX_WEBHOOK_URL=f"{live_server.url}/api/payments/webhooks/sandbox/",
            **env,
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def new_page(browser, live):
    """new_page() -> a page in a fresh browser context, signed in as nobody."""
    contexts = []

    def new_page():
        context = browser.new_context(base_url=live, viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield new_page
    for context in contexts:
        context.close()


@pytest.fixture
def shared_cache(settings):
    """The live server's cache in Redis, under a prefix of this test's own: a worker process
    given the same REDIS_URL and CACHE_KEY_PREFIX shares it (the sampler writes, the panel reads)."""
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"e2e-stats-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": prefix,
        }
    }
    return {"REDIS_URL": redis_url, "CACHE_KEY_PREFIX": prefix}
