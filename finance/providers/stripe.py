"""Stripe: `Stripe-Signature: t=…,v1=…` — HMAC-SHA256 of "{t}.{raw body}", within 300 s either way.

Refunds (https://docs.stripe.com/api/refunds): POST /v1/refunds (form-encoded) with the
payment's PaymentIntent, the amount in minor units and our refund reference both as
metadata[refund_reference] and as the Idempotency-Key header, so a retry after a lost answer
never refunds twice (Stripe keeps a failed refund under its key: the engine gives each attempt
a new reference). GET /v1/refunds/{id} reads one back; the `refund.updated`, `refund.failed` and
`charge.refund.updated` webhooks (https://docs.stripe.com/refunds#refund-events) carry the
refund object and settle it.
"""

import hashlib
import hmac
import time

from django.conf import settings

from finance.money import to_minor_units

from .base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    MalformedEventError,
    Provider,
    ProviderClient,
    ProviderEvent,
    RefundRefusedError,
    RefundResult,
    WebhookVerificationError,
    expect,
    field,
    load_json,
    logger,
    minor_amount,
)

TOLERANCE_SECONDS = 300
OUTCOMES = {"payment_intent.succeeded": SUCCESS, "payment_intent.payment_failed": FAILED}
# Webhooks whose data.object is a Refund.
REFUND_EVENTS = ("refund.updated", "refund.failed", "charge.refund.updated")
# A refund's status (https://docs.stripe.com/api/refunds/object#refund_object-status) in our
# terms: pending and requires_action are not final (the query or a later webhook settles them).
REFUND_OUTCOMES = {"succeeded": SUCCESS, "failed": FAILED, "canceled": FAILED}
# Stripe error codes (https://docs.stripe.com/error-codes) that are about the refund itself: no
# retry of the same call mends them. Any other 4xx (our key, our balance, a rate limit, an
# idempotency key reused with other parameters) is ours: retried, logged, never the guest's.
REFUND_REFUSED_CODES = (
    "charge_already_refunded",
    "amount_too_large",
    "amount_too_small",
    "charge_disputed",
    "refund_disputed_payment",
    "charge_not_refundable",
    "charge_exceeds_source_limit",
    "charge_expired_for_capture",
    "payment_intent_unexpected_state",
    "resource_missing",
)


class StripeClient(ProviderClient):
    @property
    def base_url(self) -> str:
        return settings.STRIPE_API_URL

    def create_payment_intent(self, *, amount_minor: int, currency: str, payment_reference: str) -> dict:
        """POST /payment_intents (form-encoded) → {"id": "pi_…", "client_secret": "…", ...}."""
        return self.post(
            "/payment_intents",
            data={
                "amount": amount_minor,
                "currency": currency.lower(),
                "metadata[payment_reference]": payment_reference,
            },
            auth=(self.secret, ""),
        )

    def create_refund(self, *, payment_intent: str, amount_minor: int, refund_reference: str) -> tuple[int, dict]:
        """POST /refunds (form-encoded), keyed by our reference → the Refund object."""
        return self.call(
            "POST",
            "/refunds",
            data={
                "payment_intent": payment_intent,
                "amount": amount_minor,
                "metadata[refund_reference]": refund_reference,
            },
            headers={"Idempotency-Key": refund_reference},
            auth=(self.secret, ""),
        )

    def get_refund(self, refund_id: str) -> tuple[int, dict]:
        """GET /refunds/{id} → the Refund object."""
        return self.call("GET", f"/refunds/{refund_id}", auth=(self.secret, ""))


class Stripe(Provider):
    name = "stripe"
    client_class = StripeClient
    webhook_secret_setting = "STRIPE_WEBHOOK_SECRET"

    def secret(self) -> str:
        return settings.STRIPE_SECRET_KEY

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        intent = self.client(session).create_payment_intent(
            amount_minor=to_minor_units(payment.amount, payment.currency),
            currency=payment.currency,
            payment_reference=payment.reference,
        )
        return {
            "payment_intent": expect(intent, "id"),
            "client_secret": expect(intent, "client_secret"),
            "provider_reference": expect(intent, "id"),
        }

    def verify(self, raw: bytes, headers, query=None, *, now: float | None = None) -> None:
        parts = [p.split("=", 1) for p in headers.get("stripe-signature", "").split(",") if "=" in p]
        timestamps = [v for k, v in parts if k.strip() == "t"]
        signatures = [v.strip() for k, v in parts if k.strip() == "v1"]
        if not timestamps or not signatures or not timestamps[0].strip().isdigit():
            raise WebhookVerificationError("Bad or missing Stripe-Signature.")
        timestamp = int(timestamps[0])
        if abs((now or time.time()) - timestamp) > TOLERANCE_SECONDS:
            raise WebhookVerificationError("Stripe-Signature timestamp outside the 300 s tolerance.")
        signed = f"{timestamp}.".encode() + raw

        def signature(secret: str) -> str:
            return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()

        # Any listed v1 may match: Stripe signs with every active secret while one is rotated in
        # its dashboard; ours may be the new one or (STRIPE_WEBHOOK_SECRET_PREVIOUS) the old one.
        if not any(self.webhook_secret_matches(given, signature) for given in signatures):
            raise WebhookVerificationError("No Stripe-Signature v1 matches.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        event_type = field(data, "type")
        event_id = str(field(data, "id"))
        if event_type in REFUND_EVENTS:
            return parse_refund_event(event_id, event_type, field(data, "data", "object"))
        outcome = OUTCOMES.get(event_type)
        if outcome is None:
            return ProviderEvent(event_id=event_id, event_type=event_type, outcome=IGNORED)
        intent = field(data, "data", "object")
        currency = str(field(intent, "currency")).upper()
        return ProviderEvent(
            event_id=event_id,
            event_type=event_type,
            outcome=outcome,
            payment_reference=str(field(intent, "metadata", "payment_reference")),
            amount=minor_amount(field(intent, "amount"), currency),
            currency=currency,
            provider_reference=str(field(intent, "id")),
        )

    # --- refunds (finance.refunds) -----------------------------------------------------------

    refunds_by_api = True

    def send_refund(self, refund, *, session=None) -> RefundResult:
        """Refund `refund.amount` (in minor units) of the payment's PaymentIntent, under the
        refund reference as Idempotency-Key. Answers: the Refund object (succeeded → SUCCESS,
        pending / requires_action → PENDING, failed / canceled → FAILED with Stripe's
        failure_reason); a 4xx whose error code is about the refund (already refunded, more than
        is left, disputed, no such PaymentIntent) → RefundRefusedError with Stripe's words; 401,
        429, any other 4xx, a 5xx or a timeout → ProviderUnavailableError."""
        payment = refund.payment
        if not payment.provider_reference:
            raise RefundRefusedError(f"Stripe cannot refund payment {payment.reference}: it has no PaymentIntent.")
        client = self.client(session)
        status, body = client.create_refund(
            payment_intent=payment.provider_reference,
            amount_minor=to_minor_units(refund.amount, refund.currency),
            refund_reference=refund.refund_reference,
        )
        if status < 400:
            return refund_result(body)
        raise refund_error(client, status, body)

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        """GET /v1/refunds/{id}. Without its id (the create call's answer was lost) the engine
        sends the same call again: the Idempotency-Key returns the same refund, never a second."""
        if not refund.provider_refund_id:
            return RefundResult(
                status=PENDING,
                failure_reason="Stripe has not named this refund yet; sending it again with the same "
                "reference cannot refund twice.",
            )
        client = self.client(session)
        status, body = client.get_refund(refund.provider_refund_id)
        if status < 400:
            return refund_result(body)
        raise client.unavailable(f"answered {status} about a refund", stripe_error(body))


def refund_result(body: dict) -> RefundResult:
    """A Stripe Refund object as a RefundResult."""
    refund_id = str(expect(body, "id"))
    status = str(expect(body, "status"))
    outcome = REFUND_OUTCOMES.get(status, PENDING)
    if outcome == FAILED:
        return RefundResult(status=FAILED, provider_refund_id=refund_id, failure_reason=failure_words(body))
    return RefundResult(status=outcome, provider_refund_id=refund_id)


def refund_error(client: StripeClient, status: int, body: dict):
    """A 4xx about the refund itself is refused with Stripe's message; anything else is ours."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = str(error.get("message") or "").strip()
    if status in (400, 402, 404) and error.get("code") in REFUND_REFUSED_CODES and message:
        logger.info("Stripe refused a refund (%s, %s): %s", status, error.get("code"), message)
        return RefundRefusedError(f"Stripe refused the refund: {message}")
    return client.unavailable(f"answered {status} to a refund", stripe_error(body))


def stripe_error(body: dict) -> str:
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return f"{error.get('type', '')} {error.get('code', '')}: {error.get('message', '')}".strip()


def failure_words(refund: dict) -> str:
    """What staff read when a Stripe refund did not reach the guest."""
    status = refund.get("status")
    reason = str(refund.get("failure_reason") or "").replace("_", " ")
    words = "Stripe cancelled the refund" if status == "canceled" else "Stripe reported the refund failed"
    return f"{words}: {reason}" if reason else words


def parse_refund_event(event_id: str, event_type: str, refund) -> ProviderEvent:
    """refund.updated, refund.failed, charge.refund.updated: a Refund object. Final statuses
    settle (succeeded, failed, canceled); pending and requires_action are IGNORED (stored)."""
    if not isinstance(refund, dict):
        raise MalformedEventError("Missing field: data.object.")
    refund_id = str(field(refund, "id"))
    metadata = refund.get("metadata") if isinstance(refund.get("metadata"), dict) else {}
    status = str(field(refund, "status"))
    outcome = REFUND_OUTCOMES.get(status, IGNORED)
    currency = str(field(refund, "currency")).upper()
    return ProviderEvent(
        event_id=event_id,
        event_type=event_type,
        outcome=outcome,
        refund_id=refund_id,
        refund_reference=str(metadata.get("refund_reference") or ""),
        provider_reference=refund_id,
        amount=minor_amount(field(refund, "amount"), currency),
        currency=currency,
        failure_reason=failure_words(refund) if outcome == FAILED else "",
    )
