"""Flutterwave: `verif-hash` equals the shared secret hash; amounts in major units."""

from django.conf import settings

from .base import (
    FAILED,
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
    major_amount,
    not_confirmed,
)


class FlutterwaveClient(ProviderClient):
    @property
    def base_url(self) -> str:
        return settings.FLUTTERWAVE_API_URL

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

    def verify_by_reference(self, tx_ref: str) -> dict:
        """GET /transactions/verify_by_reference?tx_ref= → {"status": "success", "data": {"status", "amount", ...}}.
        400 or 404 "No transaction was found" raise ProviderAnswerError."""
        body = self.get(
            "/transactions/verify_by_reference",
            params={"tx_ref": tx_ref},
            headers={"Authorization": f"Bearer {self.secret}"},
            answers=(400, 404),
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

    def confirm_payment(self, event, *, session=None) -> PaymentCheck:
        """Flutterwave asks that a charge be verified before value is given. By our own tx_ref
        (the payment's reference), so the answer is about this payment whatever transaction id the
        webhook names. Only data.status "successful" succeeds; the amount is in major units, read
        exactly (never a float).

        400 or 404 "No transaction was found": not confirmed (flagged, no money); any other 400 is
        a refusal read the same way, with Flutterwave's message. 401 (our key), 429, 5xx, a timeout,
        non-JSON or a missing documented field: ProviderUnavailableError (503, Flutterwave retries)."""
        try:
            data = self.client(session).verify_by_reference(event.payment_reference)
        except ProviderAnswerError as answer:
            return not_confirmed(answer, not_found="no transaction was found")
        status = str(expect(data, "status"))
        currency = str(expect(data, "currency")).upper()
        return PaymentCheck(
            succeeded=status == "successful",
            amount=answered_amount(expect(data, "amount"), currency, minor=False),
            currency=currency,
            provider_status=status,
        )

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
