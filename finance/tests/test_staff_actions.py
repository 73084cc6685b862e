"""Staff actions: permission, four-eyes, money and the audit entry in one transaction."""

from decimal import Decimal

import pytest
from wagtail.models import ModelLogEntry

from finance import staff_actions
from finance.errors import AlreadyReversedError, InvalidStateError, PermissionDeniedError, TransactionError
from finance.models import ApprovalRequest, LedgerAudit, WalletTransaction, Withdrawal
from finance.services import TransactionService

pytestmark = pytest.mark.django_db


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2500.00"))


def test_withdrawal_above_threshold_needs_a_second_approver(settings, finance_user, approver, withdrawal):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000")}
    outcome = staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="t1")
    assert outcome.needs_approval
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING
    staff_actions.approve_request(request=outcome.approval, actor=approver)
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED


def test_audit_is_rolled_back_with_a_refused_action(finance_user, withdrawal):
    TransactionService.fail_withdrawal(withdrawal, "gone")
    with pytest.raises(TransactionError):
        staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="x")
    assert not ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").exists()


def test_every_staff_action_refuses_a_missing_actor(withdrawal, funded_wallet, paid_booking, unchanged):
    credit = funded_wallet.transactions.first()
    calls = [
        lambda: staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=None, idempotency_key="n1"),
        lambda: staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=None, reason="x", idempotency_key="n2"),
        lambda: staff_actions.refund_booking(
            booking=paid_booking, amount="10", reason="x", actor=None, idempotency_key="n3"
        ),
        lambda: staff_actions.request_reversal(txn=credit, reason="x", actor=None, idempotency_key="n4"),
    ]
    with unchanged():
        for call in calls:
            with pytest.raises(PermissionDeniedError):
                call()


def test_a_reason_is_required_and_nothing_moves_without_one(finance_user, withdrawal, funded_wallet, unchanged):
    with unchanged():
        for blank in ("", "   ", None):
            with pytest.raises(TransactionError) as refused:
                staff_actions.fail_withdrawal(
                    withdrawal=withdrawal, actor=finance_user, reason=blank, idempotency_key="f"
                )
            assert refused.value.details == {"field": "reason"}
            with pytest.raises(TransactionError):
                staff_actions.request_reversal(
                    txn=funded_wallet.transactions.first(), reason=blank, actor=finance_user, idempotency_key="r"
                )


def test_rejecting_needs_a_note_and_the_approve_permission(settings, finance_user, approver, withdrawal):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000")}
    request = staff_actions.complete_withdrawal(
        withdrawal=withdrawal, actor=finance_user, idempotency_key="t2"
    ).approval
    with pytest.raises(PermissionDeniedError):
        staff_actions.reject_request(request=request, actor=finance_user, note="no")
    with pytest.raises(TransactionError):
        staff_actions.reject_request(request=request, actor=approver, note=" ")
    staff_actions.reject_request(request=request, actor=approver, note="Bank details look wrong")
    request.refresh_from_db()
    withdrawal.refresh_from_db()
    assert request.status == ApprovalRequest.Status.REJECTED and request.approved_by == approver
    assert withdrawal.status == Withdrawal.Status.PENDING
    assert ModelLogEntry.objects.filter(action="stayafrica.approval.reject").count() == 1


def test_staff_permission_is_checked_in_the_staff_action(settings, funded_wallet, support_user, finance_user, approver):
    credit = TransactionService.credit_wallet(funded_wallet, "10")
    with pytest.raises(PermissionDeniedError):
        staff_actions.request_reversal(txn=credit, reason="nope", actor=support_user, idempotency_key="p1")
    request = staff_actions.request_reversal(txn=credit, reason="ok", actor=finance_user, idempotency_key="p2").approval
    with pytest.raises(PermissionDeniedError):
        staff_actions.approve_request(request=request, actor=support_user)
    staff_actions.approve_request(request=request, actor=approver)
    assert LedgerAudit.objects.filter(actor=finance_user, action="transaction.reversal").exists()


# --- a reversal that could never be carried out is refused when it is filed -------------------


def test_reversing_a_booking_payment_that_has_refunds_is_refused_when_filed(
    settings, finance_user, paid_booking, unchanged
):
    staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Late check-in", actor=finance_user, idempotency_key="rf"
    )
    payout = WalletTransaction.objects.get(type="booking_payment", booking=paid_booking)
    with unchanged():
        with pytest.raises(InvalidStateError, match="Refunds were issued against this payment"):
            staff_actions.request_reversal(txn=payout, reason="Fraud", actor=finance_user, idempotency_key="rv")
    assert not ApprovalRequest.objects.filter(kind="reversal").exists()


def test_reversing_what_was_reversed_or_waits_for_a_reversal_is_refused_when_filed(
    finance_user, approver, funded_wallet
):
    credit = TransactionService.credit_wallet(funded_wallet, "10")
    staff_actions.request_reversal(txn=credit, reason="Twice", actor=finance_user, idempotency_key="a")
    with pytest.raises(InvalidStateError, match="already waiting for approval"):
        staff_actions.request_reversal(txn=credit, reason="Twice", actor=approver, idempotency_key="b")
    staff_actions.approve_request(request=ApprovalRequest.objects.get(), actor=approver)
    with pytest.raises(AlreadyReversedError, match="already been reversed"):
        staff_actions.request_reversal(txn=credit, reason="Again", actor=approver, idempotency_key="c")
    assert ApprovalRequest.objects.count() == 1


# --- idempotency keys are scoped to the staff member and the operation -------------------------


def test_a_key_sent_by_another_staff_member_never_returns_their_result(paid_booking, finance_user, make_user):
    other = make_user(groups=["Finance"])
    mine = staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Pool closed", actor=finance_user, idempotency_key="K"
    ).result
    theirs = staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Pool closed", actor=other, idempotency_key="K"
    ).result
    assert theirs.pk != mine.pk, "the second person's refund was answered with the first person's"
    assert WalletTransaction.objects.filter(type="refund").count() == 2
    assert ModelLogEntry.objects.filter(action="stayafrica.refund").count() == 2  # each has their audit entry


def test_a_key_sent_by_another_staff_member_cannot_block_their_approval(
    settings, funded_wallet, bank_account, finance_user, approver, make_user
):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000")}
    intruder = make_user(groups=["Finance"])
    theirs = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))
    mine = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2500.00"))
    filed_first = staff_actions.complete_withdrawal(withdrawal=theirs, actor=intruder, idempotency_key="K").approval
    request = staff_actions.complete_withdrawal(withdrawal=mine, actor=finance_user, idempotency_key="K").approval
    assert request.pk != filed_first.pk and request.withdrawal_id == mine.pk
    assert request.requested_by == finance_user
    staff_actions.approve_request(request=request, actor=approver)
    mine.refresh_from_db()
    assert mine.status == Withdrawal.Status.COMPLETED


def test_one_key_used_for_two_operations_acts_twice(settings, funded_wallet, bank_account, finance_user):
    first = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))
    second = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2000.00"))
    staff_actions.complete_withdrawal(withdrawal=first, actor=finance_user, idempotency_key="K")
    staff_actions.fail_withdrawal(withdrawal=second, actor=finance_user, reason="Closed", idempotency_key="K")
    assert {w.status for w in Withdrawal.objects.all()} == {"completed", "failed"}
