"""The webhook inbox (portal/views/webhooks.py): who may see it, replay, CSV."""

import hashlib
import hmac
import json

import pytest
from django.test import Client
from wagtail.models import ModelLogEntry

from finance.models import Payment, WebhookEvent
from portal.tests.confirming import post_confirmation

pytestmark = pytest.mark.django_db


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def flagged_event(settings, host, guest, make_booking, make_payment):
    """A genuine Paystack success whose amount did not match the payment when it arrived."""
    settings.PAYSTACK_SECRET_KEY = "sk_portal"
    booking = make_booking(host, guest, total="1000.00", commission="100.00")
    payment = make_payment(booking, provider="paystack")
    Payment.objects.filter(pk=payment.pk).update(amount="999.00")
    raw = json.dumps(
        {
            "event": "charge.success",
            "data": {"id": 77, "reference": payment.reference, "amount": 100000, "currency": "NGN"},
        }
    ).encode()
    signature = hmac.new(b"sk_portal", raw, hashlib.sha512).hexdigest()
    Client().generic(
        "POST",
        "/api/payments/webhooks/paystack/",
        raw,
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE=signature,
    )
    Payment.objects.filter(pk=payment.pk).update(amount="1000.00")  # staff fixed the cause
    return WebhookEvent.objects.get()


def test_finance_sees_the_flagged_event_with_its_raw_payload_and_replays_it(finance_user, flagged_event, host):
    client = signed_in(finance_user)
    page = client.get("/admin/operations/webhooks/").content.decode()
    assert flagged_event.event_id in page and "Raw payload" in page and "differs" in page
    confirm = client.get(f"/admin/operations/webhooks/{flagged_event.pk}/replay/confirm/")
    assert "Yes, replay" in confirm.content.decode()
    flagged_event.refresh_from_db()
    assert flagged_event.outcome == WebhookEvent.Outcome.FLAGGED

    response = post_confirmation(client, confirm, follow=True)

    assert "applied" in response.content.decode().lower()
    flagged_event.refresh_from_db()
    assert flagged_event.outcome == WebhookEvent.Outcome.APPLIED
    assert host.wallets.get(currency="NGN").balance == 900
    entry = ModelLogEntry.objects.get(action="stayafrica.webhook.replay")
    assert entry.user == finance_user and entry.data["outcome"] == "applied"


def test_webhook_inbox_exports_csv_with_formulas_neutralised(finance_user, flagged_event):
    response = signed_in(finance_user).get("/admin/operations/webhooks/?show=all&export=csv")
    body = b"".join(response.streaming_content).decode("utf-8-sig")  # the export starts with a byte-order mark
    assert body.splitlines()[0].startswith("Received,Provider,Event type")
    assert flagged_event.event_id in body


def test_support_and_managers_cannot_replay(support_user, manager, flagged_event):
    assert signed_in(support_user).get("/admin/operations/webhooks/").status_code in (302, 403)
    assert signed_in(manager).get("/admin/operations/webhooks/").status_code == 200  # read-only
    response = signed_in(manager).post(f"/admin/operations/webhooks/{flagged_event.pk}/replay/")
    assert response.status_code in (302, 403)
    flagged_event.refresh_from_db()
    assert flagged_event.outcome == WebhookEvent.Outcome.FLAGGED
