"""Paystack: HMAC-SHA512 of the raw body in `x-paystack-signature`; amounts in minor units."""

import hashlib
import hmac
from urllib.parse import quote

from django.conf import settings

from finance.money import to_minor_units

from .base import (
    IGNORED,
    SUCCESS,
    PaymentCheck,
    Provider,
    ProviderAnswerError,
    ProviderClient,
    ProviderEvent,
    WebhookVerificationError,
    answered_amount,
    expect,
    field,
    load_json,
    minor_amount,
    not_confirmed,
)


class PaystackClient(ProviderClient):
    @property
    def base_url(self) -> str:
        return settings.PAYSTACK_API_URL

    def initialize(self, *, reference: str, amount_minor: int, currency: str, email: str) -> dict:
        """POST /transaction/initialize → {"status": true, "data": {"authorization_url", "access_code", ...}}."""
        body = self.post(
            "/transaction/initialize",
            json={"reference": reference, "amount": amount_minor, "currency": currency, "email": email},
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        return expect(body, "data")

    def verify_transaction(self, reference: str) -> dict:
        """GET /transaction/verify/{reference} → {"status": true, "data": {"status", "amount", "currency", ...}}.
        404 (and 400, Paystack's older answer) "Transaction reference not found" raise ProviderAnswerError."""
        body = self.get(
            f"/transaction/verify/{quote(reference, safe='')}",
            headers={"Authorization": f"Bearer {self.secret}"},
            answers=(400, 404),
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

    def confirm_payment(self, event, *, session=None) -> PaymentCheck:
        """Paystack asks that a charge be verified before value is given: GET /transaction/verify
        with our reference. Only data.status "success" succeeds; the amount (minor units) and
        currency are Paystack's record of what was charged, not the webhook's claim.

        404, or 400 naming the reference "not found": Paystack has no such charge, so it is not
        confirmed (flagged, no money). Any other 400 is a refusal read the same way, with Paystack's
        message. 401 (our key), 429, 5xx, a timeout, non-JSON or a missing documented field:
        ProviderUnavailableError (the webhook answers 503 and Paystack delivers it again)."""
        try:
            data = self.client(session).verify_transaction(event.payment_reference)
        except ProviderAnswerError as answer:
            return not_confirmed(answer, not_found="not found")
        status = str(expect(data, "status"))
        currency = str(expect(data, "currency")).upper()
        return PaymentCheck(
            succeeded=status == "success",
            amount=answered_amount(expect(data, "amount"), currency, minor=True),
            currency=currency,
            provider_status=status,
        )

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
