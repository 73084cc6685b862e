"""Work queues with history: withdrawals (tabs, filters, select-all) and the webhook inbox."""

import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from finance.models import BankAccount, WebhookEvent, Withdrawal
from finance.services import TransactionService
from testing.paystack import post_paystack_charge

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)
PHONE = {"width": 390, "height": 844}


def test_failing_without_a_reason_shows_one_clear_error_then_fails_with_one(open_as, finance_user, pending_withdrawals):
    w = pending_withdrawals[1]
    page = open_as(finance_user, "/admin/operations/withdrawals/")
    row = page.locator(f"#withdrawal-{w.pk}")
    row.get_by_role("button", name=f"Fail {w.reference}").click()
    reason = row.get_by_label("Reason (required, the host is told)")
    reason.fill("   ")
    row.get_by_role("button", name="Review failure…").click()

    error = page.locator(f"#withdrawal-{w.pk} [role=alert]")
    expect(error).to_have_text("Say why the withdrawal failed; the host and the audit log see it.")
    expect(page.locator("[role=alert]:not(:empty)")).to_have_count(1)  # one error, under the field
    expect(page.locator(f"#withdrawal-{w.pk}")).not_to_contain_text("after)")  # no confirmation's effect
    expect(page.locator(".messages li")).to_have_count(0)  # and no Wagtail message repeating it
    expect(reason).to_have_attribute("aria-describedby", f"reason-{w.pk}-error")
    expect(reason).to_have_value("   ")  # what was typed is kept
    shot(page, "work-queues-fail-without-reason")
    assert Withdrawal.objects.get(pk=w.pk).status == "pending"

    reason.fill("Account closed by the bank")
    row.get_by_role("button", name="Review failure…").click()
    row.get_by_role("button", name="Yes, fail it").click()
    expect(page.locator(f"#withdrawal-{w.pk}")).to_contain_text("Failed")
    assert Withdrawal.objects.get(pk=w.pk).failure_reason == "Account closed by the bank"


@pytest.fixture
def kes_withdrawal(other_host):
    wallet = TransactionService.create_wallet(other_host, "KES")
    TransactionService.credit_wallet(wallet, Decimal("5000.00"))
    bank = BankAccount.objects.create(
        owner=other_host, bank_name="Equity", account_name="Host Two", account_number_last4="9876", is_primary=True
    )
    return TransactionService.initiate_withdrawal(wallet, bank, Decimal("1000.00"))


def test_withdrawal_tabs_history_filters_and_selected_total(
    open_as, finance_user, pending_withdrawals, kes_withdrawal, other_host
):
    first, second, third = pending_withdrawals
    page = open_as(finance_user, "/admin/operations/withdrawals/")
    tabs = page.get_by_role("navigation", name="Withdrawals by status")
    expect(tabs.get_by_role("link", name="Pending")).to_have_attribute("aria-current", "page")
    expect(page.locator(f"#withdrawal-{first.pk}")).to_contain_text(first.reference)
    expect(page.locator(f"#withdrawal-{first.pk}")).to_contain_text(first.transaction.reference)

    # Select-all: every open row, and the total per currency, at each currency's precision.
    page.get_by_label("Select every open withdrawal on this page").check()
    expect(page.locator("#bulk-selected")).to_have_text("Selected: 4 — KES 1,000.00 · NGN 4,500.00")
    page.get_by_label(f"Select {first.reference}").uncheck()
    expect(page.locator("#bulk-selected")).to_have_text("Selected: 3 — KES 1,000.00 · NGN 3,000.00")
    shot(page, "work-queues-selected-total")
    select_all = page.get_by_label("Select every open withdrawal on this page")
    select_all.click()  # part of the page was selected: now all of it
    expect(page.locator("#bulk-selected")).to_have_text("Selected: 4 — KES 1,000.00 · NGN 4,500.00")
    select_all.uncheck()
    expect(page.locator("#bulk-selected")).to_have_text("Selected: none")

    # Filters narrow the list as you type, and amounts need a currency.
    page.get_by_label("Currency").select_option("KES")
    expect(page.locator(f"#withdrawal-{first.pk}")).to_have_count(0)
    expect(page.locator(f"#withdrawal-{kes_withdrawal.pk}")).to_be_visible()
    page.get_by_label("Currency").select_option("")
    page.get_by_label("Amount from").fill("1500")
    page.get_by_label("Amount from").press("Enter")
    expect(page.locator("#results")).to_contain_text("Choose a currency first")
    page.get_by_label("Amount from").fill("")
    page.get_by_label("Host").fill(other_host.email)
    expect(page.locator(f"#withdrawal-{kes_withdrawal.pk}")).to_be_visible()
    expect(page.locator(f"#withdrawal-{first.pk}")).to_have_count(0)
    page.goto("/admin/operations/withdrawals/?currency=NGN&amount_min=1500")
    expect(page.locator("#results tbody tr")).to_have_count(2)

    # Mark one as paid and fail one, then the history tabs say who, when and why.
    page.goto("/admin/operations/withdrawals/")
    row = page.locator(f"#withdrawal-{first.pk}")
    row.get_by_role("button", name=f"Mark {first.reference} as paid").click()
    row.get_by_role("button", name="Yes, mark as paid").click()
    expect(page.locator(f"#withdrawal-{first.pk}")).to_contain_text("Completed")
    row = page.locator(f"#withdrawal-{second.pk}")
    row.get_by_role("button", name=f"Fail {second.reference}").click()
    row.get_by_label("Reason (required, the host is told)").fill("Name on the account does not match")
    row.get_by_role("button", name="Review failure…").click()
    row.get_by_role("button", name="Yes, fail it").click()
    expect(page.locator(f"#withdrawal-{second.pk}")).to_contain_text("Failed")

    tabs.get_by_role("link", name="Completed").click()
    expect(tabs.get_by_role("link", name="Completed")).to_have_attribute("aria-current", "page")
    done = page.locator(f"#withdrawal-{first.pk}")
    expect(done).to_contain_text(first.reference)
    expect(done).to_contain_text(str(finance_user))
    processed = Withdrawal.objects.get(pk=first.pk).processed_at
    expect(done).to_contain_text(processed.astimezone().strftime("%Y-%m-%d"))
    expect(page.locator(f"#withdrawal-{second.pk}")).to_have_count(0)
    shot(page, "work-queues-completed-tab")

    tabs.get_by_role("link", name="Failed").click()
    failed = page.locator(f"#withdrawal-{second.pk}")
    expect(failed).to_contain_text("Name on the account does not match")
    expect(failed).to_contain_text(str(finance_user))
    page.get_by_label("Currency").select_option("KES")  # filtering keeps the tab
    expect(page.locator("#results")).to_contain_text("No withdrawal matches these filters")
    assert "/withdrawals/failed/" in page.url
    shot(page, "work-queues-failed-tab")

    phone = open_as(finance_user, "/admin/operations/withdrawals/", viewport=PHONE)
    phone.get_by_label("Select every open withdrawal on this page").check()
    expect(phone.locator("#bulk-selected")).to_have_text("Selected: 2 — KES 1,000.00 · NGN 1,000.00")
    shot(phone, "work-queues-withdrawals-phone")
    assert third.pk  # still open: the one NGN row left besides the KES one


def post_forged(live, raw):
    request = urllib.request.Request(
        f"{live}/api/payments/webhooks/paystack/",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/json", "X-Paystack-Signature": "0" * 128},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_webhook_inbox_describes_filters_and_counts_forged_posts(
    open_as, live, settings, finance_user, host, guest, make_booking, make_payment, provider_http
):
    settings.PAYSTACK_SECRET_KEY = "sk_e2e"
    booking = make_booking(host, guest, total="30000.00", commission="3000.00")
    payment = make_payment(booking, provider="paystack")
    post_paystack_charge(payment, amount_minor=3000000, event_id=5151, secret="sk_e2e", provider_http=provider_http)
    event = WebhookEvent.objects.get()
    assert event.outcome == "applied"
    payment.refresh_from_db()

    # Two forged posts to the live server: refused, not stored.
    forged = json.dumps({"event": "charge.success", "data": {"id": 666, "reference": payment.reference}}).encode()
    assert [post_forged(live, forged), post_forged(live, forged)] == [401, 401]
    assert WebhookEvent.objects.count() == 1

    page = open_as(finance_user, "/admin/operations/webhooks/")
    refused = page.get_by_role("region", name="Forged or unverifiable posts")
    expect(refused).to_contain_text("paystack: Forged or unverifiable posts refused: 2 today, 2 in the last 7 days.")
    expect(refused).to_contain_text("webhook secret")
    expect(page.locator(".ops-empty")).to_contain_text("Nothing needs attention")  # the landing view

    page.get_by_label("Status").select_option("applied")
    row = page.locator(f"#event-{event.pk}")
    expect(row).to_contain_text(f"Guest payment received, NGN 30,000.00, applied to booking #{booking.pk}")
    expect(row).to_contain_text(payment.ledger_transaction.reference)
    expect(page.locator("#results")).not_to_contain_text("paid out")
    expect(page.locator("#results")).not_to_contain_text("Paid out")
    expect(page.locator("#results tbody tr")).to_have_count(1)  # the forged posts are not listed
    shot(page, "work-queues-webhook-inbox")

    page.get_by_label("Provider").select_option("stripe")
    expect(page.locator("#results")).to_contain_text("No event matches these filters")
    page.get_by_label("Provider").select_option("paystack")
    expect(page.locator(f"#event-{event.pk}")).to_be_visible()
    page.get_by_label("Status").select_option("all")
    page.get_by_label("Reference").fill(payment.reference.lower())
    expect(page.locator(f"#event-{event.pk}")).to_be_visible()
    page.get_by_label("Reference").fill("PAY-NOTHING")
    expect(page.locator("#results")).to_contain_text("No event matches these filters")
    page.get_by_label("Reference").fill("5151")
    expect(page.locator(f"#event-{event.pk}")).to_be_visible()
    assert "q=5151" in page.url and "provider=paystack" in page.url

    page.get_by_role("link", name=payment.ledger_transaction.reference).click()
    expect(page).to_have_url(f"{live}/admin/operations/transactions/{payment.ledger_transaction.reference}/")
