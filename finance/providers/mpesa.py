"""M-Pesa (Safaricom Daraja STK push).

Daraja does not sign its callbacks. The callback URL we register carries a secret token
(`?token=…`), compared in constant time; the amount arrives in major units in the
callback metadata and the currency is the payment's own (KES or TZS).
"""

import base64
import re
from datetime import UTC, datetime

import requests
from django.conf import settings

from finance.money import to_minor_units

from .base import (
    FAILED,
    SUCCESS,
    CheckoutInputError,
    MalformedEventError,
    Provider,
    ProviderClient,
    ProviderEvent,
    WebhookVerificationError,
    expect,
    field,
    load_json,
)


def daraja_phone(phone: str) -> str:
    """The payer's number as Daraja wants it: 2547XXXXXXXX (accepts +254…, spaces and a leading 0)."""
    digits = re.sub(r"[\s-]", "", phone or "").removeprefix("+")
    if digits.startswith("0") and len(digits) == 10:
        digits = "254" + digits[1:]
    if not re.fullmatch(r"25[45]\d{9}", digits):
        raise CheckoutInputError(
            "M-Pesa needs the payer's phone number, e.g. 254712345678 or 0712345678.", field="phone"
        )
    return digits


class MpesaClient(ProviderClient):
    base_url = "https://api.safaricom.co.ke"

    def access_token(self) -> str:
        """GET /oauth/v1/generate?grant_type=client_credentials → {"access_token": "...", "expires_in": "3599"}."""
        try:
            response = self.session.get(
                self.base_url + "/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=(settings.MPESA_CONSUMER_KEY, settings.MPESA_CONSUMER_SECRET),
                timeout=self.timeout,
            )
            response.raise_for_status()
            return expect(response.json(), "access_token")
        except (requests.RequestException, ValueError, MalformedEventError) as error:
            raise self.unavailable("gave no access token", error) from None

    def stk_push(self, *, amount: int, phone: str, reference: str, callback_url: str) -> dict:
        """POST /mpesa/stkpush/v1/processrequest → {"CheckoutRequestID": "ws_CO_…", "ResponseCode": "0", ...}."""
        timestamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        shortcode = settings.MPESA_SHORTCODE
        password = base64.b64encode(f"{shortcode}{settings.MPESA_PASSKEY}{timestamp}".encode()).decode()
        return self.post(
            "/mpesa/stkpush/v1/processrequest",
            json={
                "BusinessShortCode": shortcode,
                "Password": password,
                "Timestamp": timestamp,
                "TransactionType": "CustomerPayBillOnline",
                "Amount": amount,
                "PartyA": phone,
                "PartyB": shortcode,
                "PhoneNumber": phone,
                "CallBackURL": callback_url,
                "AccountReference": reference,
                "TransactionDesc": f"StayAfrica {reference}",
            },
            headers={"Authorization": f"Bearer {self.access_token()}"},
        )


class Mpesa(Provider):
    name = "mpesa"
    client_class = MpesaClient
    # Our own token in the callback URL we register: new checkouts carry the current one, and a
    # callback for a checkout opened before the rotation carries MPESA_CALLBACK_TOKEN_PREVIOUS.
    webhook_secret_setting = "MPESA_CALLBACK_TOKEN"

    def secret(self) -> str:
        return settings.MPESA_CALLBACK_TOKEN

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        phone = daraja_phone(phone)
        minor = to_minor_units(payment.amount, payment.currency)
        if minor % 100:
            # STK push takes whole shillings; asking for less (or more) would not match the booking.
            raise CheckoutInputError(
                "M-Pesa takes whole shillings only: pay this booking with another provider.", field="provider"
            )
        whole_units = minor // 100
        answer = self.client(session).stk_push(
            amount=whole_units,
            phone=phone,
            reference=payment.reference,
            callback_url=f"{settings.PUBLIC_BASE_URL}/api/payments/webhooks/mpesa/?token={self.secret()}",
        )
        checkout_request_id = expect(answer, "CheckoutRequestID")
        return {"checkout_request_id": checkout_request_id, "provider_reference": checkout_request_id}

    def verify(self, raw: bytes, headers, query=None) -> None:
        if not self.webhook_secret_matches((query or {}).get("token", "")):
            raise WebhookVerificationError("Bad or missing callback token.")

    def parse(self, raw: bytes) -> ProviderEvent:
        callback = field(load_json(raw), "Body", "stkCallback")
        checkout_request_id = str(field(callback, "CheckoutRequestID"))
        result_code = field(callback, "ResultCode")
        event_id = f"{checkout_request_id}:{result_code}"
        if result_code != 0:
            return ProviderEvent(
                event_id=event_id,
                event_type="stk_callback.failed",
                outcome=FAILED,
                provider_reference=checkout_request_id,
                failure_reason=str(callback.get("ResultDesc", "")),
            )
        items = field(callback, "CallbackMetadata", "Item")
        if not isinstance(items, list):
            raise MalformedEventError("CallbackMetadata.Item must be a list.")
        metadata = {item.get("Name"): item.get("Value") for item in items if isinstance(item, dict)}
        if "Amount" not in metadata:
            raise MalformedEventError("Missing field: CallbackMetadata.Amount.")
        return ProviderEvent(
            event_id=event_id,
            event_type="stk_callback.success",
            outcome=SUCCESS,
            provider_reference=checkout_request_id,
            # No currency in the callback: the webhook service reads this in the payment's currency.
            raw_amount=metadata["Amount"],
        )
