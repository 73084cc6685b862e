"""The sandbox provider: offline payments for development and demos.

Checkout answers at once; a background job (enqueued with the checkout's record) posts a
correctly signed `payment.succeeded` webhook over HTTP, exactly as a real provider would,
so the whole path (signature, inbox, payout, receipt) runs end to end with no internet.
"""

import hashlib
import hmac
import json
import logging
import uuid

import requests
from django.conf import settings

from finance.money import format_money
from jobs.policy import PermanentJobError, job

from .base import (
    FAILED,
    IGNORED,
    SUCCESS,
    Provider,
    ProviderEvent,
    WebhookVerificationError,
    field,
    load_json,
    major_amount,
)

logger = logging.getLogger("finance.providers.sandbox")
SIGNATURE_HEADER = "x-sandbox-signature"
OUTCOMES = {"payment.succeeded": SUCCESS, "payment.failed": FAILED}


def sign(raw: bytes, secret: str | None = None) -> str:
    """The signature of `raw`: with the current secret unless another is given."""
    key = settings.SANDBOX_WEBHOOK_SECRET if secret is None else secret
    return hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()


def event_body(payment, *, succeeded: bool = True) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.succeeded" if succeeded else "payment.failed",
            "data": {"reference": payment.reference, "amount": str(payment.amount), "currency": payment.currency},
        }
    ).encode()


@job(label="Sandbox webhook", max_attempts=5, base_delay=1)
def post_sandbox_webhook(raw_body_text: str) -> int:
    """POST the signed event to our own webhook endpoint, as a real provider would.

    A 5xx answer or no answer raises, so the jobs engine retries; a 4xx means the endpoint
    refused the event itself, which no retry mends."""
    raw = raw_body_text.encode()
    response = requests.post(
        settings.SANDBOX_WEBHOOK_URL,
        data=raw,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(raw)},
        timeout=(2, 10),
    )
    if response.status_code >= 500:
        raise ConnectionError(f"the webhook endpoint answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentJobError(f"the webhook endpoint refused the event: {response.status_code}")
    return response.status_code


class Sandbox(Provider):
    name = "sandbox"
    webhook_secret_setting = "SANDBOX_WEBHOOK_SECRET"

    def secret(self) -> str:
        return settings.SANDBOX_WEBHOOK_SECRET

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        return {
            "sandbox": True,
            "message": f"Sandbox payment of {format_money(payment.amount, payment.currency)}: "
            "it completes by itself in a moment.",
        }

    def after_checkout(self, payment) -> None:
        # Enqueued in the transaction that records the checkout: the job runs once the payment
        # row it names has committed, and is retried until our endpoint answers.
        if settings.SANDBOX_AUTOCOMPLETE:
            post_sandbox_webhook.enqueue(event_body(payment).decode())

    def verify(self, raw: bytes, headers, query=None) -> None:
        given = headers.get(SIGNATURE_HEADER, "").lower()
        if not self.webhook_secret_matches(given, lambda secret: sign(raw, secret)):
            raise WebhookVerificationError(f"Bad or missing {SIGNATURE_HEADER}.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        event_type = str(field(data, "type"))
        event_id = str(field(data, "id"))
        outcome = OUTCOMES.get(event_type)
        if outcome is None:
            return ProviderEvent(event_id=event_id, event_type=event_type, outcome=IGNORED)
        currency = str(field(data, "data", "currency")).upper()
        return ProviderEvent(
            event_id=event_id,
            event_type=event_type,
            outcome=outcome,
            payment_reference=str(field(data, "data", "reference")),
            amount=major_amount(field(data, "data", "amount"), currency),
            currency=currency,
            provider_reference=f"sandbox:{event_id}",
        )
