"""The Refunds page's refunds at the provider (portal/views/finance.py RefundView, RefundActionView),
the dashboard's Refunds card and refund callbacks in the webhook inbox."""

import html
from decimal import Decimal

import pytest
from django.utils import timezone

from finance.models import ProviderRefund, WebhookEvent
from finance.services import TransactionService
from portal.tests.confirming import confirmed_url, post_confirmation
from testing.jobs import run_ready_jobs

pytestmark = pytest.mark.django_db
PAGE = "/admin/operations/refunds/"
HTMX = {"HTTP_HX_REQUEST": "true"}
Status = ProviderRefund.Status


@pytest.fixture(autouse=True)
def _sandbox_refunds(settings):
    settings.SANDBOX_PAYMENTS_ENABLED = True  # the sandbox sends refunds through its API
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}


def make_refund(booking, amount="400.00", **state) -> ProviderRefund:
    """A refund of `booking` as process_refund opens it, then in the state a provider left it."""
    txn = TransactionService.process_refund(booking, Decimal(amount), "guest cancelled")
    refund = ProviderRefund.objects.get(transaction__reference=txn.reference)
    if state:
        ProviderRefund.objects.filter(pk=refund.pk).update(**state)
        refund.refresh_from_db()
    return refund


@pytest.fixture
def failed(paid_booking):
    reason = "Sandbox: the guest's card is closed."
    return make_refund(paid_booking, status=Status.FAILED, failure_reason=reason, sent_at=timezone.now())


def text(response) -> str:
    return html.unescape(response.content.decode())


def row_of(page: str, refund) -> str:
    start = page.index(f'id="refund-{refund.pk}"')
    return page[start : page.index("</tr>", start)]


def test_each_status_is_worded_with_the_providers_answer(client, finance_user, paid_booking, settings):
    now = timezone.now()
    queued = make_refund(paid_booking, "10.00")
    processing = make_refund(
        paid_booking, "11.00", status=Status.PROCESSING, provider_refund_id="sbx_rf_11", sent_at=now
    )
    refunded = make_refund(
        paid_booking, "12.00", status=Status.SUCCEEDED, provider_refund_id="sbx_rf_12", sent_at=now, settled_at=now
    )
    failed = make_refund(paid_booking, "13.00", status=Status.FAILED, failure_reason="Card closed")
    erring = make_refund(paid_booking, "14.00", last_error="Sandbox timed out")
    cancelled = make_refund(paid_booking, "15.00", status=Status.CANCELLED)
    settings.SANDBOX_PAYMENTS_ENABLED = False  # no provider can send it: to refund by hand
    by_hand = make_refund(paid_booking, "16.00")
    assert by_hand.provider == "manual"

    client.force_login(finance_user)
    page = text(client.get(PAGE))
    expected = {
        queued: ["Queued", "Sandbox", "NGN 10.00"],
        processing: ["Processing at the sandbox", "sbx_rf_11"],
        refunded: ["Refunded", "sbx_rf_12", now.strftime("%Y-%m-%d")],
        failed: ["Failed", "Card closed", "Retry refund", "Mark as refunded"],
        erring: ["Queued", "Last send error: Sandbox timed out"],
        cancelled: ["Cancelled"],
        by_hand: ["To refund by hand", "By hand", "Mark as refunded"],
    }
    for refund, words in expected.items():
        row = row_of(page, refund)
        for word in words:
            assert word in row, (refund.status, word)
    assert "Retry refund" not in row_of(page, by_hand)  # nobody can send it
    assert "Retry refund" not in row_of(page, processing) and "Mark as refunded" not in row_of(page, refunded)


def test_the_views_list_only_their_refunds_and_export_them(client, finance_user, paid_booking, failed, settings):
    moving = make_refund(paid_booking, "20.00", status=Status.PROCESSING)
    done = make_refund(paid_booking, "21.00", status=Status.SUCCEEDED)
    settings.SANDBOX_PAYMENTS_ENABLED = False
    by_hand = make_refund(paid_booking, "22.00")
    client.force_login(finance_user)
    views = {"failed": failed, "in_progress": moving, "refunded": done, "by_hand": by_hand}
    for show, only in views.items():
        page = text(client.get(PAGE, {"show": show}, HTTP_HX_TARGET="results", **HTMX))
        assert page.count('id="refund-') == 1 and f'id="refund-{only.pk}"' in page, show

    export = b"".join(client.get(PAGE, {"show": "failed", "export": "csv"}).streaming_content).decode("utf-8-sig")
    header, line, *rest = export.splitlines()
    assert not rest
    assert "Status" in header and "Failure reason" in header
    assert failed.refund_reference in line and "Failed" in line and "Sandbox: the guest's card is closed." in line


def test_finance_retries_a_failed_refund_in_place_once(client, finance_user, failed):
    client.force_login(finance_user)
    review = client.get(f"{PAGE}{failed.pk}/retry/confirm/", **HTMX)
    assert review.status_code == 200
    assert "Send NGN 400.00 back to the guest by the sandbox again?" in text(review)
    assert "refused it: Sandbox: the guest's card is closed." in text(review)
    assert ProviderRefund.objects.get(pk=failed.pk).attempt == 1  # nothing sent on review

    answer = post_confirmation(client, review, **HTMX)
    assert answer.status_code == 200
    retried = ProviderRefund.objects.get(pk=failed.pk)
    assert (retried.status, retried.attempt) == (Status.QUEUED, 2)
    assert retried.refund_reference.endswith("-2")
    assert "sent back to the sandbox again" in answer["HX-Trigger"]
    assert "Queued" in text(answer) and "Retry refund" not in text(answer)

    again = post_confirmation(client, review, **HTMX)  # the same confirmation, pressed twice
    assert again.status_code == 409
    assert "not failed" in text(again)
    assert ProviderRefund.objects.get(pk=failed.pk).attempt == 2

    run_ready_jobs()  # the new attempt reaches the sandbox
    assert ProviderRefund.objects.get(pk=failed.pk).status in (Status.PROCESSING, Status.SUCCEEDED)


def test_marking_refunded_asks_how_the_guest_was_paid_and_calls_no_provider(client, finance_user, failed):
    client.force_login(finance_user)
    asking = client.get(f"{PAGE}{failed.pk}/mark/confirm/", **HTMX)
    assert "How the guest was paid (required)" in text(asking)
    url = f"{PAGE}{failed.pk}/mark/confirm/"
    missing = client.post(url, {"note": "  "}, **HTMX)
    assert missing.status_code == 400 and "Say how the guest was paid" in text(missing)

    review = client.post(url, {"note": "Bank transfer from ops account"}, **HTMX)
    words = text(review)
    assert "Mark NGN 400.00 as refunded to" in words
    assert "No call is made to the sandbox: nothing is sent from here." in words
    assert confirmed_url(review) == f"{PAGE}{failed.pk}/mark/"
    answer = post_confirmation(client, review, **HTMX)
    assert answer.status_code == 200
    done = ProviderRefund.objects.get(pk=failed.pk)
    assert done.status == Status.SUCCEEDED and done.settled_at is not None
    assert "Refunded" in text(answer) and "Mark as refunded" not in text(answer)


def test_a_refund_a_provider_is_moving_is_refused_in_its_row(client, finance_user, paid_booking):
    moving = make_refund(paid_booking, status=Status.PROCESSING)
    client.force_login(finance_user)
    for action in ("retry", "mark"):
        refused = client.get(f"{PAGE}{moving.pk}/{action}/confirm/", **HTMX)
        assert refused.status_code == 409
        assert "wait for the sandbox's answer" in text(refused) or "only the sandbox's answer" in text(refused)
    assert ProviderRefund.objects.get(pk=moving.pk).status == Status.PROCESSING


def test_manager_and_approver_read_refunds_without_buttons(client, manager, make_user, support_user, failed):
    approver_only = make_user(groups=["Finance approver"])
    for reader in (manager, approver_only):
        client.force_login(reader)
        page = text(client.get(PAGE))
        assert "Sandbox: the guest's card is closed." in row_of(page, failed)
        assert "Retry refund" not in page and "Mark as refunded" not in page
        refused = client.get(f"{PAGE}{failed.pk}/retry/confirm/", **HTMX)
        assert refused.status_code == 403 and "permission to retry refunds" in text(refused)
    assert ProviderRefund.objects.get(pk=failed.pk).attempt == 1
    client.force_login(support_user)
    assert client.get(PAGE).status_code == 302


def test_an_expired_session_sends_a_row_action_to_sign_in(client, failed):
    response = client.get(
        f"{PAGE}{failed.pk}/retry/confirm/", HTTP_HX_CURRENT_URL="http://testserver/admin/operations/refunds/", **HTMX
    )
    assert response["HX-Redirect"] == "/admin/login/?next=%2Fadmin%2Foperations%2Frefunds%2F"


def test_the_refund_confirmation_says_where_the_money_goes(client, finance_user, paid_booking):
    client.force_login(finance_user)
    review = client.post(f"{PAGE}confirm/", {"booking": paid_booking.pk, "amount": "400", "reason": "Guest left early"})
    words = text(review)
    assert f"NGN 400.00 goes back to {paid_booking.guest}'s card or account by the sandbox" in words
    assert "gives back NGN 340.00 and platform revenue NGN 60.00" in words
    assert "goes negative" not in words  # the host's NGN 850.00 covers their share


def test_the_dashboard_card_counts_failed_and_moving_refunds(client, finance_user, paid_booking, failed):
    make_refund(paid_booking, "10.00", status=Status.PROCESSING)
    client.force_login(finance_user)
    page = text(client.get("/admin/operations/dashboard/"))
    start = page.index('id="refunds-card"')
    card = page[page.rindex("<section", 0, start) : page.index("</section>", start)]
    assert "ops-card-alert" in card
    assert "refund failed: the guest is still owed the money" in card
    assert "1 refund is on the way to guests" in card
    assert "?show=failed" in card


def test_the_inbox_describes_a_refund_callback_as_the_refund_it_settled(client, finance_user, paid_booking, failed):
    refunded = make_refund(paid_booking, "10.00", status=Status.SUCCEEDED)
    for refund, outcome in ((refunded, WebhookEvent.Outcome.APPLIED), (failed, WebhookEvent.Outcome.REFUND_FAILED)):
        WebhookEvent.objects.create(
            provider="sandbox", event_id=f"evt-{refund.pk}", event_type="refund", refund=refund, outcome=outcome
        )
    client.force_login(finance_user)
    page = text(client.get("/admin/operations/webhooks/", {"show": "all"}))
    booking = f"booking #{paid_booking.pk}"
    assert f"Refund of NGN 10.00 for {booking} refunded by the sandbox" in page
    assert f"Refund of NGN 400.00 for {booking} failed at the sandbox: Sandbox: the guest's card is closed." in page


@pytest.mark.parametrize(("limit", "waits"), [("100000", False), ("100", True)])
def test_a_refund_beyond_the_hosts_balance_says_the_wallet_goes_negative(
    client, finance_user, paid_booking, settings, limit, waits
):
    settings.NEGATIVE_BALANCE_APPROVAL_LIMITS = {"NGN": Decimal(limit)}
    wallet = paid_booking.payments.get().ledger_transaction.wallet
    TransactionService.debit_wallet(wallet, Decimal("800.00"))  # the host withdrew most of the payout
    client.force_login(finance_user)
    review = client.post(f"{PAGE}confirm/", {"booking": paid_booking.pk, "amount": "400", "reason": "Flooded"})
    words = text(review)
    assert "Their available balance (NGN 50.00) does not cover their share" in words
    assert "their wallet goes negative by NGN 290.00" in words
    assert "recovered from their next payouts" in words
    assert ("second approver" in words) is waits
