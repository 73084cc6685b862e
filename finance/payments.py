"""Payments from guests: starting a checkout and applying the providers' webhooks.

Money moves only through `TransactionService`; this module decides *whether* a provider's
event may move it. The webhook path runs in this order, and each step's failure stops
it before the next:

  1. verify the signature over the raw bytes (bad, missing or stale → 401, nothing stored,
     only counted per provider and day in WebhookRejectionCount; too many failures from one
     source → 429 for that source only, counted the same way),
  2. parse the event (malformed → 400, stored as rejected),
  2b. for a payment's success, ask the provider's verify endpoint where the provider asks for
     it (Paystack, Flutterwave), outside any transaction: an event already in the inbox
     answers 200 without asking; the provider unreachable → 503 with Retry-After, nothing
     stored (the provider delivers it again); a charge it does not confirm, or a webhook
     claiming another amount than it records → stored, flagged, no money; otherwise its
     VERIFIED amount and currency are what step 4 compares,
  3. store it in the inbox once per provider event id (a replay answers 200, changes nothing),
  4. match it against the payment (unknown reference, other amount or currency → flagged),
  5. apply it: payout to the host and confirmation of the booking, or a failed payment;
     a paid booking's receipt e-mail is a job enqueued in the same transaction (finance.tasks).
"""

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from jobs.worker import describe

from . import db, ledger
from .errors import InvalidStateError, NotFoundError, TransactionError
from .metrics import WebhookOutcome, count_webhook
from .models import Booking, Payment, WebhookEvent, WebhookRejectionCount
from .money import format_money
from .providers import PROVIDERS, choose_provider, enabled_provider, get_provider
from .providers.base import (
    FAILED,
    IGNORED,
    SUCCESS,
    CheckoutInputError,
    MalformedEventError,
    PaymentCheck,
    Provider,
    ProviderClient,
    ProviderEvent,
    ProviderUnavailableError,
    WebhookVerificationError,
    major_amount,
)
from .services import TransactionService
from .tasks import send_receipt

logger = logging.getLogger("finance.payments")
Outcome = WebhookEvent.Outcome


# --- checkout ---------------------------------------------------------------------------
#
# Three steps, so that no row lock is held while a provider answers over HTTP:
#   a. one short transaction locks the booking and reserves its payment (reusing an open or
#      reserved one) and marks a checkout call as in flight;
#   b. the provider's checkout runs outside any transaction;
#   c. a second short transaction records the checkout (or the failure) and the audit entry.
# A failed call leaves the reservation for the guest's next checkout call: never a second payment.

# Longer than any provider's checkout can take (M-Pesa makes two calls, each with the client's
# connect + read timeout): a call in flight for longer was abandoned and may be taken over.
CHECKOUT_ABANDONED_AFTER = timedelta(seconds=2 * sum(ProviderClient.timeout))
# What a caller who finds a checkout call in flight is told to wait before asking again.
CHECKOUT_RETRY_AFTER_SECONDS = 2


class CheckoutInProgressError(TransactionError):
    """Another request is opening this booking's checkout with the provider right now."""

    code = "checkout_in_progress"
    status = 409


@dataclass
class _Reservation:
    payment: Payment
    provider: Provider
    created: bool  # this call created the payment row
    started_at: datetime | None  # None: the checkout is already open, nothing to call


def initiate_payment(booking_id: int, *, guest, provider_name: str = "", phone: str = "", session=None):
    """Open a checkout for the guest's pending booking; returns (payment, opened_now).

    `opened_now` is True when this call opened the checkout (201 in the API); a call that finds
    the checkout already open returns that payment (200): never a second charge. Call it
    outside any transaction, so the provider's HTTP call holds no lock.
    """
    reservation = _reserve_checkout(booking_id, guest=guest, provider_name=provider_name)
    payment = reservation.payment
    if reservation.started_at is None:
        return payment, False
    try:
        checkout = reservation.provider.checkout(payment, email=guest.email, phone=phone, session=session)
    except Exception as error:
        # Bad input changes nothing: a reservation this call made for it is not kept.
        forget = reservation.created and isinstance(error, CheckoutInputError)
        _record_checkout_failure(payment, reservation.started_at, error, forget=forget)
        raise
    return _record_checkout(reservation, checkout, actor=guest), True


def _reserve_checkout(booking_id: int, *, guest, provider_name: str) -> _Reservation:
    """Step a: lock the booking, find or reserve its payment, mark the checkout call in flight."""
    with transaction.atomic():
        booking = (
            Booking.objects.select_for_update()
            .select_related("rental_property")
            .filter(pk=booking_id, guest=guest)
            .first()
        )
        if booking is None:
            raise NotFoundError("Booking not found.")
        payment = booking.payments.filter(status=Payment.Status.PENDING).first()
        if payment is not None and payment.checkout_status == Payment.CheckoutStatus.OPEN:
            return _Reservation(payment, PROVIDERS[payment.provider], created=False, started_at=None)
        if payment is not None and _call_in_flight(payment):
            raise CheckoutInProgressError(
                "This booking's payment is being prepared with the provider; ask again in a moment.",
                retry_after=CHECKOUT_RETRY_AFTER_SECONDS,
            )
        created = payment is None
        if created:
            if booking.status != Booking.Status.PENDING:
                raise InvalidStateError(
                    f"Booking #{booking.pk} is {booking.get_status_display().lower()}: nothing to pay."
                )
            provider = choose_provider(booking.rental_property.country, provider_name)
            payment = Payment(
                booking=booking,
                provider=provider.name,
                amount=booking.grand_total,
                currency=booking.currency,
                checkout_status=Payment.CheckoutStatus.RESERVED,
            )
        elif provider_name and provider_name != payment.provider:
            # No provider has opened this reservation: the guest may switch to another.
            provider = choose_provider(booking.rental_property.country, provider_name)
            payment.provider = provider.name
        else:
            provider = get_provider(payment.provider)
        payment.checkout_started_at = timezone.now()
        payment.save()
    return _Reservation(payment, provider, created=created, started_at=payment.checkout_started_at)


def _call_in_flight(payment: Payment) -> bool:
    started = payment.checkout_started_at
    return started is not None and timezone.now() - started < CHECKOUT_ABANDONED_AFTER


def _locked_reservation(payment: Payment, started_at: datetime) -> Payment | None:
    """The payment, locked, if it is still reserved for the call that started at `started_at`
    (None when the call was abandoned and another request took it over)."""
    return (
        Payment.objects.select_for_update()
        .filter(pk=payment.pk, checkout_status=Payment.CheckoutStatus.RESERVED, checkout_started_at=started_at)
        .first()
    )


def _record_checkout(reservation: _Reservation, checkout: dict, *, actor) -> Payment:
    """Step c: keep the provider's checkout data and reference, with the audit entry."""
    with transaction.atomic():
        payment = _locked_reservation(reservation.payment, reservation.started_at)
        if payment is None:
            logger.warning("checkout of %s finished after it was taken over; result dropped", reservation.payment)
            payment = Payment.objects.get(pk=reservation.payment.pk)
            if payment.checkout_status != Payment.CheckoutStatus.OPEN:
                raise CheckoutInProgressError(
                    "This booking's payment is being prepared with the provider; ask again in a moment.",
                    retry_after=CHECKOUT_RETRY_AFTER_SECONDS,
                )
            return payment
        payment.provider_reference = checkout.pop("provider_reference", None)
        payment.checkout = checkout
        payment.checkout_status = Payment.CheckoutStatus.OPEN
        payment.checkout_started_at = None
        payment.checkout_error = ""
        payment.save()
        reservation.provider.after_checkout(payment)
        ledger.audit(
            action="payment.initiate",
            actor=actor,
            amount=payment.amount,
            currency=payment.currency,
            metadata={"payment": payment.reference, "provider": payment.provider, "booking": payment.booking_id},
        )
    return payment


def _record_checkout_failure(payment: Payment, started_at: datetime, error: Exception, *, forget: bool) -> None:
    """Step c after a failure: the reservation stays for a retry (or goes, when `forget`)."""
    with transaction.atomic():
        reserved = _locked_reservation(payment, started_at)
        if reserved is None:
            return
        if forget:
            reserved.delete()
            return
        reserved.checkout_started_at = None
        reserved.checkout_error = describe(error)
        reserved.save(update_fields=["checkout_started_at", "checkout_error", "updated_at"])
    logger.warning("checkout of %s failed: %s", payment.reference, reserved.checkout_error)


# --- webhooks ---------------------------------------------------------------------------


@dataclass
class WebhookResult:
    status: int
    body: dict
    retry_after: int | None = None


def receive_webhook(provider_name: str, raw: bytes, headers, query=None, source: str = "") -> WebhookResult:
    """One delivery through steps 1-5, counted once in webhook_events_total by its outcome."""
    # A provider switched off (or unknown) takes no webhooks: nothing is verified, stored or
    # counted (the name comes from the URL: counting it would let anyone add label values).
    provider = enabled_provider(provider_name)
    if provider is None:
        return _error(404, "unknown_provider", f"No webhook endpoint for {provider_name!r}.")
    try:
        outcome, result = _receive(provider, provider_name, raw, headers, query, source)
    except Exception:
        count_webhook(provider_name, WebhookOutcome.ERROR)
        raise
    count_webhook(provider_name, outcome)
    return result


def _receive(provider: Provider, provider_name: str, raw: bytes, headers, query, source: str):
    """Steps 1-5; returns the delivery's outcome (webhook_events_total) and the answer."""
    try:
        provider.verify(raw, headers, query)
    except WebhookVerificationError as error:
        return WebhookOutcome.INVALID_SIGNATURE, _refuse_unverified(provider_name, source, str(error))
    try:
        event = provider.parse(raw)
    except MalformedEventError as error:
        _store_rejected(provider_name, raw, str(error))
        return WebhookOutcome.REJECTED, _error(400, "malformed_event", str(error))
    duplicate = WebhookResult(200, {"status": "duplicate", "event_id": event.event_id})
    check = None
    if _needs_confirmation(event):
        # Step 2b, outside any transaction: no row lock waits on the provider's answer.
        if WebhookEvent.objects.filter(provider=provider_name, event_id=event.event_id).exists():
            return WebhookOutcome.DUPLICATE, duplicate
        try:
            check = provider.confirm_payment(event)
        except ProviderUnavailableError:
            logger.warning("webhook %s %s: the verify endpoint did not answer; 503", provider_name, event.event_id)
            return WebhookOutcome.PROVIDER_UNAVAILABLE, _verify_unavailable(provider)
    with transaction.atomic():
        inbox = WebhookEvent(
            provider=provider_name,
            event_id=event.event_id,
            event_type=event.event_type,
            raw_body=raw.decode("utf-8", "replace"),
        )
        if not db.insert_once(inbox, unique=("provider", "event_id")):
            return WebhookOutcome.DUPLICATE, duplicate
        _apply_confirmed(inbox, event, check, actor=None)
    return WebhookOutcome.PROCESSED, WebhookResult(200, {"status": inbox.outcome, "event_id": event.event_id})


# How long a provider whose verify endpoint did not answer is asked to wait before delivering
# the webhook again (providers that ignore Retry-After keep their own retry schedule).
VERIFY_RETRY_AFTER_SECONDS = 60


def _needs_confirmation(event: ProviderEvent) -> bool:
    """A payment's success gives value only once the provider's verify endpoint confirms it."""
    return event.outcome == SUCCESS and not event.is_transfer and not event.is_refund


def _verify_unavailable(provider: Provider) -> WebhookResult:
    result = _error(
        503,
        "provider_unavailable",
        f"{_provider_label(provider)} could not confirm this payment right now; nothing was stored. "
        "Deliver the event again later.",
    )
    result.retry_after = VERIFY_RETRY_AFTER_SECONDS
    return result


def _provider_label(provider: Provider) -> str:
    return {"paystack": "Paystack", "flutterwave": "Flutterwave", "mpesa": "M-Pesa"}.get(
        provider.name, provider.name.title()
    )


def _apply_confirmed(inbox: WebhookEvent, event: ProviderEvent, check: PaymentCheck | None, *, actor) -> None:
    """Steps 4-5 with the verify endpoint's word (None: the provider has no such check). A
    charge it does not confirm, or whose webhook claims another amount or currency than the
    provider's record, is flagged and moves no money; otherwise the payment is matched against
    the amount and currency the provider says were charged."""
    if check is None:
        return _apply(inbox, event, actor=actor)
    label = _provider_label(PROVIDERS[inbox.provider])
    if not check.succeeded:
        inbox.payment = _find_payment(inbox.provider, event)
        reason = f"{label}'s verify endpoint says this charge is '{check.provider_status}': not applied."
        return _record(inbox, Outcome.FLAGGED, reason, actor=actor)
    if event.amount is not None and (event.amount, event.currency) != (check.amount, check.currency):
        inbox.payment = _find_payment(inbox.provider, event)
        reason = (
            f"The webhook says {format_money(event.amount, event.currency)} was charged, {label}'s verify "
            f"endpoint says {format_money(check.amount, check.currency)}: not applied."
        )
        return _record(inbox, Outcome.FLAGGED, reason, actor=actor)
    _apply(inbox, replace(event, amount=check.amount, currency=check.currency, raw_amount=None), actor=actor)


def check_replayable(inbox: WebhookEvent) -> None:
    """Only the events that need attention (flagged or rejected) may be applied again."""
    if inbox.outcome not in WebhookEvent.NEEDS_ATTENTION:
        raise InvalidStateError(
            f"Only flagged or rejected events can be replayed; this one is {inbox.get_outcome_display().lower()}."
        )


# What `replay_webhook` is handed when its caller did not ask the provider first.
NOT_ASKED = object()


def confirm_for_replay(event_pk: int) -> PaymentCheck | None:
    """Before a replay, and outside any transaction: ask the provider's verify endpoint about the
    event's payment again (None when the event is not a payment's success, or the provider has
    no such check). Raises ProviderUnavailableError (503) when the provider does not answer, and
    the replay's own refusals (not found, not replayable) without asking."""
    inbox = WebhookEvent.objects.filter(pk=event_pk).first()
    if inbox is None:
        raise NotFoundError("Webhook event not found.")
    check_replayable(inbox)
    provider = PROVIDERS[inbox.provider]
    try:
        event = provider.parse(inbox.raw_body.encode())
    except MalformedEventError:
        return None  # the replay records it as rejected again
    if not _needs_confirmation(event):
        return None
    try:
        return provider.confirm_payment(event)
    except ProviderUnavailableError:
        raise ProviderUnavailableError(
            f"{_provider_label(provider)} did not answer when asked to confirm this payment; nothing changed. "
            "Replay it again in a few minutes."
        ) from None


def replay_webhook(event_pk: int, *, actor, check=NOT_ASKED) -> WebhookEvent:
    """Apply a flagged or rejected event again, after staff fixed its cause. A payment's success
    is confirmed with the provider again first (`check`, from `confirm_for_replay`, called here
    when the caller did not), before the row lock is taken.

    Trusted callers only: staff replay through `finance.staff_actions.replay_webhook`, which
    checks the permission and writes the audit entry."""
    if check is NOT_ASKED:
        check = confirm_for_replay(event_pk)
    with transaction.atomic():
        inbox = WebhookEvent.objects.select_for_update().filter(pk=event_pk).first()
        if inbox is None:
            raise NotFoundError("Webhook event not found.")
        check_replayable(inbox)
        inbox.replay_count += 1
        try:
            event = PROVIDERS[inbox.provider].parse(inbox.raw_body.encode())
        except MalformedEventError as error:
            _record(inbox, Outcome.REJECTED, str(error), actor=actor)
            return inbox
        inbox.event_type = event.event_type
        _apply_confirmed(inbox, event, check if _needs_confirmation(event) else None, actor=actor)
    return inbox


def _apply(inbox: WebhookEvent, event: ProviderEvent, *, actor) -> None:
    if event.outcome == IGNORED:
        return _record(inbox, Outcome.IGNORED, f"{event.event_type} is not an event we act on.", actor=actor)
    if event.is_transfer:  # a payout's callback: finance.payouts settles it
        from .payouts import apply_transfer_event

        outcome, reason = apply_transfer_event(inbox, event, actor=actor)
        return _record(inbox, outcome, reason, actor=actor)
    if event.is_refund:  # a refund's callback: finance.refunds settles it
        from .refunds import apply_refund_event

        outcome, reason = apply_refund_event(inbox, event, actor=actor)
        return _record(inbox, outcome, reason, actor=actor)
    payment = _find_payment(inbox.provider, event)
    if payment is None:
        return _record(inbox, Outcome.FLAGGED, "No payment matches this event's reference.", actor=actor)
    inbox.payment = payment
    mismatch = _mismatch(event, payment)
    if mismatch:
        return _record(inbox, Outcome.FLAGGED, mismatch, actor=actor)
    if event.outcome == SUCCESS:
        _apply_success(inbox, event, payment, actor)
    elif event.outcome == FAILED:
        _apply_failure(inbox, event, payment, actor)


def _apply_success(inbox, event, payment, actor) -> None:
    if payment.ledger_transaction_id:
        return _record(inbox, Outcome.APPLIED, "Payment was already applied.", actor=actor)
    if payment.status not in (Payment.Status.PENDING, Payment.Status.FAILED):
        return _record(inbox, Outcome.FLAGGED, f"Payment is {payment.status}: not applied again.", actor=actor)
    booking = payment.booking
    if booking.status != Booking.Status.PENDING:
        reason = f"Booking #{booking.pk} is {booking.status}: money received, not applied."
        return _record(inbox, Outcome.FLAGGED, reason, actor=actor)
    if payment.status == Payment.Status.FAILED and booking.payments.filter(status=Payment.Status.PENDING).exists():
        reason = "Success for a failed payment while another payment is open: check before applying."
        return _record(inbox, Outcome.FLAGGED, reason, actor=actor)
    # A late success after a failure (the guest retried on the provider's page) still pays.
    payment.status = Payment.Status.PENDING
    payment.provider_reference = payment.provider_reference or event.provider_reference or None
    payment.failure_reason = ""
    payment.save(update_fields=["status", "provider_reference", "failure_reason", "updated_at"])
    txn = TransactionService.process_booking_payment(booking, payment, actor=actor)
    _record(
        inbox,
        Outcome.APPLIED,
        f"Guest payment applied as {txn.reference}: booking #{booking.pk} confirmed, the host's share credited.",
        actor=actor,
    )
    _queue_receipt(payment)


def _queue_receipt(payment: Payment) -> None:
    """Enqueue the receipt e-mail in the payment's own transaction: it commits with the payment."""
    if not payment.booking.guest.email:
        return
    payment.receipt_status = Payment.ReceiptStatus.QUEUED
    payment.receipt_error = ""
    payment.save(update_fields=["receipt_status", "receipt_error", "updated_at"])
    send_receipt.enqueue(payment.pk)


def _apply_failure(inbox, event, payment, actor) -> None:
    if payment.status != Payment.Status.PENDING:
        return _record(inbox, Outcome.FLAGGED, f"Payment is {payment.status}: a failure cannot apply.", actor=actor)
    payment.status = Payment.Status.FAILED
    payment.failure_reason = event.failure_reason or event.event_type
    payment.save(update_fields=["status", "failure_reason", "updated_at"])
    _record(inbox, Outcome.PAYMENT_FAILED, payment.failure_reason, actor=actor)


def _find_payment(provider_name: str, event: ProviderEvent) -> Payment | None:
    payments = Payment.objects.select_for_update().select_related("booking").filter(provider=provider_name)
    if event.payment_reference:
        return payments.filter(reference=event.payment_reference).first()
    if event.provider_reference:
        return payments.filter(provider_reference=event.provider_reference).first()
    return None


def _mismatch(event: ProviderEvent, payment: Payment) -> str:
    """Why the event's money differs from the payment, or '' when it matches."""
    if event.outcome != SUCCESS:
        return ""
    amount, currency = event.amount, event.currency
    if amount is None:  # the provider sends no currency (M-Pesa): read it in the payment's
        try:
            amount, currency = major_amount(event.raw_amount, payment.currency), payment.currency
        except MalformedEventError as error:
            return str(error)
    if currency != payment.currency:
        return f"Currency {currency} differs from the payment's {payment.currency}."
    if Decimal(amount) != payment.amount:
        return (
            f"Amount {format_money(amount, currency)} differs from the payment's "
            f"{format_money(payment.amount, payment.currency)}."
        )
    return ""


def _record(inbox: WebhookEvent, outcome: str, reason: str, *, actor) -> None:
    inbox.outcome = outcome
    inbox.reason = reason
    inbox.processed_at = timezone.now()
    inbox.save()
    payment = inbox.payment
    # A payout's callback is about a withdrawal: audited with its amount and currency.
    subject = payment or inbox.withdrawal
    metadata = {
        "provider": inbox.provider,
        "event_id": inbox.event_id,
        "event_type": inbox.event_type,
        "payment": payment.reference if payment else "",
        "replay": inbox.replay_count,
    }
    if inbox.withdrawal_id:
        metadata["withdrawal"] = inbox.withdrawal.reference
    ledger.audit(
        action=f"webhook.{outcome}",
        actor=actor,
        amount=subject.amount if subject else None,
        currency=subject.currency if subject else "",
        reason=reason,
        metadata=metadata,
    )
    logger.info("webhook %s %s: %s (%s)", inbox.provider, inbox.event_id, outcome, reason)


def _store_rejected(provider_name: str, raw: bytes, reason: str) -> None:
    """Keep a malformed but authentic event for staff; the body's hash stands in for its id."""
    event_id = "malformed:" + hashlib.sha256(raw).hexdigest()
    with transaction.atomic():
        inbox, created = WebhookEvent.objects.get_or_create(
            provider=provider_name,
            event_id=event_id,
            defaults={"raw_body": raw.decode("utf-8", "replace"), "outcome": Outcome.REJECTED},
        )
        if created:
            _record(inbox, Outcome.REJECTED, reason, actor=None)


def _refuse_unverified(provider_name: str, source: str, reason: str) -> WebhookResult:
    """401, or 429 once this source has failed verification too often this hour. Nothing of
    the post is stored; it is only counted (count_refused_post)."""
    count_refused_post(provider_name)
    window = int(timezone.now().timestamp()) // 3600
    key = f"webhook-unverified:{source}:{window}"
    cache.add(key, 0, timeout=3600)
    try:
        failures = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=3600)
        failures = 1
    logger.warning("webhook %s from %s failed verification (%s this hour): %s", provider_name, source, failures, reason)
    if failures > settings.WEBHOOK_FAILED_VERIFICATION_LIMIT:
        retry_after = 3600 - int(timezone.now().timestamp()) % 3600
        result = _error(429, "rate_limited", "Too many webhook requests that failed verification.")
        result.retry_after = retry_after
        return result
    return _error(401, "invalid_signature", reason)


def count_refused_post(provider_name: str) -> None:
    """Add one to today's count of posts refused for `provider_name`: one statement, atomic, so
    concurrent posts on any number of app servers each add exactly one, and a flood updates one
    row per provider and day. The day is the current time zone's, as the inbox shows it."""
    table = connection.ops.quote_name(WebhookRejectionCount._meta.db_table)
    count = connection.ops.quote_name("count")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (provider, day, {count}) VALUES (%s, %s, 1) "
            f"ON CONFLICT (provider, day) DO UPDATE SET {count} = {table}.{count} + 1",
            [provider_name, timezone.localdate()],
        )


@dataclass
class RefusedPosts:
    provider: str
    today: int
    last_7_days: int


def refused_post_counts(days: int = 7) -> list[RefusedPosts]:
    """Per provider with any, the posts refused today and in the last `days` days (today included)."""
    today = timezone.localdate()
    rows = (
        WebhookRejectionCount.objects.filter(day__gt=today - timedelta(days=days))
        .values("provider")
        .annotate(total=Sum("count"), today=Sum("count", filter=Q(day=today)))
        .order_by("provider")
    )
    return [RefusedPosts(r["provider"], r["today"] or 0, r["total"] or 0) for r in rows]


def _error(status: int, code: str, message: str) -> WebhookResult:
    return WebhookResult(status, {"error": {"code": code, "message": message, "fields": {}}})
