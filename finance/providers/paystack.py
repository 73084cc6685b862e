"""Paystack: HMAC-SHA512 of the raw body in `x-paystack-signature`; amounts in minor units."""

import hashlib
import hmac

from django.conf import settings

from finance.money import to_minor_units

from .base import (
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


class PaystackClient(ProviderClient):
    base_url = "https://api.paystack.co"

    def initialize(self, *, reference: str, amount_minor: int, currency: str, email: str) -> dict:
        """POST /transaction/initialize → {"status": true, "data": {"authorization_url", "access_code", ...}}."""
        body = self.post(
            "/transaction/initialize",
            json={"reference": reference, "amount": amount_minor, "currency": currency, "email": email},
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        return expect(body, "data")


def signature(secret: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()


class Paystack(Provider):
    name = "paystack"
    client_class = PaystackClient
    # Paystack signs webhooks with the API secret key itself.
    webhook_secret_setting = "PAYSTACK_SECRET_KEY"

    def secret(self) -> str:
        return settings.PAYSTACK_SECRET_KEY

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        data = self.client(session).initialize(
            reference=payment.reference,
            amount_minor=to_minor_units(payment.amount, payment.currency),
            currency=payment.currency,
            email=email,
        )
        return {"authorization_url": expect(data, "authorization_url"), "access_code": data.get("access_code", "")}

    def verify(self, raw: bytes, headers, query=None) -> None:
        given = headers.get("x-paystack-signature", "").lower()
        if not self.webhook_secret_matches(given, lambda secret: signature(secret, raw)):
            raise WebhookVerificationError("Bad or missing x-paystack-signature.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        event_type = field(data, "event")
        event_id = str(field(data, "data", "id"))
        if event_type != "charge.success":
            return ProviderEvent(event_id=f"{event_type}:{event_id}", event_type=event_type, outcome=IGNORED)
        currency = str(field(data, "data", "currency")).upper()
        return ProviderEvent(
            event_id=f"{event_type}:{event_id}",
            event_type=event_type,
            outcome=SUCCESS,
            payment_reference=str(field(data, "data", "reference")),
            amount=minor_amount(field(data, "data", "amount"), currency),
            currency=currency,
            provider_reference=event_id,
        )
