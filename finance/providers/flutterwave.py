"""Flutterwave: `verif-hash` equals the shared secret hash; amounts in major units.

Payouts use Flutterwave v3 Transfers (https://developer.flutterwave.com/v3.0/docs/transfers):
POST /v3/transfers with the account's bank (or mobile-money network) code and number and our
stable reference, settled by the `transfer.completed` webhook or GET /v3/transfers/{id}.

Refunds use v3 Refunds (https://developer.flutterwave.com/v3.0/docs/refunds): POST
/v3/transactions/{id}/refund with the charge's transaction id (the `data.id` of its
charge.completed webhook and verify answer, kept as Payment.provider_reference) and the amount
in major units, read back with GET /v3/refunds/{id}. Flutterwave's v3 webhook list documents no
refund event, so the refund engine's periodic query (fetch_refund) settles a refund that is not
final when it is created; nor does the call take an idempotency key: our refund reference
travels in `comments` only, for people reading Flutterwave's dashboard.
"""

from django.conf import settings

from finance.money import quantum

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
    major_amount,
    not_confirmed,
)


class FlutterwaveClient(BearerSecretClient):
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

    # --- transfers (payouts) -----------------------------------------------------------------

    def create_transfer(self, **transfer) -> tuple[int, dict]:
        """POST /transfers {account_bank, account_number, amount, currency, debit_currency,
        narration, reference, beneficiary_name} → data.id, data.status ("NEW")."""
        return self.call("POST", "/transfers", json=transfer)

    def get_transfer(self, transfer_id: str) -> tuple[int, dict]:
        """GET /transfers/{id} → the transfer (data.status NEW, PENDING, SUCCESSFUL or FAILED)."""
        return self.call("GET", f"/transfers/{transfer_id}")

    def find_transfers(self, reference: str) -> tuple[int, dict]:
        """GET /transfers?reference=... → data: a list of transfers."""
        return self.call("GET", "/transfers", params={"reference": reference})

    # --- refunds -------------------------------------------------------------------------------

    def create_refund(self, transaction_id: str, **refund) -> tuple[int, dict]:
        """POST /transactions/{id}/refund {amount, comments} → data.id, data.status ("completed",
        "pending"...), data.amount_refunded."""
        return self.call("POST", f"/transactions/{transaction_id}/refund", json=refund)

    def get_refund(self, refund_id: str) -> tuple[int, dict]:
        """GET /refunds/{id} → the refund (data.status, data.amount_refunded, data.tx_id)."""
        return self.call("GET", f"/refunds/{refund_id}")


TRANSFER_EVENT = "transfer.completed"
# A 4xx whose words say the problem is on our side (our key, our Flutterwave balance, transfers
# via API not enabled, our server's IP not whitelisted, compliance, a rate limit): retried
# later, never the host's fault, so the withdrawal must not fail over it.
OUR_SIDE = (
    "authorization key",
    "api key",
    "balance",
    "insufficient",
    "whitelist",
    "ip address",
    "not enabled",
    "compliance",
    "unauthorized",
    "rate limit",
    "too many",
)


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
        if event_type == TRANSFER_EVENT:
            return self.parse_transfer(field(data, "data"))
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

    # --- payouts (finance.payouts) -----------------------------------------------------------

    transfer_account_types = ("bank", "mobile_money")

    def send_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """Pay `withdrawal` through Flutterwave Transfers, with its transfer reference as the
        transfer's unique reference (Flutterwave refuses a second transfer with it).

        The amount goes in major units as an exact decimal string ("1500.50", never a float),
        debited from our balance in the same currency. For mobile money, account_bank is the
        network's code and account_number the wallet's phone number; beneficiary_name is sent
        for both (Flutterwave needs it for mobile money). Answers:
          - queued (status NEW or PENDING) → PENDING with Flutterwave's transfer id;
            SUCCESSFUL → SUCCESS; FAILED → FAILED with its complete_message;
          - the reference was used before (a retry after a timeout whose first call got
            through) → the transfer is looked up by reference instead;
          - 401/403/429, and a 4xx naming our key, our balance, the IP whitelist or transfers
            not enabled → ProviderUnavailableError (logged; retried with the same reference,
            the host's withdrawal stays processing);
          - another 400/404/422 (an invalid account number or bank code) → TransferRefusedError
            with Flutterwave's words, e.g. "Flutterwave refused the transfer: Invalid account";
          - a timeout, a connection error, a 5xx → ProviderUnavailableError.
        """
        client = self.client(session)
        account = withdrawal.bank_account
        currency = withdrawal.currency.upper()
        if not account.bank_code:
            raise TransferRefusedError(
                "The bank account has no bank code, which a Flutterwave transfer needs.", field="bank_account"
            )
        from finance import crypto

        status, body = client.create_transfer(
            account_bank=account.bank_code,
            account_number=crypto.decrypt_account_number(account),
            amount=str(withdrawal.amount.quantize(quantum(currency))),
            currency=currency,
            debit_currency=currency,
            narration=f"StayAfrica payout {withdrawal.reference}",
            reference=withdrawal.transfer_reference or withdrawal.stable_transfer_reference(),
            beneficiary_name=account.account_name,
        )
        if status < 400 and body.get("status") == "success":
            return self.transfer_result(expect(body, "data"))
        if status < 500 and names_duplicate_reference(body):
            return self.fetch_transfer(withdrawal, session=client.session)
        raise self.transfer_error(client, status, body)

    def fetch_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """What Flutterwave says of the withdrawal's transfer: GET /v3/transfers/{id} when we have
        its id, else GET /v3/transfers?reference=... keeping only a transfer with exactly our
        reference (so a listing that ignored the filter cannot mislead us).

        Not found (a 404 for the id, or no transfer with our reference) is read as PENDING, not
        FAILED: Flutterwave's documentation does not promise that a transfer it does not show now
        can never appear, and failing the withdrawal would release the hold while the money may
        still leave. The reason says so; sending again with the same reference is safe."""
        client = self.client(session)
        reference = withdrawal.transfer_reference or withdrawal.stable_transfer_reference()
        not_found = TransferResult(
            status=PENDING,
            failure_reason=f"Flutterwave has no transfer with reference {reference} yet; "
            "sending it again with the same reference cannot pay twice.",
        )
        if withdrawal.provider_transfer_id:
            status, body = client.get_transfer(withdrawal.provider_transfer_id)
            if status == 404:
                return not_found
            if status < 400 and body.get("status") == "success":
                return self.transfer_result(expect(body, "data"))
            raise self.transfer_error(client, status, body, refuse=False)
        status, body = client.find_transfers(reference)
        if not (status < 400 and body.get("status") == "success"):
            raise self.transfer_error(client, status, body, refuse=False)
        transfers = expect(body, "data")
        if not isinstance(transfers, list):
            raise client.unavailable("listed transfers without a list", transfers)
        matches = [t for t in transfers if isinstance(t, dict) and str(t.get("reference")) == reference]
        return self.transfer_result(matches[0]) if matches else not_found

    def transfer_result(self, data) -> TransferResult:
        """A Flutterwave transfer object (create, fetch, list) as a TransferResult."""
        status = str(expect(data, "status")).upper()
        transfer_id = str(data.get("id") or "")
        if status == "SUCCESSFUL":
            return TransferResult(status=SUCCESS, provider_transfer_id=transfer_id)
        if status == "FAILED":
            return TransferResult(status=FAILED, provider_transfer_id=transfer_id, failure_reason=failure_words(data))
        return TransferResult(status=PENDING, provider_transfer_id=transfer_id)

    def transfer_error(self, client: FlutterwaveClient, status: int, body: dict, *, refuse: bool = True):
        """The error for a 4xx answer: the account's fault (refused) or ours (unavailable, logged)."""
        message = str(body.get("message") or "").strip()
        words = message.lower()
        if refuse and status in (400, 404, 422) and message and not any(word in words for word in OUR_SIDE):
            logger.info("Flutterwave refused a transfer (%s): %s", status, message)
            return TransferRefusedError(f"Flutterwave refused the transfer: {message}")
        return client.unavailable(f"answered {status}", message or body)

    def parse_transfer(self, data) -> ProviderEvent:
        """transfer.completed: a payout's outcome, data.status SUCCESSFUL or FAILED.

        Flutterwave sends one event name for every outcome, so the event id is the name, the
        transfer's id and its status: a redelivery has the same id, a later outcome of the same
        transfer a different one. Any other status is IGNORED (stored, nothing settled)."""
        if not isinstance(data, dict):
            raise MalformedEventError("Missing field: data.")
        transfer_id = str(field(data, "id"))
        status = str(field(data, "status")).upper()
        event_id = f"{TRANSFER_EVENT}:{transfer_id}:{status.lower()}"
        if status not in ("SUCCESSFUL", "FAILED"):
            return ProviderEvent(event_id=event_id, event_type=TRANSFER_EVENT, outcome=IGNORED)
        currency = str(field(data, "currency")).upper()
        return ProviderEvent(
            event_id=event_id,
            event_type=TRANSFER_EVENT,
            outcome=SUCCESS if status == "SUCCESSFUL" else FAILED,
            transfer_reference=str(field(data, "reference")),
            provider_reference=transfer_id,
            amount=major_amount(field(data, "amount"), currency),
            currency=currency,
            failure_reason="" if status == "SUCCESSFUL" else failure_words(data),
        )

    # --- refunds (finance.refunds) ----------------------------------------------------------

    refunds_by_api = True

    def send_refund(self, refund, *, session=None) -> RefundResult:
        """Refund `refund.amount` of the payment's Flutterwave charge.

        The amount goes in major units as an exact decimal string (never a float). Answers:
          - data.status completed → SUCCESS; pending (or any status not final) → PENDING;
            failed → FAILED with Flutterwave's words; the refund id is kept either way;
          - 401/403/429, and a 4xx naming our key, our balance or the IP whitelist →
            ProviderUnavailableError (ours: retried, logged);
          - another 400/404/422 (already refunded, more than is left, no such transaction) →
            RefundRefusedError with Flutterwave's words;
          - a timeout, a connection error, a 5xx → ProviderUnavailableError.
        Flutterwave takes no idempotency key for refunds: a retry after a lost answer may be
        refused as "already refunded", which staff see with Flutterwave's words."""
        client = self.client(session)
        currency = refund.currency.upper()
        status, body = client.create_refund(
            self.charge_id(refund.payment, client),
            amount=str(refund.amount.quantize(quantum(currency))),
            comments=f"StayAfrica refund {refund.refund_reference}",
        )
        if status < 400 and body.get("status") == "success":
            return refund_result(expect(body, "data"))
        raise refund_error(client, status, body)

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        """GET /v3/refunds/{id}. Without the refund's id (the create call's answer was lost)
        Flutterwave offers no lookup by our reference, so it stays PENDING for staff, with why."""
        if not refund.provider_refund_id:
            return RefundResult(
                status=PENDING,
                failure_reason="Flutterwave never named this refund, so it cannot be asked about; "
                "check the charge's refunds in Flutterwave's dashboard before retrying.",
            )
        client = self.client(session)
        status, body = client.get_refund(refund.provider_refund_id)
        if status == 404:
            return RefundResult(
                status=PENDING,
                provider_refund_id=refund.provider_refund_id,
                failure_reason=f"Flutterwave has no refund {refund.provider_refund_id} yet.",
            )
        if status < 400 and body.get("status") == "success":
            return refund_result(expect(body, "data"))
        raise client.unavailable(f"answered {status} about a refund", body.get("message") or body)

    def charge_id(self, payment, client: FlutterwaveClient) -> str:
        """Flutterwave's id of the payment's charge: kept from its webhook, else asked for by our
        tx_ref (a payment settled before the id was kept). No such charge: refused."""
        if payment.provider_reference:
            return payment.provider_reference
        try:
            data = client.verify_by_reference(payment.reference)
        except ProviderAnswerError as answer:
            message = str(answer.body.get("message") or "") if isinstance(answer.body, dict) else ""
            raise RefundRefusedError(
                f"Flutterwave refused the refund: it has no charge for payment {payment.reference}"
                + (f" ({message})" if message else "")
            ) from None
        return str(expect(data, "id"))


# Flutterwave's words for a refund's status (data.status), lower case. Anything else (pending,
# processing, a word it may add) is read as PENDING: the periodic query asks again.
REFUND_SUCCEEDED = ("completed", "successful", "success")
REFUND_FAILED = ("failed", "declined", "cancelled", "canceled", "rejected")


def refund_result(data) -> RefundResult:
    """A Flutterwave refund object (create or fetch) as a RefundResult."""
    status = str(expect(data, "status")).lower()
    refund_id = str(data.get("id") or "")
    if status in REFUND_SUCCEEDED:
        return RefundResult(status=SUCCESS, provider_refund_id=refund_id)
    if status in REFUND_FAILED:
        # The refund object documents no reason field (its `comments` are our own note).
        reason = f"Flutterwave reported the refund {status}"
        return RefundResult(status=FAILED, provider_refund_id=refund_id, failure_reason=reason)
    return RefundResult(status=PENDING, provider_refund_id=refund_id)


def refund_error(client: FlutterwaveClient, status: int, body: dict):
    """A 4xx about the refund itself is refused with Flutterwave's words; ours is unavailable."""
    message = str(body.get("message") or "").strip()
    words = message.lower()
    if status in (400, 404, 422) and message and not any(word in words for word in OUR_SIDE):
        logger.info("Flutterwave refused a refund (%s): %s", status, message)
        return RefundRefusedError(f"Flutterwave refused the refund: {message}")
    return client.unavailable(f"answered {status} to a refund", message or body)


def names_duplicate_reference(body: dict) -> bool:
    """Whether Flutterwave's 4xx says this transfer reference was used before."""
    words = str(body.get("message") or "").lower()
    return "reference" in words and any(word in words for word in ("duplicate", "already", "exists", "used"))


def failure_words(data: dict) -> str:
    """What staff read when a Flutterwave transfer did not pay: its complete_message."""
    message = str(data.get("complete_message") or "").strip()
    return (
        f"Flutterwave reported the transfer failed: {message}"
        if message
        else "Flutterwave reported the transfer failed"
    )
