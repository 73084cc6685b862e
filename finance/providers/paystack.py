"""Paystack: HMAC-SHA512 of the raw body in `x-paystack-signature`; amounts in minor units.

Payouts use Paystack Transfers (https://paystack.com/docs/transfers/single-transfers/): a
transfer recipient is created once per bank account and its RCP_ code kept, then each payout is
POST /transfer with our stable reference, settled by the transfer.success / transfer.failed /
transfer.reversed webhooks or GET /transfer/verify/{reference}.

Refunds use the Refunds API (https://paystack.com/docs/api/refund/ and the guide
https://paystack.com/docs/payments/refunds/): POST /refund {transaction, amount, currency,
merchant_note}, GET /refund/:id, GET /refund?transaction=…, settled by the refund.processed /
refund.failed webhooks (refund.pending and refund.processing only say it is under way).
Paystack takes no idempotency key for refunds: our refund reference travels as the merchant
note, and a re-send first lists the payment's refunds and adopts one carrying it.
"""

import hashlib
import hmac
from urllib.parse import quote

from django.conf import settings

from finance.money import to_minor_units

from .base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    BearerSecretClient,
    MalformedEventError,
    PaymentCheck,
    Provider,
    ProviderAnswerError,
    ProviderEvent,
    RefundRefusedError,
    RefundResult,
    TransferRefusedError,
    TransferResult,
    WebhookVerificationError,
    answered_amount,
    expect,
    field,
    load_json,
    logger,
    minor_amount,
    not_confirmed,
)


class PaystackClient(BearerSecretClient):
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

    # --- transfers (payouts) -----------------------------------------------------------------

    def create_recipient(self, **recipient) -> tuple[int, dict]:
        """POST /transferrecipient {type, name, account_number, bank_code, currency} → data.recipient_code."""
        return self.call("POST", "/transferrecipient", json=recipient)

    def initiate_transfer(self, *, amount_minor: int, recipient: str, currency: str, reason: str, reference: str):
        """POST /transfer from our Paystack balance → data.status, data.transfer_code."""
        return self.call(
            "POST",
            "/transfer",
            json={
                "source": "balance",
                "amount": amount_minor,
                "recipient": recipient,
                "currency": currency,
                "reason": reason,
                "reference": reference,
            },
        )

    def verify_transfer(self, reference: str) -> tuple[int, dict]:
        """GET /transfer/verify/{reference} → the transfer, or 404 "Transfer not found"."""
        return self.call("GET", f"/transfer/verify/{quote(reference, safe='')}")

    # --- refunds ------------------------------------------------------------------------------

    def create_refund(self, *, transaction: str, amount_minor: int, currency: str, merchant_note: str):
        """POST /refund → data.id, data.status ("pending" once queued)."""
        return self.call(
            "POST",
            "/refund",
            json={
                "transaction": transaction,
                "amount": amount_minor,
                "currency": currency,
                "merchant_note": merchant_note,
            },
        )

    def fetch_refund(self, refund_id: str) -> tuple[int, dict]:
        """GET /refund/{id} → the refund (data.status: pending, processing, processed, failed)."""
        return self.call("GET", f"/refund/{quote(refund_id, safe='')}")

    def list_refunds(self, transaction: str) -> tuple[int, dict]:
        """GET /refund?transaction=… → data: the transaction's refunds (newest first)."""
        return self.call("GET", "/refund", params={"transaction": transaction, "perPage": 100})


# Paystack's recipient type for each kind of account, by the account's currency
# (https://paystack.com/docs/transfers/creating-transfer-recipients/, "We support the following
# recipient types"): bank accounts are nuban (NG), ghipss (GH), basa (ZA) and kepss (KE);
# mobile money wallets (an account tied to a mobile number) are mobile_money in GHS and KES.
RECIPIENT_TYPES = {
    ("bank", "NGN"): "nuban",
    ("bank", "GHS"): "ghipss",
    ("bank", "ZAR"): "basa",
    ("bank", "KES"): "kepss",
    ("mobile_money", "GHS"): "mobile_money",
    ("mobile_money", "KES"): "mobile_money",
}
TRANSFER_EVENTS = ("transfer.success", "transfer.failed", "transfer.reversed")
# Refund webhooks (https://paystack.com/docs/payments/refunds/, "Listen to notifications"):
# processed and failed are final; pending, processing (and needs-attention) are not.
REFUND_EVENTS = {"refund.processed": SUCCESS, "refund.failed": FAILED}
REFUND_PROGRESS_EVENTS = ("refund.pending", "refund.processing", "refund.needs-attention")
# Transfer statuses (https://paystack.com/docs/transfers/how-transfers-work/): the conclusive ones
# that mean the money did not reach the host. pending, received, processing, queued and otp are
# not conclusive: the transfer may still go out, so the withdrawal stays processing.
FAILED_STATUSES = ("failed", "reversed", "abandoned", "blocked", "rejected")
# A 4xx whose words say the problem is on our side (our key, our Paystack balance, transfers not
# enabled or waiting for an OTP on our integration, a rate limit): retried later, never the
# host's fault, so the withdrawal must not fail over it.
OUR_SIDE = (
    "key",
    "balance",
    "insufficient",
    "otp",
    "registered business",
    "not available",
    "not enabled",
    "third party payout",
    "rate limit",
    "too many",
)


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
        if event_type in REFUND_EVENTS or event_type in REFUND_PROGRESS_EVENTS:
            return self.parse_refund(event_type, field(data, "data"))
        event_id = str(field(data, "data", "id"))
        if event_type in TRANSFER_EVENTS:
            return self.parse_transfer(event_type, field(data, "data"))
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

    # --- payouts (finance.payouts) -----------------------------------------------------------

    transfer_account_types = ("bank", "mobile_money")

    def send_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """Pay `withdrawal` through Paystack Transfers, with its transfer reference as the
        idempotency key (Paystack never pays the same reference twice).

        The account's transfer recipient is created on the first payout and its code kept on
        the BankAccount, so the full number is sent once. Answers:
          - accepted ("pending", "received", "otp", ...) → PENDING with the TRF_ code; "success"
            (test mode answers that at once) → SUCCESS; failed/reversed/... → FAILED;
          - the reference was used before (a retry after a timeout whose first call got through)
            → the transfer is verified instead and its status returned;
          - 401/403/429, and a 4xx naming our key, our Paystack balance, the OTP or transfers not
            being enabled → ProviderUnavailableError (logged; the job retries with the same
            reference, the host's withdrawal stays processing);
          - another 400/404/422 (an invalid account number or bank code, a recipient Paystack
            cannot resolve) → TransferRefusedError with Paystack's words, e.g. "Paystack refused
            the transfer: Account number is invalid";
          - a timeout, a connection error, a 5xx → ProviderUnavailableError.
        """
        client = self.client(session)
        account = withdrawal.bank_account
        reference = withdrawal.transfer_reference or withdrawal.stable_transfer_reference()
        recipient = self.transfer_recipient(client, account, withdrawal.currency)
        status, body = client.initiate_transfer(
            amount_minor=to_minor_units(withdrawal.amount, withdrawal.currency),
            recipient=recipient,
            currency=withdrawal.currency,
            reason=f"StayAfrica payout {withdrawal.reference}",
            reference=reference,
        )
        if status < 400 and body.get("status") is True:
            return self.transfer_result(expect(body, "data"))
        if status < 500 and names_duplicate_reference(body):
            return self.fetch_transfer(withdrawal, session=client.session)
        raise self.transfer_error(client, status, body)

    def fetch_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """What Paystack says of the withdrawal's transfer: GET /transfer/verify/{reference}.

        A 404 ("Transfer not found") is read as PENDING, not FAILED: Paystack's documentation
        does not promise that a reference it does not know now can never appear (a POST still
        in flight when our call timed out), and failing the withdrawal then would release the
        hold while the money may still leave. The reason says so, and sending again with the
        same reference is safe: Paystack cannot pay it twice."""
        client = self.client(session)
        reference = withdrawal.transfer_reference or withdrawal.stable_transfer_reference()
        status, body = client.verify_transfer(reference)
        if status == 404:
            return TransferResult(
                status=PENDING,
                failure_reason=f"Paystack has no transfer with reference {reference} yet; "
                "sending it again with the same reference cannot pay twice.",
            )
        if status < 400 and body.get("status") is True:
            return self.transfer_result(expect(body, "data"))
        raise self.transfer_error(client, status, body, refuse=False)

    def transfer_recipient(self, client: PaystackClient, account, currency: str) -> str:
        """The account's Paystack recipient code: the one kept, or a new one (kept from then on)."""
        if account.recipient_code and account.recipient_provider == self.name:
            return account.recipient_code
        kind = RECIPIENT_TYPES.get((account.account_type, currency.upper()))
        if kind is None:
            raise TransferRefusedError(
                f"Paystack cannot pay a {account.get_account_type_display().lower()} in {currency}.",
                field="bank_account",
            )
        if not account.bank_code:
            raise TransferRefusedError(
                "The bank account has no bank code, which a Paystack transfer needs.", field="bank_account"
            )
        from finance import crypto

        status, body = client.create_recipient(
            type=kind,
            name=account.account_name,
            account_number=crypto.decrypt_account_number(account),
            bank_code=account.bank_code,
            currency=currency.upper(),
        )
        if not (status < 400 and body.get("status") is True):
            raise self.transfer_error(client, status, body)
        code = str(expect(body, "data", "recipient_code"))
        # Only these two fields: the row may be edited elsewhere while the transfer is sent.
        type(account).objects.filter(pk=account.pk).update(recipient_code=code, recipient_provider=self.name)
        account.recipient_code, account.recipient_provider = code, self.name
        return code

    def transfer_result(self, data) -> TransferResult:
        """A Paystack transfer object (initiate, verify) as a TransferResult."""
        status = str(expect(data, "status")).lower()
        transfer_code = str(data.get("transfer_code") or "")
        if status == "success":
            return TransferResult(status=SUCCESS, provider_transfer_id=transfer_code)
        if status in FAILED_STATUSES:
            return TransferResult(
                status=FAILED, provider_transfer_id=transfer_code, failure_reason=failure_words(status, data)
            )
        if status == "otp":
            logger.warning(
                "Paystack holds transfer %s for an OTP: turn off transfer OTP on the Paystack dashboard",
                transfer_code,
            )
        return TransferResult(status=PENDING, provider_transfer_id=transfer_code)

    def transfer_error(self, client: PaystackClient, status: int, body: dict, *, refuse: bool = True):
        """The error for a 4xx answer: the account's fault (refused) or ours (unavailable, logged)."""
        message = str(body.get("message") or "").strip()
        words = f"{message} {body.get('code') or ''}".lower()
        if refuse and status in (400, 404, 422) and message and not any(word in words for word in OUR_SIDE):
            logger.info("Paystack refused a transfer (%s): %s", status, message)
            return TransferRefusedError(f"Paystack refused the transfer: {message}")
        return client.unavailable(f"answered {status}", message or body)

    def parse_transfer(self, event_type: str, data: dict) -> ProviderEvent:
        """transfer.success / transfer.failed / transfer.reversed: a payout's outcome.

        The event id is the event name and the transfer's id: a redelivery has the same one,
        and a transfer.reversed after a transfer.success of the same transfer a different one."""
        if not isinstance(data, dict):
            raise MalformedEventError("Missing field: data.")
        transfer_id = str(field(data, "id"))
        currency = str(field(data, "currency")).upper()
        status = str(data.get("status") or "").lower()
        outcome = SUCCESS if event_type == "transfer.success" else FAILED
        reason = ""
        if event_type == "transfer.reversed":
            reason = failure_words("reversed", data)
        elif event_type == "transfer.failed":
            reason = failure_words(status or "failed", data)
        return ProviderEvent(
            event_id=f"{event_type}:{transfer_id}",
            event_type=event_type,
            outcome=outcome,
            transfer_reference=str(field(data, "reference")),
            provider_reference=str(data.get("transfer_code") or transfer_id),
            amount=minor_amount(field(data, "amount"), currency),
            currency=currency,
            failure_reason=reason,
        )

    # --- refunds (finance.refunds) -----------------------------------------------------------

    refunds_by_api = True

    def send_refund(self, refund, *, session=None) -> RefundResult:
        """Refund `refund.amount` of the payment through POST /refund, our refund reference as the
        merchant note.

        Paystack takes no idempotency key for refunds, so a re-send (an earlier try of this attempt
        started: `refund.sent_at` set, or it left an error) first lists the payment's refunds and
        adopts the one carrying our reference, if the earlier call got through. Answers: accepted
        ("pending", "processing") → PENDING with Paystack's refund id; "processed" → SUCCESS;
        401/403/429, a 4xx naming our key or balance, a timeout, a 5xx → ProviderUnavailableError
        (retried with the same reference); another 400/404/422 (already fully refunded, more than is
        left) → RefundRefusedError with Paystack's words."""
        client = self.client(session)
        if refund.sent_at is not None or refund.last_error:
            earlier = self.find_refund(client, refund)
            if earlier is not None:
                return self.refund_result(earlier)
        status, body = client.create_refund(
            transaction=refund.payment.reference,
            amount_minor=to_minor_units(refund.amount, refund.currency),
            currency=refund.currency,
            merchant_note=refund.refund_reference,
        )
        if status < 400 and body.get("status") is True:
            return self.refund_result(expect(body, "data"))
        raise self.refund_error(client, status, body)

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        """What Paystack says of the refund: GET /refund/{id}, or, with no id yet, the payment's
        refund carrying our reference. None found: PENDING with no id (it never reached Paystack;
        finance.refunds sends it again, with the same reference)."""
        client = self.client(session)
        if refund.provider_refund_id:
            status, body = client.fetch_refund(refund.provider_refund_id)
            if status < 400 and body.get("status") is True:
                return self.refund_result(expect(body, "data"))
            raise self.refund_error(client, status, body, refuse=False)
        found = self.find_refund(client, refund)
        if found is None:
            return RefundResult(
                status=PENDING, failure_reason=f"Paystack has no refund with reference {refund.refund_reference}."
            )
        return self.refund_result(found)

    def find_refund(self, client: PaystackClient, refund):
        """The Paystack refund carrying our reference as its merchant note, among the payment's, or None."""
        status, body = client.list_refunds(refund.payment.reference)
        if not (status < 400 and body.get("status") is True):
            raise self.refund_error(client, status, body, refuse=False)
        listed = body.get("data")
        if not isinstance(listed, list):
            raise client.unavailable("answered a refund list without data", body)
        return next(
            (
                item
                for item in listed
                if isinstance(item, dict) and item.get("merchant_note") == refund.refund_reference
            ),
            None,
        )

    def refund_result(self, data) -> RefundResult:
        """A Paystack refund object (create, fetch, list) as a RefundResult."""
        status = str(expect(data, "status")).lower()
        refund_id = str(data.get("id") or "")
        if status == "processed":
            return RefundResult(status=SUCCESS, provider_refund_id=refund_id)
        if status in REFUND_FAILED_STATUSES:
            detail = next((str(data[k]).strip() for k in ("reason", "message") if str(data.get(k) or "").strip()), "")
            reason = "Paystack reported the refund failed" + (f": {detail}" if detail else "")
            return RefundResult(status=FAILED, provider_refund_id=refund_id, failure_reason=reason)
        return RefundResult(status=PENDING, provider_refund_id=refund_id)

    def refund_error(self, client: PaystackClient, status: int, body: dict, *, refuse: bool = True):
        """The error for a 4xx answer to a refund call: the refund's fault (refused) or ours (unavailable)."""
        message = str(body.get("message") or "").strip()
        words = f"{message} {body.get('code') or ''}".lower()
        if refuse and status in (400, 404, 422) and message and not any(word in words for word in OUR_SIDE):
            logger.info("Paystack refused a refund (%s): %s", status, message)
            return RefundRefusedError(message)
        return client.unavailable(f"answered {status}", message or body)

    def parse_refund(self, event_type: str, data) -> ProviderEvent:
        """refund.processed / refund.failed (and the progress events, which move nothing).

        The body names the refunded payment (`transaction_reference`, our payment reference), the
        amount and currency, and the refund by Paystack's `id` when present, else by its
        `refund_reference` (the processor's reference), kept as the event's refund id: finance.refunds
        tries it, then our reference (the merchant note, when the body carries it), then the payment
        and amount among open refunds."""
        if not isinstance(data, dict):
            raise MalformedEventError("Missing field: data.")
        currency = str(field(data, "currency")).upper()
        payment_reference = str(field(data, "transaction_reference") or "")
        refund_id = str(data.get("id") or data.get("refund_reference") or "")
        note = str(data.get("merchant_note") or "")
        our_reference = note if note.startswith("refund-") else ""
        outcome = REFUND_EVENTS.get(event_type, IGNORED)
        if outcome != IGNORED and not (refund_id or our_reference or payment_reference):
            raise MalformedEventError("The refund event names no refund and no transaction.")
        reason = ""
        if outcome == FAILED:
            detail = next((str(data[k]).strip() for k in ("reason", "message") if str(data.get(k) or "").strip()), "")
            reason = "Paystack reported the refund failed" + (f": {detail}" if detail else "")
        amount = _refund_amount(field(data, "amount"), currency)
        key = refund_id or our_reference or f"{payment_reference}:{to_minor_units(amount, currency)}"
        return ProviderEvent(
            event_id=f"{event_type}:{key}",
            event_type=event_type,
            outcome=outcome,
            payment_reference=payment_reference,
            refund_id=refund_id,
            refund_reference=our_reference,
            amount=amount,
            currency=currency,
            provider_reference=refund_id,
            failure_reason=reason,
        )


def names_duplicate_reference(body: dict) -> bool:
    """Whether Paystack's 4xx says this transfer reference was used before ("This reference has
    already been used on a prior transfer", https://paystack.com/docs/api/errors/transfer/)."""
    words = f"{body.get('message') or ''} {body.get('code') or ''}".lower()
    return "reference" in words and any(word in words for word in ("duplicate", "already", "exists", "used"))


def failure_words(status: str, data: dict) -> str:
    """What staff read when a Paystack transfer did not pay: Paystack's own words where it gives any."""
    detail = ""
    for key in ("gateway_response", "failures", "message"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            detail = value.strip()
            break
        if isinstance(value, (list, dict)) and value:
            detail = str(value)
            break
    if status == "reversed":
        return f"reversed by Paystack: {detail or 'the receiving bank returned the money'}"
    return f"Paystack reported the transfer {status}" + (f": {detail}" if detail else "")


REFUND_FAILED_STATUSES = ("failed",)


def _refund_amount(value, currency: str):
    """A refund webhook's amount: minor units, as a number or a string of digits (Paystack's
    examples show both)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return minor_amount(value, currency)
