"""The sandbox provider: offline payments and payouts for development and demos.

Checkout answers at once; a background job (enqueued with the checkout's record) posts a
correctly signed `payment.succeeded` webhook over HTTP, exactly as a real provider would,
so the whole path (signature, inbox, payout, receipt) runs end to end with no internet.

Payouts the same way: `send_transfer` accepts the transfer (PENDING, with a sandbox transfer
id) and enqueues a job that posts a signed `transfer.succeeded` callback, or
`transfer.failed` when the account's last four digits are SANDBOX_TRANSFER_FAILS_LAST4
(a closed account, to show a failed payout offline). `fetch_transfer` answers by the same
rule. The sandbox needs only the account's last four digits.

Refunds likewise: `send_refund` accepts the refund at once (PENDING, with a sandbox refund id)
and enqueues a signed `refund.succeeded` callback, or `refund.failed` on the first attempt of a
refund whose amount ends in SANDBOX_REFUND_FAILS_CENTS minor units (the guest's card is closed,
to show a failed refund offline; its retry succeeds). `fetch_refund` answers by the same rule.
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
    PENDING,
    SUCCESS,
    MalformedEventError,
    Provider,
    ProviderEvent,
    RefundResult,
    TransferResult,
    WebhookVerificationError,
    field,
    load_json,
    major_amount,
)

logger = logging.getLogger("finance.providers.sandbox")
SIGNATURE_HEADER = "x-sandbox-signature"
OUTCOMES = {"payment.succeeded": SUCCESS, "payment.failed": FAILED}
TRANSFER_OUTCOMES = {"transfer.succeeded": SUCCESS, "transfer.failed": FAILED}
REFUND_OUTCOMES = {"refund.succeeded": SUCCESS, "refund.failed": FAILED}


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


def transfer_id(withdrawal) -> str:
    """The sandbox's own id for a transfer: the same for the same reference, as a provider's is."""
    return "sbx_trf_" + hashlib.sha256(withdrawal.transfer_reference.encode()).hexdigest()[:16]


def transfer_outcome(withdrawal) -> tuple[str, str]:
    """What becomes of a sandbox transfer: (SUCCESS, "") or (FAILED, the reason)."""
    last4 = withdrawal.bank_account.account_number_last4
    if last4 == settings.SANDBOX_TRANSFER_FAILS_LAST4:
        return FAILED, f"Sandbox: the account ending {last4} is closed"
    return SUCCESS, ""


def transfer_event_body(withdrawal) -> bytes:
    """The transfer's callback. Its event id is the transfer's own, so a second send of the same
    transfer posts the same event (a duplicate in the inbox), as a provider's resend would."""
    outcome, reason = transfer_outcome(withdrawal)
    return json.dumps(
        {
            "id": f"evt_{transfer_id(withdrawal)}",
            "type": "transfer.succeeded" if outcome == SUCCESS else "transfer.failed",
            "data": {
                "transfer_reference": withdrawal.transfer_reference,
                "transfer_id": transfer_id(withdrawal),
                "amount": str(withdrawal.amount),
                "currency": withdrawal.currency,
                "reason": reason,
            },
        }
    ).encode()


def refund_id(refund) -> str:
    """The sandbox's own id for a refund: the same for the same reference."""
    return "sbx_rfd_" + hashlib.sha256(refund.refund_reference.encode()).hexdigest()[:16]


def refund_outcome(refund) -> tuple[str, str]:
    """What becomes of a sandbox refund: (SUCCESS, "") or (FAILED, the reason)."""
    cents = f"{refund.amount:.2f}".rsplit(".", 1)[-1]
    fails = settings.SANDBOX_REFUND_FAILS_CENTS
    if fails and refund.attempt == 1 and cents == fails:
        return FAILED, "Sandbox: the guest's card is closed (retry the refund to send it again)"
    return SUCCESS, ""


def refund_event_body(refund) -> bytes:
    """The refund's callback; its event id is the refund's own, so a resend is a duplicate."""
    outcome, reason = refund_outcome(refund)
    return json.dumps(
        {
            "id": f"evt_{refund_id(refund)}",
            "type": "refund.succeeded" if outcome == SUCCESS else "refund.failed",
            "data": {
                "refund_reference": refund.refund_reference,
                "refund_id": refund_id(refund),
                "payment_reference": refund.payment.reference,
                "amount": str(refund.amount),
                "currency": refund.currency,
                "reason": reason,
            },
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

    # --- payouts -----------------------------------------------------------------------

    transfer_account_types = ("bank", "mobile_money")

    def send_transfer(self, withdrawal, *, session=None) -> TransferResult:
        # Called outside any transaction: the callback job commits at once, and may post
        # before the payout job records this answer (finance.payouts handles either order).
        if settings.SANDBOX_AUTOCOMPLETE:
            post_sandbox_webhook.enqueue(transfer_event_body(withdrawal).decode())
        return TransferResult(status=PENDING, provider_transfer_id=transfer_id(withdrawal))

    def fetch_transfer(self, withdrawal, *, session=None) -> TransferResult:
        outcome, reason = transfer_outcome(withdrawal)
        return TransferResult(status=outcome, provider_transfer_id=transfer_id(withdrawal), failure_reason=reason)

    # --- refunds -----------------------------------------------------------------------

    refunds_by_api = True

    def send_refund(self, refund, *, session=None) -> RefundResult:
        # Outside any transaction, like send_transfer: the callback may come first.
        if settings.SANDBOX_AUTOCOMPLETE:
            post_sandbox_webhook.enqueue(refund_event_body(refund).decode())
        return RefundResult(status=PENDING, provider_refund_id=refund_id(refund))

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        outcome, reason = refund_outcome(refund)
        return RefundResult(status=outcome, provider_refund_id=refund_id(refund), failure_reason=reason)

    def verify(self, raw: bytes, headers, query=None) -> None:
        given = headers.get(SIGNATURE_HEADER, "").lower()
        if not self.webhook_secret_matches(given, lambda secret: sign(raw, secret)):
            raise WebhookVerificationError(f"Bad or missing {SIGNATURE_HEADER}.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        event_type = str(field(data, "type"))
        event_id = str(field(data, "id"))
        if event_type in TRANSFER_OUTCOMES:
            currency = str(field(data, "data", "currency")).upper()
            reference = str(field(data, "data", "transfer_reference") or "")
            if not reference:
                raise MalformedEventError("Empty field: data.transfer_reference.")
            return ProviderEvent(
                event_id=event_id,
                event_type=event_type,
                outcome=TRANSFER_OUTCOMES[event_type],
                transfer_reference=reference,
                amount=major_amount(field(data, "data", "amount"), currency),
                currency=currency,
                provider_reference=str(data["data"].get("transfer_id") or ""),
                failure_reason=str(data["data"].get("reason") or ""),
            )
        if event_type in REFUND_OUTCOMES:
            currency = str(field(data, "data", "currency")).upper()
            reference = str(field(data, "data", "refund_reference") or "")
            if not reference:
                raise MalformedEventError("Empty field: data.refund_reference.")
            return ProviderEvent(
                event_id=event_id,
                event_type=event_type,
                outcome=REFUND_OUTCOMES[event_type],
                refund_reference=reference,
                refund_id=str(data["data"].get("refund_id") or ""),
                payment_reference=str(data["data"].get("payment_reference") or ""),
                amount=major_amount(field(data, "data", "amount"), currency),
                currency=currency,
                failure_reason=str(data["data"].get("reason") or ""),
            )
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
