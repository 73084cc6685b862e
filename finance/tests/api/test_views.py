"""The payments API (finance/api/): each endpoint's success and refusal, and that a refusal changes nothing."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from finance.models import (
    ApiIdempotencyRecord,
    ApprovalRequest,
    BankAccount,
    Payment,
    Wallet,
    WalletTransaction,
    Withdrawal,
)
from finance.services import TransactionService

API = "/api/payments"


@pytest.fixture(autouse=True)
def _no_sandbox_autocomplete(settings):
    settings.SANDBOX_AUTOCOMPLETE = False


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(user)}")
    return client


def snapshot():
    """Everything a refused request must leave as it was."""
    return (
        list(Wallet.objects.order_by("pk").values_list("pk", "balance", "held_balance", "status")),
        list(Withdrawal.objects.order_by("pk").values_list("pk", "status", "amount")),
        list(WalletTransaction.objects.order_by("pk").values_list("pk", "status")),
        list(BankAccount.objects.order_by("pk").values_list("pk", "is_primary")),
        list(Payment.objects.order_by("pk").values_list("pk", "status", "refunded_amount")),
        ApprovalRequest.objects.count(),
    )


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "fields"} <= set(body["error"])
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


# --- wallets -----------------------------------------------------------------------------------


def test_my_wallet_lists_the_callers_wallets_with_decimal_strings(host, funded_wallet):
    TransactionService.create_wallet(host, "KES")
    response = client_for(host).get(f"{API}/wallets/my_wallet/")
    assert response.status_code == 200
    wallets = {w["currency"]: w for w in response.json()}
    assert wallets["NGN"] == {
        "id": funded_wallet.pk,
        "currency": "NGN",
        "status": "active",
        "balance": "10000.00",
        "held": "0.00",
        "available": "10000.00",
        "updated_at": wallets["NGN"]["updated_at"],
    }
    assert wallets["KES"]["balance"] == "0.00"


def test_balance_shows_held_and_available(host, funded_wallet, bank_account):
    TransactionService.initiate_withdrawal(funded_wallet, bank_account, "2500.00", actor=host)
    body = client_for(host).get(f"{API}/wallets/{funded_wallet.pk}/balance/").json()
    assert (body["balance"], body["held"], body["available"]) == ("10000.00", "2500.00", "7500.00")


def test_another_users_wallet_is_404_not_403(other_host, funded_wallet):
    for path in ("balance", "transactions"):
        assert_error(client_for(other_host).get(f"{API}/wallets/{funded_wallet.pk}/{path}/"), 404, "not_found")


def test_wallet_transactions_are_paginated_newest_first_and_filterable(host, funded_wallet, bank_account):
    for amount in ("1.00", "2.00", "3.00"):
        TransactionService.credit_wallet(funded_wallet, amount)
    TransactionService.initiate_withdrawal(funded_wallet, bank_account, "1000.00", actor=host)
    client = client_for(host)

    body = client.get(f"{API}/wallets/{funded_wallet.pk}/transactions/").json()
    assert body["count"] == 5
    amounts = [t["amount"] for t in body["results"]]
    assert amounts == ["1000.00", "3.00", "2.00", "1.00", "10000.00"]

    withdrawals = client.get(f"{API}/wallets/{funded_wallet.pk}/transactions/?type=withdrawal").json()
    assert [t["type"] for t in withdrawals["results"]] == ["withdrawal"]
    pending = client.get(f"{API}/wallets/{funded_wallet.pk}/transactions/?status=pending").json()
    assert pending["count"] == 1
    future = client.get(f"{API}/wallets/{funded_wallet.pk}/transactions/?created_after=2999-01-01T00:00:00Z").json()
    assert future["count"] == 0


def test_bad_transaction_filter_is_400(host, funded_wallet):
    response = client_for(host).get(f"{API}/wallets/{funded_wallet.pk}/transactions/?created_after=yesterday")
    assert_error(response, 400)


def test_anonymous_gets_401_json(funded_wallet):
    assert_error(APIClient().get(f"{API}/wallets/my_wallet/"), 401, "not_authenticated")


def test_transactions_endpoint_lists_only_the_callers(host, other_host, funded_wallet):
    other = TransactionService.create_wallet(other_host, "NGN")
    TransactionService.credit_wallet(other, "5.00")
    references = [t["reference"] for t in client_for(host).get(f"{API}/transactions/").json()["results"]]
    assert references == list(funded_wallet.transactions.values_list("reference", flat=True))


def test_transactions_endpoint_filters_by_type(host, funded_wallet, bank_account):
    TransactionService.initiate_withdrawal(funded_wallet, bank_account, "1000.00", actor=host)
    client = client_for(host)
    assert [t["type"] for t in client.get(f"{API}/transactions/?type=credit").json()["results"]] == ["credit"]
    assert_error(client.get(f"{API}/transactions/?type=nonsense"), 400)


# --- bank accounts -----------------------------------------------------------------------------


def test_add_bank_account_keeps_only_the_last_four_digits_and_first_is_primary(host):
    client = client_for(host)
    body = {"bank_name": "Access Bank", "account_name": "Amara O.", "account_number": "0123456789"}
    response = client.post(f"{API}/bank-accounts/", body, format="json")
    assert response.status_code == 201
    created = response.json()
    assert created["masked_account_number"] == "•••• 6789"
    assert "account_number" not in created
    assert created["is_primary"] is True
    second = client.post(f"{API}/bank-accounts/", {**body, "account_number": "9999888877"}, format="json").json()
    assert second["is_primary"] is False


def test_bad_bank_account_is_400_and_stores_nothing(host):
    before = snapshot()
    response = client_for(host).post(
        f"{API}/bank-accounts/", {"bank_name": "X", "account_number": "12ab"}, format="json"
    )
    assert_error(response, 400, "invalid")
    assert set(response.json()["error"]["fields"]) >= {"account_number", "account_name"}
    assert snapshot() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("country", "."),
        ("country", "ZZ"),
        ("country", "ng"),
        ("currency", "!"),
        ("currency", "ABC"),
        ("currency", "XAU"),
    ],
)
def test_bank_account_refuses_country_and_currency_codes_that_do_not_exist(host, field, value):
    before = snapshot()
    body = {"bank_name": "Access Bank", "account_name": "Amara O.", "account_number": "0123456789", field: value}
    response = client_for(host).post(f"{API}/bank-accounts/", body, format="json")
    assert_error(response, 400, "invalid")
    assert field in response.json()["error"]["fields"]
    assert snapshot() == before


def test_bank_account_takes_an_iso_country_and_a_ledger_currency(host):
    body = {"bank_name": "Equity", "account_name": "W. K.", "account_number": "0123456789", "bank_code": "68"}
    response = client_for(host).post(
        f"{API}/bank-accounts/", {**body, "country": "KE", "currency": "KES"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert (response.json()["country"], response.json()["currency"]) == ("KE", "KES")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_bank_account_names_and_reasons_must_not_be_blank(host, finance_user, pending_withdrawal, blank):
    body = {"bank_name": blank, "account_name": blank, "account_number": "0123456789"}
    response = client_for(host).post(f"{API}/bank-accounts/", body, format="json")
    assert_error(response, 400, "invalid")
    assert set(response.json()["error"]["fields"]) == {"bank_name", "account_name"}
    response = client_for(finance_user).post(
        f"{API}/withdrawals/{pending_withdrawal.pk}/fail/", {"reason": blank}, format="json"
    )
    assert_error(response, 400, "invalid")


def test_set_primary_moves_the_flag(host, bank_account):
    other = BankAccount.objects.create(owner=host, bank_name="UBA", account_name="H", account_number_last4="1111")
    response = client_for(host).post(f"{API}/bank-accounts/{other.pk}/set_primary/")
    assert response.status_code == 200
    assert response.json()["is_primary"] is True
    assert list(BankAccount.objects.filter(owner=host, is_primary=True)) == [other]


def test_set_primary_on_another_users_account_is_404(other_host, bank_account):
    before = snapshot()
    assert_error(client_for(other_host).post(f"{API}/bank-accounts/{bank_account.pk}/set_primary/"), 404)
    assert snapshot() == before


# --- withdrawals -------------------------------------------------------------------------------


def withdraw(client, wallet, account, amount, **headers):
    body = {"wallet": wallet.pk, "bank_account": account.pk, "amount": amount}
    return client.post(f"{API}/withdrawals/", body, format="json", **headers)


def test_initiate_withdrawal_holds_the_amount(host, funded_wallet, bank_account):
    response = withdraw(client_for(host), funded_wallet, bank_account, "2000.00")
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    assert response.json()["bank_account"]["masked_account_number"] == "•••• 4321"
    funded_wallet.refresh_from_db()
    assert (funded_wallet.held_balance, funded_wallet.available_balance) == (Decimal("2000.00"), Decimal("8000.00"))
    assert [w["reference"] for w in client_for(host).get(f"{API}/withdrawals/").json()["results"]] == [
        response.json()["reference"]
    ]


@pytest.mark.parametrize(
    "amount, status, code",
    [
        ("10000.01", 409, "insufficient_balance"),
        ("999.99", 400, "below_minimum_withdrawal"),
        ("10.001", 400, "invalid_amount"),
        ("-5.00", 400, "invalid_amount"),
        ("abc", 400, "invalid_amount"),
        (1500, 400, "invalid"),
        (1500.5, 400, "invalid"),
        ("NaN", 400, "invalid_amount"),
    ],
)
def test_refused_withdrawals_change_nothing(host, funded_wallet, bank_account, amount, status, code):
    before = snapshot()
    assert_error(withdraw(client_for(host), funded_wallet, bank_account, amount), status, code)
    assert snapshot() == before


def test_withdrawal_to_someone_elses_bank_account_or_from_their_wallet_is_404(
    host, other_host, funded_wallet, bank_account
):
    others_account = BankAccount.objects.create(
        owner=other_host, bank_name="KCB", account_name="B", account_number_last4="2"
    )
    before = snapshot()
    assert_error(withdraw(client_for(host), funded_wallet, others_account, "2000.00"), 404)
    assert_error(withdraw(client_for(other_host), funded_wallet, others_account, "2000.00"), 404)
    assert snapshot() == before


def test_withdrawal_from_a_frozen_wallet_is_409(host, funded_wallet, bank_account):
    Wallet.objects.filter(pk=funded_wallet.pk).update(status=Wallet.Status.FROZEN)
    before = snapshot()
    assert_error(withdraw(client_for(host), funded_wallet, bank_account, "2000.00"), 409, "wallet_not_active")
    assert snapshot() == before


def test_idempotency_key_replays_the_first_answer_and_moves_nothing_more(host, funded_wallet, bank_account):
    client = client_for(host)
    first = withdraw(client, funded_wallet, bank_account, "2000.00", HTTP_IDEMPOTENCY_KEY="wd-1")
    again = withdraw(client, funded_wallet, bank_account, "2000.00", HTTP_IDEMPOTENCY_KEY="wd-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Withdrawal.objects.count() == 1
    funded_wallet.refresh_from_db()
    assert funded_wallet.held_balance == Decimal("2000.00")


def test_same_idempotency_key_with_another_body_is_409(host, funded_wallet, bank_account):
    client = client_for(host)
    withdraw(client, funded_wallet, bank_account, "2000.00", HTTP_IDEMPOTENCY_KEY="wd-1")
    before = snapshot()
    response = withdraw(client, funded_wallet, bank_account, "3000.00", HTTP_IDEMPOTENCY_KEY="wd-1")
    assert_error(response, 409, "idempotency_conflict")
    assert snapshot() == before


def test_a_refusal_is_replayed_too(host, funded_wallet, bank_account):
    client = client_for(host)
    first = withdraw(client, funded_wallet, bank_account, "20000.00", HTTP_IDEMPOTENCY_KEY="big")
    TransactionService.credit_wallet(funded_wallet, "50000.00")
    again = withdraw(client, funded_wallet, bank_account, "20000.00", HTTP_IDEMPOTENCY_KEY="big")
    assert (first.status_code, again.status_code) == (409, 409)
    assert Withdrawal.objects.count() == 0


def test_keys_belong_to_their_user(host, other_host, funded_wallet, bank_account):
    withdraw(client_for(host), funded_wallet, bank_account, "2000.00", HTTP_IDEMPOTENCY_KEY="shared")
    other_wallet = TransactionService.create_wallet(other_host, "NGN")
    response = withdraw(client_for(other_host), other_wallet, bank_account, "2000.00", HTTP_IDEMPOTENCY_KEY="shared")
    assert_error(response, 404)  # evaluated afresh: not host's stored answer
    assert ApiIdempotencyRecord.objects.filter(key="shared").count() == 2


@pytest.fixture
def pending_withdrawal(host, funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, "2000.00", actor=host)


def test_finance_completes_a_withdrawal(finance_user, pending_withdrawal, funded_wallet):
    response = client_for(finance_user).post(f"{API}/withdrawals/{pending_withdrawal.pk}/complete/")
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("8000.00"), Decimal("0.00"))


def test_finance_fails_a_withdrawal_with_a_reason_and_the_money_returns(
    finance_user, pending_withdrawal, funded_wallet
):
    client = client_for(finance_user)
    before = snapshot()
    assert_error(client.post(f"{API}/withdrawals/{pending_withdrawal.pk}/fail/", {}, format="json"), 400)
    assert snapshot() == before
    response = client.post(
        f"{API}/withdrawals/{pending_withdrawal.pk}/fail/", {"reason": "Account closed"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["failure_reason"]) == ("failed", "Account closed")
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("10000.00"), Decimal("0.00"))


def test_a_withdrawal_resolves_once(finance_user, pending_withdrawal):
    client = client_for(finance_user)
    client.post(f"{API}/withdrawals/{pending_withdrawal.pk}/complete/")
    before = snapshot()
    assert_error(client.post(f"{API}/withdrawals/{pending_withdrawal.pk}/complete/"), 409, "invalid_state")
    failing = client.post(f"{API}/withdrawals/{pending_withdrawal.pk}/fail/", {"reason": "x"}, format="json")
    assert_error(failing, 409, "invalid_state")
    assert snapshot() == before


def test_host_cannot_complete_their_own_withdrawal(host, pending_withdrawal):
    before = snapshot()
    assert_error(client_for(host).post(f"{API}/withdrawals/{pending_withdrawal.pk}/complete/"), 403)
    assert snapshot() == before


def test_large_withdrawal_completion_waits_for_a_second_approver(settings, finance_user, pending_withdrawal):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000.00")}
    response = client_for(finance_user).post(f"{API}/withdrawals/{pending_withdrawal.pk}/complete/")
    assert response.status_code == 202
    assert response.json()["status"] == "pending_approval"
    pending_withdrawal.refresh_from_db()
    assert pending_withdrawal.status == Withdrawal.Status.PENDING
    assert ApprovalRequest.objects.get().requested_by == finance_user


# --- reversals ---------------------------------------------------------------------------------


def test_reverse_files_a_four_eyes_request_with_the_reason(finance_user, funded_wallet):
    txn = funded_wallet.transactions.get()
    client = client_for(finance_user)
    assert_error(client.post(f"{API}/transactions/{txn.reference}/reverse/", {}, format="json"), 400)
    response = client.post(
        f"{API}/transactions/{txn.reference}/reverse/", {"reason": "Duplicate credit"}, format="json"
    )
    assert response.status_code == 202
    request = ApprovalRequest.objects.get()
    assert (request.kind, request.transaction, request.reason) == ("reversal", txn, "Duplicate credit")
    txn.refresh_from_db()
    assert txn.status == WalletTransaction.Status.COMPLETED


def test_reverse_by_a_host_is_403_and_unknown_reference_404(host, finance_user, funded_wallet):
    txn = funded_wallet.transactions.get()
    before = snapshot()
    assert_error(client_for(host).post(f"{API}/transactions/{txn.reference}/reverse/", {"reason": "x"}), 403)
    assert_error(client_for(finance_user).post(f"{API}/transactions/TXN-NOPE/reverse/", {"reason": "x"}), 404)
    assert snapshot() == before


# --- paying and refunding bookings -------------------------------------------------------------


def test_guest_pays_a_pending_booking_once(host, guest, make_booking):
    booking = make_booking(host, guest)
    client = client_for(guest)
    first = client.post(f"{API}/bookings/{booking.pk}/pay/", {}, format="json")
    second = client.post(f"{API}/bookings/{booking.pk}/pay/", {}, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    body = first.json()
    assert body["reference"].startswith("PAY-")
    assert (body["provider"], body["amount"], body["currency"], body["status"]) == (
        "sandbox",
        "1000.00",
        "NGN",
        "pending",
    )
    assert second.json()["reference"] == body["reference"]
    assert Payment.objects.count() == 1


def test_provider_is_chosen_from_the_propertys_country(settings, host, guest, make_booking):
    settings.SANDBOX_PAYMENTS_ENABLED = False
    booking = make_booking(host, guest, currency="KES", country="KE")
    response = client_for(guest).post(f"{API}/bookings/{booking.pk}/pay/", {"provider": "paypal"}, format="json")
    assert_error(response, 400, "unknown_provider")
    response = client_for(guest).post(f"{API}/bookings/{booking.pk}/pay/", {"provider": "mpesa"}, format="json")
    assert_error(response, 400, "invalid_field")  # M-Pesa needs the phone number
    assert Payment.objects.count() == 0


def test_only_the_bookings_guest_can_pay_it(host, guest, other_host, make_booking):
    booking = make_booking(host, guest)
    before = snapshot()
    assert_error(client_for(other_host).post(f"{API}/bookings/{booking.pk}/pay/", {}, format="json"), 404)
    assert_error(client_for(host).post(f"{API}/bookings/{booking.pk}/pay/", {}, format="json"), 404)
    assert_error(client_for(guest).post(f"{API}/bookings/999999/pay/", {}, format="json"), 404)
    assert snapshot() == before


def test_a_confirmed_booking_cannot_be_paid_again(host, guest, make_booking, make_payment):
    booking = make_booking(host, guest)
    payment = make_payment(booking)
    TransactionService.process_booking_payment(booking, payment)
    before = snapshot()
    assert_error(client_for(guest).post(f"{API}/bookings/{booking.pk}/pay/", {}, format="json"), 409, "invalid_state")
    assert snapshot() == before


def test_finance_refunds_part_of_a_booking(finance_user, paid_booking, host):
    response = client_for(finance_user).post(
        f"{API}/bookings/{paid_booking.pk}/refund/", {"amount": "200.00", "reason": "Late check-in"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["type"] == "refund"
    payment = paid_booking.payments.get()
    assert payment.refunded_amount == Decimal("200.00")


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"amount": "1000.01", "reason": "x"}, 409, "refund_exceeds_payment"),
        ({"amount": "200.00"}, 400, "invalid"),
        ({"amount": 200, "reason": "x"}, 400, "invalid"),
        ({"amount": "0.001", "reason": "x"}, 400, "invalid_amount"),
    ],
)
def test_refused_refunds_change_nothing(finance_user, paid_booking, body, status, code):
    before = snapshot()
    response = client_for(finance_user).post(f"{API}/bookings/{paid_booking.pk}/refund/", body, format="json")
    assert_error(response, status, code)
    assert snapshot() == before


def test_refund_by_support_or_host_is_403(support_user, host, paid_booking):
    before = snapshot()
    for user in (support_user, host):
        response = client_for(user).post(
            f"{API}/bookings/{paid_booking.pk}/refund/", {"amount": "10.00", "reason": "x"}, format="json"
        )
        assert_error(response, 403)
    assert snapshot() == before


def test_token_endpoint_gives_a_working_bearer_token(host, funded_wallet):
    response = APIClient().post(f"{API}/auth/token/", {"username": host.username, "password": "pass-12345"})
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    assert client.get(f"{API}/wallets/my_wallet/").status_code == 200
    wrong = APIClient().post(f"{API}/auth/token/", {"username": host.username, "password": "nope"})
    assert_error(wrong, 400)


def test_unknown_api_path_is_json_404(host):
    assert_error(client_for(host).get(f"{API}/nothing-here/"), 404, "not_found")


# --- filters: impossible dates are bad input -----------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "2022-02-21T22:10:29+17:00",  # no place on Earth is 17 hours ahead; PostgreSQL refuses it
        "2022-02-21T22:10:29-23:59",
        "0001-01-01T00:00:00+05:00",  # in UTC this is before year 1
        "9999-12-31T23:59:59-05:00",  # and this after year 9999
    ],
)
def test_date_filter_with_an_impossible_time_zone_offset_is_a_400(host, funded_wallet, moment):
    client = client_for(host)
    for url in (f"{API}/wallets/{funded_wallet.pk}/transactions/", f"{API}/transactions/"):
        for name in ("created_before", "created_after"):
            response = client.get(url, {name: moment})
            assert_error(response, 400, "invalid")
            assert name in response.json()["error"]["fields"]


def test_date_filter_accepts_real_offsets(host, funded_wallet):
    client = client_for(host)
    late = client.get(f"{API}/transactions/", {"created_before": "2999-01-01T00:00:00+14:00"}).json()
    early = client.get(f"{API}/transactions/", {"created_before": "2000-01-01T00:00:00-12:00"}).json()
    assert (late["count"], early["count"]) == (1, 0)


@pytest.mark.parametrize("query", ["page=", "page=1&page=", "page=2&page=1", "page=last"])
def test_a_page_parameter_that_is_not_one_page_number_is_refused(host, funded_wallet, query):
    """The schema says `page` is an integer: an empty, repeated or named page is not silently page 1."""
    response = client_for(host).get(f"{API}/transactions/?{query}")
    assert_error(response, 404, "not_found")
    assert client_for(host).get(f"{API}/transactions/?page=1").json()["count"] == 1


@pytest.mark.parametrize("query", ["type=", "status=", "created_before=", "created_after="])
def test_a_filter_sent_empty_is_a_400_not_silently_no_filter(host, query):
    TransactionService.create_wallet(host, "NGN")
    response = client_for(host).get(f"{API}/transactions/?{query}")
    assert_error(response, 400, "invalid")


def test_the_api_reads_json_bodies_only(host):
    response = client_for(host).post(
        f"{API}/bank-accounts/",
        {"bank_name": "GTBank", "account_name": "Ada", "account_number": "0123456789"},
        format="multipart",
    )
    assert_error(response, 415, "unsupported_media_type")
    assert not BankAccount.objects.exists()


def test_a_number_where_the_schema_says_string_is_a_400(host):
    body = {"bank_name": "GTBank", "account_name": 12345678, "account_number": "0123456789"}
    response = client_for(host).post(f"{API}/bank-accounts/", body, format="json")
    assert_error(response, 400)
    assert "account_name" in response.json()["error"]["fields"]
    assert not BankAccount.objects.exists()
