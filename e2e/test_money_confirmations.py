"""Issue 15: nothing is confirmed that cannot happen; approvals that keep history and tell people."""

from decimal import Decimal

import pytest
from django.core import mail
from playwright.sync_api import expect

from finance import staff_actions
from finance.models import ApprovalRequest, Wallet, WalletTransaction
from finance.services import TransactionService

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def thin_host_booking(host, guest, make_booking, make_payment):
    """300,000.00 paid (30,000.00 commission); the host kept 243,000.00 of the 270,000.00 payout
    (a refund beyond that takes their wallet below zero: e2e/test_refunds.py)."""
    booking = make_booking(host, guest, total="300000.00", commission="30000.00")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    TransactionService.debit_wallet(Wallet.objects.get(user=host, currency="NGN"), Decimal("27000.00"))
    return booking


def test_a_refund_is_refused_at_review_when_it_could_not_happen_and_typed_amounts_are_accepted(
    open_as, finance_user, thin_host_booking
):
    page = open_as(finance_user, f"/admin/operations/refunds/?booking={thin_host_booking.pk}")
    amount = page.get_by_label("Amount to refund")
    expect(amount).to_have_value("")
    expect(page.locator("#id_amount-help")).to_contain_text("At most NGN 300,000.00")
    amount.fill("300,001")
    page.get_by_label("Reason (required)").fill("Flooded bathroom")
    page.get_by_role("button", name="Review refund").click()
    expect(page.locator("#id_amount-error")).to_contain_text("At most NGN 300,000.00 can still be refunded")
    expect(page.get_by_role("group", name="Confirm refund")).to_have_count(0)
    expect(page.get_by_text("Refund NGN 300,001.00")).to_have_count(0)
    expect(amount).to_have_value("300,001")  # as typed
    shot(page, "refund-refused-at-review")

    amount.fill("50,000")
    page.get_by_role("button", name="Review refund").click()
    confirmation = page.get_by_role("group", name="Confirm refund")
    expect(confirmation).to_contain_text("Refund NGN 50,000.00 to")
    expect(confirmation).to_contain_text("NGN 50,000.00 goes back to")
    expect(confirmation).to_contain_text("gives back NGN 45,000.00 and platform revenue NGN 5,000.00")
    expect(confirmation).to_contain_text("from NGN 243,000.00 to NGN 198,000.00")
    shot(page, "refund-confirm-split")
    confirmation.get_by_role("button", name="Yes, refund").click()
    expect(page.locator(".messages")).to_contain_text("Refunded NGN 50,000.00")
    expect(page.locator("#refundable")).to_have_text("NGN 250,000.00")
    expect(page.get_by_label("Amount to refund")).to_have_value("")  # nothing re-armed
    shot(page, "refund-done-empty-form")
    assert WalletTransaction.objects.get(type="refund").amount == Decimal("45000.00")

    phone = open_as(finance_user, f"/admin/operations/refunds/?booking={thin_host_booking.pk}", viewport=PHONE)
    phone.get_by_label("Amount to refund").fill("1,000.50")
    phone.get_by_label("Reason (required)").fill("Late check-in")
    phone.get_by_role("button", name="Review refund").click()
    expect(phone.get_by_role("group", name="Confirm refund")).to_contain_text("Refund NGN 1,000.50")
    shot(phone, "refund-confirm-split-phone")


def test_the_transaction_list_offers_reverse_only_where_it_can_be_and_shows_pending_reversals(
    open_as, finance_user, paid_booking, funded_wallet
):
    credit = funded_wallet.transactions.get(type="credit")
    payout = WalletTransaction.objects.get(type="booking_payment", booking=paid_booking)
    filed = staff_actions.request_reversal(txn=credit, reason="Posted twice", actor=finance_user, idempotency_key="r1")
    staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Late", actor=finance_user, idempotency_key="rf"
    )
    refund = WalletTransaction.objects.get(type="refund")
    page = open_as(finance_user, "/admin/operations/transactions/")
    expect(page.get_by_role("link", name=f"Reverse {refund.reference}")).to_be_visible()
    expect(page.get_by_role("link", name=f"Reverse {payout.reference}")).to_have_count(0)
    expect(page.get_by_role("link", name=f"Reverse {credit.reference}")).to_have_count(0)
    pending = page.get_by_role("link", name=f"Reversal pending #{filed.approval.pk}")
    expect(pending).to_be_visible()
    shot(page, "transactions-reverse-and-pending")
    pending.click()
    expect(page).to_have_url(f"{page.url.split('#')[0]}#approval-{filed.approval.pk}")
    expect(page.locator(f"#approval-{filed.approval.pk}")).to_contain_text("Posted twice")


def test_approvals_keep_the_note_when_they_fail_confirm_rejections_and_tell_the_requester(
    open_as, settings, finance_user, approver, paid_booking
):
    settings.APPROVAL_THRESHOLDS = {}  # every refund waits for a second approver
    request = staff_actions.refund_booking(
        booking=paid_booking, amount="1000.00", reason="Guest cancelled", actor=finance_user, idempotency_key="k1"
    ).approval
    # Meanwhile the host's wallet was frozen: nothing can be taken from it, so the refund cannot happen.
    Wallet.objects.filter(user=paid_booking.rental_property.host).update(status=Wallet.Status.FROZEN)
    mail.outbox.clear()

    page = open_as(approver, "/admin/")
    page.get_by_role("button", name="Operations").click()
    expect(page.get_by_role("link", name="Approvals: 1 request waiting")).to_be_visible()
    shot(page, "menu-approvals-waiting")
    page.get_by_role("link", name="Approvals: 1 request waiting").click()

    row = page.locator(f"#approval-{request.pk}")
    expect(row).to_contain_text("No approval threshold is configured for NGN")
    expect(row.get_by_role("link", name=f"booking #{paid_booking.pk}")).to_be_visible()
    row.get_by_label("Note or reason for rejecting").fill("Checked with the guest")
    row.get_by_role("button", name="Approve").click()
    page.get_by_role("group", name=f"Confirm approval of request #{request.pk}").get_by_role(
        "button", name="Yes, approve"
    ).click()
    row = page.locator(f"#approval-{request.pk}")
    expect(row.get_by_role("alert")).to_contain_text(f"Request #{request.pk} could not be carried out")
    expect(row.get_by_role("alert")).to_contain_text("wallet is frozen")
    expect(row.get_by_label("Note or reason for rejecting")).to_have_value("Checked with the guest")
    shot(page, "approval-failed-keeps-note")
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"
    assert not WalletTransaction.objects.filter(type="refund").exists()
    assert "not carried out" in mail.outbox[-1].subject

    row.get_by_label("Note or reason for rejecting").fill(
        "The host's wallet is frozen; refund the guest once it is active"
    )
    row.get_by_role("button", name="Reject").click()
    confirmation = page.get_by_role("group", name=f"Confirm rejection of request #{request.pk}")
    expect(confirmation).to_contain_text("Nothing moves")
    expect(confirmation).to_contain_text("The host's wallet is frozen; refund the guest once it is active")
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"  # nothing before "Yes"
    shot(page, "approval-reject-confirm")
    confirmation.get_by_role("button", name="Yes, reject").click()
    expect(page.locator(".messages")).to_contain_text(f"Refund #{request.pk} rejected")
    decided = page.locator("#decided-approvals")
    expect(decided).to_contain_text(f"by {approver}")
    expect(decided).to_contain_text("The host's wallet is frozen; refund the guest once it is active")
    expect(page.locator("#pending-approvals")).to_have_count(0)
    shot(page, "approvals-history")

    told = mail.outbox[-1]
    assert told.to == [finance_user.email]
    assert told.subject.startswith(f"Request #{request.pk} rejected")
    assert (
        "The host's wallet is frozen; refund the guest once it is active" in told.body and f"by {approver}" in told.body
    )

    phone = open_as(approver, "/admin/operations/approvals/", viewport=PHONE)
    expect(phone.locator("#decided-approvals")).to_contain_text("Rejected")
    shot(phone, "approvals-history-phone")
