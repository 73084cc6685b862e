"""The webhook inbox (portal/views/webhooks.py): who may see it, replay, CSV."""

import csv
import io

import pytest
from django.test import Client
from django.utils import timezone
from wagtail.models import ModelLogEntry

from finance.models import Payment, WebhookEvent
from portal.tests.confirming import post_confirmation
from testing.paystack import post_paystack_charge

pytestmark = pytest.mark.django_db


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def flagged_event(settings, host, guest, make_booking, make_payment, provider_http):
    """A genuine Paystack success whose amount did not match the payment when it arrived."""
    settings.PAYSTACK_SECRET_KEY = "sk_portal"
    booking = make_booking(host, guest, total="1000.00", commission="100.00")
    payment = make_payment(booking, provider="paystack")
    Payment.objects.filter(pk=payment.pk).update(amount="999.00")
    post_paystack_charge(payment, amount_minor=100000, event_id=77, secret="sk_portal", provider_http=provider_http)
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


# --- filters, wording, CSV, refused posts ------------------------------------------------------


@pytest.fixture
def applied_event(settings, host, guest, make_booking, make_payment, provider_http):
    settings.PAYSTACK_SECRET_KEY = "sk_portal"
    booking = make_booking(host, guest, total="30000.00", commission="3000.00")
    payment = make_payment(booking, provider="paystack")
    Payment.objects.filter(pk=payment.pk).update(provider_reference="ps_ref_1")
    post_paystack_charge(payment, amount_minor=3000000, event_id=88, secret="sk_portal", provider_http=provider_http)
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.APPLIED
    return event


INBOX = "/admin/operations/webhooks/"


def test_an_applied_guest_payment_reads_as_received_and_links_its_ledger_transaction(finance_user, applied_event):
    client = signed_in(finance_user)
    assert "Nothing needs attention" in client.get(INBOX).content.decode()  # the landing view
    page = client.get(INBOX + "?show=applied").content.decode()
    payment = applied_event.payment
    assert f"Guest payment received, NGN 30,000.00, applied to booking #{payment.booking_id}" in page
    assert f"/admin/operations/transactions/{payment.ledger_transaction.reference}/" in page
    assert "paid out" not in page.lower()


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("?show=all&provider=paystack", True),
        ("?show=all&provider=stripe", False),
        ("?show=payment_failed", False),
        ("?show=all&q={payment}", True),
        ("?show=all&q={payment_lower}", True),
        ("?show=all&q=ps_ref_1", True),
        ("?show=all&q={event_id}", True),
        ("?show=all&q=PAY-NOPE", False),
        ("?show=all&received_from=2000-01-01", True),
        ("?show=all&received_to=2000-01-01", False),
    ],
)
def test_inbox_filters(finance_user, applied_event, query, found):
    reference = applied_event.payment.reference
    url = INBOX + query.format(payment=reference, payment_lower=reference.lower(), event_id=applied_event.event_id)
    page = signed_in(finance_user).get(url).content.decode()
    assert (f'id="event-{applied_event.pk}"' in page) is found


@pytest.mark.parametrize("query", ["?show=bogus", "?provider=paypal", "?received_from=31-31-31", "?page=abc"])
def test_inbox_bad_input_is_never_a_server_error(finance_user, applied_event, query):
    assert signed_in(finance_user).get(INBOX + query).status_code < 500


def test_inbox_page_out_of_range_is_404(finance_user, applied_event):
    assert signed_in(finance_user).get(INBOX + "?show=all&page=9").status_code == 404


def test_inbox_csv_has_iso_times_to_the_second_payment_amount_currency_and_outcome_label(finance_user, applied_event):
    response = signed_in(finance_user).get(INBOX + "?show=all&export=csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    header, row = rows[0], rows[1]
    assert header[:8] == [
        "Received", "Provider", "Event type", "Event id", "Payment", "Payment amount", "Currency", "Outcome"
    ]  # fmt: skip
    received = timezone.localtime(applied_event.received_at).replace(microsecond=0).isoformat()
    assert row[0] == received and "." not in row[0]
    assert row[4:8] == [applied_event.payment.reference, "30000.00", "NGN", "Applied"]


def test_forged_posts_are_not_listed_but_counted_on_the_inbox(settings, finance_user, applied_event):
    for _ in range(3):
        response = Client().generic(
            "POST", "/api/payments/webhooks/paystack/", b"{}", content_type="application/json",
            HTTP_X_PAYSTACK_SIGNATURE="forged",
        )  # fmt: skip
        assert response.status_code == 401
    assert WebhookEvent.objects.count() == 1
    page = signed_in(finance_user).get(INBOX).content.decode()
    assert "paystack</strong>: Forged or unverifiable posts refused: 3 today, 3 in the last 7 days." in page
    assert "webhook secret" in page


@pytest.mark.django_db
def test_a_reversed_received_range_says_so(finance_user, applied_event):
    page = signed_in(finance_user).get(
        "/admin/operations/webhooks/", {"show": "all", "received_from": "2026-02-01", "received_to": "2026-01-01"}
    )
    assert page.status_code == 200
    assert "“Received from” (2026-02-01) is after “Received up to” (2026-01-01)." in page.content.decode()


@pytest.mark.parametrize(
    ("outcome", "says"),
    [
        (WebhookEvent.Outcome.APPLIED, "the provider reports it paid"),
        (WebhookEvent.Outcome.PAYOUT_FAILED, "failed at the provider: the held amount went back to the host"),
        (WebhookEvent.Outcome.FLAGGED, "held for staff, nothing changed"),
    ],
)
def test_a_payout_callback_reads_as_the_host_payout_it_settled(
    finance_user, funded_wallet, bank_account, outcome, says
):
    from finance.services import TransactionService

    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, bank_account, "2500.00")
    WebhookEvent.objects.create(
        provider="sandbox",
        event_id="evt_sbx_trf_1",
        event_type="transfer.succeeded",
        raw_body="{}",
        outcome=outcome,
        withdrawal=withdrawal,
    )
    page = signed_in(finance_user).get("/admin/operations/webhooks/?show=all").content.decode()
    assert f"Host payout {withdrawal.reference}, NGN 2,500.00" in page and says in page
    assert "Matches no payment" not in page
