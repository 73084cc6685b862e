"""The whole payment path over real HTTP: guest pays through the sandbox provider, whose job
(run by a real worker process) posts a signed webhook; the host is paid, the receipt e-mail job
runs, the host withdraws, and finance completes it."""

from decimal import Decimal

import pytest
import requests
from django.core.management import call_command

from finance.api.tokens import issue_api_token
from finance.models import BankAccount, Booking, Payment
from testing.job_worker import JobWorkerProcess
from testing.waiting import wait_until


def refreshed(payment):
    payment.refresh_from_db()
    return payment


def api(live_server, user):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {issue_api_token(user)}"
    return lambda method, path, **kw: session.request(method, f"{live_server.url}/api/payments{path}", timeout=10, **kw)


@pytest.mark.django_db(transaction=True)
def test_guest_pays_host_is_credited_withdraws_and_finance_completes(
    live_server, settings, host, guest, finance_user, make_booking
):
    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = True
    settings.SANDBOX_WEBHOOK_URL = f"{live_server.url}/api/payments/webhooks/sandbox/"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    booking = make_booking(host, guest, total="20000.00", commission="3000.00")
    BankAccount.objects.create(owner=host, bank_name="GTBank", account_name="Host", account_number_last4="4321")

    worker = JobWorkerProcess(
        SANDBOX_WEBHOOK_URL=settings.SANDBOX_WEBHOOK_URL,
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    with worker:
        paying = api(live_server, guest)("POST", f"/bookings/{booking.pk}/pay/", json={})
        assert paying.status_code == 201, paying.text
        assert paying.json()["provider"] == "sandbox"

        assert wait_until(lambda: Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED, seconds=15)
        payment = Payment.objects.get(reference=paying.json()["reference"])
        # The worker's e-mail backend is its own process's outbox: the payment records the sending.
        assert wait_until(lambda: refreshed(payment).receipt_status == Payment.ReceiptStatus.SENT, seconds=15), (
            worker.log()
        )

    as_host = api(live_server, host)
    wallet = as_host("GET", "/wallets/my_wallet/").json()[0]
    assert (wallet["currency"], wallet["balance"]) == ("NGN", "17000.00")

    account = as_host("GET", "/bank-accounts/").json()["results"][0]
    withdrawal = as_host(
        "POST",
        "/withdrawals/",
        json={"wallet": wallet["id"], "bank_account": account["id"], "amount": "17000.00"},
        headers={"Idempotency-Key": "flow-1"},
    )
    assert withdrawal.status_code == 201, withdrawal.text

    completed = api(live_server, finance_user)("POST", f"/withdrawals/{withdrawal.json()['id']}/complete/")
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"
    assert as_host("GET", f"/wallets/{wallet['id']}/balance/").json()["balance"] == "0.00"

    call_command("check_ledger")  # raises CommandError when an invariant fails
    assert Decimal(completed.json()["amount"]) == Decimal("17000.00")
