"""The approvals queue (portal/views/approvals.py) and the Operations menu's waiting count."""

import html

import pytest

from finance import staff_actions
from finance.models import ApprovalRequest, Wallet, WalletTransaction
from portal.tests.confirming import post_confirmation

pytestmark = pytest.mark.django_db

QUEUE = "/admin/operations/approvals/"


@pytest.fixture
def refund_request(settings, paid_booking, finance_user):
    settings.APPROVAL_THRESHOLDS = {}  # every refund needs a second approver
    outcome = staff_actions.refund_booking(
        booking=paid_booking, amount="1000.00", reason="Flooded", actor=finance_user, idempotency_key="k1"
    )
    return outcome.approval


def test_the_queue_links_what_a_request_touches_and_shows_its_balance_effect(
    client, approver, refund_request, paid_booking, funded_wallet, finance_user
):
    credit = funded_wallet.transactions.get(type="credit")
    reversal = staff_actions.request_reversal(
        txn=credit, reason="Twice", actor=finance_user, idempotency_key="r1"
    ).approval
    client.force_login(approver)
    page = html.unescape(client.get(QUEUE).content.decode())
    assert f'href="/admin/operations/transactions/{credit.reference}/"' in page
    assert f'href="/admin/operations/wallets/{funded_wallet.pk}/"' in page
    assert f'href="/admin/operations/refunds/?booking={paid_booking.pk}"' in page
    # the refund: the host gives back 850.00 of their 10,850.00; the reversal empties the wallet
    assert "NGN 10,850.00 → <strong>NGN 10,000.00</strong>" in page
    assert "NGN 10,850.00 → <strong>NGN 850.00</strong>" in page
    assert "No approval threshold is configured for NGN" in page
    assert f'id="approval-{reversal.pk}"' in page and f'id="approval-{refund_request.pk}"' in page


def test_a_failed_approval_keeps_the_note_and_says_why(client, approver, refund_request, paid_booking):
    client.force_login(approver)
    review = client.post(f"{QUEUE}{refund_request.pk}/approve/confirm/", {"note": "Checked with the guest"})
    # Meanwhile the host's wallet was frozen (a host's empty wallet no longer stops a refund).
    Wallet.objects.filter(user=paid_booking.rental_property.host).update(status=Wallet.Status.FROZEN)
    response = post_confirmation(client, review)
    assert response.status_code == 409
    page = html.unescape(response.content.decode())
    assert f"Request #{refund_request.pk} could not be carried out: The host" in page
    assert "wallet is frozen" in page
    assert "Nothing was moved and the request is still waiting" in page
    assert 'value="Checked with the guest"' in page
    refund_request.refresh_from_db()
    assert refund_request.status == ApprovalRequest.Status.PENDING
    assert not WalletTransaction.objects.filter(type="refund").exists()


def test_reject_goes_through_a_confirmation_and_the_history_says_who_and_when(
    client, approver, refund_request, finance_user, mailoutbox, django_capture_on_commit_callbacks
):
    client.force_login(approver)
    review = client.post(f"{QUEUE}{refund_request.pk}/reject/confirm/", {"note": "Already compensated"})
    assert b"Yes, reject" in review.content
    # posting straight to the action, without the confirmation's token, only shows it again
    direct = client.post(f"{QUEUE}{refund_request.pk}/reject/", {"note": "Already compensated"})
    assert direct.status_code == 400 and b"Yes, reject" in direct.content
    refund_request.refresh_from_db()
    assert refund_request.status == ApprovalRequest.Status.PENDING
    with django_capture_on_commit_callbacks(execute=True):
        post_confirmation(client, review)
    refund_request.refresh_from_db()
    assert refund_request.status == ApprovalRequest.Status.REJECTED
    page = client.get(QUEUE).content.decode()
    assert 'id="decided-approvals"' in page
    assert refund_request.decided_at.strftime("%Y-%m-%d") in page and f"by {approver}" in page
    assert "Already compensated" in page
    assert mailoutbox[0].to == [finance_user.email]
    filtered = client.get(f"{QUEUE}?outcome=approved").content.decode()
    assert "No request decided with this outcome." in filtered
    assert client.get(f"{QUEUE}?outcome=nonsense&page=zz").status_code == 200


def test_the_menu_shows_approvers_how_many_requests_wait(client, approver, finance_user, refund_request):
    client.force_login(approver)
    page = client.get("/admin/", follow=True).content.decode()
    assert "Approvals (1)" in page and "Approvals: 1 request waiting" in page
    client.force_login(finance_user)  # can see the queue, cannot approve: no count
    page = client.get("/admin/", follow=True).content.decode()
    assert "Approvals (1)" not in page and "Approvals" in page
