"""Staff actions: permission, four-eyes, money and the audit entry in one transaction."""

from decimal import Decimal

import pytest
from wagtail.models import ModelLogEntry

from finance import staff_actions
from finance.errors import PermissionDeniedError, TransactionError
from finance.models import ApprovalRequest, LedgerAudit, Withdrawal
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
