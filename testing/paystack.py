"""A genuine Paystack `charge.success` webhook for a payment, signed and posted as Paystack
would: the tests that need one event in the inbox (applied or flagged) build it here."""

import hashlib
import hmac
import json

from django.test import Client

WEBHOOK_PATH = "/api/payments/webhooks/paystack/"


def paystack_signature(raw: bytes, secret: str) -> str:
    """Paystack signs the raw body with HMAC-SHA512 under the account's secret key."""
    return hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()


def post_paystack_charge(payment, *, amount_minor: int, event_id: int, secret: str, currency: str = "NGN"):
    """POST a signed `charge.success` for `payment` (its amount in minor units, kobo for NGN) to
    the webhook endpoint through Django's test client; returns the response."""
    raw = json.dumps(
        {
            "event": "charge.success",
            "data": {"id": event_id, "reference": payment.reference, "amount": amount_minor, "currency": currency},
        }
    ).encode()
    return Client().generic(
        "POST",
        WEBHOOK_PATH,
        raw,
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE=paystack_signature(raw, secret),
    )
