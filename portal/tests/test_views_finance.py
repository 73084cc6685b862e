"""Finance pages (portal/views/finance.py): who may open them, withdrawals, refunds, reversals, lists."""

import html
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from wagtail.models import ModelLogEntry

from finance import bulk, staff_actions
from finance.errors import PermissionDeniedError
from finance.models import ApprovalRequest, Wallet, WalletTransaction, Withdrawal, WithdrawalBatch
from finance.services import TransactionService
from portal.tests.confirming import confirmed_url, post_confirmation
from testing.jobs import run_ready_jobs

pytestmark = pytest.mark.django_db

FINANCE_PAGES = [
    "/admin/operations/dashboard/",
    "/admin/operations/wallets/",
    "/admin/operations/transactions/",
    "/admin/operations/withdrawals/",
    "/admin/operations/refunds/",
    "/admin/operations/approvals/",
]


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2500.00"))


def login(client, user):
    client.force_login(user)
    return client


def test_finance_staff_open_every_finance_page(client, finance_user, withdrawal, paid_booking):
    login(client, finance_user)
    for url in FINANCE_PAGES:
        response = client.get(url)
        assert response.status_code == 200, url
    wallet = Wallet.objects.get(user=withdrawal.wallet.user)
    assert client.get(f"/admin/operations/wallets/{wallet.pk}/").status_code == 200


@pytest.mark.parametrize("who", ["support_user", "host"])
def test_support_and_hosts_are_refused_the_finance_pages(client, request, who):
    login(client, request.getfixturevalue(who))
    for url in FINANCE_PAGES:
        response = client.get(url)
        # A refused admin page is a redirect: hosts to their statement (no admin access at
        # all, portal.middleware.HostsToStatementMiddleware), staff to the home with "no permission".
        assert response.status_code == 302, url
        expected = "/statement/" if who == "host" else "/admin/"
        assert response["Location"].startswith(expected), url


def test_manager_reads_but_cannot_move_money(client, manager, withdrawal):
    login(client, manager)
    assert client.get("/admin/operations/withdrawals/").status_code == 200
    assert client.get("/admin/operations/audit/").status_code == 200
    response = client.post(f"/admin/operations/withdrawals/{withdrawal.pk}/complete/", {"idempotency_key": "k1"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING
    with pytest.raises(PermissionDeniedError):
        staff_actions.complete_withdrawal(withdrawal=withdrawal, actor=manager, idempotency_key="k2")


def test_complete_withdrawal_inline_updates_the_row_logs_and_is_idempotent(client, finance_user, withdrawal):
    login(client, finance_user)
    confirm = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/complete/confirm/", HTTP_HX_REQUEST="true")
    assert b"Yes, mark as paid" in confirm.content  # no provider pays this account
    assert confirmed_url(confirm) == f"/admin/operations/withdrawals/{withdrawal.pk}/complete/"
    for _ in range(2):  # a double submit of the same confirmation (one token, one idempotency key)
        response = post_confirmation(client, confirm, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        assert "w-messages:add" in response["HX-Trigger"]
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED
    wallet = Wallet.objects.get(pk=withdrawal.wallet_id)
    assert wallet.balance == Decimal("7500.00") and wallet.held_balance == 0
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == 1
    entry = ModelLogEntry.objects.get(action="stayafrica.withdrawal.complete")
    assert entry.user == finance_user and entry.data["amount"] == "2500.00"


def test_fail_requires_a_reason(client, finance_user, withdrawal):
    login(client, finance_user)
    asked = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/fail/confirm/", HTTP_HX_REQUEST="true")
    assert b"Reason (required, the host is told)" in asked.content
    response = client.post(f"/admin/operations/withdrawals/{withdrawal.pk}/fail/confirm/", {"reason": " "})
    assert response.status_code == 400
    assert b"Say why the withdrawal failed" in response.content
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING
    confirm = client.post(f"/admin/operations/withdrawals/{withdrawal.pk}/fail/confirm/", {"reason": "Bank closed"})
    assert b"Yes, fail it" in confirm.content and b"Bank closed" in confirm.content
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.PENDING
    post_confirmation(client, confirm, HTTP_HX_REQUEST="true")
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.FAILED
    assert ModelLogEntry.objects.get(action="stayafrica.withdrawal.fail").data["reason"] == "Bank closed"


BULK = "/admin/operations/withdrawals/bulk/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def three_withdrawals(funded_wallet, bank_account):
    return [TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1000.00")) for _ in range(3)]


def start_bulk(client, withdrawals):
    """Review the selection, then press "Yes": the answer is the batch's progress."""
    review = client.post(f"{BULK}confirm/", {"ids": [w.pk for w in withdrawals]}, **HTMX)
    assert b"Send 3 payouts?" in review.content
    return post_confirmation(client, review, **HTMX)


def poll_url(response) -> str:
    """Where the progress asks for itself next (None once it has stopped polling)."""
    match = re.search(r'hx-get="(/admin/operations/withdrawals/bulk/[0-9a-f-]+/\?seen=\d+)"', response.content.decode())
    return html.unescape(match.group(1)) if match else None


def test_bulk_complete_starts_a_batch_whose_progress_follows_the_job(client, finance_user, three_withdrawals):
    login(client, finance_user)
    response = start_bulk(client, three_withdrawals)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Bulk completion by {finance_user}: 0 of 3 done" in page and "Waiting for a worker" in page
    assert Withdrawal.objects.filter(status="completed").count() == 0  # the job pays, not the request
    batch = WithdrawalBatch.objects.get()
    assert poll_url(response) == f"{BULK}{batch.pk}/?seen=0"

    run_ready_jobs()
    progress = client.get(poll_url(response), **HTMX)
    page = progress.content.decode()
    assert "3 of 3 done" in page and "Done: 3 of 3 completed" in page
    assert poll_url(progress) is None  # finished: it stops polling
    for w in three_withdrawals:  # each finished row comes along, swapped in place
        row = re.search(rf'<tr id="withdrawal-{w.pk}" hx-swap-oob="outerHTML".*?</tr>', page, re.S)
        assert row and "Completed" in row.group(0)
    again = client.get(f"{BULK}{batch.pk}/?seen=3", **HTMX)
    assert "hx-swap-oob" not in again.content.decode()  # rows already shown are not sent again


def test_finished_progress_lists_what_was_not_completed_and_why(client, finance_user, approver, three_withdrawals):
    login(client, finance_user)
    response = start_bulk(client, three_withdrawals)
    taken = three_withdrawals[1]
    staff_actions.complete_withdrawal(withdrawal=taken, actor=approver, idempotency_key="by-hand")
    run_ready_jobs()
    page = client.get(poll_url(response), **HTMX).content.decode()
    assert "Done: 2 of 3 completed" in page
    assert (
        f'<span class="ops-ref">{taken.reference}</span>: Not completed — '
        f"Withdrawal {taken.reference} is already completed." in page
    )


def test_every_staff_member_who_sees_the_queue_sees_running_and_recent_batches(
    client, finance_user, manager, three_withdrawals
):
    login(client, finance_user)
    start_bulk(client, three_withdrawals)
    key = uuid.uuid4().hex
    old = bulk.start_batch(withdrawal_ids=[three_withdrawals[0].pk], actor=finance_user, idempotency_key=key)
    WithdrawalBatch.objects.filter(pk=old.pk).update(status="done", finished_at=timezone.now() - timedelta(days=2))

    login(client, manager)  # another person, who never saw the confirmation
    page = client.get("/admin/operations/withdrawals/").content.decode()
    assert f"Bulk completion by {finance_user}: 0 of 3 done" in page
    assert "of 1 done" not in page  # finished two days ago: no longer shown
    run_ready_jobs()
    page = client.get("/admin/operations/withdrawals/").content.decode()
    assert f"Bulk completion by {finance_user}: 3 of 3 done" in page and "Done: 3 of 3 completed" in page


def test_bulk_views_refuse_who_may_not_and_unknown_batches(
    client, finance_user, manager, support_user, three_withdrawals
):
    login(client, finance_user)
    start_bulk(client, three_withdrawals)
    batch = WithdrawalBatch.objects.get()

    login(client, support_user)  # may not see the withdrawal queue
    assert client.get(f"{BULK}{batch.pk}/", **HTMX).status_code == 403
    login(client, manager)  # may see it, not complete withdrawals
    assert client.get(f"{BULK}{batch.pk}/", **HTMX).status_code == 200
    assert client.post(f"{BULK}confirm/", {"ids": [w.pk for w in three_withdrawals]}, **HTMX).status_code == 403
    assert client.get(f"{BULK}{uuid.uuid4()}/", **HTMX).status_code == 404
    assert WithdrawalBatch.objects.count() == 1


def test_partial_refund_reviews_then_refunds_once(client, finance_user, paid_booking):
    login(client, finance_user)
    page = client.get(f"/admin/operations/refunds/?q={paid_booking.pk}")
    assert f"Booking #{paid_booking.pk}".encode() in page.content
    data = {"booking": paid_booking.pk, "amount": "400.00", "reason": "Guest left early"}
    review = client.post("/admin/operations/refunds/confirm/", data)
    assert b"Yes, refund" in review.content
    assert WalletTransaction.objects.filter(type="refund").count() == 0
    for _ in range(2):  # a double submit of the same confirmation
        post_confirmation(client, review)
    assert WalletTransaction.objects.filter(type="refund").count() == 1
    payment = paid_booking.payments.get()
    assert payment.refunded_amount == Decimal("400.00")
    assert ModelLogEntry.objects.filter(action="stayafrica.refund").count() == 1


def test_reversal_needs_a_second_approver_never_the_requester(client, finance_user, approver, funded_wallet):
    credit = funded_wallet.transactions.get()
    login(client, finance_user)
    review = client.post(
        f"/admin/operations/transactions/{credit.reference}/reverse/confirm/", {"reason": "Posted twice"}
    )
    assert b"Yes, request reversal" in review.content
    response = post_confirmation(client, review)
    assert response.status_code == 302
    request = ApprovalRequest.objects.get()
    credit.refresh_from_db()
    assert credit.status == "completed"
    with pytest.raises(PermissionDeniedError):
        staff_actions.approve_request(request=request, actor=finance_user)
    # ...and the database refuses it even if the service were bypassed
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=request.pk).update(approved_by=finance_user)
    login(client, approver)
    review = client.post(f"/admin/operations/approvals/{request.pk}/approve/confirm/", {"note": "ok"})
    assert b"Yes, approve" in review.content
    post_confirmation(client, review)
    credit.refresh_from_db()
    assert credit.status == "reversed"
    request.refresh_from_db()
    assert request.status == "approved" and request.approved_by == approver
    actions = set(ModelLogEntry.objects.values_list("action", flat=True))
    assert {"stayafrica.approval.request", "stayafrica.approval.approve", "stayafrica.reversal"} <= actions


def test_wallet_list_filters_in_place_and_exports_neutralised_csv(client, finance_user, make_user):
    evil = make_user("host", first_name="=HYPERLINK(1)")
    evil.username = "=cmd"
    evil.save()
    TransactionService.create_wallet(evil, "NGN")
    login(client, finance_user)
    partial = client.get("/admin/operations/wallets/?currency=NGN", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results")
    assert b'id="results"' in partial.content and b"<html" not in partial.content
    export = client.get("/admin/operations/wallets/?currency=NGN&export=csv")
    body = b"".join(export.streaming_content).decode()
    assert "'=cmd" in body and "\n=cmd" not in body


def test_a_key_another_staff_member_sent_gets_them_their_own_refund(client, finance_user, make_user, paid_booking):
    """Even if two confirmations carried the same key, each person's refund happens, once."""
    import portal.views.confirmation as confirmation

    other = make_user(groups=["Finance"])
    data = {"booking": paid_booking.pk, "amount": "100.00", "reason": "Pool closed"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(confirmation, "new_idempotency_key", lambda: "one-key-for-both")
        for person in (finance_user, other):
            login(client, person)
            review = client.post("/admin/operations/refunds/confirm/", data)
            for _ in range(2):  # each one's double submit still acts once
                post_confirmation(client, review)
    refunds = WalletTransaction.objects.filter(type="refund")
    assert refunds.count() == 2, "the second person was answered with the first person's refund"
    assert set(ModelLogEntry.objects.filter(action="stayafrica.refund").values_list("user_id", flat=True)) == {
        finance_user.pk,
        other.pk,
    }


def test_the_approval_queue_shows_why_a_request_needs_approval(client, finance_user, approver, settings, paid_booking):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("300.00")}
    login(client, finance_user)
    data = {"booking": paid_booking.pk, "amount": "400.00", "reason": "Guest left early"}
    review = client.post("/admin/operations/refunds/confirm/", data)
    assert "would exceed the NGN 300.00 threshold" in review.content.decode()  # said before it is filed
    post_confirmation(client, review)
    login(client, approver)
    page = client.get("/admin/operations/approvals/").content.decode()
    assert "Why it needs approval" in page
    assert f"NGN 400.00 moved for host {paid_booking.rental_property.host} within 24 h" in page
    assert "would exceed the NGN 300.00 threshold" in page
    request = ApprovalRequest.objects.get()
    review = client.post(f"/admin/operations/approvals/{request.pk}/approve/confirm/", {"note": "ok"})
    assert "Why it needs a second approver: NGN 400.00 moved for host" in review.content.decode()


def test_reversing_a_refunded_booking_payment_is_refused_before_confirming(client, finance_user, paid_booking):
    staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Late check-in", actor=finance_user, idempotency_key="rf"
    )
    payout = WalletTransaction.objects.get(type="booking_payment", booking=paid_booking)
    login(client, finance_user)
    review = client.post(f"/admin/operations/transactions/{payout.reference}/reverse/confirm/", {"reason": "Fraud"})
    assert review.status_code == 400
    page = review.content.decode()
    assert "Refunds were issued against this payment" in page
    assert "Yes, request reversal" not in page
    assert not ApprovalRequest.objects.exists()


# --- issue 15: refunds reviewed as carried out; Reverse only where it can be ------------------------


@pytest.fixture
def thin_host_booking(host, guest, make_booking, make_payment):
    """300,000.00 paid (30,000.00 commission); the host kept 243,000.00 of the 270,000.00 payout."""
    booking = make_booking(host, guest, total="300000.00", commission="30000.00")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    TransactionService.debit_wallet(Wallet.objects.get(user=host, currency="NGN"), Decimal("27000.00"))
    return booking


def test_a_refund_yes_would_refuse_is_refused_at_review_with_the_typed_value_kept(
    client, finance_user, thin_host_booking
):
    login(client, finance_user)
    # More than was paid (what the host's wallet holds no longer limits a refund: issue 18).
    data = {"booking": thin_host_booking.pk, "amount": "300,001", "reason": "Flooded"}
    review = client.post("/admin/operations/refunds/confirm/", data)
    assert review.status_code == 400
    page = review.content.decode()
    assert "Refund NGN 300,001.00" not in page and "Yes, refund" not in page
    assert "At most NGN 300,000.00 can still be refunded" in page
    assert 'value="300,001"' in page and 'aria-invalid="true"' in page
    assert not WalletTransaction.objects.filter(type="refund").exists()


def test_typed_amounts_are_reviewed_at_currency_precision_with_every_figure_that_moves(
    client, finance_user, thin_host_booking
):
    login(client, finance_user)
    page = client.get(f"/admin/operations/refunds/?booking={thin_host_booking.pk}").content.decode()
    assert 'name="amount" value=""' in page  # nothing armed
    assert "At most NGN 300,000.00" in page and "0000.0000" not in page
    data = {"booking": thin_host_booking.pk, "amount": "50,000", "reason": "Flooded"}
    review = client.post("/admin/operations/refunds/confirm/", data)
    text = html.unescape(review.content.decode())
    assert "Refund NGN 50,000.00 to" in text
    assert "Guest refund: NGN 50,000.00" in text
    assert "Commission clawed back: NGN 5,000.00" in text
    assert "Host debit: NGN 45,000.00" in text and "NGN 243,000.00 → NGN 198,000.00" in text
    response = post_confirmation(client, review)
    assert response.status_code == 302
    refund = WalletTransaction.objects.get(type="refund")
    assert refund.amount == Decimal("45000.00")  # the host debit shown is the one posted
    after = client.get(response["Location"]).content.decode()
    assert 'name="amount" value=""' in after
    assert "Refunded NGN 50,000.00" in after


@pytest.mark.parametrize(("typed", "message"), [("50,00", "groups of three"), ("abc", "is not an amount")])
def test_a_mistyped_amount_is_refused_with_a_sentence(client, finance_user, paid_booking, typed, message):
    login(client, finance_user)
    data = {"booking": paid_booking.pk, "amount": typed, "reason": "Late"}
    review = client.post("/admin/operations/refunds/confirm/", data)
    assert review.status_code == 400
    assert message in html.unescape(review.content.decode())


def test_a_missing_reason_is_shown_at_the_reason(client, finance_user, paid_booking):
    login(client, finance_user)
    review = client.post("/admin/operations/refunds/confirm/", {"booking": paid_booking.pk, "amount": "10"})
    page = review.content.decode()
    assert 'id="id_reason-error"' in page and 'id="id_amount-error"' not in page


def test_the_api_stays_strict_about_amounts(finance_user, paid_booking):
    from rest_framework.test import APIClient

    from finance.api.tokens import issue_api_token

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(finance_user)}")
    response = api.post(
        f"/api/payments/bookings/{paid_booking.pk}/refund/", {"amount": "50,000", "reason": "Late"}, format="json"
    )
    assert response.status_code == 400
    assert not WalletTransaction.objects.filter(type="refund").exists()


def test_the_transaction_list_offers_reverse_only_where_it_can_be_and_shows_pending_requests(
    client, finance_user, paid_booking, funded_wallet, django_assert_max_num_queries
):
    credit = funded_wallet.transactions.get(type="credit")
    payout = WalletTransaction.objects.get(type="booking_payment", booking=paid_booking)
    filed = staff_actions.request_reversal(txn=credit, reason="Twice", actor=finance_user, idempotency_key="r1")
    staff_actions.refund_booking(
        booking=paid_booking, amount="100.00", reason="Late", actor=finance_user, idempotency_key="rf"
    )
    refund = WalletTransaction.objects.get(type="refund")
    login(client, finance_user)
    page = client.get("/admin/operations/transactions/").content.decode()
    assert f'aria-label="Reverse {refund.reference}"' in page
    assert f'aria-label="Reverse {payout.reference}"' not in page  # refunds against it: reverse those first
    assert f'aria-label="Reverse {credit.reference}"' not in page
    assert f"Reversal pending #{filed.approval.pk}" in page
    assert f"/admin/operations/approvals/#approval-{filed.approval.pk}" in page
    # one query for the page's reversal states, whatever the number of rows
    for _ in range(30):
        TransactionService.credit_wallet(funded_wallet, Decimal("1.00"))
    with django_assert_max_num_queries(20) as queries:
        client.get("/admin/operations/transactions/")
    assert sum("finance_approvalrequest" in q["sql"] for q in queries.captured_queries) == 1
