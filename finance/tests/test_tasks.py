"""The money domain's background jobs: the receipt e-mail (finance/tasks.py) and the sandbox's
self-posted webhook (finance/providers/sandbox.py), run in-process with `run_ready_jobs`."""

import socket

import pytest
from django.core import mail
from django_tasks_db.models import DBTaskResult
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.models import Booking, Payment, WebhookEvent
from finance.providers import sandbox
from finance.tasks import send_receipt
from finance.tests.test_payments import _verify_answers, paystack_event, send_paystack  # noqa: F401 (autouse)
from jobs.models import JobRecord
from jobs.services import retry_job
from testing.jobs import bring_retries_forward, run_ready_jobs


@pytest.fixture
def paystack_payment(settings, host, guest, make_booking, make_payment):
    settings.PAYSTACK_SECRET_KEY = "sk_test_paystack"
    booking = make_booking(host, guest, total="1000.00", commission="150.00", currency="NGN")
    return make_payment(booking, provider="paystack")


@pytest.fixture
def refused_smtp(settings):
    """The SMTP backend aimed at a loopback port that is bound but never listens: connections are refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed.getsockname()[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 2
    yield
    closed.close()


def test_a_refusing_smtp_server_is_retried_then_shown_failed_and_a_staff_retry_sends_it_once(
    settings, refused_smtp, paystack_payment, guest, finance_user, client
):
    assert send_paystack(paystack_event(paystack_payment)).json()["status"] == "applied"
    paystack_payment.refresh_from_db()
    assert paystack_payment.receipt_status == Payment.ReceiptStatus.QUEUED
    [job] = DBTaskResult.objects.all()

    for attempt in range(1, 7):
        bring_retries_forward()
        assert run_ready_jobs() == 1
        paystack_payment.refresh_from_db()
        assert "ConnectionRefusedError" in paystack_payment.receipt_error
        expected = Payment.ReceiptStatus.FAILED if attempt == 6 else Payment.ReceiptStatus.RETRYING
        assert paystack_payment.receipt_status == expected, attempt
    job.refresh_from_db()
    assert job.status == "FAILED"
    assert JobRecord.objects.get(task_result=job).attempts == 6
    assert run_ready_jobs() == 0

    # Finance staff see it where the booking's payment shows.
    client.force_login(finance_user)
    page = client.get(f"/admin/operations/refunds/?booking={paystack_payment.booking_id}").content.decode()
    assert "Receipt: failed" in page and "ConnectionRefusedError" in page
    inbox = client.get("/admin/operations/webhooks/?show=all").content.decode()
    assert "Receipt: failed" in inbox

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    retry_job(job.pk, actor=finance_user)
    assert run_ready_jobs() == 1
    assert [m.to for m in mail.outbox] == [[guest.email]]
    paystack_payment.refresh_from_db()
    assert paystack_payment.receipt_status == Payment.ReceiptStatus.SENT
    assert (paystack_payment.receipt_error, bool(paystack_payment.receipt_sent_at)) == ("", True)

    send_receipt.enqueue(paystack_payment.pk)  # delivered twice (jobs run at least once)
    assert run_ready_jobs() == 1
    assert len(mail.outbox) == 1
    assert (
        "Receipt: sent"
        in client.get(f"/admin/operations/refunds/?booking={paystack_payment.booking_id}").content.decode()
    )


# --- the sandbox's webhook --------------------------------------------------------------------------


@pytest.fixture
def sandbox_on(settings):
    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = True


def test_sandbox_checkout_enqueues_exactly_one_webhook_job(sandbox_on, host, guest, make_booking):
    booking = make_booking(host, guest)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(guest)}")

    first = client.post(f"/api/payments/bookings/{booking.pk}/pay/", {}, format="json")
    second = client.post(f"/api/payments/bookings/{booking.pk}/pay/", {}, format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    [job] = DBTaskResult.objects.all()
    assert job.task_path == "finance.providers.sandbox.post_sandbox_webhook"
    assert first.json()["reference"] in job.args_kwargs["args"][0]


@pytest.mark.django_db(transaction=True)
def test_sandbox_webhook_job_retries_an_unreachable_endpoint_then_pays(
    sandbox_on, settings, live_server, host, guest, make_booking, make_payment
):
    booking = make_booking(host, guest)
    payment = make_payment(booking)
    unreachable = socket.socket()
    unreachable.bind(("127.0.0.1", 0))  # bound, never listening
    settings.SANDBOX_WEBHOOK_URL = f"http://127.0.0.1:{unreachable.getsockname()[1]}/api/payments/webhooks/sandbox/"
    sandbox.Sandbox().after_checkout(payment)
    [job] = DBTaskResult.objects.all()

    assert run_ready_jobs() == 1
    job.refresh_from_db()
    assert job.status == "READY"  # in backoff after the refused connection
    assert "ConnectionError" in JobRecord.objects.get(task_result=job).last_error
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.PENDING

    settings.SANDBOX_WEBHOOK_URL = f"{live_server.url}/api/payments/webhooks/sandbox/"
    bring_retries_forward()
    assert run_ready_jobs() >= 1  # the webhook job, and then the receipt job it enqueued
    unreachable.close()
    job.refresh_from_db()
    assert job.status == "SUCCESSFUL"
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.APPLIED
