"""Payout transfers through Paystack and Flutterwave, against recorded answers in the providers' documented shapes.

What leaves the building (URL, method, bearer key, amount units, the stable reference, the
full account number only where a provider needs it), how each answer is read (queued, final,
duplicate reference, the account's fault, ours, the network's), and the transfer callbacks.
"""

import json
from decimal import Decimal

import pytest
import requests

from finance.models import BankAccount, Withdrawal
from finance.providers.base import FAILED, IGNORED, PENDING, SUCCESS, ProviderUnavailableError, TransferRefusedError
from finance.providers.flutterwave import Flutterwave
from finance.providers.paystack import Paystack, signature
from finance.services import TransactionService
from testing.recorded_http import answer, ok, recorded_json, session_with

PAYSTACK = "https://api.paystack.co"
RECIPIENT = f"{PAYSTACK}/transferrecipient"
TRANSFER = f"{PAYSTACK}/transfer"
FLW_TRANSFERS = "https://api.flutterwave.com/v3/transfers"
FULL_NUMBER = "0123454321"


@pytest.fixture(autouse=True)
def keys(settings):
    settings.PAYSTACK_SECRET_KEY = "sk_test_payouts"
    settings.FLUTTERWAVE_SECRET_KEY = "FLWSECK_TEST-payouts"
    settings.FLUTTERWAVE_SECRET_HASH = "flw-hash"


@pytest.fixture
def decrypted(monkeypatch):
    """finance.crypto is another branch's: the number it would decrypt, and who asked for it."""
    asked = []

    def decrypt(bank_account):
        asked.append(bank_account.pk)
        return FULL_NUMBER

    monkeypatch.setattr("finance.crypto.decrypt_account_number", decrypt)
    return asked


@pytest.fixture
def make_withdrawal(host):
    def make(*, currency="NGN", country="NG", amount="1500.50", account_type="bank", bank_code="058", **account):
        wallet = TransactionService.create_wallet(host, currency)
        TransactionService.credit_wallet(wallet, Decimal("100000"))
        bank_account = BankAccount.objects.create(
            owner=host,
            bank_name="GTBank",
            account_name="Ada Host",
            account_number_last4=FULL_NUMBER[-4:],
            account_number_encrypted="ciphertext",
            account_type=account_type,
            bank_code=bank_code,
            currency=currency,
            country=country,
            **account,
        )
        withdrawal = TransactionService.initiate_withdrawal(wallet, bank_account, Decimal(amount))
        withdrawal.transfer_reference = withdrawal.stable_transfer_reference()
        withdrawal.save(update_fields=["transfer_reference"])
        return withdrawal

    return make


def paystack_queued(reference: str, status: str = "pending") -> tuple:
    body = recorded_json("paystack_transfer_initiate.json")
    body["data"].update(reference=reference, status=status)
    return answer(200, body)


def verify_url(reference: str) -> str:
    return f"{PAYSTACK}/transfer/verify/{reference}"


# --- Paystack: sending ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_paystack_creates_the_recipient_once_then_transfers_minor_units_under_the_stable_reference(
    make_withdrawal, decrypted
):
    withdrawal = make_withdrawal(amount="1500.50")
    session, adapter = session_with(
        {
            ("POST", RECIPIENT): ok("paystack_transfer_recipient.json"),
            ("POST", TRANSFER): paystack_queued(withdrawal.transfer_reference),
        }
    )

    result = Paystack().send_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (PENDING, "TRF_v5tip3zx8nna9o78")
    create, transfer = adapter.sent
    assert (create.method, create.url) == ("POST", RECIPIENT)
    assert create.headers["Authorization"] == "Bearer sk_test_payouts"
    assert create.json() == {
        "type": "nuban",
        "name": "Ada Host",
        "account_number": FULL_NUMBER,
        "bank_code": "058",
        "currency": "NGN",
    }
    assert (transfer.method, transfer.url) == ("POST", TRANSFER)
    assert transfer.headers["Authorization"] == "Bearer sk_test_payouts"
    body = transfer.json()
    assert body["amount"] == 150050 and isinstance(body["amount"], int)  # kobo
    assert body["reference"] == withdrawal.transfer_reference == f"payout-{withdrawal.reference.lower()}"
    assert (body["source"], body["recipient"], body["currency"]) == ("balance", "RCP_m7ljkv8leesep7p", "NGN")
    assert withdrawal.reference in body["reason"]
    assert transfer.timeout == (3.05, 10)
    account = BankAccount.objects.get(pk=withdrawal.bank_account_id)
    assert (account.recipient_code, account.recipient_provider) == ("RCP_m7ljkv8leesep7p", "paystack")

    # The next payout to the same account reuses the recipient: the full number is not sent again.
    again = make_withdrawal_for(account, withdrawal)
    session, adapter = session_with({("POST", TRANSFER): paystack_queued(again.transfer_reference)})
    assert Paystack().send_transfer(again, session=session).status == PENDING
    [transfer] = adapter.sent
    assert transfer.json()["recipient"] == "RCP_m7ljkv8leesep7p"
    assert decrypted == [account.pk]  # decrypted once, for the recipient


def make_withdrawal_for(account: BankAccount, previous: Withdrawal) -> Withdrawal:
    withdrawal = TransactionService.initiate_withdrawal(previous.wallet, account, Decimal("2000.00"))
    withdrawal.transfer_reference = withdrawal.stable_transfer_reference()
    withdrawal.save(update_fields=["transfer_reference"])
    return withdrawal


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("account_type", "currency", "country", "kind"),
    [
        ("bank", "GHS", "GH", "ghipss"),
        ("bank", "ZAR", "ZA", "basa"),
        ("bank", "KES", "KE", "kepss"),
        ("mobile_money", "GHS", "GH", "mobile_money"),
        ("mobile_money", "KES", "KE", "mobile_money"),
    ],
)
def test_paystack_recipient_type_follows_the_account_and_its_currency(
    make_withdrawal, decrypted, account_type, currency, country, kind
):
    withdrawal = make_withdrawal(account_type=account_type, currency=currency, country=country, bank_code="MTN")
    session, adapter = session_with(
        {
            ("POST", RECIPIENT): ok("paystack_transfer_recipient.json"),
            ("POST", TRANSFER): paystack_queued(withdrawal.transfer_reference),
        }
    )

    Paystack().send_transfer(withdrawal, session=session)

    assert adapter.sent[0].json()["type"] == kind
    assert adapter.sent[0].json()["currency"] == currency


@pytest.mark.django_db
def test_paystack_refuses_a_currency_it_cannot_pay_before_any_call(make_withdrawal, decrypted):
    withdrawal = make_withdrawal(currency="UGX", country="UG", amount="50000")
    session, adapter = session_with({})

    with pytest.raises(TransferRefusedError, match="Paystack cannot pay a bank account in UGX"):
        Paystack().send_transfer(withdrawal, session=session)
    assert adapter.sent == [] and decrypted == []


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "outcome"), [("success", SUCCESS), ("otp", PENDING), ("received", PENDING)])
def test_paystack_initiate_answer_status_is_read(make_withdrawal, decrypted, status, outcome):
    withdrawal = make_withdrawal(recipient_code="RCP_kept", recipient_provider="paystack")
    session, _ = session_with({("POST", TRANSFER): paystack_queued(withdrawal.transfer_reference, status)})

    result = Paystack().send_transfer(withdrawal, session=session)

    assert result.status == outcome and result.provider_transfer_id == "TRF_v5tip3zx8nna9o78"
    assert decrypted == []  # a kept recipient needs no account number


@pytest.mark.django_db
def test_paystack_duplicate_reference_is_already_sent_and_is_verified_instead(make_withdrawal):
    """A retry after a timeout whose first POST got through: Paystack refuses the reference
    again, and the transfer it already has is what we report (nothing is paid twice)."""
    withdrawal = make_withdrawal(recipient_code="RCP_kept", recipient_provider="paystack")
    verified = recorded_json("paystack_transfer_verify.json")
    verified["data"].update(reference=withdrawal.transfer_reference, status="pending")
    session, adapter = session_with(
        {
            ("POST", TRANSFER): answer(400, recorded_json("paystack_transfer_duplicate_reference.json")),
            ("GET", verify_url(withdrawal.transfer_reference)): answer(200, verified),
        }
    )

    result = Paystack().send_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (PENDING, "TRF_8opchtrhtjlfz90n")
    assert [(s.method, s.url) for s in adapter.sent] == [
        ("POST", TRANSFER),
        ("GET", verify_url(withdrawal.transfer_reference)),
    ]
    assert adapter.sent[1].headers["Authorization"] == "Bearer sk_test_payouts"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "fixture", "message"),
    [
        ("POST", "paystack_transfer_invalid_account.json", "Paystack refused the transfer: Account number is invalid"),
        (
            "POST",
            "paystack_transfer_invalid_recipient.json",
            "Paystack refused the transfer: Recipient specified is invalid",
        ),
    ],
)
def test_paystack_4xx_about_the_account_refuses_the_transfer_with_paystack_s_words(
    make_withdrawal, decrypted, route, fixture, message
):
    withdrawal = make_withdrawal()
    session, adapter = session_with(
        {
            ("POST", RECIPIENT): ok("paystack_transfer_recipient.json"),
            ("POST", TRANSFER): answer(400, recorded_json(fixture)),
        }
    )

    with pytest.raises(TransferRefusedError) as refused:
        Paystack().send_transfer(withdrawal, session=session)

    assert refused.value.message == message
    assert refused.value.code == "transfer_refused"


@pytest.mark.django_db
def test_paystack_recipient_it_cannot_resolve_is_refused_and_nothing_is_kept(make_withdrawal, decrypted):
    withdrawal = make_withdrawal()
    session, adapter = session_with(
        {("POST", RECIPIENT): answer(400, recorded_json("paystack_transfer_invalid_account.json"))}
    )

    with pytest.raises(TransferRefusedError, match="Account number is invalid"):
        Paystack().send_transfer(withdrawal, session=session)

    assert [s.url for s in adapter.sent] == [RECIPIENT]  # no transfer attempted
    assert BankAccount.objects.get(pk=withdrawal.bank_account_id).recipient_code == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failure",
    [
        answer(401, recorded_json("paystack_invalid_key.json")),
        answer(400, recorded_json("paystack_transfer_insufficient_balance.json")),
        answer(429, {"status": False, "message": "Too many requests"}),
        (500, b'{"status": false, "message": "An error occurred"}', "application/json"),
        (502, b"<html>Bad Gateway</html>", "text/html"),
        requests.Timeout("read timed out"),
        requests.ConnectionError("connection reset"),
    ],
    ids=["401-bad-key", "400-our-balance", "429", "500", "502", "timeout", "connection"],
)
def test_paystack_failures_on_our_side_are_retried_not_the_host_s_fault(make_withdrawal, failure, caplog):
    withdrawal = make_withdrawal(recipient_code="RCP_kept", recipient_provider="paystack")
    session, _ = session_with({("POST", TRANSFER): failure})

    with pytest.raises(ProviderUnavailableError) as unavailable:
        Paystack().send_transfer(withdrawal, session=session)

    assert not isinstance(unavailable.value, TransferRefusedError)
    assert "PaystackClient" in caplog.text  # logged for staff, not shown to the host


# --- Paystack: asking about a transfer --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "outcome"),
    [("success", SUCCESS), ("pending", PENDING), ("failed", FAILED), ("reversed", FAILED), ("abandoned", FAILED)],
)
def test_paystack_fetch_transfer_verifies_by_reference(make_withdrawal, status, outcome):
    withdrawal = make_withdrawal()
    verified = recorded_json("paystack_transfer_verify.json")
    verified["data"].update(reference=withdrawal.transfer_reference, status=status)
    session, adapter = session_with({("GET", verify_url(withdrawal.transfer_reference)): answer(200, verified)})

    result = Paystack().fetch_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (outcome, "TRF_8opchtrhtjlfz90n")
    if status == "reversed":
        assert result.failure_reason.startswith("reversed by Paystack")
    [sent] = adapter.sent
    assert sent.headers["Authorization"] == "Bearer sk_test_payouts"


@pytest.mark.django_db
def test_paystack_fetch_of_an_unknown_reference_stays_pending(make_withdrawal):
    withdrawal = make_withdrawal()
    session, _ = session_with(
        {
            ("GET", verify_url(withdrawal.transfer_reference)): answer(
                404, recorded_json("paystack_transfer_not_found.json")
            )
        }
    )

    result = Paystack().fetch_transfer(withdrawal, session=session)

    assert result.status == PENDING
    assert "no transfer with reference" in result.failure_reason


@pytest.mark.django_db
def test_paystack_fetch_without_a_session_uses_the_shared_one(make_withdrawal, provider_http):
    withdrawal = make_withdrawal()
    verified = recorded_json("paystack_transfer_verify.json")
    provider_http.answers[("GET", verify_url(withdrawal.transfer_reference))] = answer(200, verified)

    assert Paystack().fetch_transfer(withdrawal).status == SUCCESS
    assert len(provider_http.sent) == 1


# --- Paystack: callbacks -----------------------------------------------------------------------------


def paystack_event(name: str, **data) -> bytes:
    body = recorded_json(name)
    body["data"].update(data)
    return json.dumps(body).encode()


def test_paystack_transfer_success_callback(settings):
    raw = paystack_event("paystack_transfer_success_event.json", reference="payout-wd-1")
    Paystack().verify(raw, {"x-paystack-signature": signature(settings.PAYSTACK_SECRET_KEY, raw)})

    event = Paystack().parse(raw)

    assert event.is_transfer and event.outcome == SUCCESS
    assert (event.transfer_reference, event.provider_reference) == ("payout-wd-1", "TRF_v5tip3zx8nna9o78")
    assert (event.amount, event.currency) == (Decimal("1000.00"), "NGN")  # 100000 kobo
    assert event.payment_reference == "" and event.failure_reason == ""
    assert event.event_id == "transfer.success:860703114"


def test_paystack_transfer_failed_and_reversed_callbacks_fail_with_a_reason():
    failed = Paystack().parse(
        paystack_event("paystack_transfer_failed_event.json", gateway_response="Beneficiary bank unavailable")
    )
    reversed_ = Paystack().parse(paystack_event("paystack_transfer_reversed_event.json"))

    assert (failed.outcome, failed.transfer_reference) == (FAILED, "1976435206")
    assert failed.failure_reason == "Paystack reported the transfer failed: Beneficiary bank unavailable"
    assert (reversed_.outcome, reversed_.amount) == (FAILED, Decimal("100.00"))
    assert reversed_.failure_reason.startswith("reversed by Paystack: ")


def test_paystack_transfer_event_ids_are_stable_and_distinct_per_outcome():
    success = paystack_event("paystack_transfer_success_event.json", id=555)
    reversed_ = json.loads(success)
    reversed_.update(event="transfer.reversed")
    reversed_["data"]["status"] = "reversed"

    first, redelivered = Paystack().parse(success), Paystack().parse(success)
    later = Paystack().parse(json.dumps(reversed_).encode())

    assert first.event_id == redelivered.event_id == "transfer.success:555"
    assert later.event_id == "transfer.reversed:555" != first.event_id
    assert later.outcome == FAILED


def test_paystack_payment_events_read_as_before():
    raw = json.dumps(
        {"event": "charge.success", "data": {"id": 42, "reference": "PAY-1", "amount": 150050, "currency": "NGN"}}
    ).encode()

    event = Paystack().parse(raw)

    assert not event.is_transfer
    assert (event.payment_reference, event.amount, event.outcome) == ("PAY-1", Decimal("1500.50"), SUCCESS)


# --- Flutterwave: sending ------------------------------------------------------------------------------


def flw_queued(reference: str, status: str = "NEW") -> tuple:
    body = recorded_json("flutterwave_transfer_queued.json")
    body["data"].update(reference=reference, status=status)
    return answer(200, body)


@pytest.mark.django_db
def test_flutterwave_sends_an_exact_major_unit_amount_under_the_stable_reference(make_withdrawal, decrypted):
    withdrawal = make_withdrawal(currency="KES", country="KE", amount="1500.50", bank_code="68")
    session, adapter = session_with({("POST", FLW_TRANSFERS): flw_queued(withdrawal.transfer_reference)})

    result = Flutterwave().send_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (PENDING, "396432")
    [sent] = adapter.sent
    assert (sent.method, sent.url) == ("POST", FLW_TRANSFERS)
    assert sent.headers["Authorization"] == "Bearer FLWSECK_TEST-payouts"
    assert sent.json() == {
        "account_bank": "68",
        "account_number": FULL_NUMBER,
        "amount": "1500.50",  # major units, exact, never a float
        "currency": "KES",
        "debit_currency": "KES",
        "narration": f"StayAfrica payout {withdrawal.reference}",
        "reference": withdrawal.transfer_reference,
        "beneficiary_name": "Ada Host",
    }
    assert sent.timeout == (3.05, 10)


@pytest.mark.django_db
def test_flutterwave_mobile_money_sends_the_network_and_a_zero_decimal_amount(make_withdrawal, decrypted):
    withdrawal = make_withdrawal(
        currency="UGX", country="UG", amount="50000", account_type="mobile_money", bank_code="MPS"
    )
    session, adapter = session_with({("POST", FLW_TRANSFERS): flw_queued(withdrawal.transfer_reference)})

    Flutterwave().send_transfer(withdrawal, session=session)

    body = adapter.sent[0].json()
    assert (body["account_bank"], body["amount"], body["currency"]) == ("MPS", "50000", "UGX")


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "outcome"), [("SUCCESSFUL", SUCCESS), ("FAILED", FAILED), ("PENDING", PENDING)])
def test_flutterwave_create_answer_status_is_read(make_withdrawal, decrypted, status, outcome):
    withdrawal = make_withdrawal(currency="RWF", country="RW", amount="20000")
    session, _ = session_with({("POST", FLW_TRANSFERS): flw_queued(withdrawal.transfer_reference, status)})

    assert Flutterwave().send_transfer(withdrawal, session=session).status == outcome


@pytest.mark.django_db
def test_flutterwave_duplicate_reference_looks_the_transfer_up_instead(make_withdrawal, decrypted):
    withdrawal = make_withdrawal()
    listed = recorded_json("flutterwave_transfers_list.json")
    other = dict(listed["data"][0])
    ours = dict(other, id=777, reference=withdrawal.transfer_reference, status="SUCCESSFUL")
    listed["data"] = [other, ours]
    session, adapter = session_with(
        {
            ("POST", FLW_TRANSFERS): answer(400, recorded_json("flutterwave_transfer_duplicate_reference.json")),
            ("GET", FLW_TRANSFERS): answer(200, listed),
        }
    )

    result = Flutterwave().send_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (SUCCESS, "777")
    assert adapter.sent[1].query == {"reference": [withdrawal.transfer_reference]}


@pytest.mark.django_db
def test_flutterwave_invalid_account_refuses_with_flutterwave_s_words(make_withdrawal, decrypted):
    withdrawal = make_withdrawal()
    session, _ = session_with(
        {("POST", FLW_TRANSFERS): answer(400, recorded_json("flutterwave_transfer_invalid_account.json"))}
    )

    with pytest.raises(TransferRefusedError) as refused:
        Flutterwave().send_transfer(withdrawal, session=session)

    assert refused.value.message == "Flutterwave refused the transfer: Account resolve failed: invalid account number"


@pytest.mark.django_db
def test_flutterwave_account_without_a_bank_code_is_refused_before_any_call(make_withdrawal, decrypted):
    withdrawal = make_withdrawal(bank_code="")
    session, adapter = session_with({})

    with pytest.raises(TransferRefusedError, match="no bank code"):
        Flutterwave().send_transfer(withdrawal, session=session)
    assert adapter.sent == [] and decrypted == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "failure",
    [
        answer(401, recorded_json("flutterwave_transfer_invalid_key.json")),
        answer(400, {"status": "error", "message": "Insufficient balance in your NGN wallet", "data": None}),
        answer(429, {"status": "error", "message": "Too many requests", "data": None}),
        (500, b'{"status": "error", "message": "Internal error"}', "application/json"),
        (502, b"<html>Bad Gateway</html>", "text/html"),
        requests.Timeout("read timed out"),
    ],
    ids=["401-bad-key", "400-our-balance", "429", "500", "502", "timeout"],
)
def test_flutterwave_failures_on_our_side_are_retried_not_the_host_s_fault(make_withdrawal, decrypted, failure):
    withdrawal = make_withdrawal()
    session, _ = session_with({("POST", FLW_TRANSFERS): failure})

    with pytest.raises(ProviderUnavailableError) as unavailable:
        Flutterwave().send_transfer(withdrawal, session=session)
    assert not isinstance(unavailable.value, TransferRefusedError)


# --- Flutterwave: asking about a transfer ---------------------------------------------------------------


@pytest.mark.django_db
def test_flutterwave_fetch_uses_the_transfer_id_when_known(make_withdrawal):
    withdrawal = make_withdrawal()
    withdrawal.provider_transfer_id = "396432"
    session, adapter = session_with({("GET", f"{FLW_TRANSFERS}/396432"): ok("flutterwave_transfer_fetched.json")})

    result = Flutterwave().fetch_transfer(withdrawal, session=session)

    assert (result.status, result.provider_transfer_id) == (SUCCESS, "396432")
    assert adapter.sent[0].headers["Authorization"] == "Bearer FLWSECK_TEST-payouts"


@pytest.mark.django_db
def test_flutterwave_fetch_by_reference_reads_only_our_transfer(make_withdrawal):
    withdrawal = make_withdrawal()
    session, _ = session_with({("GET", FLW_TRANSFERS): ok("flutterwave_transfers_list.json")})

    # The listing holds another reference's FAILED transfer: not ours, so still pending.
    result = Flutterwave().fetch_transfer(withdrawal, session=session)
    assert result.status == PENDING and "no transfer with reference" in result.failure_reason

    listed = recorded_json("flutterwave_transfers_list.json")
    listed["data"][0]["reference"] = withdrawal.transfer_reference
    session, _ = session_with({("GET", FLW_TRANSFERS): answer(200, listed)})
    failed = Flutterwave().fetch_transfer(withdrawal, session=session)
    assert failed.status == FAILED
    assert failed.failure_reason == (
        "Flutterwave reported the transfer failed: DISBURSE FAILED: You can only spend NGN 100000000.00 at once"
    )


@pytest.mark.django_db
def test_flutterwave_fetch_of_an_unknown_id_stays_pending(make_withdrawal):
    withdrawal = make_withdrawal()
    withdrawal.provider_transfer_id = "1"
    session, _ = session_with(
        {("GET", f"{FLW_TRANSFERS}/1"): answer(404, {"status": "error", "message": "No transfer found", "data": None})}
    )

    assert Flutterwave().fetch_transfer(withdrawal, session=session).status == PENDING


# --- Flutterwave: callbacks ------------------------------------------------------------------------------


def flw_event(name: str, **data) -> bytes:
    body = recorded_json(name)
    body["data"].update(data)
    return json.dumps(body).encode()


def test_flutterwave_transfer_completed_callback(settings):
    raw = flw_event("flutterwave_transfer_completed_event.json", reference="payout-wd-2")
    Flutterwave().verify(raw, {"verif-hash": settings.FLUTTERWAVE_SECRET_HASH})

    event = Flutterwave().parse(raw)

    assert event.is_transfer and event.outcome == SUCCESS
    assert (event.transfer_reference, event.provider_reference) == ("payout-wd-2", "33286")
    assert (event.amount, event.currency) == (Decimal("30020"), "NGN")  # major units
    assert event.event_id == "transfer.completed:33286:successful"


def test_flutterwave_failed_transfer_callback_carries_the_complete_message():
    event = Flutterwave().parse(flw_event("flutterwave_transfer_failed_event.json"))

    assert event.outcome == FAILED
    assert (
        event.failure_reason
        == "Flutterwave reported the transfer failed: DISBURSE FAILED: Insufficient funds in customer wallet"
    )
    assert event.event_id == "transfer.completed:33286:failed"


def test_flutterwave_transfer_event_ids_are_stable_and_distinct_per_outcome():
    success = flw_event("flutterwave_transfer_completed_event.json", id=9)
    failed = flw_event("flutterwave_transfer_completed_event.json", id=9, status="FAILED")

    assert Flutterwave().parse(success).event_id == Flutterwave().parse(success).event_id
    assert Flutterwave().parse(success).event_id != Flutterwave().parse(failed).event_id


def test_flutterwave_unknown_transfer_status_is_ignored():
    event = Flutterwave().parse(flw_event("flutterwave_transfer_completed_event.json", status="PENDING"))

    assert event.outcome == IGNORED and not event.is_transfer


def test_flutterwave_payment_events_read_as_before():
    raw = json.dumps(
        {
            "event": "charge.completed",
            "data": {"id": 7, "tx_ref": "PAY-2", "amount": "1500.50", "currency": "KES", "status": "successful"},
        }
    ).encode()

    event = Flutterwave().parse(raw)

    assert not event.is_transfer
    assert (event.payment_reference, event.amount, event.outcome) == ("PAY-2", Decimal("1500.50"), SUCCESS)
