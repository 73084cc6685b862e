"""Four-eyes rules (finance/approvals.py): when a refund or a withdrawal completion waits for a
second person, counted over what all staff moved for one host, per currency, in the window."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from wagtail.models import ModelLogEntry

from finance import approvals, staff_actions
from finance.errors import InvalidStateError
from finance.models import ApprovalRequest, WalletTransaction, Withdrawal
from finance.services import TransactionService

pytestmark = pytest.mark.django_db


@pytest.fixture
def threshold_2000(settings):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("2000.00")}
    settings.APPROVAL_WINDOW_HOURS = 24


@pytest.fixture
def paid_bookings(host, guest, funded_wallet, make_booking, make_payment):
    """Five paid 1,000.00 NGN bookings of one host (whose wallet also holds 10,000.00)."""

    def pay(booking):
        TransactionService.process_booking_payment(booking, make_payment(booking))
        return booking

    return [pay(make_booking(host, guest, total="1000.00", commission="150.00")) for _ in range(5)]


def refund(booking, actor, key, amount="1000.00"):
    return staff_actions.refund_booking(
        booking=booking, amount=amount, reason="Guest cancelled", actor=actor, idempotency_key=key
    )


def test_a_currency_without_a_threshold_needs_a_second_approver_for_every_refund_and_completion(
    settings, host, guest, finance_user, approver, make_booking, make_payment, bank_account
):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("2000.00")}  # nothing for EUR or XOF
    booking = make_booking(host, guest, total="100.00", commission="10.00", currency="EUR")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    outcome = refund(booking, finance_user, "eur-1", amount="1.00")
    assert outcome.needs_approval, "one euro refunded without anybody else looking"
    assert outcome.approval.approval_reason == (
        "No approval threshold is configured for EUR: every refund needs a second approver."
    )
    assert not WalletTransaction.objects.filter(type="refund").exists()

    wallet = TransactionService.create_wallet(host, "XOF")
    TransactionService.credit_wallet(wallet, "50000")
    withdrawal = TransactionService.initiate_withdrawal(wallet, bank_account, "100")
    outcome = staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=finance_user, idempotency_key="xof-1")
    assert outcome.needs_approval
    assert "No approval threshold is configured for XOF" in outcome.approval.approval_reason
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING
    staff_actions.approve_request(request=outcome.approval, actor=approver)
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED


def test_five_refunds_of_1000_under_a_2000_threshold_need_an_approver_after_the_second(
    threshold_2000, paid_bookings, make_user
):
    """Whether one person files them or five: the third refund in the window waits."""
    staff = [make_user(groups=["Finance"]) for _ in range(5)]
    outcomes = [
        refund(booking, person, f"k{i}") for i, (booking, person) in enumerate(zip(paid_bookings, staff, strict=True))
    ]
    assert [o.needs_approval for o in outcomes] == [False, False, True, True, True]
    reason = outcomes[2].approval.approval_reason
    assert reason.startswith(f"NGN 3,000.00 moved for host {paid_bookings[0].rental_property.host} within 24 h")
    assert "would exceed the NGN 2,000.00 threshold" in reason
    entry = ModelLogEntry.objects.filter(action="stayafrica.approval.request").first()
    assert "would exceed the NGN 2,000.00 threshold" in entry.data["approval_reason"]


def test_one_person_filing_five_refunds_gets_the_same_limit(threshold_2000, paid_bookings, finance_user):
    outcomes = [refund(booking, finance_user, f"one-{i}") for i, booking in enumerate(paid_bookings)]
    assert sum(not o.needs_approval for o in outcomes) == 2


def test_withdrawal_completions_and_refunds_share_the_hosts_window(
    threshold_2000, paid_bookings, finance_user, bank_account, funded_wallet
):
    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, bank_account, "1500.00")
    assert not staff_actions.complete_withdrawal(
        withdrawal=withdrawal, actor=finance_user, idempotency_key="w"
    ).needs_approval
    outcome = refund(paid_bookings[0], finance_user, "r", amount="600.00")
    assert outcome.needs_approval and "NGN 2,100.00 moved" in outcome.approval.approval_reason
    assert not refund(paid_bookings[0], finance_user, "r2", amount="500.00").needs_approval  # exactly 2,000: allowed


def test_what_moved_before_the_window_or_with_an_approver_does_not_count(
    settings, threshold_2000, paid_bookings, finance_user, approver
):
    refund(paid_bookings[0], finance_user, "old-1")
    refund(paid_bookings[1], finance_user, "old-2")
    waiting = refund(paid_bookings[2], finance_user, "old-3").approval
    staff_actions.approve_request(request=waiting, actor=approver)  # approved: someone looked at it
    assert refund(paid_bookings[3], finance_user, "now-1").needs_approval

    WalletTransaction.objects.filter(type="refund").update(created_at=timezone.now() - timedelta(hours=25))
    assert not refund(paid_bookings[3], finance_user, "now-2").needs_approval
    settings.APPROVAL_WINDOW_HOURS = 48  # a longer window sees the old ones again
    assert refund(paid_bookings[4], finance_user, "now-3").needs_approval


def test_a_replayed_key_gets_its_first_result_whatever_the_window_says_now(threshold_2000, paid_bookings, finance_user):
    first = refund(paid_bookings[0], finance_user, "same")
    refund(paid_bookings[1], finance_user, "fill")
    again = refund(paid_bookings[0], finance_user, "same")
    assert not again.needs_approval and again.result.pk == first.result.pk
    assert WalletTransaction.objects.filter(type="refund").count() == 2


def test_moved_without_approval_counts_the_guests_refund_not_only_the_hosts_share(
    threshold_2000, paid_bookings, finance_user
):
    refund(paid_bookings[0], finance_user, "m")
    wallet = WalletTransaction.objects.get(type="refund").wallet
    assert approvals.moved_without_approval(wallet) == Decimal("1000.00")


# --- the race: filers in several threads, each with its own connection -----------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("filers", ["one person", "five people"])
def test_concurrent_refunds_never_move_more_than_the_threshold_without_an_approver(
    settings, make_user, make_booking, make_payment, filers
):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("2000.00")}
    settings.APPROVAL_WINDOW_HOURS = 24
    host, guest = make_user("host"), make_user("guest")
    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, Decimal("10000.00"))
    bookings = []
    for _ in range(5):
        booking = make_booking(host, guest, total="1000.00", commission="150.00")
        TransactionService.process_booking_payment(booking, make_payment(booking))
        bookings.append(booking)
    one = make_user(groups=["Finance"])
    staff = [one] * 5 if filers == "one person" else [make_user(groups=["Finance"]) for _ in range(5)]

    start = threading.Barrier(5)
    outcomes, errors = [], []

    def file(booking, person, i):
        try:
            start.wait(timeout=30)
            outcomes.append(refund(booking, person, f"race-{i}"))
        except Exception as error:  # a deadlock would land here
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=file, args=(b, p, i)) for i, (b, p) in enumerate(zip(bookings, staff, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a filer hung"
    assert errors == []

    refunded = sum(Decimal(t.metadata["refund_amount"]) for t in WalletTransaction.objects.filter(type="refund"))
    assert refunded == Decimal("2000.00"), "more than the threshold moved without a second approver"
    assert sum(o.needs_approval for o in outcomes) == 3
    assert ApprovalRequest.objects.filter(status="pending", kind="refund").count() == 3
    call_command("check_ledger", stdout=open("/dev/null", "w"))


@pytest.mark.django_db(transaction=True)
def test_two_people_filing_the_same_reversal_at_once_queue_one_request(make_user, funded_wallet):
    credit = TransactionService.credit_wallet(funded_wallet, Decimal("10.00"))
    filers = [make_user(groups=["Finance"]) for _ in range(4)]
    start = threading.Barrier(len(filers))
    refusals, errors = [], []

    def file(person, i):
        try:
            start.wait(timeout=30)
            staff_actions.request_reversal(txn=credit, reason="Posted twice", actor=person, idempotency_key=f"rv-{i}")
        except InvalidStateError as refusal:
            refusals.append(str(refusal))
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=file, args=(person, i)) for i, person in enumerate(filers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a filer hung"
    assert errors == []
    assert ApprovalRequest.objects.filter(kind="reversal", status="pending").count() == 1
    # Whether a filer saw the first request committed or met it on the database's index, it
    # is told the reversal is already waiting.
    assert len(refusals) == len(filers) - 1
    assert all("already waiting for approval" in refusal for refusal in refusals), refusals


# --- issue 15: refunds reviewed as carried out, reversal states, the requester told ----------------


@pytest.fixture
def thin_host_booking(host, guest, make_booking, make_payment):
    """A paid 300,000.00 NGN booking (30,000.00 commission) whose host kept 243,000.00 of the
    270,000.00 payout: at most 270,000.00 can be refunded now (the host gives back 90% of it)."""
    from finance.models import Wallet

    booking = make_booking(host, guest, total="300000.00", commission="30000.00")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    wallet = Wallet.objects.get(user=host, currency="NGN")
    TransactionService.debit_wallet(wallet, Decimal("27000.00"))
    return booking


def test_refund_split_is_what_the_refund_posts(paid_booking):
    from finance.models import Payment
    from finance.services import refund_split

    payment = Payment.objects.get(booking=paid_booking)
    split = refund_split(payment, Decimal("333.33"))
    assert split == (Decimal("333.33"), Decimal("50.00"), Decimal("283.33"))
    assert split.guest_refund == split.commission_back + split.host_debit
    txn = TransactionService.process_refund(paid_booking, Decimal("333.33"), "Pool closed")
    assert txn.amount == split.host_debit
    assert Decimal(txn.metadata["commission_clawback"]) == split.commission_back
    payment.refresh_from_db()  # the last refund takes whatever commission is left
    assert refund_split(payment, payment.refundable_amount).commission_back == Decimal("100.00")


def test_a_refund_the_host_cannot_cover_is_checked_and_its_effect_described(thin_host_booking, settings):
    """Issue 18: the host's wallet no longer limits a refund; it may go below zero, and how far
    decides whether a second approver is needed."""
    payment, split = staff_actions.check_refund(thin_host_booking, Decimal("300000.00"))
    wallet = payment.ledger_transaction.wallet
    assert split.host_debit == Decimal("270000.00")
    assert staff_actions.refund_limit(payment, wallet) == Decimal("300000.00")
    effect = staff_actions.refund_effect(payment, wallet, Decimal("300000.00"))
    assert effect.available_before == Decimal("243000.00")
    assert effect.available_after == Decimal("-27000.00")
    assert effect.new_receivable == Decimal("27000.00")
    assert effect.approval_reason == ""  # within NGN's 100,000.00 below zero
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"NGN": Decimal("20000.00")}
    assert staff_actions.refund_effect(payment, wallet, Decimal("300000.00")).approval_reason == (
        "This refund would leave the host's wallet at −NGN 27,000.00, beyond the NGN 20,000.00 a refund "
        "may take a host below zero without a second approver."
    )


def test_a_frozen_host_wallet_is_refused_at_review(paid_booking):
    from finance.errors import WalletNotActiveError
    from finance.models import Wallet

    Wallet.objects.filter(user=paid_booking.rental_property.host).update(status=Wallet.Status.FROZEN)
    with pytest.raises(WalletNotActiveError, match="wallet is frozen"):
        staff_actions.check_refund(paid_booking, Decimal("10.00"))


def test_reversal_states_say_what_check_reversible_says_in_one_query(
    paid_booking, funded_wallet, finance_user, django_assert_num_queries
):
    credit = funded_wallet.transactions.get(type="credit")
    payout = WalletTransaction.objects.get(type="booking_payment", booking=paid_booking)
    filed = staff_actions.request_reversal(txn=credit, reason="Twice", actor=finance_user, idempotency_key="r1")
    refund(paid_booking, finance_user, "rf", amount="100.00")
    refunded = WalletTransaction.objects.get(type="refund")
    txns = list(WalletTransaction.objects.all())
    with django_assert_num_queries(1):
        states = staff_actions.reversal_states(txns)
    assert states[credit.pk] == staff_actions.ReversalState(reversible=False, pending=filed.approval.pk)
    assert states[payout.pk] == staff_actions.ReversalState(reversible=False)  # refunds first
    assert states[refunded.pk] == staff_actions.ReversalState(reversible=True)
    for txn in txns:  # the same answer as the full check, row by row
        try:
            staff_actions.check_reversible(txn)
            reversible = True
        except (InvalidStateError, Exception):
            reversible = False
        assert states.get(txn.pk, staff_actions.ReversalState()).reversible == reversible


def test_the_requester_is_emailed_the_outcome(
    settings, paid_booking, finance_user, approver, mailoutbox, django_capture_on_commit_callbacks
):
    settings.APPROVAL_THRESHOLDS = {}
    settings.WAGTAILADMIN_BASE_URL = "https://ops.example"
    first = refund(paid_booking, finance_user, "k1", amount="100.00").approval
    with django_capture_on_commit_callbacks(execute=True):
        staff_actions.approve_request(request=first, actor=approver, note="Checked the booking")
    first.refresh_from_db()
    (mail,) = mailoutbox
    assert mail.to == [finance_user.email]
    assert mail.subject == f"Request #{first.pk} approved: refund of NGN 100.00 for booking #{paid_booking.pk}"
    assert f"was approved by {approver}" in mail.body
    assert first.result_reference in mail.body and "Checked the booking" in mail.body
    assert f"https://ops.example/admin/operations/approvals/#approval-{first.pk}" in mail.body

    second = refund(paid_booking, finance_user, "k2", amount="100.00").approval
    with django_capture_on_commit_callbacks(execute=True):
        staff_actions.reject_request(request=second, actor=approver, note="Guest already compensated")
    assert mailoutbox[1].subject.startswith(f"Request #{second.pk} rejected")
    assert "Guest already compensated" in mailoutbox[1].body and "Nothing was moved" in mailoutbox[1].body


def test_an_approval_that_cannot_be_carried_out_changes_nothing_and_tells_the_requester(
    settings, paid_booking, finance_user, approver, mailoutbox, django_capture_on_commit_callbacks, unchanged
):
    from finance.errors import WalletNotActiveError
    from finance.models import Wallet

    settings.APPROVAL_THRESHOLDS = {}
    request = refund(paid_booking, finance_user, "k1", amount="1000.00").approval
    # The host's wallet was frozen meanwhile (spending their money no longer stops a refund).
    Wallet.objects.filter(user=paid_booking.rental_property.host).update(status=Wallet.Status.FROZEN)
    with unchanged(), django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(WalletNotActiveError) as refused:
            staff_actions.approve_request(request=request, actor=approver, note="Fine by me")
    assert "wallet is frozen" in refused.value.message
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.PENDING and request.approved_by is None
    assert not ModelLogEntry.objects.filter(action="stayafrica.approval.approve").exists()
    (mail,) = mailoutbox
    assert mail.subject.startswith(f"Request #{request.pk} not carried out")
    assert refused.value.message in mail.body and "still waiting" in mail.body


def test_refusing_to_decide_ones_own_request_sends_nothing(settings, paid_booking, finance_user, mailoutbox):
    from finance.errors import PermissionDeniedError

    settings.APPROVAL_THRESHOLDS = {}
    request = refund(paid_booking, finance_user, "k1", amount="10.00").approval
    finance_user.groups.add(*approvals_group())
    with pytest.raises(PermissionDeniedError):
        staff_actions.approve_request(request=request, actor=finance_user)
    assert mailoutbox == []


def approvals_group():
    from django.contrib.auth.models import Group

    return [Group.objects.get(name="Finance approver")]


def test_waiting_count_counts_pending_requests_only(settings, paid_booking, finance_user, approver):
    settings.APPROVAL_THRESHOLDS = {}
    assert approvals.waiting_count() == 0
    first = refund(paid_booking, finance_user, "k1", amount="10.00").approval
    assert approvals.waiting_count() == 1
    staff_actions.reject_request(request=first, actor=approver, note="No")
    assert approvals.waiting_count() == 0
