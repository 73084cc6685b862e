"""Flutterwave: `verif-hash` equals the shared secret hash; amounts in major units."""

from django.conf import settings

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
    major_amount,
)


class FlutterwaveClient(ProviderClient):
    base_url = "https://api.flutterwave.com/v3"

    def create_payment(self, *, tx_ref: str, amount: str, currency: str, email: str, redirect_url: str) -> dict:
        """POST /payments → {"status": "success", "data": {"link": "https://checkout..."}}."""
        body = self.post(
            "/payments",
            json={
                "tx_ref": tx_ref,
                "amount": amount,
                "currency": currency,
                "redirect_url": redirect_url,
                "customer": {"email": email},
            },
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        return expect(body, "data")


class Flutterwave(Provider):
    name = "flutterwave"
    client_class = FlutterwaveClient
    webhook_secret_setting = "FLUTTERWAVE_SECRET_HASH"

    def secret(self) -> str:
        return settings.FLUTTERWAVE_SECRET_KEY

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        data = self.client(session).create_payment(
            tx_ref=payment.reference,
            amount=str(payment.amount),
            currency=payment.currency,
            email=email,
            redirect_url=f"{settings.PUBLIC_BASE_URL}/statement/",
        )
        return {"checkout_url": expect(data, "link")}

    def verify(self, raw: bytes, headers, query=None) -> None:
        if not self.webhook_secret_matches(headers.get("verif-hash", "")):
            raise WebhookVerificationError("Bad or missing verif-hash.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        event_type = field(data, "event")
        event_id = str(field(data, "data", "id"))
        if event_type != "charge.completed":
            return ProviderEvent(event_id=f"{event_type}:{event_id}", event_type=event_type, outcome=IGNORED)
        currency = str(field(data, "data", "currency")).upper()
        status = field(data, "data", "status")
        return ProviderEvent(
            event_id=f"{event_type}:{event_id}",
            event_type=event_type,
            outcome=SUCCESS if status == "successful" else FAILED,
            payment_reference=str(field(data, "data", "tx_ref")),
            amount=major_amount(field(data, "data", "amount"), currency),
            currency=currency,
            provider_reference=event_id,
        )
