"""Page hygiene (issue 16): nothing a page loads comes from another host, every page carries
StayAfrica's icon, a missing page gets the portal's own 404 page, and no page scrolls sideways
on a 390 px phone.

The Operations pages are listed from portal/viewsets.py: every route of every section that
answers a plain GET with a whole HTML page (not an htmx fragment, not a POST-only action), so a
section or page added later is visited too.
"""

import json
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from finance import permissions, staff_actions
from finance.models import ProviderRefund, ReconciliationLine, ReconciliationReport, WebhookEvent, Withdrawal
from finance.services import TransactionService
from finance.tasks import send_receipt
from messaging.models import DeadLetterMessage
from messaging.services import create_broadcast
from portal.viewsets import OperationsGroup

from .conftest import PHONE, TIMEOUT_MS, shots

pytestmark = pytest.mark.django_db(transaction=True)

# Schemes a page may use without asking any host: inline images and script-made blobs.
LOCAL_SCHEMES = {"data", "blob"}


@pytest.fixture
def busy_portal(make_user, host, guest, finance_user, approver, support_user, paid_booking, pending_withdrawals):
    """A portal with something on every page: wallets and transactions, withdrawals in every
    state (one a provider is moving), a pending reversal approval, webhook events (one flagged), a broadcast, background
    jobs and an undeliverable message. Returns what fills in the pages' URLs."""
    pending, to_complete, to_fail = pending_withdrawals
    # Long words that do not wrap by themselves, as real data has them: names, e-mail addresses, links.
    host.username, host.email = "oluwaseun.adebayo-okonkwo", "oluwaseun.adebayo-okonkwo@lagos-lekki-apartments.example"
    host.save()
    TransactionService.complete_withdrawal(to_complete)
    TransactionService.fail_withdrawal(to_fail, "Account number rejected by the bank")
    # One a provider is moving (the Processing tab), as finance.payouts leaves it, long references and all.
    sent = TransactionService.initiate_withdrawal(pending.wallet, pending.bank_account, Decimal("1200.00"))
    Withdrawal.objects.filter(pk=sent.pk).update(
        status=Withdrawal.Status.PROCESSING,
        payout_method="paystack",
        transfer_reference=sent.stable_transfer_reference(),
        provider_transfer_id="TRF_1ptvuv321ahaa7q2xkz9w",
        payout_sent_at=timezone.now() - timedelta(hours=3, minutes=12),
        payout_checked_at=timezone.now() - timedelta(minutes=5),
        payout_error="Paystack answered 502 Bad Gateway; the transfer will be queried again",
    )
    payment = paid_booking.payments.get()
    credit = TransactionService.credit_wallet(pending.wallet, Decimal("250.00"))
    approval = staff_actions.request_reversal(
        txn=credit,
        reason="Credited to the wrong host, see https://stayafrica.example/support/tickets/2026/SA-448812-duplicate",
        actor=finance_user,
        idempotency_key="hygiene-1",
    ).approval
    WebhookEvent.objects.create(
        provider="paystack",
        event_id="evt-applied-1",
        event_type="charge.success",
        raw_body=json.dumps({"event": "charge.success", "data": {"reference": payment.reference}}),
        outcome=WebhookEvent.Outcome.APPLIED,
        payment=payment,
    )
    flagged = WebhookEvent.objects.create(
        provider="flutterwave",
        event_id="evt-flagged-2",
        event_type="charge.completed",
        raw_body=json.dumps({"event": "charge.completed", "data": {"tx_ref": "PAY-UNKNOWN-000000000001"}}),
        outcome=WebhookEvent.Outcome.FLAGGED,
        reason="No payment has this reference.",
    )
    broadcast = create_broadcast(
        support_user,
        audience="all_hosts",
        text="The payout calendar changes in May: https://stayafrica.example/help/payouts/calendar-2026-changes-for-hosts",
    )
    job = send_receipt.enqueue(payment.pk)
    # A provider's day with a long reference whose amount differs (the reconciliation pages).
    report = ReconciliationReport.objects.create(
        provider="paystack",
        source="upload",
        file_name="paystack-transactions-export-2026-11-28-settlement.csv",
        first_day=payment.created_at.date(),
        last_day=payment.created_at.date(),
        line_count=1,
    )
    line = ReconciliationLine.objects.create(
        report=report,
        provider="paystack",
        day=report.first_day,
        kind="payment",
        state="differs",
        provider_reference=payment.reference,
        payment=payment,
        amount=Decimal("950.00"),
        currency="NGN",
        ledger_amount=payment.amount,
        ledger_currency=payment.currency,
        provider_status="success",
    )
    # A refund the provider failed, with a long reason in the provider's own words.
    refund_txn = TransactionService.process_refund(paid_booking, Decimal("100.00"), "Guest left a day early")
    failed_refund = ProviderRefund.objects.get(transaction=refund_txn)
    ProviderRefund.objects.filter(pk=failed_refund.pk).update(
        status=ProviderRefund.Status.FAILED,
        failure_reason="Sandbox: the card issuer declined the refund (account closed by the holder on request)",
    )
    DeadLetterMessage.objects.create(
        message_id=str(uuid.uuid4()),
        reason="Messages cannot contain the NUL character.",
        sender_id=host.pk,
        receiver_id=guest.pk,
        payload={"text": "The door code is 4\u240021"},
        first_seen=paid_booking.created_at,
        last_seen=paid_booking.created_at,
    )
    return {
        "host": host,
        "transaction": credit,
        "host_transaction": payment.ledger_transaction,
        # What each section's routes take: (section name, URL argument) -> value.
        "arguments": {
            ("ops_wallets", "pk"): pending.wallet_id,
            ("ops_transactions", "reference"): credit.reference,
            ("ops_withdrawals", "pk"): pending.pk,
            ("ops_withdrawals", "action"): "complete",
            ("ops_withdrawals", "batch_id"): uuid.uuid4(),
            ("ops_approvals", "pk"): approval.pk,
            ("ops_approvals", "decision"): "approve",
            ("ops_webhooks", "pk"): flagged.pk,
            ("ops_broadcasts", "pk"): broadcast.pk,
            ("ops_jobs", "pk"): job.id,
            ("ops_reconciliation", "pk"): line.pk,
            ("ops_reconciliation", "provider"): "paystack",
            ("ops_reconciliation", "day"): line.day.isoformat(),
            ("ops_refunds", "pk"): failed_refund.pk,
            ("ops_refunds", "action"): "retry",
        },
    }


def operations_urls(arguments) -> list[tuple[str, str]]:
    """(section name, route name, URL) of every route in the Operations menu, its arguments filled in."""
    urls = []
    for section in OperationsGroup.items:
        for route, _view, name in section.routes:
            names = re.findall(r"<(?:\w+:)?(\w+)>", route)
            missing = [n for n in names if (section.name, n) not in arguments]
            assert not missing, f"busy_portal has no value for {section.name} {route}: add one for {missing}"
            kwargs = {n: arguments[section.name, n] for n in names}
            urls.append((section.name, name, reverse(f"{section.name}:{name}", kwargs=kwargs)))
    return urls


def is_whole_page(client: Client, url: str) -> bool:
    """True when a plain GET (a typed address, a followed link) answers a whole HTML page."""
    response = client.get(url)
    return (
        response.status_code == 200
        and response["Content-Type"].startswith("text/html")
        and b"<html" in response.content[:500].lower()
    )


def operations_pages(user, arguments) -> dict[str, str]:
    """The Operations pages `user` can open, in menu order: {name: URL}."""
    client = Client()
    client.force_login(user)
    sections = {section.name: section for section in OperationsGroup.items}
    return {
        f"{section}-{route}".removeprefix("ops_").replace("_", "-"): url
        for section, route, url in operations_urls(arguments)
        if permissions.allows(user, sections[section].permission_required) and is_whole_page(client, url)
    }


def host_pages(objects) -> dict[str, str]:
    return {"statement": "/statement/", "statement-line": f"/statement/{objects['host_transaction'].reference}/"}


def pages_for(user, objects) -> dict[str, str]:
    """Every page a role reaches, {name: URL}: the host's statement pages for a host; for staff
    the admin home, their account page and each Operations page they hold the permission for."""
    if not user.is_staff:
        return host_pages(objects)
    return {"admin-home": "/admin/", "account": "/admin/account/", **operations_pages(user, objects["arguments"])}


def record_requests(page) -> list[str]:
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    return requests


def settle(page) -> None:
    """Let the page finish what it loads by itself (scripts, images, its first polls)."""
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)


def foreign(urls: list[str], live: str) -> list[str]:
    own = urlsplit(live).netloc
    return [url for url in urls if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).netloc != own]


@pytest.fixture
def every_role(make_user, busy_portal, finance_user, approver, support_user, manager):
    return {
        "admin": make_user(superuser=True),
        "finance": finance_user,
        "approver": approver,
        "support": support_user,
        "manager": manager,
        "host": busy_portal["host"],
    }


def test_no_page_asks_another_host_for_anything(browser, live, open_as, busy_portal, every_role):
    # Signed out: the sign-in page.
    context = browser.new_context(base_url=live)
    page = context.new_page()
    requests = record_requests(page)
    page.goto("/admin/login/")
    settle(page)
    expect(page.get_by_role("button", name=re.compile("Sign in", re.I))).to_be_visible()
    context.close()
    assert requests and foreign(requests, live) == [], "/admin/login/"

    visited = 0
    for role, user in every_role.items():
        paths = list(pages_for(user, busy_portal).values())
        assert paths, f"{role} reaches no page"
        page = open_as(user, paths[0])
        requests = record_requests(page)
        for path in paths:
            requests.clear()
            page.goto(path)
            settle(page)
            assert page.url.startswith(live), f"{role}: {path} left the portal for {page.url}"
            assert foreign(requests, live) == [], f"{role} on {path}"
            visited += 1
    # Every Operations section is visited by the admin (who holds every permission).
    assert visited > len(OperationsGroup.items) + len(every_role)


def test_every_page_has_the_stayafrica_icon_and_no_favicon_request_fails(open_as, busy_portal, every_role, live):
    admin, host = every_role["admin"], every_role["host"]
    missing = []
    for user, path in [(admin, "/admin/login/"), (admin, "/admin/"), (admin, "/admin/operations/wallets/")] + [
        (host, path) for path in host_pages(busy_portal).values()
    ]:
        page = open_as(user, path)
        failed = []
        page.on("response", lambda response, failed=failed: response.status >= 400 and failed.append(response.url))
        page.reload()
        settle(page)
        icon = page.locator("link[rel~=icon]").first
        href = icon.get_attribute("href") if icon.count() else None
        if not href or "favicon" not in href or "wagtailadmin" in href:
            missing.append(path)
            continue
        assert page.request.get(href).status == 200, href
        assert failed == [], f"{path}: {failed}"
    assert missing == [], "pages without StayAfrica's icon"

    # Whatever names no icon (the API's JSON, a PDF) makes the browser ask for /favicon.ico.
    page = open_as(admin, "/favicon.ico")
    answer = page.request.get(f"{live}/favicon.ico")
    assert answer.status == 200
    assert answer.headers["content-type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
    shots(page, "hygiene-favicon")


def test_a_missing_page_is_the_portals_own_404_page(browser, live, open_as, every_role):
    assert not django_settings.DEBUG  # the live server runs as production does: no debug pages
    # Inside the admin (Wagtail answers those itself) and outside it, staff and host alike.
    missing_pages = [(every_role["admin"], "/admin/operations/no-such-page/"), (every_role["host"], "/no-such-page/")]
    for user, path in missing_pages:
        page = open_as(user, "/admin/")
        answer = page.goto(path)
        assert answer.status == 404
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.get_by_text(path)).to_be_visible()
        expect(page.get_by_role("link", name="Operations portal")).to_have_attribute("href", "/admin/")
        expect(page.get_by_text("Using the URLconf")).to_have_count(0)  # Django's debug page
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    shots(page, "hygiene-404")

    # Signed out, and under the API: JSON, as API clients expect.
    context = browser.new_context(base_url=live)
    answer = context.request.get(f"{live}/api/payments/no-such-endpoint/")
    assert answer.status == 404
    assert answer.json()["error"]["code"] == "not_found"
    context.close()


# The right edge of the widest table of Operations cards (0 when the page has none).
CARDS_WIDTH = "Math.max(0, ...[...document.querySelectorAll('.ops-table')].map(t => t.getBoundingClientRect().right))"


def test_no_page_scrolls_sideways_on_a_phone(open_as, busy_portal, every_role):
    admin, host = every_role["admin"], every_role["host"]
    pages = [(admin, name, path) for name, path in pages_for(admin, busy_portal).items()]
    pages += [(host, f"host-{name}", path) for name, path in host_pages(busy_portal).items()]
    wide = {}
    for user, name, path in pages:
        page = open_as(user, path, viewport=PHONE)
        settle(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            wide[path] = width
        # A table shown as cards must fit too, even though its scrolling box would hide the overflow.
        cards = page.evaluate(CARDS_WIDTH)
        if cards > PHONE["width"]:
            wide[f"{path} (table cards)"] = cards
        shots(page, f"hygiene-{name}")
        page.context.close()
    assert wide == {}, "pages wider than a 390 px phone"
