"""Finance staff fix a flagged provider event and replay it from the webhook inbox."""

import pytest
from playwright.sync_api import expect

from finance.models import Payment, WebhookEvent
from testing.paystack import post_paystack_charge

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_finance_replays_a_flagged_webhook_after_fixing_its_cause(
    open_as, settings, finance_user, host, guest, make_booking, make_payment, provider_http
):
    settings.PAYSTACK_SECRET_KEY = "sk_e2e"
    booking = make_booking(host, guest, total="1000.00", commission="100.00")
    payment = make_payment(booking, provider="paystack")
    Payment.objects.filter(pk=payment.pk).update(amount="990.00")  # out of step with what was charged
    post_paystack_charge(payment, amount_minor=100000, event_id=4242, secret="sk_e2e", provider_http=provider_http)
    event = WebhookEvent.objects.get()
    assert event.outcome == "flagged"

    page = open_as(finance_user, "/admin/operations/dashboard/")
    expect(page.locator("#webhooks-heading").locator("..")).to_contain_text("Flagged for staff")
    page.get_by_role("link", name="Open the inbox").click()
    row = page.locator(f"#event-{event.pk}")
    expect(row).to_contain_text("differs from the payment's NGN 990.00")
    row.get_by_text("Raw payload").click()
    expect(row.locator("pre")).to_contain_text('"id": 4242')
    shot(page, "webhook-inbox")

    Payment.objects.filter(pk=payment.pk).update(amount="1000.00")  # staff corrected the payment
    row.get_by_role("link", name="Replay…").click()
    confirmation = page.get_by_role("group", name=f"Confirm replay of paystack event {event.event_id}")
    expect(confirmation).to_contain_text("payment " + payment.reference + " of NGN 1,000.00")
    expect(confirmation.get_by_role("button", name="Yes, replay")).to_be_focused()
    shot(page, "webhook-replay-confirm")
    page.locator(f"#event-{event.pk}").get_by_role("button", name="Yes, replay").click()
    expect(page.locator(".messages")).to_contain_text("applied")
    expect(page.locator(".ops-empty")).to_contain_text("Nothing needs attention")
    shot(page, "webhook-inbox-after")
    assert host.wallets.get(currency="NGN").balance == 900
