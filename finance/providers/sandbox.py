"""The sandbox provider: offline payments for development and demos.

Checkout answers at once; after the payment row commits, the sandbox posts itself a
correctly signed `payment.succeeded` webhook over HTTP, exactly as a real provider would,
so the whole path (signature, inbox, payout, receipt) runs end to end with no internet.
"""

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid

import requests
from django.conf import settings
from django.db import transaction

from finance.money import format_money

from .base import (
    FAILED,
    IGNORED,
    SUCCESS,
    Provider,
    ProviderEvent,
    WebhookVerificationError,
    constant_time_equal,
    field,
    load_json,
    major_amount,
)

logger = logging.getLogger("finance.providers.sandbox")
SIGNATURE_HEADER = "x-sandbox-signature"
OUTCOMES = {"payment.succeeded": SUCCESS, "payment.failed": FAILED}


def sign(raw: bytes) -> str:
    return hmac.new(settings.SANDBOX_WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()


def event_body(payment, *, succeeded: bool = True) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.succeeded" if succeeded else "payment.failed",
            "data": {"reference": payment.reference, "amount": str(payment.amount), "currency": payment.currency},
        }
    ).encode()


def post_webhook(raw: bytes, *, attempts: int = 3) -> None:
    """POST the signed event to our own webhook endpoint, retrying briefly while the server starts."""
    for attempt in range(1, attempts + 1):
        try:
            response = requests.post(
                settings.SANDBOX_WEBHOOK_URL,
                data=raw,
                headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(raw)},
                timeout=(2, 10),
            )
            if response.status_code < 500:
                return
        except requests.RequestException as error:
            logger.warning("sandbox webhook attempt %s failed: %s", attempt, error)
        time.sleep(0.2 * attempt)


class Sandbox(Provider):
    name = "sandbox"

    def secret(self) -> str:
        return settings.SANDBOX_WEBHOOK_SECRET

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        if settings.SANDBOX_AUTOCOMPLETE:
            raw = event_body(payment)
            # After commit: the webhook must find the payment row.
            transaction.on_commit(lambda: threading.Thread(target=post_webhook, args=(raw,), daemon=True).start())
        return {
            "sandbox": True,
            "message": f"Sandbox payment of {format_money(payment.amount, payment.currency)}: "
            "it completes by itself in a moment.",
        }

    def verify(self, raw: bytes, headers, query=None) -> None:
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature or not constant_time_equal(signature.lower(), sign(raw)):
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
