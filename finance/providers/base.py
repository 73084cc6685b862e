"""What every payment provider module supplies: an outbound client and webhook rules.

A provider verifies a webhook over the raw request bytes before anything is parsed, then
turns the provider's JSON into a `ProviderEvent` in our terms. Amounts arrive in whatever
unit the provider uses and leave as exact Decimals in major units.
"""

import hmac
import json
import logging
from dataclasses import dataclass
from decimal import Decimal

import requests
from django.conf import settings

from finance.errors import TransactionError
from finance.money import from_minor_units, parse_amount

logger = logging.getLogger("finance.providers")

# What a guest or an API client is told when a provider lets us down. The provider's own
# words (and the network's: host names, addresses) go to the server log only.
UNAVAILABLE = "The payment provider is not available right now; nothing was charged. Please try again in a few minutes."


class WebhookVerificationError(Exception):
    """The signature is missing, wrong or stale: the request is not from the provider."""


class MalformedEventError(Exception):
    """The body is signed but is not an event we can read."""


class ProviderUnavailableError(TransactionError):
    """The provider could not be reached or refused the request."""

    code = "provider_unavailable"
    status = 503


class CheckoutInputError(TransactionError):
    """The provider's checkout needs something the request did not give."""

    code = "invalid_field"


class TransferRefusedError(TransactionError):
    """The provider refused the payout itself (a 4xx naming why: a closed account, a wrong bank
    code). No retry mends it: the withdrawal fails with the provider's reason, the hold is released."""

    code = "transfer_refused"
    status = 422


class ProviderAnswerError(Exception):
    """A 4xx the provider documents as an answer (ProviderClient.get's `answers`): its status and
    JSON body, for the caller to read. Any other 4xx or 5xx is ProviderUnavailableError."""

    def __init__(self, status: int, body):
        super().__init__(f"the provider answered {status}")
        self.status = status
        self.body = body


SUCCESS, FAILED, IGNORED = "success", "failed", "ignored"
# A transfer the provider accepted and has not finished (TransferResult.status only).
PENDING = "pending"


@dataclass(frozen=True)
class ProviderEvent:
    event_id: str
    event_type: str
    outcome: str  # SUCCESS, FAILED or IGNORED
    payment_reference: str = ""
    amount: Decimal | None = None
    currency: str = ""
    provider_reference: str = ""
    failure_reason: str = ""
    # Set instead of amount/currency when the provider sends an amount without a currency
    # (M-Pesa): it is read in the payment's own currency.
    raw_amount: object = None
    # Set for a payout transfer's callback instead of `payment_reference`: our
    # Withdrawal.transfer_reference. `provider_reference` is then the provider's transfer id.
    transfer_reference: str = ""
    # Set for a refund's callback (finance.refunds): our ProviderRefund.refund_reference when the
    # provider echoes it, and/or the provider's own refund id. `payment_reference` may then
    # name the refunded payment; `amount` is the refund's.
    refund_reference: str = ""
    refund_id: str = ""

    @property
    def is_transfer(self) -> bool:
        return bool(self.transfer_reference)

    @property
    def is_refund(self) -> bool:
        return bool(self.refund_reference or self.refund_id)


@dataclass(frozen=True)
class TransferResult:
    """What a provider says about a payout transfer, when it is sent or asked about."""

    status: str  # PENDING, SUCCESS or FAILED
    provider_transfer_id: str = ""
    failure_reason: str = ""


@dataclass(frozen=True)
class RefundResult:
    """What a provider says about a refund, when it is created or asked about."""

    status: str  # PENDING, SUCCESS or FAILED
    provider_refund_id: str = ""
    failure_reason: str = ""


class RefundRefusedError(TransactionError):
    """The provider refused to create the refund (the payment cannot be refunded so, the amount
    is more than is left at the provider...): retrying the same call will not help."""

    code = "refund_refused"
    status = 422


@dataclass(frozen=True)
class PaymentCheck:
    """What a provider's verify endpoint says about a payment, read before a webhook gives value."""

    succeeded: bool
    amount: Decimal | None
    currency: str
    provider_status: str  # the provider's own word: "success", "abandoned", "SUCCESSFUL", ...


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def load_json(raw: bytes) -> dict:
    # Numbers with a fraction become Decimal, never float: money must stay exact.
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEventError("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise MalformedEventError("The body is not a JSON object.")
    return data


def field(data: dict, *path: str):
    """data[path[0]][path[1]]..., or MalformedEventError naming what is missing."""
    value = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise MalformedEventError(f"Missing field: {'.'.join(path)}.")
        value = value[key]
    return value


def expect(answer, *path: str):
    """A field the provider documents in its API answer; its absence means the provider failed us (503)."""
    value = answer
    for key in path:
        if not isinstance(value, dict) or key not in value:
            logger.warning("a payment provider answered without %s", ".".join(path))
            raise ProviderUnavailableError(UNAVAILABLE)
        value = value[key]
    return value


def minor_amount(value, currency: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEventError("The amount must be an integer number of minor units.")
    try:
        return from_minor_units(value, currency)
    except TransactionError as error:
        raise MalformedEventError(str(error)) from None


def major_amount(value, currency: str) -> Decimal:
    """An amount in major units, sent as a JSON number (parsed as Decimal) or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise MalformedEventError("The amount must be a number.")
    try:
        return parse_amount(str(value), currency)
    except TransactionError as error:
        raise MalformedEventError(str(error)) from None


def answered_amount(value, currency: str, *, minor: bool) -> Decimal:
    """An amount in a provider's API answer (minor units, or major units as a number or string),
    exact; one we cannot read means the provider failed us (503), as a missing field does."""
    try:
        return minor_amount(value, currency) if minor else major_amount(value, currency)
    except MalformedEventError as error:
        logger.warning("a payment provider answered with an unreadable amount: %s", error)
        raise ProviderUnavailableError(UNAVAILABLE) from None


def not_confirmed(answer: ProviderAnswerError, *, not_found: str) -> PaymentCheck:
    """What a verify endpoint's documented 4xx says: the payment is not confirmed. "not found"
    when the status is 404 or the provider's message contains `not_found` (lower case)."""
    message = str(answer.body.get("message") or "") if isinstance(answer.body, dict) else ""
    if answer.status == 404 or not_found in message.lower():
        status = "not found"
    else:
        status = f"refused: {message}" if message else f"refused with {answer.status}"
    return PaymentCheck(succeeded=False, amount=None, currency="", provider_status=status)


def http_session() -> requests.Session:
    """The HTTP session provider calls use when the caller hands none (webhooks, jobs). Tests
    replace it (testing.recorded_http) to answer from recorded payloads: nothing leaves the machine."""
    return requests.Session()


class ProviderClient:
    """Outbound HTTP to a provider: one pooled session, short timeouts, clear errors."""

    base_url = ""
    timeout = (3.05, 10)

    def __init__(self, secret: str, session: requests.Session | None = None):
        self.secret = secret
        self.session = session or http_session()

    def post(self, path: str, **kwargs) -> dict:
        try:
            response = self.session.post(self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise self.unavailable("unreachable", error) from None
        if response.status_code >= 400:
            raise self.unavailable(f"answered {response.status_code}", response.text[:500])
        try:
            return response.json()
        except ValueError:
            raise self.unavailable("answered with non-JSON", response.text[:200]) from None

    def call(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        """(HTTP status, JSON body) of a call whose 4xx answers name why the provider refused
        (the transfer calls): the caller decides whether that is the account's fault or ours. A
        network error, a 5xx or a body that is not a JSON object raises ProviderUnavailableError."""
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise self.unavailable("unreachable", error) from None
        if response.status_code >= 500:
            raise self.unavailable(f"answered {response.status_code}", response.text[:500])
        try:
            body = response.json(parse_float=Decimal)  # amounts in major units stay exact
        except ValueError:
            raise self.unavailable(f"answered {response.status_code} with non-JSON", response.text[:200]) from None
        if not isinstance(body, dict):
            raise self.unavailable(f"answered {response.status_code} with a JSON {type(body).__name__}")
        return response.status_code, body

    def get(self, path: str, *, answers: tuple[int, ...] = (), **kwargs) -> dict:
        """GET `path`, read as `post` reads its answer, except that a 4xx status in `answers` (one
        the provider documents as an answer, e.g. 404 "no such transaction") raises
        ProviderAnswerError with the provider's JSON body instead of ProviderUnavailableError."""
        try:
            response = self.session.get(self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise self.unavailable("unreachable", error) from None
        if response.status_code >= 400 and response.status_code not in answers:
            raise self.unavailable(f"answered {response.status_code}", response.text[:500])
        try:
            body = response.json(parse_float=Decimal)  # amounts in major units stay exact
        except ValueError:
            raise self.unavailable("answered with non-JSON", response.text[:200]) from None
        if response.status_code >= 400:
            raise ProviderAnswerError(response.status_code, body)
        return body

    def unavailable(self, what: str, detail: object = "") -> ProviderUnavailableError:
        """Logs what went wrong with the provider; the error raised says only that it is unavailable."""
        logger.warning("%s %s: %s", type(self).__name__, what, detail)
        return ProviderUnavailableError(UNAVAILABLE)


class BearerSecretClient(ProviderClient):
    """A provider whose API takes the secret key as a bearer token (Paystack, Flutterwave)."""

    def call(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        """ProviderClient.call with the bearer secret (4xx answers included)."""
        return super().call(method, path, headers={"Authorization": f"Bearer {self.secret}"}, **kwargs)


class Provider:
    """A payment provider: `checkout` starts a payment, `verify` and `parse` read webhooks."""

    name = ""
    client_class = ProviderClient
    # The setting webhooks are verified with. While it rotates, `<setting>_PREVIOUS` verifies
    # deliveries still made with the old value; everything we send uses the current one.
    webhook_secret_setting = ""

    def client(self, session=None) -> ProviderClient:
        return self.client_class(self.secret(), session=session)

    def secret(self) -> str:
        raise NotImplementedError

    def webhook_secrets(self) -> list[str]:
        """What a delivery may be signed with: the current secret, then the previous one if set."""
        names = (self.webhook_secret_setting, f"{self.webhook_secret_setting}_PREVIOUS")
        return [value for value in (getattr(settings, name, "") for name in names) if value]

    def webhook_secret_matches(self, given: str, expected=lambda secret: secret) -> bool:
        """Whether `given` (a header, a token, a signature) is `expected(secret)` for the current
        or the previous webhook secret, compared in constant time. `expected` turns a secret into
        what a delivery carries: the secret itself, or its signature over the body."""
        return bool(given) and any(constant_time_equal(given, expected(secret)) for secret in self.webhook_secrets())

    def checkout(self, payment, *, email: str, phone: str = "", session=None) -> dict:
        """Open the provider's checkout for `payment`. Called outside any transaction."""
        raise NotImplementedError

    def after_checkout(self, payment) -> None:
        """Runs inside the transaction that records an opened checkout (enqueue jobs here)."""

    def verify(self, raw: bytes, headers, query=None) -> None:
        raise NotImplementedError

    def parse(self, raw: bytes) -> ProviderEvent:
        raise NotImplementedError

    # --- payouts (finance.payouts); a provider that pays out overrides these ---------------

    # The BankAccount.account_type values this provider can pay.
    transfer_account_types: tuple[str, ...] = ()

    def send_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """Send the withdrawal's payout, with `withdrawal.transfer_reference` as the provider's
        idempotency key (the same call again never pays twice). Called outside any transaction.
        Raises ProviderUnavailableError when a retry may succeed (timeout, 5xx) and
        TransferRefusedError when the provider refused the transfer itself (4xx with a reason)."""
        raise NotImplementedError

    def fetch_transfer(self, withdrawal, *, session=None) -> TransferResult:
        """Ask the provider what became of the withdrawal's transfer (by its transfer reference).
        PENDING when it has no outcome yet, or when the answer comes later by callback (M-Pesa)."""
        raise NotImplementedError

    # --- refunds (finance.refunds); a provider that refunds through its API overrides these ---

    refunds_by_api = False

    def send_refund(self, refund, *, session=None) -> RefundResult:
        """Create the refund at the provider for `refund` (a ProviderRefund: its payment, amount,
        currency and `refund_reference`, sent as the idempotency key or note where the provider
        takes one). Called outside any transaction. Raises ProviderUnavailableError when a retry
        may succeed (timeout, 5xx, our own account's limits) and RefundRefusedError when the
        provider refused the refund itself."""
        raise NotImplementedError

    def fetch_refund(self, refund, *, session=None) -> RefundResult:
        """Ask the provider what became of `refund` (by its provider id, or failing that its
        reference or payment). PENDING when it has no outcome yet or answers by callback."""
        raise NotImplementedError

    def confirm_payment(self, event: ProviderEvent, *, session=None) -> PaymentCheck | None:
        """Ask the provider's verify endpoint about a payment before its webhook gives value.
        None when the provider has no such endpoint or does not ask for it."""
        return None
