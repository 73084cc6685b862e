"""Money traceable from any screen: the transaction page, the host's transaction page, the dashboard's figures."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from finance import staff_actions
from finance.models import Payment, WalletTransaction, WebhookEvent
from finance.services import TransactionService

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}


def test_finance_traces_a_refund_to_its_booking_payment_webhook_and_payout(open_as, finance_user, paid_booking):
    payment = Payment.objects.get(booking=paid_booking)
    payout = payment.ledger_transaction
    WebhookEvent.objects.create(
        provider="paystack",
        event_id="evt-4242",
        event_type="charge.success",
        raw_body="{}",
        outcome=WebhookEvent.Outcome.APPLIED,
        payment=payment,
    )
    refund = staff_actions.refund_booking(
        booking=paid_booking, amount="200.00", reason="Guest left early", actor=finance_user, idempotency_key="e2e-r1"
    ).result

    page = open_as(finance_user, f"/admin/operations/transactions/{refund.reference}/")
    expect(page.locator("#txn-reference")).to_have_text(refund.reference)
    expect(page.locator("#txn-heading")).to_contain_text("Refund NGN 170.00")
    expect(page.locator("#txn-direction")).to_have_text("Money out")
    expect(page.locator("#txn-actor")).to_have_text(finance_user.username)
    legs = page.locator("#txn-legs tbody tr")
    expect(legs).to_have_count(3)
    expect(page.locator("#txn-legs")).to_contain_text("Refunds payable")
    expect(page.locator("#txn-legs-sum")).to_contain_text("NGN 0.00 balanced")
    expect(page.locator("#txn-booking")).to_contain_text(f"#{paid_booking.pk}")
    expect(page.locator("#txn-booking")).to_contain_text(paid_booking.rental_property.title)
    expect(page.get_by_role("link", name=f"Refunds of booking #{paid_booking.pk}")).to_have_attribute(
        "href", f"/admin/operations/refunds/?booking={paid_booking.pk}"
    )
    expect(page.locator("#txn-payment")).to_contain_text(payment.reference)
    expect(page.locator("#payment-refunded")).to_have_text("NGN 200.00")
    expect(page.locator("#txn-webhooks")).to_contain_text("evt-4242")
    expect(page.locator("#txn-webhooks")).to_contain_text("Applied")
    expect(page.locator("#txn-staff-log")).to_contain_text("Issued a refund")
    expect(page.locator("#txn-staff-log")).to_contain_text("Guest left early")
    expect(page.locator("#txn-ledger-audit")).to_contain_text("Refund posted")
    shot(page, "money-trail-refund")

    # From the refund to the payout it draws on, and back.
    page.locator("#txn-related").get_by_role("link", name=payout.reference).click()
    expect(page.locator("#txn-reference")).to_have_text(payout.reference)
    expect(page.locator("#txn-heading")).to_contain_text("Booking payout NGN 850.00")
    expect(page.locator("#txn-related")).to_contain_text("host debited NGN 170.00, guest refunded NGN 200.00")
    expect(page.locator("#txn-webhooks")).to_contain_text("evt-4242")
    shot(page, "money-trail-payout")
    page.locator("#txn-related").get_by_role("link", name=refund.reference).click()
    expect(page.locator("#txn-reference")).to_have_text(refund.reference)

    phone = open_as(finance_user, f"/admin/operations/transactions/{refund.reference}/", viewport=PHONE)
    expect(phone.locator("#txn-legs-sum")).to_contain_text("balanced")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(phone, "money-trail-refund-390")


def test_a_reversed_transaction_links_to_its_reversal_and_back(open_as, finance_user, approver, funded_wallet):
    credit = TransactionService.credit_wallet(funded_wallet, Decimal("300.00"), description="Goodwill credit")
    request = staff_actions.request_reversal(
        txn=credit, reason="Posted twice", actor=finance_user, idempotency_key="e2e-rev"
    ).approval
    staff_actions.approve_request(request=request, actor=approver, note="Checked")
    reversal = WalletTransaction.objects.get(reverses=credit)

    page = open_as(finance_user, f"/admin/operations/transactions/{credit.reference}/")
    expect(page.locator("#txn-status")).to_have_text("Reversed")
    expect(page.locator("#txn-approvals")).to_contain_text("Approved")
    expect(page.locator("#txn-staff-log")).to_contain_text("Reversed a transaction")
    page.locator("#txn-reversed-note").get_by_role("link", name=reversal.reference).click()
    expect(page.locator("#txn-reference")).to_have_text(reversal.reference)
    expect(page.locator("#txn-heading")).to_contain_text("Reversal NGN 300.00")
    expect(page.locator("#txn-legs-sum")).to_contain_text("NGN 0.00 balanced")
    shot(page, "money-trail-reversal")
    page.locator("#txn-reverses-note").get_by_role("link", name=credit.reference).click()
    expect(page.locator("#txn-reference")).to_have_text(credit.reference)


def test_a_host_opens_a_statement_line_and_never_another_hosts(
    open_as, host, other_host, guest, paid_booking, make_booking, make_payment
):
    payout = WalletTransaction.objects.get(booking=paid_booking)
    theirs = make_booking(other_host, guest, total="2000.00", commission="200.00", country="KE")
    TransactionService.process_booking_payment(theirs, make_payment(theirs))
    other_reference = WalletTransaction.objects.get(booking=theirs).reference

    page = open_as(host, "/statement/")
    page.get_by_role("link", name=payout.reference).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Booking payout")
    expect(page.locator("#host-txn")).to_contain_text(payout.reference)
    expect(page.locator("#host-txn-amount")).to_have_text("NGN 850.00")
    expect(page.locator("#host-txn")).to_contain_text("NGN 1,000.00")
    expect(page.locator("#host-txn-booking")).to_contain_text(paid_booking.rental_property.title)
    expect(page.locator("#host-txn-booking")).to_contain_text(guest.first_name or guest.username)
    shot(page, "money-trail-host-transaction")
    phone = open_as(host, f"/statement/{payout.reference}/", viewport=PHONE)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(phone, "money-trail-host-transaction-390")

    response = page.goto(f"/statement/{other_reference}/")
    assert response.status == 404


def test_dashboard_figures_at_each_currencys_precision_with_exact_labels(
    open_as, finance_user, host, guest, make_booking, make_payment
):
    tnd = make_booking(host, guest, total="120.500", commission="12.050", currency="TND", country="TN")
    TransactionService.process_booking_payment(tnd, make_payment(tnd))
    TransactionService.process_refund(tnd, Decimal("20.250"), "partial")
    ugx = make_booking(host, guest, total="150000", commission="15000", currency="UGX", country="UG")
    TransactionService.process_booking_payment(ugx, make_payment(ugx))

    page = open_as(finance_user, "/admin/operations/dashboard/")
    expect(page.locator("#balances-TND")).to_contain_text("TND 90.225")  # 108.450 credited, 18.225 clawed back
    expect(page.locator("#balances-UGX")).to_contain_text("UGX 135,000")
    tnd_row, ugx_row = page.locator("#today-TND"), page.locator("#today-UGX")
    expect(tnd_row.locator('[data-label="Guest payments received"]')).to_have_text("TND 120.500 (1)")
    expect(tnd_row.locator('[data-label="Paid out to hosts (booking payouts)"]')).to_have_text("TND 108.450")
    expect(tnd_row.locator('[data-label="Refunded to guests"]')).to_have_text("TND 20.250 (1)")
    expect(tnd_row.locator('[data-label="Clawed back from hosts"]')).to_have_text("TND 18.225")
    expect(tnd_row.locator('[data-label="Commission returned"]')).to_have_text("TND 2.025")
    expect(ugx_row.locator('[data-label="Guest payments received"]')).to_have_text("UGX 150,000 (1)")
    expect(ugx_row.locator('[data-label="Paid out to hosts (booking payouts)"]')).to_have_text("UGX 135,000")
    expect(ugx_row.locator('[data-label="Reversals"]')).to_have_text("UGX 0 (0)")
    expect(page.locator("#today-hints")).to_contain_text("Clawed back from hosts")
    assert "0.0000" not in page.locator("main").inner_text()
    shot(page, "money-trail-dashboard")
    phone = open_as(finance_user, "/admin/operations/dashboard/", viewport=PHONE)
    expect(phone.locator("#today-TND")).to_contain_text("TND 18.225")
    shot(phone, "money-trail-dashboard-390")
