"""The transaction page (portal/views/transactions.py, portal.selectors.transaction_trail)."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from finance import approvals, staff_actions
from finance.models import LedgerAudit, Payment, WalletTransaction, WebhookEvent
from finance.services import TransactionService
from portal import selectors

pytestmark = pytest.mark.django_db


def page(client, user, reference):
    client.force_login(user)
    return client.get(reverse("ops_transactions:detail", args=[reference]))


def text(response) -> str:
    """The page's visible text, tags dropped and blanks collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


@pytest.fixture
def refunded(paid_booking, finance_user):
    """The paid NGN booking, refunded 200.00 by a finance user (a staff action, so logged), with its
    provider webhook event."""
    payment = Payment.objects.get(booking=paid_booking)
    WebhookEvent.objects.create(
        provider="sandbox",
        event_id="evt-1",
        event_type="charge.success",
        raw_body="{}",
        outcome="applied",
        payment=payment,
    )
    outcome = staff_actions.refund_booking(
        booking=paid_booking, amount="200.00", reason="Guest left early", actor=finance_user, idempotency_key="r1"
    )
    return payment.ledger_transaction, outcome.result


def test_refund_page_shows_its_booking_payment_webhook_payout_and_audit(client, finance_user, refunded):
    payout, refund = refunded
    response = page(client, finance_user, refund.reference)
    assert response.status_code == 200
    body = text(response)
    # Header: the host's debit (200.00 less the 30.00 commission returned), at NGN's precision.
    assert "Refund NGN 170.00" in body and "Money out" in body and "Completed" in body
    assert f"By {finance_user.username}" in body
    # Legs: host wallet −170.00, platform revenue −30.00, refunds payable +200.00: zero.
    assert "NGN -170.00" in body and "NGN -30.00" in body and "+NGN 200.00" in body
    assert "Sum of the legs NGN 0.00 balanced" in body
    assert f"#{payout.booking_id}" in body and "Refunds of booking" in body
    payment = Payment.objects.get(ledger_transaction=payout)
    assert payment.reference in body and "Refunded so far NGN 200.00" in body
    assert "evt-1" in body and "Applied" in body
    html = response.content.decode()
    assert f'href="{reverse("ops_transactions:detail", args=[payout.reference])}"' in html  # the payout it draws on
    assert "This refund" in body and "guest refunded NGN 200.00" in body
    # Audit: the staff action (Wagtail's log, on the booking) and the ledger's own row.
    assert "Issued a refund" in body and "Guest left early" in body
    assert "Refund posted" in body
    assert "NGN 850.00 → NGN 680.00" in body  # the ledger audit row: the host's balance before and after


def test_payout_page_links_to_its_refunds(client, finance_user, refunded):
    payout, refund = refunded
    response = page(client, finance_user, payout.reference)
    body, html = text(response), response.content.decode()
    assert "Booking payout NGN 850.00" in body
    assert "NGN -1,000.00" in body and "+NGN 150.00" in body and "+NGN 850.00" in body
    assert f'href="{reverse("ops_transactions:detail", args=[refund.reference])}"' in html
    assert "host debited NGN 170.00, guest refunded NGN 200.00" in body
    assert "Issued a refund" in body  # the booking's refund, logged on the booking
    assert "evt-1" in body


def test_reversal_and_original_link_to_each_other_with_the_approval(client, finance_user, approver, funded_wallet):
    credit = TransactionService.credit_wallet(funded_wallet, Decimal("300.00"), description="Goodwill")
    request = staff_actions.request_reversal(
        txn=credit, reason="Posted twice", actor=finance_user, idempotency_key="rev1"
    ).approval
    staff_actions.approve_request(request=request, actor=approver, note="ok")
    reversal = WalletTransaction.objects.get(reverses=credit)

    original = page(client, finance_user, credit.reference)
    body, html = text(original), original.content.decode()
    assert "Reversed" in body and f"Reversed by {reversal.reference}" in body
    assert f'href="{reverse("ops_transactions:detail", args=[reversal.reference])}"' in html
    assert f"#{request.pk}" in body and "Approved" in body and approver.username in body
    assert "Reversed a transaction" in body and "Posted twice" in body

    back = page(client, finance_user, reversal.reference)
    body, html = text(back), back.content.decode()
    assert f"This reverses {credit.reference}" in body
    assert f'href="{reverse("ops_transactions:detail", args=[credit.reference])}"' in html
    assert "Reversed a transaction" in body  # logged on the original, naming this reversal
    assert f"#{request.pk}" in body


def test_withdrawal_page_shows_the_bank_account_and_who_completed_it(client, finance_user, funded_wallet, bank_account):
    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))
    staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="w1")
    body = text(page(client, finance_user, withdrawal.transaction.reference))
    assert withdrawal.reference in body and "GTBank •••• 4321" in body
    assert f"by {finance_user.username}" in body and "Completed a withdrawal" in body
    assert "Withdrawal posted" in body and "Withdrawal completed" in body
    assert "Not part of a booking." in body and "No guest payment behind this movement." in body


def test_a_manual_credit_has_clear_empty_states(client, finance_user, funded_wallet):
    credit = funded_wallet.transactions.get()
    body = text(page(client, finance_user, credit.reference))
    assert "By system" in body
    for empty in (
        "Not part of a booking.",
        "Not a withdrawal.",
        "No guest payment behind this movement.",
        "Not reversed.",
        "No approval requests about this transaction.",
        "No webhook event: no provider payment is behind this movement.",
        "No staff action recorded about it.",
    ):
        assert empty in body, empty


@pytest.mark.parametrize(
    "reference", ["TXN-NOSUCHTHING", "X" * 33, "TXN-" + "9" * 300, "TXN-%00", "TXN-%C3%A9", "..", "TXN-'--"]
)
def test_unknown_or_malformed_references_answer_404(client, finance_user, reference):
    client.force_login(finance_user)
    assert client.get(f"/admin/operations/transactions/{reference}/").status_code == 404


def test_people_without_the_permission_are_refused(client, support_user, host, funded_wallet):
    credit = funded_wallet.transactions.get()
    response = page(client, support_user, credit.reference)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert page(client, host, credit.reference)["Location"] == "/statement/"
    # Refused before the lookup: an unknown reference answers the same, so nothing leaks.
    assert page(client, support_user, "TXN-NOSUCHTHING")["Location"] == "/admin/"


def test_the_page_reads_a_fixed_number_of_queries(client, finance_user, refunded, django_assert_max_num_queries):
    payout, refund = refunded
    client.force_login(finance_user)
    client.get(reverse("ops_transactions:detail", args=[refund.reference]))  # warm caches (content types, session)
    for _ in range(3):  # more refunds, entries, log rows: the same number of queries
        staff_actions.refund_booking(
            booking=payout.booking, amount="10.00", reason="more", actor=finance_user, idempotency_key=f"k{_}"
        )
    with django_assert_max_num_queries(20):
        assert client.get(reverse("ops_transactions:detail", args=[payout.reference])).status_code == 200


def test_trail_selector_finds_the_ledger_audit_row_and_actor(finance_user, refunded):
    _, refund = refunded
    trail = selectors.transaction_trail(refund.reference)
    assert [a.pk for a in trail.ledger_audit] == list(
        LedgerAudit.objects.filter(transaction=refund).values_list("pk", flat=True)
    )
    assert trail.actor == finance_user and trail.entries_total == 0 and trail.payout is not None
    assert selectors.transaction_trail("nope nope") is None


def test_a_pending_approval_links_to_the_approvals_page(client, finance_user, paid_booking, settings):
    settings.APPROVAL_THRESHOLDS = {**settings.APPROVAL_THRESHOLDS, "NGN": Decimal("100.00")}
    outcome = staff_actions.refund_booking(
        booking=paid_booking, amount="500.00", reason="Big", actor=finance_user, idempotency_key="big"
    )
    assert outcome.needs_approval and approvals.threshold("NGN") == Decimal("100.00")
    payout = Payment.objects.get(booking=paid_booking).ledger_transaction
    html = page(client, finance_user, payout.reference).content.decode()
    assert f'href="{reverse("ops_approvals:index")}#approval-{outcome.approval.pk}"' in html
    assert "Requested a second approval" in text(page(client, finance_user, payout.reference))
