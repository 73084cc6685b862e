"""M-Pesa (Safaricom Daraja): STK push for guests' payments, B2C for hosts' payouts.

Daraja does not sign its callbacks. The callback URL we register carries a secret token
(`?token=…`), compared in constant time; the amount arrives in major units in the
callback metadata and the currency is the payment's (or the withdrawal's) own: KES or TZS.

Payouts (https://developer.safaricom.co.ke/apis/BusinessToCustomer): a B2C payment request
carries our transfer reference as its OriginatorConversationID, which Daraja refuses to take
twice ("Duplicate OriginatorConversationID."): a retry after a timeout never pays twice. The
request is only acknowledged; the outcome arrives later as a `{"Result": …}` callback on the
same URL as the STK callbacks. A transfer with no outcome is asked about with the Transaction
Status query (https://developer.safaricom.co.ke/apis/TransactionStatus), whose answer also
arrives as a `{"Result": …}` callback, told apart by its ResultParameters (TransactionStatus)
and by the Occasion we send with it.

Refunds are reversals (https://developer.safaricom.co.ke/apis/Reversal): POST
/mpesa/reversal/v1/request names the guest's payment by its M-Pesa receipt (the
MpesaReceiptNumber of its STK callback) and carries our refund reference as the Occasion.
Daraja only acknowledges it (its OriginatorConversationID is kept as the refund's provider id);
the outcome arrives as a `{"Result": …}` callback on the same URL again, told apart from B2C
results by the refund reference in its Occasion, by the OriginalTransactionID among its
ResultParameters, or by Daraja's reversal queue URL in its ReferenceData. A reversal takes no
idempotency key: a second request for the same receipt is answered "already reversed".
"""

import base64
import logging
import re
from datetime import UTC, datetime

import requests
from django.conf import settings

from finance.money import currency_decimals, format_money, to_minor_units

from .base import (
    FAILED,
    IGNORED,
    PENDING,
    SUCCESS,
    CheckoutInputError,
    MalformedEventError,
    Provider,
    ProviderClient,
    ProviderEvent,
    RefundRefusedError,
    RefundResult,
    TransferRefusedError,
    TransferResult,
    WebhookVerificationError,
    expect,
    field,
    load_json,
)

logger = logging.getLogger("finance.providers")

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
REVERSAL_PATH = "/mpesa/reversal/v1/request"
# Daraja's answer to a B2C request whose OriginatorConversationID it has already taken (the B2C
# page's "Sample Error Response"): the payout was sent before, so it is pending, not failed.
DUPLICATE_ERROR_CODE = "500.002.1001"
# The Occasion a Transaction Status query carries, before the transfer reference: Daraja echoes
# it in the result's ReferenceData, which tells a query's result from a payment's.
STATUS_QUERY_OCCASION = "payout-status:"
# The same for a refund's status query; a reversal's own Occasion is the refund reference, which
# always starts "refund-" (ProviderRefund.stable_refund_reference).
REFUND_STATUS_OCCASION = "refund-status:"
REFUND_PREFIX = "refund-"
# The country codes M-Pesa numbers start with, by the payout account's country, and the
# currencies B2C pays out in (whole units only).
COUNTRY_CODES = {"KE": "254", "TZ": "255"}
PAYOUT_CURRENCIES = ("KES", "TZS")
# Daraja's 400 answers that name the payee or the amount ("Bad Request - Invalid PartyB"): no
# retry mends them, so the payout is refused with words staff can act on. Any other 400 (our
# initiator, credential or URLs) is ours to fix: retried, never blamed on the host.
REFUSED_FIELDS = {
    "invalid partyb": "the phone number {phone} is not one M-Pesa can pay; check the host's M-Pesa number",
    "invalid amount": "the amount is outside what M-Pesa B2C pays in one transfer (KES 10 to 250,000)",
}


def daraja_phone(phone: str, *, country_code: str = "254") -> str:
    """The number as Daraja wants it: 2547XXXXXXXX (accepts +254…, spaces and a leading 0, which
    stands for `country_code`: 254 Kenya, 255 Tanzania)."""
    digits = re.sub(r"[\s-]", "", phone or "").removeprefix("+")
    if digits.startswith("0") and len(digits) == 10:
        digits = country_code + digits[1:]
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

    def daraja_post(self, path: str, body: dict) -> tuple[int, dict]:
        """POST `body` with a fresh bearer token; the HTTP status and the JSON answer, an error's
        too (Daraja says why in {"requestId", "errorCode", "errorMessage"}). No answer, or one
        that is not a JSON object, raises ProviderUnavailableError."""
        headers = {"Authorization": f"Bearer {self.access_token()}"}
        try:
            response = self.session.post(self.base_url + path, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            raise self.unavailable("unreachable", error) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise self.unavailable(f"answered {response.status_code} with non-JSON", response.text[:200])
        return response.status_code, answer


class Mpesa(Provider):
    name = "mpesa"
    client_class = MpesaClient
    # Our own token in the callback URL we register: new checkouts carry the current one, and a
    # callback for a checkout opened before the rotation carries MPESA_CALLBACK_TOKEN_PREVIOUS.
    webhook_secret_setting = "MPESA_CALLBACK_TOKEN"

    def secret(self) -> str:
        return settings.MPESA_CALLBACK_TOKEN

    def callback_url(self) -> str:
        """Where Daraja posts STK callbacks, B2C results, queue timeouts and status results."""
        return f"{settings.PUBLIC_BASE_URL}/api/payments/webhooks/mpesa/?token={self.secret()}"

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
            callback_url=self.callback_url(),
        )
        checkout_request_id = expect(answer, "CheckoutRequestID")
        return {"checkout_request_id": checkout_request_id, "provider_reference": checkout_request_id}

    def verify(self, raw: bytes, headers, query=None) -> None:
        if not self.webhook_secret_matches((query or {}).get("token", "")):
            raise WebhookVerificationError("Bad or missing callback token.")

    def parse(self, raw: bytes) -> ProviderEvent:
        data = load_json(raw)
        if "Result" in data:  # B2C result, queue timeout or Transaction Status result
            return parse_result(field(data, "Result"))
        callback = field(data, "Body", "stkCallback")
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

    # --- payouts: B2C ---------------------------------------------------------------------

    transfer_account_types = ("mobile_money",)

    def send_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """POST /mpesa/b2c/v3/paymentrequest → {"ConversationID": "AG_…", "OriginatorConversationID":
        <our transfer reference>, "ResponseCode": "0", ...}: accepted, the outcome comes by callback."""
        if not withdrawal.transfer_reference:
            raise ValueError(f"Withdrawal {withdrawal.reference} has no transfer reference: nothing sent.")
        amount = payout_whole_units(withdrawal.amount, withdrawal.currency)
        phone = payee_phone(withdrawal.bank_account)
        client = self.client(session)
        status, answer = client.daraja_post(
            B2C_PATH,
            {
                "OriginatorConversationID": withdrawal.transfer_reference,
                "InitiatorName": settings.MPESA_INITIATOR_NAME,
                "SecurityCredential": settings.MPESA_SECURITY_CREDENTIAL,
                "CommandID": "BusinessPayment",
                "Amount": amount,
                "PartyA": settings.MPESA_B2C_SHORTCODE,
                "PartyB": phone,
                "Remarks": f"StayAfrica payout {withdrawal.reference}",
                "QueueTimeOutURL": self.callback_url(),
                "ResultURL": self.callback_url(),
                # Spelled as the B2C v3 page spells it (request body and parameter table).
                "Occassion": withdrawal.reference,
            },
        )
        if is_duplicate(answer):
            # Daraja already holds a request under this reference: an earlier attempt got through
            # (its answer was lost). The payout is on its way; its result callback settles it.
            logger.info("M-Pesa already has payout %s: pending", withdrawal.transfer_reference)
            return TransferResult(status=PENDING, provider_transfer_id=withdrawal.provider_transfer_id)
        if status >= 400:
            refusal = refused_reason(status, answer, phone)
            if refusal:
                raise TransferRefusedError(refusal)
            raise client.unavailable(f"refused B2C with {status}", answer)
        if str(answer.get("ResponseCode", "")) != "0":
            raise client.unavailable("did not accept B2C", answer)
        return TransferResult(status=PENDING, provider_transfer_id=str(expect(answer, "ConversationID")))

    def fetch_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """POST /mpesa/transactionstatus/v1/query by the payout's OriginatorConversationID. Daraja
        only acknowledges it: the status arrives as a Result callback (parse_result), so this is
        always PENDING. Any error raises ProviderUnavailableError: a failed query never fails a payout."""
        self._ask_status(
            self.client(session),
            conversation_id=withdrawal.transfer_reference,
            party=settings.MPESA_B2C_SHORTCODE,
            remarks=f"Status of payout {withdrawal.reference}",
            occasion=STATUS_QUERY_OCCASION + withdrawal.transfer_reference,
            what="the status query",
        )
        return TransferResult(status=PENDING, provider_transfer_id=withdrawal.provider_transfer_id)

    def _ask_status(self, client, *, conversation_id: str, party: str, remarks: str, occasion: str, what: str):
        """POST a Transaction Status query (a payout's or a reversal's): Daraja only acknowledges
        it, and the answer comes as a Result callback whose Occasion says what it was about. A
        refusal or an error raises ProviderUnavailableError: a failed query settles nothing."""
        status, answer = client.daraja_post(
            STATUS_PATH,
            {
                "Initiator": settings.MPESA_INITIATOR_NAME,
                "SecurityCredential": settings.MPESA_SECURITY_CREDENTIAL,
                "CommandID": "TransactionStatusQuery",
                "OriginalConversationID": conversation_id,
                "PartyA": party,
                "IdentifierType": "4",  # an organisation shortcode
                "ResultURL": self.callback_url(),
                "QueueTimeOutURL": self.callback_url(),
                "Remarks": remarks,
                "Occasion": occasion,
            },
        )
        if status >= 400 or str(answer.get("ResponseCode", "")) != "0":
            raise client.unavailable(f"refused {what} with {status}", answer)

    # --- refunds: reversals -----------------------------------------------------------------

    refunds_by_api = True

    def send_refund(self, refund, *, session=None) -> RefundResult:
        """POST /mpesa/reversal/v1/request for the payment's receipt → {"OriginatorConversationID",
        "ConversationID", "ResponseCode": "0", ...}: accepted (PENDING), the outcome comes by callback.

        Refused before anything is sent: a payment with no M-Pesa receipt on record, an amount
        with cents. A 400 naming the transaction or the amount is refused with Daraja's words;
        any other error (our credential, initiator, a 5xx, a timeout) is ProviderUnavailableError."""
        payment = refund.payment
        receipt = payment_receipt(payment)
        amount = refund_whole_units(refund.amount, refund.currency)
        client = self.client(session)
        status, answer = client.daraja_post(
            REVERSAL_PATH,
            {
                "Initiator": settings.MPESA_INITIATOR_NAME,
                "SecurityCredential": settings.MPESA_SECURITY_CREDENTIAL,
                "CommandID": "TransactionReversal",
                "TransactionID": receipt,
                "Amount": amount,
                "ReceiverParty": settings.MPESA_SHORTCODE,  # the paybill the guest paid
                # Spelled as Daraja spells it on the Reversal page.
                "RecieverIdentifierType": "11",
                "ResultURL": self.callback_url(),
                "QueueTimeOutURL": self.callback_url(),
                "Remarks": f"StayAfrica refund {payment.reference}",
                "Occasion": refund.refund_reference,
            },
        )
        if status >= 400:
            message = str(answer.get("errorMessage", ""))
            if status == 400 and any(words in message.lower() for words in REVERSAL_REFUSED):
                raise RefundRefusedError(f"M-Pesa refused the reversal of {receipt}: {message}")
            raise client.unavailable(f"refused the reversal with {status}", answer)
        if str(answer.get("ResponseCode", "")) != "0":
            raise client.unavailable("did not accept the reversal", answer)
        return RefundResult(status=PENDING, provider_refund_id=str(expect(answer, "OriginatorConversationID")))

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        """POST /mpesa/transactionstatus/v1/query for the reversal (by the OriginatorConversationID
        Daraja gave it). Only acknowledged: the status arrives as a Result callback, so this is
        always PENDING; without the reversal's id (its acknowledgement was lost) nothing is asked."""
        if not refund.provider_refund_id:
            return RefundResult(
                status=PENDING,
                failure_reason="M-Pesa never acknowledged this reversal, so it cannot be asked about; "
                "check the payment's receipt in the M-Pesa portal before retrying.",
            )
        self._ask_status(
            self.client(session),
            conversation_id=refund.provider_refund_id,
            party=settings.MPESA_SHORTCODE,
            remarks=f"Status of refund {refund.refund_reference}",
            occasion=REFUND_STATUS_OCCASION + refund.refund_reference,
            what="the refund status query",
        )
        return RefundResult(status=PENDING, provider_refund_id=refund.provider_refund_id)


# Daraja's 400 answers to a reversal that name the transaction or the amount: no retry mends them.
REVERSAL_REFUSED = ("invalid transactionid", "invalid transaction id", "invalid amount")


def payment_receipt(payment) -> str:
    """The payment's M-Pesa receipt (MpesaReceiptNumber): read from its STK callback, which the
    webhook inbox keeps (raw, token-verified) with the payment it was applied to. Payment rows
    keep the CheckoutRequestID only, which a reversal does not take."""
    from finance.models import WebhookEvent

    callbacks = WebhookEvent.objects.filter(
        provider="mpesa", payment=payment, event_type="stk_callback.success", outcome=WebhookEvent.Outcome.APPLIED
    ).order_by("-received_at")
    for inbox in callbacks:
        receipt = stk_receipt(inbox.raw_body.encode())
        if receipt:
            return receipt
    raise RefundRefusedError(
        f"M-Pesa can only reverse a payment by its receipt, and payment {payment.reference} has no "
        "M-Pesa receipt on record: refund the guest by hand."
    )


def stk_receipt(raw: bytes) -> str:
    """The MpesaReceiptNumber of a successful STK callback, or ''."""
    try:
        callback = field(load_json(raw), "Body", "stkCallback")
        items = field(callback, "CallbackMetadata", "Item")
    except MalformedEventError:
        return ""
    if not isinstance(items, list):
        return ""
    metadata = {item.get("Name"): item.get("Value") for item in items if isinstance(item, dict)}
    return str(metadata.get("MpesaReceiptNumber") or "")


def refund_whole_units(amount, currency: str) -> int:
    """The reversal's amount in whole shillings. M-Pesa moves whole units only: an amount with
    cents is refused rather than rounded (the guest would get a different sum)."""
    minor = to_minor_units(amount, currency)
    unit = 10 ** currency_decimals(currency)
    if currency not in PAYOUT_CURRENCIES or minor % unit:
        raise RefundRefusedError(
            f"M-Pesa reverses whole KES or TZS only and this refund is {format_money(amount, currency)}: "
            "refund the guest by hand."
        )
    return minor // unit


def payout_whole_units(amount, currency: str) -> int:
    """The payout in whole shillings, as B2C takes it; refuses a currency M-Pesa does not pay
    out in and an amount with cents (rounding it would pay the host a different sum)."""
    if currency not in PAYOUT_CURRENCIES:
        raise TransferRefusedError(f"M-Pesa pays out KES and TZS only; this withdrawal is in {currency}.")
    minor = to_minor_units(amount, currency)
    unit = 10 ** currency_decimals(currency)
    if minor % unit:
        raise TransferRefusedError(
            f"M-Pesa pays whole {currency} only and {format_money(amount, currency)} has cents: "
            "the host can withdraw a whole amount instead, or staff can pay this one manually."
        )
    return minor // unit


def payee_phone(bank_account) -> str:
    """The host's M-Pesa number (decrypted from the payout account) in Daraja's format."""
    from finance import crypto

    country = (bank_account.country or "KE").upper()
    code = COUNTRY_CODES.get(country, "254")
    try:
        phone = daraja_phone(crypto.decrypt_account_number(bank_account), country_code=code)
    except CheckoutInputError:
        phone = ""
    if not phone.startswith(code):  # not a number at all, or another country's
        raise TransferRefusedError(
            f"The payout account's number (ending {bank_account.account_number_last4}) is not an M-Pesa "
            f"number in {country} (e.g. {code}712345678): correct the host's M-Pesa number."
        )
    return phone


def is_duplicate(answer: dict) -> bool:
    message = str(answer.get("errorMessage", "")).lower()
    return str(answer.get("errorCode", "")) == DUPLICATE_ERROR_CODE or "duplicate originatorconversationid" in message


def refused_reason(status: int, answer: dict, phone: str) -> str:
    """Staff's words for a 400 that names the payee or the amount; '' for any other error."""
    if status != 400:
        return ""
    message = str(answer.get("errorMessage", ""))
    for words, reason in REFUSED_FIELDS.items():
        if words in message.lower():
            masked = f"ending {phone[-4:]}" if phone else ""
            return f"M-Pesa refused the payout: {reason.format(phone=masked)} (M-Pesa said: {message})."
    return ""


# --- callbacks: B2C results, queue timeouts, Transaction Status results ------------------------


def parse_result(result) -> ProviderEvent:
    """A `{"Result": …}` callback in our terms. The payment's own result names our transfer
    reference as its OriginatorConversationID; a status query's result names the payout's in its
    ResultParameters (its own OriginatorConversationID is the query's)."""
    if not isinstance(result, dict):
        raise MalformedEventError("Result must be an object.")
    conversation_id = str(field(result, "ConversationID"))
    code = str(field(result, "ResultCode"))
    description = str(result.get("ResultDesc", ""))
    parameters = key_values(result, "ResultParameters", "ResultParameter")
    occasion = str(key_values(result, "ReferenceData", "ReferenceItem").get("Occasion") or "")
    if occasion.startswith(REFUND_STATUS_OCCASION):
        return refund_status_result(parameters, occasion, conversation_id, code, description)
    if "TransactionStatus" in parameters or occasion.startswith(STATUS_QUERY_OCCASION):
        return status_result(result, parameters, occasion, conversation_id, code, description)
    if is_reversal_result(result, parameters, occasion):
        return reversal_result(result, parameters, occasion, conversation_id, code, description)
    reference = str(field(result, "OriginatorConversationID"))
    common = {"transfer_reference": reference, "provider_reference": conversation_id}
    if str(result.get("ResultType", 0)) != "0" or "timed out" in description.lower():
        # The request timed out in Daraja's queue (or the result is not final): M-Pesa may still
        # process it, so this settles nothing. The stuck-transfer query asks later.
        return ProviderEvent(
            event_id=f"b2c-timeout:{conversation_id}:{code}",
            event_type="b2c_result.queue_timeout",
            outcome=IGNORED,
            failure_reason=description,
            **common,
        )
    event_id = f"b2c:{conversation_id}:{code}"
    if code != "0":
        return ProviderEvent(
            event_id=event_id,
            event_type="b2c_result.failed",
            outcome=FAILED,
            failure_reason=description or f"M-Pesa result code {code}.",
            **common,
        )
    if "TransactionAmount" not in parameters:
        raise MalformedEventError("Missing field: ResultParameters.TransactionAmount.")
    common["provider_reference"] = str(result.get("TransactionID") or conversation_id)
    return ProviderEvent(
        event_id=event_id,
        event_type="b2c_result.success",
        outcome=SUCCESS,
        # No currency in the result: it is read in the withdrawal's currency.
        raw_amount=parameters["TransactionAmount"],
        **common,
    )


def status_result(result, parameters, occasion, conversation_id, code, description) -> ProviderEvent:
    """A Transaction Status result. Only "Completed" settles (a success); a failed query, or a
    status we cannot be sure of, is IGNORED: the payout stays processing for staff or the next query."""
    reference = str(parameters.get("OriginatorConversationID") or occasion.removeprefix(STATUS_QUERY_OCCASION))
    if not reference:
        raise MalformedEventError("The status result names no payout (OriginatorConversationID or Occasion).")
    event_id = f"b2c-status:{conversation_id}:{code}"
    transaction_status = str(parameters.get("TransactionStatus") or "")
    if code == "0" and transaction_status == "Completed":
        if parameters.get("Amount") is None:
            raise MalformedEventError("Missing field: ResultParameters.Amount.")
        return ProviderEvent(
            event_id=event_id,
            event_type="b2c_status.completed",
            outcome=SUCCESS,
            transfer_reference=reference,
            provider_reference=str(parameters.get("ReceiptNo") or conversation_id),
            raw_amount=parameters["Amount"],
        )
    slug = "query_failed" if code != "0" else re.sub(r"[^a-z0-9]+", "_", transaction_status.lower())[:40] or "unknown"
    return ProviderEvent(
        event_id=event_id,
        event_type=f"b2c_status.{slug}",
        outcome=IGNORED,
        transfer_reference=reference,
        provider_reference=conversation_id,
        failure_reason=description if code != "0" else transaction_status,
    )


def is_reversal_result(result: dict, parameters: dict, occasion: str) -> bool:
    """Whether a Result is a reversal's: our refund reference echoed as its Occasion, the reversed
    receipt among its parameters, or Daraja's reversal queue URL in its ReferenceData (B2C
    results name .../b2cresults/...)."""
    queue_url = str(key_values(result, "ReferenceData", "ReferenceItem").get("QueueTimeoutURL") or "")
    return occasion.startswith(REFUND_PREFIX) or "OriginalTransactionID" in parameters or "reversal" in queue_url


# Daraja's words when the receipt was reversed before (by an earlier attempt whose acknowledgement
# was lost, or by hand): the guest may well have the money, so this fails nothing.
ALREADY_REVERSED = ("already been reversed", "already reversed")


def reversal_result(result, parameters, occasion, conversation_id, code, description) -> ProviderEvent:
    """A reversal's Result: ResultCode 0 succeeded; another code failed with Daraja's words,
    except "already reversed" and a queue timeout, which settle nothing (IGNORED)."""
    common = {
        "refund_id": str(result.get("OriginatorConversationID") or ""),
        "refund_reference": occasion if occasion.startswith(REFUND_PREFIX) else "",
        "provider_reference": conversation_id,
    }
    if not (common["refund_id"] or common["refund_reference"]):
        raise MalformedEventError("The reversal result names no refund (OriginatorConversationID or Occasion).")
    event_id = f"reversal:{conversation_id}:{code}"
    if str(result.get("ResultType", 0)) != "0" or "timed out" in description.lower():
        return ProviderEvent(
            event_id=event_id,
            event_type="reversal_result.queue_timeout",
            outcome=IGNORED,
            failure_reason=description,
            **common,
        )
    if code != "0":
        already = any(words in description.lower() for words in ALREADY_REVERSED)
        return ProviderEvent(
            event_id=event_id,
            event_type="reversal_result.already_reversed" if already else "reversal_result.failed",
            outcome=IGNORED if already else FAILED,
            failure_reason=f"M-Pesa: {description}" if description else f"M-Pesa result code {code}.",
            **common,
        )
    common["provider_reference"] = str(result.get("TransactionID") or conversation_id)
    return ProviderEvent(
        event_id=event_id,
        event_type="reversal_result.success",
        outcome=SUCCESS,
        # No currency in the result: it is read in the refund's currency.
        raw_amount=parameters.get("Amount"),
        **common,
    )


def refund_status_result(parameters, occasion, conversation_id, code, description) -> ProviderEvent:
    """A Transaction Status result about a reversal (our Occasion "refund-status:<reference>").
    Only "Completed" settles (a success); anything else is IGNORED, as for payouts."""
    common = {
        "refund_reference": occasion.removeprefix(REFUND_STATUS_OCCASION),
        "refund_id": str(parameters.get("OriginatorConversationID") or ""),
    }
    event_id = f"reversal-status:{conversation_id}:{code}"
    transaction_status = str(parameters.get("TransactionStatus") or "")
    if code == "0" and transaction_status == "Completed":
        return ProviderEvent(
            event_id=event_id,
            event_type="reversal_status.completed",
            outcome=SUCCESS,
            provider_reference=str(parameters.get("ReceiptNo") or conversation_id),
            raw_amount=parameters.get("Amount"),
            **common,
        )
    slug = "query_failed" if code != "0" else re.sub(r"[^a-z0-9]+", "_", transaction_status.lower())[:40] or "unknown"
    return ProviderEvent(
        event_id=event_id,
        event_type=f"reversal_status.{slug}",
        outcome=IGNORED,
        provider_reference=conversation_id,
        failure_reason=description if code != "0" else transaction_status,
        **common,
    )


def key_values(result: dict, outer: str, inner: str) -> dict:
    """Daraja's [{"Key": k, "Value": v}, …] (or a single such object) as {k: v}."""
    items = (result.get(outer) or {}).get(inner) if isinstance(result.get(outer), dict) else None
    if items is None:
        return {}
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise MalformedEventError(f"{outer}.{inner} must be a list.")
    return {item["Key"]: item.get("Value") for item in items if isinstance(item, dict) and "Key" in item}
