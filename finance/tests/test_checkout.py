"""Checkout holds no lock while the provider answers (finance/payments.py `initiate_payment`).

Real PostgreSQL, committed rows, requests from separate threads (each with its own database
connection). The provider's HTTP is faked at the transport, as in test_providers.py: a
`requests` adapter answering from the recorded Paystack payload, which can be held on an Event.
"""

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.models import Booking, LedgerAudit, Payment
from finance.providers import base
from finance.tests.test_providers import PAYSTACK_INIT
from testing.recorded_http import RecordedAdapter, ok

pytestmark = pytest.mark.django_db(transaction=True)
PAY = "/api/payments/bookings/{}/pay/"


class GatedAdapter(RecordedAdapter):
    """Answers like RecordedAdapter, but each request first waits until `release` is set."""

    def __init__(self, answers: dict):
        super().__init__(answers)
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, request, **kwargs):
        self.entered.set()
        assert self.release.wait(30), "the test never released the provider"
        return super().send(request, **kwargs)


@pytest.fixture
def provider_http(monkeypatch, settings):
    """Every provider client's session (finance.providers.base) goes through `adapter`."""
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYSTACK_SECRET_KEY = "sk_test_checkout"

    def install(adapter):
        session = requests.Session()
        session.mount("https://", adapter)
        only_here = SimpleNamespace(Session=lambda: session, RequestException=requests.RequestException)
        monkeypatch.setattr(base, "requests", only_here)
        return adapter

    return install


@pytest.fixture
def booking(host, guest, make_booking):
    return make_booking(host, guest, total="25000.00", commission="2500.00", currency="NGN", country="NG")


def pay(user, booking_id, **headers):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(user)}")
    return client.post(PAY.format(booking_id), {"provider": "paystack"}, format="json", **headers)


def in_thread(call):
    """Run `call` in a thread with its own database connection; returns (thread, results list)."""
    results = []

    def run():
        try:
            results.append(call())
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def test_a_slow_provider_blocks_no_other_request_on_the_booking(provider_http, guest, booking):
    adapter = provider_http(GatedAdapter({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")}))
    first, first_result = in_thread(lambda: pay(guest, booking.pk))
    assert adapter.entered.wait(10), "the first checkout never reached the provider"

    # While the provider holds the first call: a second checkout answers at once ...
    started = time.monotonic()
    second, second_result = in_thread(lambda: pay(guest, booking.pk))
    second.join(5)
    assert not second.is_alive(), "the second checkout waited for the first one's provider call"
    assert time.monotonic() - started < 5
    [busy] = second_result
    assert busy.status_code == 409, busy.content
    assert busy.json()["error"]["code"] == "checkout_in_progress"
    assert int(busy["Retry-After"]) > 0
    # ... and nobody holds the booking's row lock.
    with transaction.atomic():
        assert Booking.objects.select_for_update(nowait=True).get(pk=booking.pk).status == Booking.Status.PENDING

    adapter.release.set()
    first.join(10)
    [opened] = first_result
    assert opened.status_code == 201, opened.content
    assert opened.json()["checkout"]["authorization_url"] == "https://checkout.paystack.com/0peioxfhpn4mt2q"
    assert len(adapter.sent) == 1
    assert Payment.objects.filter(booking=booking).count() == 1
    again = pay(guest, booking.pk)
    assert (again.status_code, again.json()["reference"]) == (200, opened.json()["reference"])


def test_a_failed_provider_leaves_a_reservation_that_the_retry_opens(provider_http, guest, booking):
    adapter = provider_http(RecordedAdapter({("POST", PAYSTACK_INIT): requests.ConnectionError("refused")}))
    audits = LedgerAudit.objects.count()

    failed = pay(guest, booking.pk)

    assert failed.status_code == 503, failed.content
    assert failed.json()["error"]["code"] == "provider_unavailable"
    reserved = Payment.objects.get(booking=booking)
    assert (reserved.status, reserved.checkout_status) == ("pending", Payment.CheckoutStatus.RESERVED)
    assert reserved.checkout_started_at is None and reserved.checkout_error
    assert LedgerAudit.objects.count() == audits
    with transaction.atomic():  # no lock left behind
        Booking.objects.select_for_update(nowait=True).get(pk=booking.pk)

    adapter.answers[("POST", PAYSTACK_INIT)] = ok("paystack_initialize.json")
    retried = pay(guest, booking.pk)

    assert retried.status_code == 201, retried.content
    assert retried.json()["reference"] == reserved.reference
    assert [sent.json()["reference"] for sent in adapter.sent] == [reserved.reference, reserved.reference]
    opened = Payment.objects.get(booking=booking)
    assert opened.checkout_status == Payment.CheckoutStatus.OPEN and opened.checkout_error == ""
    assert opened.checkout["access_code"] == "0peioxfhpn4mt2q"
    assert LedgerAudit.objects.filter(action="payment.initiate").count() == 1


def test_a_call_in_flight_past_the_provider_timeout_is_taken_over(provider_http, guest, booking, make_payment):
    adapter = provider_http(RecordedAdapter({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")}))
    stuck = make_payment(booking, provider="paystack")
    Payment.objects.filter(pk=stuck.pk).update(
        checkout_status=Payment.CheckoutStatus.RESERVED, checkout_started_at=timezone.now() - timedelta(minutes=5)
    )

    response = pay(guest, booking.pk)

    assert response.status_code == 201, response.content
    assert response.json()["reference"] == stuck.reference
    assert len(adapter.sent) == 1
    assert Payment.objects.get().checkout_status == Payment.CheckoutStatus.OPEN


def test_the_same_idempotency_key_while_the_first_call_runs_answers_409_at_once(provider_http, guest, booking):
    adapter = provider_http(GatedAdapter({("POST", PAYSTACK_INIT): ok("paystack_initialize.json")}))
    first, first_result = in_thread(lambda: pay(guest, booking.pk, HTTP_IDEMPOTENCY_KEY="pay-once"))
    assert adapter.entered.wait(10)

    busy = pay(guest, booking.pk, HTTP_IDEMPOTENCY_KEY="pay-once")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "request_in_progress"
    assert "Retry-After" in busy

    adapter.release.set()
    first.join(10)
    assert first_result[0].status_code == 201
    replayed = pay(guest, booking.pk, HTTP_IDEMPOTENCY_KEY="pay-once")
    assert replayed.status_code == 201 and replayed["Idempotent-Replayed"] == "true"
    assert replayed.json()["reference"] == first_result[0].json()["reference"]
    assert len(adapter.sent) == 1  # one provider call for all three requests
