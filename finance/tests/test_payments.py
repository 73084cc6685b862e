"""Provider webhooks: signature first, then the inbox, then the money (finance/payments.py)."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from finance.models import Booking, LedgerAudit, Payment, WebhookEvent, WebhookRejectionCount, Withdrawal
from finance.payments import refused_post_counts, replay_webhook
from testing.jobs import run_ready_jobs
from testing.paystack import answer_verify_as_posted

URL = "/api/payments/webhooks/{}/"


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.PAYSTACK_SECRET_KEY = "sk_test_paystack"
    settings.FLUTTERWAVE_SECRET_HASH = "flw-hash"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_one"
    settings.MPESA_CALLBACK_TOKEN = "mpesa-token"
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 100
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


# The root conftest's provider_http, for `post`: Paystack's and Flutterwave's verify endpoints
# (asked before a success gives value) agree with each webhook these tests post. What happens
# when they disagree or do not answer: test_payment_verification.py.
VERIFY = {}


@pytest.fixture(autouse=True)
def _verify_answers(provider_http):
    VERIFY["http"] = provider_http
    yield
    VERIFY.clear()


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def booking(host, guest, make_booking):
    return make_booking(host, guest, total="1000.00", commission="150.00", currency="NGN")


@pytest.fixture
def payment(booking, make_payment):
    return make_payment(booking, provider="paystack")


def post(provider, body, headers=None, query=""):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer_verify_as_posted(VERIFY["http"], provider, raw)
    return APIClient().generic(
        "POST", URL.format(provider) + query, raw, content_type="application/json", **(headers or {})
    )


# --- building each provider's event ------------------------------------------------------------


def paystack_event(payment, *, amount_minor=100000, currency="NGN", event_id=9001, event="charge.success"):
    return {
        "event": event,
        "data": {"id": event_id, "reference": payment.reference, "amount": amount_minor, "currency": currency},
    }


def paystack_headers(raw: bytes, secret="sk_test_paystack"):
    return {"HTTP_X_PAYSTACK_SIGNATURE": hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()}


def send_paystack(body, secret="sk_test_paystack"):
    raw = json.dumps(body).encode()
    return post("paystack", raw, paystack_headers(raw, secret))


def stripe_signature(raw: bytes, *, secrets=("whsec_one",), timestamp=None):
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + raw
    v1 = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return {"HTTP_STRIPE_SIGNATURE": ",".join([f"t={timestamp}"] + [f"v1={v}" for v in v1])}


def stripe_event(payment, *, kind="payment_intent.succeeded", amount=100000, currency="ngn", event_id="evt_1"):
    return {
        "id": event_id,
        "type": kind,
        "data": {
            "object": {
                "id": "pi_123",
                "amount": amount,
                "currency": currency,
                "metadata": {"payment_reference": payment.reference},
            }
        },
    }


def flutterwave_event(payment, *, status="successful", amount=1000, currency="NGN", event_id=555):
    return {
        "event": "charge.completed",
        "data": {"id": event_id, "tx_ref": payment.reference, "status": status, "amount": amount, "currency": currency},
    }


def wallet_balance(user, currency="NGN"):
    wallet = user.wallets.filter(currency=currency).first()
    return wallet.balance if wallet else Decimal("0")


# --- Paystack --------------------------------------------------------------------------------


def test_valid_paystack_event_pays_the_host_confirms_the_booking_and_emails_a_receipt(host, guest, booking, payment):
    response = send_paystack(paystack_event(payment))
    assert mail.outbox == []  # the receipt is a job, sent by a worker
    assert run_ready_jobs() == 1

    assert response.status_code == 200
    assert response.json()["status"] == "applied"
    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == Payment.Status.SUCCESS
    assert booking.status == Booking.Status.CONFIRMED
    assert wallet_balance(host) == Decimal("850.00")
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.APPLIED
    assert [m.to for m in mail.outbox] == [[guest.email]]
    assert payment.reference in mail.outbox[0].body
    payment.refresh_from_db()
    assert payment.receipt_status == Payment.ReceiptStatus.SENT and payment.receipt_sent_at
    assert LedgerAudit.objects.filter(action="webhook.applied").exists()


def test_replayed_event_answers_200_and_moves_nothing_more(host, payment):
    body = paystack_event(payment)
    first, second = send_paystack(body), send_paystack(body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "duplicate"
    assert wallet_balance(host) == Decimal("850.00")
    assert WebhookEvent.objects.count() == 1


def test_second_distinct_success_for_an_applied_payment_pays_once(host, payment):
    send_paystack(paystack_event(payment, event_id=1))
    response = send_paystack(paystack_event(payment, event_id=2))
    assert response.status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_X_PAYSTACK_SIGNATURE": "0" * 128}, {"HTTP_X_PAYSTACK_SIGNATURE": ""}],
    ids=["missing", "wrong", "empty"],
)
def test_bad_or_missing_paystack_signature_is_401_and_stores_nothing(host, payment, headers):
    response = post("paystack", paystack_event(payment), headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0
    assert wallet_balance(host) == Decimal("0")


def test_signature_made_with_another_secret_is_refused(payment):
    assert send_paystack(paystack_event(payment), secret="sk_other").status_code == 401


def test_amount_mismatch_is_flagged_not_applied(host, payment):
    response = send_paystack(paystack_event(payment, amount_minor=99999))
    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.FLAGGED
    assert "differs" in event.reason
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert wallet_balance(host) == Decimal("0")


def test_currency_mismatch_is_flagged(host, payment):
    send_paystack(paystack_event(payment, currency="GHS"))
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.FLAGGED
    assert wallet_balance(host) == Decimal("0")


def test_unknown_reference_is_flagged(host, payment):
    body = paystack_event(payment)
    body["data"]["reference"] = "PAY-DOESNOTEXIST"
    assert send_paystack(body).status_code == 200
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.FLAGGED
    assert event.payment is None


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"event": "charge.success"}'])
def test_signed_but_malformed_event_is_400_and_stored_as_rejected(host, payment, raw):
    response = post("paystack", raw, paystack_headers(raw))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_event"
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.REJECTED
    assert wallet_balance(host) == Decimal("0")


def test_event_types_we_do_not_handle_are_stored_as_ignored(payment):
    response = send_paystack(paystack_event(payment, event="subscription.create"))
    assert response.status_code == 200
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.IGNORED


def test_unknown_provider_is_404():
    response = post("paypal", {"x": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_provider"


def test_failed_verifications_are_rate_limited_per_source_but_real_events_still_pass(settings, host, payment):
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 3
    forged = [post("paystack", paystack_event(payment), {"HTTP_X_PAYSTACK_SIGNATURE": "bad"}) for _ in range(5)]
    assert [r.status_code for r in forged] == [401, 401, 401, 429, 429]
    assert 0 < int(forged[-1]["Retry-After"]) <= 3600
    assert forged[-1].json()["error"]["code"] == "rate_limited"
    # The provider's genuine event from the same address is never crowded out.
    assert send_paystack(paystack_event(payment)).status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


# --- forged posts: refused, never stored, counted per provider and day ------------------------


def test_forged_posts_are_counted_per_provider_and_day_not_stored(db, settings, payment):
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 2
    statuses = [post("paystack", paystack_event(payment), {"HTTP_X_PAYSTACK_SIGNATURE": "bad"}).status_code]
    statuses += [post("paystack", paystack_event(payment)).status_code for _ in range(3)]  # no signature
    statuses.append(post("stripe", b"{}", {"HTTP_STRIPE_SIGNATURE": "t=1,v1=00"}).status_code)
    assert statuses == [401, 401, 429, 429, 429]  # the rate-limited ones (per address) are counted too
    assert WebhookEvent.objects.count() == 0
    today = timezone.localdate()
    assert {(r.provider, r.day, r.count) for r in WebhookRejectionCount.objects.all()} == {
        ("paystack", today, 4),
        ("stripe", today, 1),
    }
    assert send_paystack(paystack_event(payment)).status_code == 200  # a genuine one is not counted
    assert WebhookRejectionCount.objects.get(provider="paystack").count == 4


def test_refused_post_counts_today_and_the_last_seven_days(db):
    today = timezone.localdate()
    for days_ago, count in [(0, 12), (3, 20), (6, 8), (7, 99)]:
        WebhookRejectionCount.objects.create(provider="paystack", day=today - timedelta(days=days_ago), count=count)
    WebhookRejectionCount.objects.create(provider="stripe", day=today - timedelta(days=1), count=2)
    counts = {c.provider: (c.today, c.last_7_days) for c in refused_post_counts()}
    assert counts == {"paystack": (12, 40), "stripe": (0, 2)}  # eight days ago is out of the window


@pytest.mark.django_db(transaction=True)
def test_concurrent_forged_posts_are_each_counted_exactly_once(settings, payment):
    """Threads, each with its own PostgreSQL connection, post forged webhooks at once: the
    upsert adds exactly one per post, with no lost update and no duplicate-key error."""
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 10_000
    threads_count, posts_each = 8, 10
    start = threading.Barrier(threads_count)
    statuses, errors = [], []

    def forge():
        try:
            start.wait()
            for _ in range(posts_each):
                response = post("paystack", paystack_event(payment), {"HTTP_X_PAYSTACK_SIGNATURE": "forged"})
                statuses.append(response.status_code)
        except Exception as error:  # reported below: an exception in a thread would pass silently
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=forge) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert statuses == [401] * (threads_count * posts_each)
    assert WebhookRejectionCount.objects.get().count == threads_count * posts_each
    assert WebhookEvent.objects.count() == 0


# --- Stripe ----------------------------------------------------------------------------------


def stripe_payment(booking, make_payment):
    return make_payment(booking, provider="stripe")


def test_valid_stripe_event_is_applied(host, booking, make_payment):
    payment = stripe_payment(booking, make_payment)
    raw = json.dumps(stripe_event(payment)).encode()
    assert post("stripe", raw, stripe_signature(raw)).status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


@pytest.mark.parametrize("skew", [-301, 301], ids=["stale", "future"])
def test_stripe_timestamp_outside_300_seconds_either_way_is_refused(host, booking, make_payment, skew):
    payment = stripe_payment(booking, make_payment)
    raw = json.dumps(stripe_event(payment)).encode()
    headers = stripe_signature(raw, timestamp=int(time.time()) + skew)
    assert post("stripe", raw, headers).status_code == 401
    assert WebhookEvent.objects.count() == 0


def test_stripe_accepts_any_listed_v1_during_secret_rotation(host, booking, make_payment):
    payment = stripe_payment(booking, make_payment)
    raw = json.dumps(stripe_event(payment)).encode()
    headers = stripe_signature(raw, secrets=("whsec_old_rotated_out", "whsec_one"))
    assert post("stripe", raw, headers).status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


def test_stripe_signature_over_a_different_body_is_refused(booking, make_payment):
    payment = stripe_payment(booking, make_payment)
    raw = json.dumps(stripe_event(payment)).encode()
    tampered = raw.replace(b"100000", b"900000")
    assert post("stripe", tampered, stripe_signature(raw)).status_code == 401


def test_stripe_payment_failed_marks_payment_failed_and_leaves_booking_pending(host, booking, make_payment):
    payment = stripe_payment(booking, make_payment)
    raw = json.dumps(stripe_event(payment, kind="payment_intent.payment_failed")).encode()
    assert post("stripe", raw, stripe_signature(raw)).status_code == 200
    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert booking.status == Booking.Status.PENDING
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.PAYMENT_FAILED
    assert wallet_balance(host) == Decimal("0")


def test_stripe_missing_header_is_401(booking, make_payment):
    payment = stripe_payment(booking, make_payment)
    assert post("stripe", stripe_event(payment)).status_code == 401


# --- Flutterwave -----------------------------------------------------------------------------


def test_valid_flutterwave_event_with_major_unit_amount_is_applied(host, booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    raw = json.dumps(flutterwave_event(payment, amount=1000.00)).encode()
    response = post("flutterwave", raw, {"HTTP_VERIF_HASH": "flw-hash"})
    assert response.status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


def test_flutterwave_wrong_hash_is_401(booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    response = post("flutterwave", flutterwave_event(payment), {"HTTP_VERIF_HASH": "flw-hasX"})
    assert response.status_code == 401


def test_flutterwave_failed_status_marks_the_payment_failed(booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    post("flutterwave", flutterwave_event(payment, status="failed"), {"HTTP_VERIF_HASH": "flw-hash"})
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED


def test_flutterwave_amount_with_too_many_decimals_is_rejected(booking, make_payment):
    payment = make_payment(booking, provider="flutterwave")
    raw = json.dumps(flutterwave_event(payment)).replace('"amount": 1000', '"amount": 1000.001').encode()
    response = post("flutterwave", raw, {"HTTP_VERIF_HASH": "flw-hash"})
    assert response.status_code == 400
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.REJECTED


# --- M-Pesa ----------------------------------------------------------------------------------


def mpesa_callback(checkout_id, *, result_code=0, amount=1000):
    callback = {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout_id, "ResultCode": result_code}
    if result_code == 0:
        callback["ResultDesc"] = "The service request is processed successfully."
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": amount},
                {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
                {"Name": "PhoneNumber", "Value": 254708374149},
            ]
        }
    else:
        callback["ResultDesc"] = "Request cancelled by user"
    return {"Body": {"stkCallback": callback}}


@pytest.fixture
def mpesa_payment(host, guest, make_booking):
    booking = make_booking(host, guest, total="1000.00", commission="100.00", currency="KES", country="KE")
    return Payment.objects.create(
        booking=booking, provider="mpesa", amount=booking.grand_total, currency="KES", provider_reference="ws_CO_1"
    )


def test_mpesa_callback_with_token_is_applied_in_the_payments_currency(host, mpesa_payment):
    response = post("mpesa", mpesa_callback("ws_CO_1"), query="?token=mpesa-token")
    assert response.status_code == 200
    assert wallet_balance(host, "KES") == Decimal("900.00")


def test_mpesa_callback_without_the_token_is_401(host, mpesa_payment):
    assert post("mpesa", mpesa_callback("ws_CO_1"), query="?token=guess").status_code == 401
    assert post("mpesa", mpesa_callback("ws_CO_1")).status_code == 401
    assert wallet_balance(host, "KES") == Decimal("0")


def test_mpesa_cancelled_by_user_fails_the_payment(mpesa_payment):
    post("mpesa", mpesa_callback("ws_CO_1", result_code=1032), query="?token=mpesa-token")
    mpesa_payment.refresh_from_db()
    assert mpesa_payment.status == Payment.Status.FAILED
    assert "cancelled" in mpesa_payment.failure_reason


# --- sandbox and staff replay ------------------------------------------------------------------


def test_sandbox_event_signed_by_the_sandbox_is_applied(settings, host, booking, make_payment):
    from finance.providers import sandbox

    payment = make_payment(booking, provider="sandbox")
    raw = sandbox.event_body(payment)
    response = post("sandbox", raw, {"HTTP_X_SANDBOX_SIGNATURE": sandbox.sign(raw)})
    assert response.status_code == 200
    assert wallet_balance(host) == Decimal("850.00")


def test_sandbox_endpoint_is_gone_when_the_sandbox_is_off(settings, booking, make_payment):
    from finance.providers import sandbox

    settings.SANDBOX_PAYMENTS_ENABLED = False
    payment = make_payment(booking, provider="sandbox")
    raw = sandbox.event_body(payment)
    assert post("sandbox", raw, {"HTTP_X_SANDBOX_SIGNATURE": sandbox.sign(raw)}).status_code == 404


def test_staff_replay_applies_a_flagged_event_once_its_cause_is_fixed(host, booking, payment, finance_user):
    booking.grand_total = Decimal("999.99")  # the booking was edited: the provider charged 1000.00
    booking.save()
    Payment.objects.filter(pk=payment.pk).update(amount=Decimal("999.99"))
    send_paystack(paystack_event(payment))
    event = WebhookEvent.objects.get()
    assert event.outcome == WebhookEvent.Outcome.FLAGGED

    booking.grand_total = Decimal("1000.00")  # staff correct the booking and the payment
    booking.save()
    Payment.objects.filter(pk=payment.pk).update(amount=Decimal("1000.00"))
    replayed = replay_webhook(event.pk, actor=finance_user)

    assert replayed.outcome == WebhookEvent.Outcome.APPLIED
    assert replayed.replay_count == 1
    assert wallet_balance(host) == Decimal("850.00")
    assert LedgerAudit.objects.filter(action="webhook.applied", actor=finance_user).exists()


def test_replay_needs_permission_and_a_flagged_event(payment, host, support_user, finance_user):
    from finance import staff_actions
    from finance.errors import InvalidStateError, PermissionDeniedError

    send_paystack(paystack_event(payment))
    event = WebhookEvent.objects.get()
    with pytest.raises(PermissionDeniedError):
        staff_actions.replay_webhook(event=event, actor=support_user)
    with pytest.raises(InvalidStateError):
        staff_actions.replay_webhook(event=event, actor=finance_user)  # already applied


def test_no_withdrawal_or_other_row_is_touched_by_a_refused_webhook(host, payment, funded_wallet, bank_account):
    before = (Withdrawal.objects.count(), Payment.objects.get(pk=payment.pk).status, wallet_balance(host))
    post("paystack", paystack_event(payment), {"HTTP_X_PAYSTACK_SIGNATURE": "forged"})
    after = (Withdrawal.objects.count(), Payment.objects.get(pk=payment.pk).status, wallet_balance(host))
    assert before == after


# --- secret rotation: the previous secret verifies deliveries until every sender has the new one ---------


def delivery(provider, payment, secret):
    """(body, headers, query) of a `provider` delivery about `payment`, signed with `secret`."""
    from finance.providers import sandbox

    if provider == "paystack":
        raw = json.dumps(paystack_event(payment)).encode()
        return raw, paystack_headers(raw, secret), ""
    if provider == "flutterwave":
        return json.dumps(flutterwave_event(payment)).encode(), {"HTTP_VERIF_HASH": secret}, ""
    if provider == "stripe":
        raw = json.dumps(stripe_event(payment)).encode()
        return raw, stripe_signature(raw, secrets=(secret,)), ""
    if provider == "mpesa":
        return json.dumps(mpesa_callback("ws_CO_1")).encode(), {}, f"?token={secret}"
    raw = sandbox.event_body(payment)
    return raw, {"HTTP_X_SANDBOX_SIGNATURE": sandbox.sign(raw, secret)}, ""


WEBHOOK_SECRETS = {
    "paystack": "PAYSTACK_SECRET_KEY",
    "flutterwave": "FLUTTERWAVE_SECRET_HASH",
    "stripe": "STRIPE_WEBHOOK_SECRET",
    "mpesa": "MPESA_CALLBACK_TOKEN",
    "sandbox": "SANDBOX_WEBHOOK_SECRET",
}


@pytest.fixture
def rotation_payment(host, guest, make_booking):
    """A payment for each provider: 1,000.00 NGN (KES for M-Pesa), of which the host gets 850.00 (900.00)."""

    def make(provider):
        if provider == "mpesa":
            booking = make_booking(host, guest, total="1000.00", commission="100.00", currency="KES", country="KE")
        else:
            booking = make_booking(host, guest, total="1000.00", commission="150.00", currency="NGN")
        return Payment.objects.create(
            booking=booking,
            provider=provider,
            amount=booking.grand_total,
            currency=booking.currency,
            provider_reference="ws_CO_1" if provider == "mpesa" else "",
        )

    return make


def paid_to(host, provider):
    return wallet_balance(host, "KES") if provider == "mpesa" else wallet_balance(host)


@pytest.mark.parametrize("provider", WEBHOOK_SECRETS)
def test_a_delivery_signed_with_the_previous_secret_is_applied_while_it_rotates(
    settings, host, rotation_payment, provider
):
    name = WEBHOOK_SECRETS[provider]
    old = f"{provider}-secret-before-rotation"
    payment = rotation_payment(provider)
    raw, headers, query = delivery(provider, payment, old)

    refused = post(provider, raw, headers, query)  # the old secret alone verifies nothing
    setattr(settings, f"{name}_PREVIOUS", old)
    accepted = post(provider, raw, headers, query)
    current = delivery(provider, payment, getattr(settings, name))

    assert (refused.status_code, accepted.status_code) == (401, 200)
    assert paid_to(host, provider) == (Decimal("900.00") if provider == "mpesa" else Decimal("850.00"))
    assert post(provider, *current).status_code == 200  # the current secret still verifies (a replay: paid once)
    assert paid_to(host, provider) == (Decimal("900.00") if provider == "mpesa" else Decimal("850.00"))


@pytest.mark.parametrize("provider", WEBHOOK_SECRETS)
def test_a_delivery_signed_with_neither_secret_is_refused(settings, host, rotation_payment, provider):
    setattr(settings, f"{WEBHOOK_SECRETS[provider]}_PREVIOUS", f"{provider}-secret-before-rotation")
    payment = rotation_payment(provider)

    response = post(provider, *delivery(provider, payment, "a-guess"))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0
    assert paid_to(host, provider) == Decimal("0")
