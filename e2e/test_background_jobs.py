"""Finance finds a receipt e-mail that could not be sent, retries it from Operations > Background
jobs once the mail server is back, and a worker sends it; a manager reads the same page."""

import socket

import pytest
from playwright.sync_api import expect

from finance.models import Payment
from finance.tasks import send_receipt
from testing.jobs import run_jobs_with_retries

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def failed_receipt(settings, paid_booking):
    """The receipt job of an applied payment, failed on every attempt: the mail server refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", closed.getsockname()[1], 2
    payment = paid_booking.payments.get()
    job = send_receipt.enqueue(payment.pk)
    run_jobs_with_retries()
    closed.close()
    payment.refresh_from_db()
    assert payment.receipt_status == Payment.ReceiptStatus.FAILED
    return job, payment


def test_finance_retries_a_failed_receipt_and_a_worker_sends_it(
    open_as, finance_user, start_job_worker, failed_receipt, tmp_path
):
    job, payment = failed_receipt
    page = open_as(finance_user, "/admin/")
    page.get_by_role("button", name="Operations").click()
    page.get_by_role("link", name="Background jobs").click()
    expect(page.get_by_text("1 failed job")).to_be_visible()
    page.get_by_text("1 failed job").click()

    row = page.locator(f"#job-{job.id}")
    expect(row).to_contain_text("Receipt e-mail")
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("ConnectionRefusedError")
    expect(row).to_contain_text("6 of 6")
    shot(page, "background-jobs-failed")

    row.get_by_role("link", name="Retry…").click()
    expect(page.get_by_text("Retry the job “Receipt e-mail”?")).to_be_visible()
    expect(page.get_by_text("It failed with: ConnectionRefusedError")).to_be_visible()
    shot(page, "background-jobs-retry-confirm")
    page.get_by_role("button", name="Yes, retry").click()
    expect(page.get_by_text("“Receipt e-mail” is back in the queue.")).to_be_visible()

    # The mail server is back (mail written to files here), and a worker takes the job.
    outbox = tmp_path / "mail"
    start_job_worker(EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=outbox)
    # The list refreshes itself while the job waits: it turns to Succeeded without a reload.
    page.goto(f"/admin/operations/jobs/?task_path={job.task.module_path}")
    expect(page.locator(f"#job-{job.id}")).to_contain_text("Succeeded", timeout=20_000)
    shot(page, "background-jobs-retried")
    payment.refresh_from_db()
    assert payment.receipt_status == Payment.ReceiptStatus.SENT
    [sent] = list(outbox.iterdir())
    assert f"Your StayAfrica receipt {payment.reference}" in sent.read_text()


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
def test_a_manager_reads_the_failed_job_but_is_offered_no_retry(open_as, manager, failed_receipt, viewport):
    job, _payment = failed_receipt
    page = open_as(manager, "/admin/operations/jobs/?status=failed", viewport=viewport)
    row = page.locator(f"#job-{job.id}")
    expect(row).to_contain_text("ConnectionRefusedError")
    expect(page.get_by_role("link", name="Retry…")).to_have_count(0)
    shot(page, f"background-jobs-manager-{'phone' if viewport else 'desktop'}")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways"
