"""One confirmation pattern (portal/views/confirmation.py, templates/portal/includes/confirmation.html).

Every state-changing portal URL acts only on a POST carrying the token its confirmation
issued, bound to this user, this action, this target and exactly the values posted. Without
one, or with an expired, tampered or mismatched one, nothing changes and the answer is a 4xx
showing the confirmation again. With the right one the action happens exactly once, even
when the same confirmation is posted twice.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core import signing
from django.test import Client
from django_tasks_db.models import DBTaskResult
from wagtail.models import ModelLogEntry

from finance import staff_actions
from finance.models import ApprovalRequest, Payment, WalletTransaction, WebhookEvent, Withdrawal, WithdrawalBatch
from finance.services import TransactionService
from messaging.models import Broadcast, Message
from portal.tests.confirming import confirmed_fields, confirmed_url, reissue, token_data
from portal.views.confirmation import MAX_AGE_SECONDS, TOKEN_FIELD
from testing.jobs import run_jobs_with_retries, run_ready_jobs
from testing.paystack import post_paystack_charge
from testing.processes import free_port

pytestmark = pytest.mark.django_db

OPS = "/admin/operations"
HTMX = {"HTTP_HX_REQUEST": "true"}


@dataclass
class Case:
    """One state-changing URL: how its confirmation is opened, and what acting on it changes."""

    client: Client
    user: object
    open: Callable  # -> the response showing the confirmation
    done: Callable  # asserts the action happened, exactly once
    other_params: dict  # a token bound to this instead (another amount, text, selection...)
    other_post: dict | None = None  # the right token, but these values posted instead
    headers: dict = field(default_factory=dict)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def everything_else(client) -> dict:
    """What the portal's non-money actions change (the `unchanged` fixture covers the money rows)."""
    return {
        "approvals": sorted(ApprovalRequest.objects.values_list("id", "status")),
        "webhooks": sorted(WebhookEvent.objects.values_list("id", "outcome", "replay_count")),
        "broadcasts": Broadcast.objects.count(),
        "messages": Message.objects.count(),
        "audit": ModelLogEntry.objects.count(),
        "bulk batches": WithdrawalBatch.objects.count(),
        "jobs": DBTaskResult.objects.count(),
    }


# --- the cases ------------------------------------------------------------------------------


def withdrawal_complete(request):
    user, w = request.getfixturevalue("finance_user"), request.getfixturevalue("withdrawal")
    client = signed_in(user)

    def done():
        w.refresh_from_db()
        assert w.status == Withdrawal.Status.COMPLETED
        assert w.wallet.__class__.objects.get(pk=w.wallet_id).balance == Decimal("7500.00")
        assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.get(f"{OPS}/withdrawals/{w.pk}/complete/confirm/", **HTMX),
        done=done,
        other_params={"amount": "1.00"},
        headers=HTMX,
    )


def withdrawal_fail(request):
    user, w = request.getfixturevalue("finance_user"), request.getfixturevalue("withdrawal")
    client = signed_in(user)

    def done():
        w.refresh_from_db()
        assert w.status == Withdrawal.Status.FAILED
        entries = ModelLogEntry.objects.filter(action="stayafrica.withdrawal.fail")
        assert entries.count() == 1 and entries.get().data["reason"] == "Bank closed the account"

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/withdrawals/{w.pk}/fail/confirm/", {"reason": "Bank closed the account"}),
        done=done,
        other_params={"reason": "Something else"},
        other_post={"reason": "Changed after confirming"},
        headers=HTMX,
    )


def bulk_complete(request):
    user = request.getfixturevalue("finance_user")
    wallet, bank = request.getfixturevalue("funded_wallet"), request.getfixturevalue("bank_account")
    items = [TransactionService.initiate_withdrawal(wallet, bank, Decimal("1000.00")) for _ in range(3)]
    ids = [w.pk for w in items]
    client = signed_in(user)

    def done():
        batch = WithdrawalBatch.objects.get()  # one batch, however often the confirmation was posted
        assert sorted(batch.items.values_list("withdrawal_id", flat=True)) == ids
        assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.bulk_complete").count() == 1
        run_ready_jobs()
        assert Withdrawal.objects.filter(pk__in=ids, status="completed").count() == 3
        assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == 3

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/withdrawals/bulk/confirm/", {"ids": ids}, **HTMX),
        done=done,
        other_params={"ids": ids[:2]},
        other_post={"ids": ids[:1]},
        headers=HTMX,
    )


def refund(request):
    user, booking = request.getfixturevalue("finance_user"), request.getfixturevalue("paid_booking")
    client = signed_in(user)

    def done():
        assert WalletTransaction.objects.filter(type="refund").count() == 1
        assert booking.payments.get().refunded_amount == Decimal("400.00")
        assert ModelLogEntry.objects.filter(action="stayafrica.refund").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.post(
            f"{OPS}/refunds/confirm/", {"booking": booking.pk, "amount": "400.00", "reason": "Guest left early"}
        ),
        done=done,
        other_params={"amount": "1.00"},
        other_post={"amount": "900.00"},
    )


def reversal(request):
    user, wallet = request.getfixturevalue("finance_user"), request.getfixturevalue("funded_wallet")
    credit = wallet.transactions.get()
    client = signed_in(user)

    def done():
        approval = ApprovalRequest.objects.get()
        assert approval.kind == "reversal" and approval.status == "pending" and approval.transaction == credit
        assert approval.reason == "Posted twice" and approval.requested_by == user
        credit.refresh_from_db()
        assert credit.status == "completed"  # nothing moves before a second approver

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/transactions/{credit.reference}/reverse/confirm/", {"reason": "Posted twice"}),
        done=done,
        other_params={"amount": "1.00"},
        other_post={"reason": "Another reason"},
    )


def filed_reversal(request):
    """A reversal request filed by one finance user, for an approver to decide."""
    requester, wallet = request.getfixturevalue("finance_user"), request.getfixturevalue("funded_wallet")
    credit = wallet.transactions.get()
    outcome = staff_actions.request_reversal(txn=credit, reason="Posted twice", actor=requester, idempotency_key="rv")
    return outcome.approval, credit


def approve(request):
    approval, credit = filed_reversal(request)
    user = request.getfixturevalue("approver")
    client = signed_in(user)

    def done():
        approval.refresh_from_db()
        assert approval.status == "approved" and approval.approved_by == user and approval.decision_note == "ok"
        credit.refresh_from_db()
        assert credit.status == "reversed"
        assert ModelLogEntry.objects.filter(action="stayafrica.reversal").count() == 1
        assert ModelLogEntry.objects.filter(action="stayafrica.approval.approve").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/approvals/{approval.pk}/approve/confirm/", {"note": "ok"}),
        done=done,
        other_params={"amount": "1.00"},
        other_post={"note": "not what I confirmed"},
    )


def reject(request):
    approval, credit = filed_reversal(request)
    user = request.getfixturevalue("approver")
    client = signed_in(user)

    def done():
        approval.refresh_from_db()
        assert approval.status == "rejected" and approval.decision_note == "Not a duplicate"
        credit.refresh_from_db()
        assert credit.status == "completed"
        assert ModelLogEntry.objects.filter(action="stayafrica.approval.reject").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/approvals/{approval.pk}/reject/confirm/", {"note": "Not a duplicate"}),
        done=done,
        other_params={"note": "Something else"},
        other_post={"note": "not what I confirmed"},
    )


def webhook_replay(request):
    settings = request.getfixturevalue("settings")
    host, guest = request.getfixturevalue("host"), request.getfixturevalue("guest")
    settings.PAYSTACK_SECRET_KEY = "sk_confirm"
    booking = request.getfixturevalue("make_booking")(host, guest, total="1000.00", commission="100.00")
    payment = request.getfixturevalue("make_payment")(booking, provider="paystack")
    Payment.objects.filter(pk=payment.pk).update(amount="999.00")
    post_paystack_charge(
        payment,
        amount_minor=100000,
        event_id=78,
        secret="sk_confirm",
        provider_http=request.getfixturevalue("provider_http"),
    )
    Payment.objects.filter(pk=payment.pk).update(amount="1000.00")  # staff fixed the cause
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.FLAGGED
    user = request.getfixturevalue("finance_user")
    client = signed_in(user)

    def done():
        event.refresh_from_db()
        assert event.outcome == WebhookEvent.Outcome.APPLIED and event.replay_count == 1
        assert host.wallets.get(currency="NGN").balance == 900
        assert ModelLogEntry.objects.filter(action="stayafrica.webhook.replay").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.get(f"{OPS}/webhooks/{event.pk}/replay/confirm/"),
        done=done,
        other_params={"amount": "1.00"},
    )


def broadcast_send(request):
    settings = request.getfixturevalue("settings")
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # the fallback: rows written here
    make_user = request.getfixturevalue("make_user")
    hosts = [make_user("host", country="GH") for _ in range(2)]
    make_user("host", country="KE")
    user = request.getfixturevalue("support_user")
    client = signed_in(user)
    form = {"text": "Hello Accra", "audience": "hosts_in_country", "country": "GH", "priority": "normal"}

    def done():
        broadcast = Broadcast.objects.get()
        assert broadcast.text == "Hello Accra" and broadcast.total == 2
        assert run_jobs_with_retries() == 4  # one fan-out job: Erlang unreachable 3 times, then the fallback
        assert sorted(Message.objects.values_list("receiver", flat=True)) == sorted(h.pk for h in hosts)
        assert ModelLogEntry.objects.filter(action="stayafrica.broadcast.send").count() == 1

    return Case(
        client,
        user,
        open=lambda: client.post(f"{OPS}/broadcasts/confirm/", form),
        done=done,
        other_params={"audience": "all_hosts"},
        other_post={"text": "Hello everyone"},
    )


CASES = {
    "withdrawal complete": withdrawal_complete,
    "withdrawal fail": withdrawal_fail,
    "bulk completion": bulk_complete,
    "refund": refund,
    "reversal request": reversal,
    "approve": approve,
    "reject": reject,
    "webhook replay": webhook_replay,
    "broadcast send": broadcast_send,
}


# Completing a withdrawal and replaying an event post no values of their own: their tokens bind
# the target's state (amount, payment), which the forged-token test changes.
TOKEN_BINDS_STATE_ONLY = (withdrawal_complete, webhook_replay)


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2500.00"))


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param](request)


def opened(case: Case):
    """Open the confirmation: it changes nothing and says what it confirms."""
    response = case.open()
    assert response.status_code == 200, response.content.decode()[:2000]
    assert response["X-Confirmation"] == "shown"
    assert 'class="ops-confirm"' in response.content.decode() and "Yes, " in response.content.decode()
    return response


def assert_refused(case: Case, response, unchanged_before: dict):
    assert 400 <= response.status_code < 500, response.status_code
    assert everything_else(case.client) == unchanged_before
    body = response.content.decode()
    assert "data-confirmation " in body, "the user sees the confirmation again"
    assert 'role="alert"' in body


# --- the tests ------------------------------------------------------------------------------


def test_opening_the_confirmation_changes_nothing(case, unchanged):
    before = everything_else(case.client)
    with unchanged():
        response = opened(case)
    assert everything_else(case.client) == before
    fields = confirmed_fields(response)
    data = token_data(fields[TOKEN_FIELD])
    assert data["user"] == case.user.pk and data["key"]


def test_a_post_without_the_token_changes_nothing(case, unchanged):
    response = opened(case)
    url, fields = confirmed_url(response), confirmed_fields(response)
    del fields[TOKEN_FIELD]
    before = everything_else(case.client)
    with unchanged():
        refused = case.client.post(url, fields, **case.headers)
    assert_refused(case, refused, before)
    assert "Nothing has been confirmed yet" in refused.content.decode()


@pytest.mark.parametrize(
    "forge",
    ["tampered", "expired", "another user", "another action", "another target", "other values"],
)
def test_a_token_that_does_not_confirm_this_post_changes_nothing(case, forge, unchanged, make_user, monkeypatch):
    response = opened(case)
    url, fields = confirmed_url(response), confirmed_fields(response)
    token = fields[TOKEN_FIELD]
    if forge == "tampered":
        fields[TOKEN_FIELD] = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    elif forge == "expired":
        later = time.time() + MAX_AGE_SECONDS + 60
        monkeypatch.setattr(signing, "time", type("Later", (), {"time": staticmethod(lambda: later)}))
    elif forge == "another user":
        colleague = make_user(groups=list(case.user.groups.values_list("name", flat=True)))
        fields[TOKEN_FIELD] = reissue(token, user=colleague.pk)
    elif forge == "another action":
        fields[TOKEN_FIELD] = reissue(token, action="something.else")
    elif forge == "another target":
        fields[TOKEN_FIELD] = reissue(token, target="999999")
    elif forge == "other values":  # a token for another amount (or text, selection, audience)
        fields[TOKEN_FIELD] = reissue(token, params=case.other_params)
    before = everything_else(case.client)
    with unchanged():
        refused = case.client.post(url, fields, **case.headers)
    assert_refused(case, refused, before)
    # The confirmation shown again carries a fresh token for what this POST asked, for this user.
    again = confirmed_fields(refused)[TOKEN_FIELD]
    assert again != fields[TOKEN_FIELD] and token_data(again)["user"] == case.user.pk


@pytest.mark.parametrize("name", [name for name, make in CASES.items() if make not in TOKEN_BINDS_STATE_ONLY])
def test_the_right_token_with_other_values_posted_changes_nothing(name, request, unchanged):
    case = CASES[name](request)
    response = opened(case)
    url, fields = confirmed_url(response), confirmed_fields(response)
    fields.update(case.other_post)
    before = everything_else(case.client)
    with unchanged():
        refused = case.client.post(url, fields, **case.headers)
    assert_refused(case, refused, before)
    assert "differs from what was confirmed" in refused.content.decode()


def test_the_right_token_acts_exactly_once(case):
    response = opened(case)
    url, fields = confirmed_url(response), confirmed_fields(response)
    first = case.client.post(url, fields, **case.headers)
    assert first.status_code in (200, 302), first.content.decode()[:2000]
    case.client.post(url, fields, **case.headers)  # a double submit of the same confirmation
    case.done()


def test_the_confirmation_states_what_will_happen(client, finance_user, withdrawal, settings):
    """Amounts at the currency's precision, who is affected, the resulting balance, and four-eyes."""
    client.force_login(finance_user)
    page = client.get(f"{OPS}/withdrawals/{withdrawal.pk}/complete/confirm/", **HTMX).content.decode()
    assert f"Mark {withdrawal.reference} as paid?" in page
    assert "Record that NGN 2,500.00 was paid to" in page and "GTBank" in page
    assert withdrawal.wallet.user.username in page
    assert "from NGN 10,000.00 to NGN 7,500.00" in page
    assert "second approver" not in page
    assert re.search(r"<button[^>]*autofocus[^>]*>Yes, mark as paid</button>", page), "the Yes button takes the focus"
    assert "data-confirmation-cancel" in page and ">Cancel<" in page

    settings.APPROVAL_THRESHOLDS = {**settings.APPROVAL_THRESHOLDS, "NGN": Decimal("1000.00")}
    page = client.get(f"{OPS}/withdrawals/{withdrawal.pk}/complete/confirm/", **HTMX).content.decode()
    assert "help-block help-warning" in page and "request for a second approver" in page


def test_a_refund_above_the_threshold_says_it_files_a_request(client, finance_user, paid_booking, settings):
    settings.APPROVAL_THRESHOLDS = {**settings.APPROVAL_THRESHOLDS, "NGN": Decimal("100.00")}
    client.force_login(finance_user)
    review = client.post(
        f"{OPS}/refunds/confirm/", {"booking": paid_booking.pk, "amount": "400", "reason": "Pool closed"}
    )
    page = review.content.decode()
    assert f"Refund NGN 400.00 to {paid_booking.guest}?" in page
    assert "Afterwards NGN 600.00 can still be refunded." in page
    assert "request for a second approver" in page
    assert confirmed_fields(review)["amount"] == "400.00"  # what was confirmed, at the currency's precision


def test_a_multi_line_reason_survives_the_round_trip(client, finance_user, paid_booking):
    client.force_login(finance_user)
    reason = "Guest left early.\r\nPool was closed."
    review = client.post(f"{OPS}/refunds/confirm/", {"booking": paid_booking.pk, "amount": "10", "reason": reason})
    fields = confirmed_fields(review)
    fields["reason"] = fields["reason"].replace("\n", "\r\n")  # browsers post line breaks as CRLF
    assert client.post(confirmed_url(review), fields).status_code == 302
    assert WalletTransaction.objects.filter(type="refund").count() == 1


def test_refused_htmx_answers_are_marked_so_the_row_shows_them(client, finance_user, withdrawal):
    client.force_login(finance_user)
    refused = client.post(f"{OPS}/withdrawals/{withdrawal.pk}/complete/", **HTMX)
    assert refused.status_code == 400 and refused["X-Confirmation"] == "shown"
    assert f'id="withdrawal-{withdrawal.pk}"' in refused.content.decode()


# --- no inline handlers, no browser dialogs -----------------------------------------------------

ROOT = Path(django_settings.BASE_DIR)
INLINE_HANDLER = re.compile(r"\s(on[a-z]+|hx-on(?::|-)[\w:.-]*)\s*=", re.IGNORECASE)
BROWSER_CONFIRM = re.compile(r"(?<![\w$])confirm\s*\(|hx-confirm", re.IGNORECASE)


def offences(text: str, *, markup: bool) -> list[str]:
    found = [m.group(0).strip() for m in BROWSER_CONFIRM.finditer(text)]
    if markup:
        for tag in re.finditer(r"<[a-zA-Z][^<>]*>", text):
            found += [m.group(0).strip() for m in INLINE_HANDLER.finditer(tag.group(0))]
    return found


def project_files():
    for folder in ("templates", "static"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".html", ".js", ".txt", ".svg") and "vendor" not in path.relative_to(ROOT).parts:
                yield path


def test_the_scanner_finds_what_it_looks_for():
    assert offences("<button onclick=\"return confirm('x')\">", markup=True)
    assert offences('<a href="#" hx-on:click="x">', markup=True)
    assert offences('<button hx-confirm="Sure?">', markup=True)
    assert offences("if (window.confirm('Sure?')) go();", markup=False)
    assert not offences('<form action="/x" class="ops-confirm" data-confirmation>', markup=True)
    assert not offences("confirmation.remove(); // confirmations", markup=False)


def test_no_inline_handlers_or_browser_confirm_in_templates_or_static():
    paths = list(project_files())
    assert any(p.name == "confirmation.html" for p in paths) and any(p.name == "portal.js" for p in paths)
    found = {str(p.relative_to(ROOT)): offences(p.read_text(encoding="utf-8"), markup=p.suffix != ".js") for p in paths}
    assert {path: hits for path, hits in found.items() if hits} == {}
