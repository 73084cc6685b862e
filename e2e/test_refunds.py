"""Refunds that reach the guest and host balances that go negative and recover (issue 18).

Finance refunds in the browser; a real background worker (`manage.py run_worker`) creates the
refund at the provider that took the payment — here the offline sandbox — and the sandbox's
signed callback, posted to the live server, settles it. Nothing is faked but the provider."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from finance.models import (
    HostReceivable,
    LedgerEntry,
    ProviderRefund,
    SystemAccount,
    Wallet,
    WebhookEvent,
)
from finance.services import TransactionService
from testing.ledger import failing_ledger_checks
from testing.waiting import wait_until

from .conftest import PHONE, shots

pytestmark = pytest.mark.django_db(transaction=True)

# The worker polls every second and the sandbox's callback is a job of its own: a refund settles
# within a few seconds; this bounds the wait.
SETTLE_SECONDS = 45


def wait_for_refund(refund_pk: int, *statuses: str) -> ProviderRefund:
    """Wait (bounded) until the refund reaches one of `statuses`, and return it."""
    reached = wait_until(
        lambda: ProviderRefund.objects.filter(pk=refund_pk, status__in=statuses).exists(),
        seconds=SETTLE_SECONDS,
        interval=0.25,
    )
    refund = ProviderRefund.objects.get(pk=refund_pk)
    assert reached, f"refund {refund_pk} still {refund.status}"
    return refund


def refunds_payable(currency: str = "NGN") -> Decimal:
    """What the platform still owes guests in refunds (the journal's "refunds payable")."""
    entries = LedgerEntry.objects.filter(system_account=SystemAccount.REFUNDS_PAYABLE, currency=currency)
    return sum((entry.amount for entry in entries), Decimal(0))


def review_refund(page, amount: str, reason: str):
    page.get_by_label("Amount to refund").fill(amount)
    page.get_by_label("Reason (required)").fill(reason)
    page.get_by_role("button", name="Review refund").click()
    return page.get_by_role("group", name="Confirm refund")


def test_a_refund_the_provider_fails_is_retried_and_settles_by_its_callback(
    open_as, finance_user, paid_booking, start_job_worker
):
    # NGN 400.13: the sandbox fails the first attempt of a refund ending in .13, as a provider might.
    start_job_worker()
    page = open_as(finance_user, f"/admin/operations/refunds/?booking={paid_booking.pk}")
    confirmation = review_refund(page, "400.13", "Guest left a day early")
    expect(confirmation).to_contain_text("NGN 400.13 goes back to")
    expect(confirmation).to_contain_text("by the sandbox")
    shots(page, "refund-1-confirm")
    confirmation.get_by_role("button", name="Yes, refund").click()
    expect(page.locator(".messages")).to_contain_text("Refunded NGN 400.13")
    refund = ProviderRefund.objects.get()
    assert refunds_payable() == Decimal("400.13")  # owed to the guest until the provider pays it

    # The provider's answer: failed, with its reason, still owed to the guest.
    failed = wait_for_refund(refund.pk, ProviderRefund.Status.FAILED)
    page.goto("/admin/operations/refunds/?show=failed")
    row = page.locator(f"#refund-{refund.pk}")
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text(failed.failure_reason)
    shots(page, "refund-1-failed")
    assert refunds_payable() == Decimal("400.13")

    row.get_by_role("button", name=f"Retry refund {refund.refund_reference}").click()
    expect(row).to_contain_text("again")
    row.get_by_role("button", name="Yes, retry refund").click()
    settled = wait_for_refund(refund.pk, ProviderRefund.Status.SUCCEEDED)
    assert settled.attempt == 2 and settled.refund_reference.endswith("-2")

    page.goto("/admin/operations/refunds/?show=refunded")
    expect(page.locator(f"#refund-{refund.pk}")).to_contain_text("Refunded")
    expect(page.locator(f"#refund-{refund.pk}")).to_contain_text(settled.provider_refund_id)
    shots(page, "refund-1-refunded")
    # The guest has the money: nothing is left in refunds payable, and the callbacks are in the inbox.
    assert refunds_payable() == Decimal("0")
    callbacks = WebhookEvent.objects.filter(refund=refund).order_by("received_at")
    assert [event.outcome for event in callbacks] == [WebhookEvent.Outcome.REFUND_FAILED, WebhookEvent.Outcome.APPLIED]
    page.goto("/admin/operations/webhooks/?show=all")
    expect(page.locator("#results")).to_contain_text("Refund of NGN 400.13")
    shots(page, "refund-1-inbox")
    assert failing_ledger_checks() == []


def test_a_refund_after_the_host_withdrew_leaves_a_negative_balance_the_next_payout_recovers(
    open_as, finance_user, host, guest, paid_booking, bank_account, make_booking, make_payment, settings
):
    settings.MINIMUM_WITHDRAWAL = {}
    wallet = Wallet.objects.get(user=host, currency="NGN")
    assert wallet.balance == Decimal("850.00")  # 1,000.00 paid, 150.00 commission
    TransactionService.complete_withdrawal(TransactionService.initiate_withdrawal(wallet, bank_account, "850.00"))

    # Finance refunds the whole booking: the host's share (850.00) comes from a wallet that is empty.
    page = open_as(finance_user, f"/admin/operations/refunds/?booking={paid_booking.pk}")
    confirmation = review_refund(page, "1,000", "Property was double-booked")
    expect(confirmation).to_contain_text("their wallet goes negative by NGN 850.00")
    expect(confirmation).to_contain_text("recovered from their next payouts")
    shots(page, "refund-2-confirm-negative")
    confirmation.get_by_role("button", name="Yes, refund").click()
    expect(page.locator(".messages")).to_contain_text("Refunded NGN 1,000.00")
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("-850.00")
    assert HostReceivable.objects.get(wallet=wallet).outstanding == Decimal("850.00")

    # The wallet page shows what the host owes, and the dashboard counts it.
    page.goto(f"/admin/operations/wallets/{wallet.pk}/")
    expect(page.get_by_text("Owed by the host").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("850.00")
    shots(page, "refund-2-wallet-negative")
    page.goto("/admin/operations/dashboard/")
    expect(page.locator("#owed-card")).to_contain_text("850.00")
    expect(page.locator("#owed-card")).to_contain_text("1 host")
    shots(page, "refund-2-dashboard-owed")

    # The host's next booking payout (600.00 net) recovers 600.00 of it first: they still owe 250.00.
    second = make_booking(host, guest, total="700.00", commission="100.00")
    TransactionService.process_booking_payment(second, make_payment(second))
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("-250.00")
    with pytest.raises(Exception, match="Insufficient balance"):  # no withdrawal from a negative wallet
        TransactionService.initiate_withdrawal(wallet, bank_account, "10.00")
    page.goto(f"/admin/operations/wallets/{wallet.pk}/")
    expect(page.locator("main")).to_contain_text("600.00")  # the recovery, by that payout
    expect(page.locator("main")).to_contain_text("250.00")  # still owed
    shots(page, "refund-2-wallet-recovering")

    # A third payout clears it; the rest is the host's to withdraw.
    third = make_booking(host, guest, total="500.00", commission="50.00")
    TransactionService.process_booking_payment(third, make_payment(third))
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("200.00")
    assert HostReceivable.objects.get(wallet=wallet).outstanding == Decimal("0")

    # The host's statement says where the money went, on a phone too.
    statement = open_as(host, "/statement/", viewport=PHONE)
    expect(statement.locator("main")).to_contain_text("went below zero by NGN 850.00")
    expect(statement.locator("main")).to_contain_text("repaid what you owed")
    shots(statement, "refund-2-host-statement")
    assert failing_ledger_checks() == []
