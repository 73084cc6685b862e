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


def post_paystack_charge(
    payment, *, amount_minor: int, event_id: int, secret: str, currency: str = "NGN", provider_http=None
):
    """POST a signed `charge.success` for `payment` (its amount in minor units, kobo for NGN) to
    the webhook endpoint through Django's test client; returns the response. With `provider_http`
    (the root conftest's fixture), Paystack's verify endpoint first agrees with the webhook: it
    answers that this amount in this currency was charged."""
    body = {
        "event": "charge.success",
        "data": {"id": event_id, "reference": payment.reference, "amount": amount_minor, "currency": currency},
    }
    if provider_http is not None:
        answer_paystack_charge_verify(provider_http, body)
    raw = json.dumps(body).encode()
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


def paystack_verify_answer(reference: str, *, amount_minor: int, currency: str, status: str = "success"):
    """Paystack's verify answer (the recorded shape) for the charge with our `reference`."""
    payload = recorded_json("paystack_verify_transaction.json")
    payload["data"].update(reference=reference, status=status, currency=currency, amount=amount_minor)
    return answer(200, payload)


def answer_paystack_verify(
    provider_http, payment, *, amount_minor: int | None = None, status: str = "success", currency: str = ""
) -> None:
    """Answer the verify call a `charge.success` for `payment` makes: by default Paystack's record
    of a guest who paid it in full (its amount in its currency, status "success")."""
    currency = currency or payment.currency
    amount_minor = to_minor_units(payment.amount, currency) if amount_minor is None else amount_minor
    provider_http.answers[("GET", paystack_verify_url(payment))] = paystack_verify_answer(
        payment.reference, amount_minor=amount_minor, currency=currency, status=status
    )


def answer_paystack_charge_verify(provider_http, body: dict, *, status: str = "success") -> None:
    """Answer the verify call for the `charge.success` `body` with what that body says was charged
    (Paystack's record agrees with its own webhook): for tests about the webhook's claim."""
    data = body["data"]
    url = f"{settings.PAYSTACK_API_URL}/transaction/verify/{data['reference']}"
    provider_http.answers[("GET", url)] = paystack_verify_answer(
        data["reference"], amount_minor=data["amount"], currency=data["currency"], status=status
    )


def answer_flutterwave_verify(
    provider_http, payment, *, amount: Decimal | str | None = None, status: str = "successful", currency: str = ""
) -> None:
    """Answer the verify call a `charge.completed` for `payment` makes: Flutterwave's recorded
    answer with the payment's tx_ref, amount (major units, as a JSON number) and currency. The
    adapter keys answers by URL without its query: one Flutterwave verify answer per test."""
    answer_flutterwave_reference_verify(
        provider_http,
        payment.reference,
        amount=payment.amount if amount is None else amount,
        currency=currency or payment.currency,
        status=status,
    )


def answer_flutterwave_reference_verify(
    provider_http, tx_ref: str, *, amount, currency: str, status: str = "successful"
) -> None:
    payload = recorded_json("flutterwave_verify_transaction.json")
    payload["data"].update(tx_ref=tx_ref, status=status, currency=currency)
    payload["data"]["amount"] = "AMOUNT"  # written as an exact JSON number below, never through a float
    raw = json.dumps(payload).replace('"amount": "AMOUNT"', f'"amount": {Decimal(str(amount))}')
    provider_http.answers[("GET", flutterwave_verify_url())] = (200, raw.encode(), "application/json")


def answer_verify_as_posted(provider_http, provider: str, raw: bytes) -> None:
    """Before a test posts the webhook body `raw` to `provider`: when it is a payment's success,
    answer the provider's verify call with what the body says was charged (the provider's record
    agrees with its own webhook). Anything else (a failure, a malformed body, another provider)
    needs no answer."""
    try:
        body = json.loads(raw, parse_float=Decimal)
        data = body["data"]
        if provider == "paystack" and body["event"] == "charge.success":
            answer_paystack_charge_verify(provider_http, body)
        elif provider == "flutterwave" and body["event"] == "charge.completed" and data["status"] == "successful":
            answer_flutterwave_reference_verify(
                provider_http, data["tx_ref"], amount=data["amount"], currency=str(data["currency"]).upper()
            )
    except (ValueError, KeyError, TypeError):
        pass
