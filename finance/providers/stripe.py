"""Stripe: `Stripe-Signature: t=…,v1=…` — HMAC-SHA256 of "{t}.{raw body}", within 300 s either way."""

import hashlib
import hmac
import time

from django.conf import settings

from finance.money import to_minor_units

from .base import (
    FAILED,
    IGNORED,
    SUCCESS,
    Provider,
    ProviderClient,
    ProviderEvent,
    WebhookVerificationError,
    expect,
    field,
    load_json,
    minor_amount,
)

TOLERANCE_SECONDS = 300
OUTCOMES = {"payment_intent.succeeded": SUCCESS, "payment_intent.payment_failed": FAILED}


class StripeClient(ProviderClient):
    base_url = "https://api.stripe.com/v1"

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
