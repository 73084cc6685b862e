"""Flutterwave: `verif-hash` equals the shared secret hash; amounts in major units.

Payouts use Flutterwave v3 Transfers (https://developer.flutterwave.com/v3.0/docs/transfers):
POST /v3/transfers with the account's bank (or mobile-money network) code and number and our
stable reference, settled by the `transfer.completed` webhook or GET /v3/transfers/{id}.
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
