"""A genuine Paystack `charge.success` webhook for a payment, signed and posted as Paystack
would: the tests that need one event in the inbox (applied or flagged) build it here.

Before such a webhook gives value the pipeline asks the provider's verify endpoint
(finance/payments.py, step 2b): `answer_paystack_verify` / `answer_flutterwave_verify` answer
that call, through the root conftest's `provider_http` fixture, from the recorded payload
filled with the payment's reference, amount and currency."""

import hashlib
import hmac
import json
from decimal import Decimal

from django.conf import settings
from django.test import Client

from finance.money import to_minor_units
from testing.recorded_http import answer, recorded_json

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


def paystack_verify_url(payment) -> str:
    return f"{settings.PAYSTACK_API_URL}/transaction/verify/{payment.reference}"


def flutterwave_verify_url() -> str:
    return f"{settings.FLUTTERWAVE_API_URL}/transactions/verify_by_reference"


def paystack_verify_answer(payment, *, amount_minor: int | None = None, status: str = "success", currency: str = ""):
    """Paystack's verify answer (the recorded shape) for `payment`: by default what a guest paying
    it in full would leave on Paystack's record."""
    payload = recorded_json("paystack_verify_transaction.json")
    currency = currency or payment.currency
    payload["data"].update(
        reference=payment.reference,
        status=status,
        currency=currency,
        amount=to_minor_units(payment.amount, currency) if amount_minor is None else amount_minor,
    )
    return answer(200, payload)


def answer_paystack_verify(provider_http, payment, **kwargs) -> None:
    """Answer the verify call a `charge.success` for `payment` makes (see paystack_verify_answer)."""
    provider_http.answers[("GET", paystack_verify_url(payment))] = paystack_verify_answer(payment, **kwargs)


def answer_flutterwave_verify(
    provider_http, payment, *, amount: Decimal | str | None = None, status: str = "successful", currency: str = ""
) -> None:
    """Answer the verify call a `charge.completed` for `payment` makes: Flutterwave's recorded
    answer with the payment's tx_ref, amount (major units, as a JSON number) and currency."""
    payload = recorded_json("flutterwave_verify_transaction.json")
    payload["data"].update(tx_ref=payment.reference, status=status, currency=currency or payment.currency)
    payload["data"]["amount"] = "AMOUNT"  # written as an exact JSON number below, never through a float
    number = str(Decimal(payment.amount if amount is None else amount))
    raw = json.dumps(payload).replace('"amount": "AMOUNT"', f'"amount": {number}')
    provider_http.answers[("GET", flutterwave_verify_url())] = (200, raw.encode(), "application/json")
