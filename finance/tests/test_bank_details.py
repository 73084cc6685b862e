"""Bank details a transfer can use: the full number goes in once, is stored only encrypted
(finance.crypto, keyed from BANK_DETAILS_KEY), survives a key rotation, and is never shown
or kept in clear anywhere in the database."""

import io
import logging

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from finance import bank_details, crypto
from finance.api.tokens import issue_api_token
from finance.errors import BankDetailsKeyError, InvalidBankDetailsError, TransactionError
from finance.models import BankAccount
from finance.services import TransactionService

API = "/api/payments"
OLD_KEY = "an-old-bank-details-key-that-was-long-and-random-enough-0123456789"
NEW_KEY = "a-new-bank-details-key-after-rotation-also-long-and-random-987654"


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(user)}")
    return client


@pytest.fixture
def old_key(settings):
    settings.BANK_DETAILS_KEY, settings.BANK_DETAILS_KEY_PREVIOUS = OLD_KEY, ""
    return settings


def an_account(owner, number="0123456789", **fields) -> BankAccount:
    return bank_details.add_bank_account(
        owner=owner,
        account_number=number,
        bank_name=fields.pop("bank_name", "GTBank"),
        account_name="Host One",
        bank_code=fields.pop("bank_code", "058"),
        country=fields.pop("country", "NG"),
        currency="NGN",
        **fields,
    )


# --- finance.crypto -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_number_round_trips_and_only_its_last_four_digits_are_kept_in_clear(host):
    account = an_account(host, "0123456789")
    account.refresh_from_db()

    assert crypto.decrypt_account_number(account) == "0123456789"
    assert account.account_number_last4 == "6789"
    assert account.masked_account_number == "•••• 6789"
    assert "0123456789" not in account.account_number_encrypted
    assert account.can_receive_transfers


def test_encrypting_the_same_number_twice_gives_different_tokens(settings):
    # Fernet tokens carry a random IV: equal numbers are not visible as equal ciphertexts.
    assert crypto.encrypt_account_number("0123456789") != crypto.encrypt_account_number("0123456789")


@pytest.mark.django_db
def test_the_key_may_be_any_long_string(host, old_key):
    old_key.BANK_DETAILS_KEY = "not base64 at all: spaces, punctuation & ünïcode " * 2
    account = an_account(host, "0123456789")

    assert crypto.decrypt_account_number(account) == "0123456789"


@pytest.mark.django_db
def test_a_number_stored_under_another_key_is_a_clear_error_that_never_shows_the_number(host, old_key):
    account = an_account(host, "0123456789")
    old_key.BANK_DETAILS_KEY = NEW_KEY  # the old key lost: not kept as _PREVIOUS

    with pytest.raises(BankDetailsKeyError) as refused:
        crypto.decrypt_account_number(account)

    assert isinstance(refused.value, TransactionError)
    assert refused.value.code == "bank_details_unreadable"
    assert "BANK_DETAILS_KEY" in refused.value.message and "BANK_DETAILS_KEY_PREVIOUS" in refused.value.message
    assert "0123456789" not in str(refused.value) and "6789" not in str(refused.value)


def test_without_a_key_no_number_is_stored(settings):
    settings.BANK_DETAILS_KEY, settings.BANK_DETAILS_KEY_PREVIOUS = "", OLD_KEY

    with pytest.raises(BankDetailsKeyError, match="BANK_DETAILS_KEY is not set"):
        crypto.encrypt_account_number("0123456789")


@pytest.mark.django_db
def test_an_account_with_only_its_last_four_digits_has_no_number_to_decrypt(bank_account):
    with pytest.raises(BankDetailsKeyError, match="last four digits"):
        crypto.decrypt_account_number(bank_account)
    assert not bank_account.can_receive_transfers


# --- rotation ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotation_the_previous_key_still_decrypts_the_command_reencrypts_then_it_is_not_needed(
    host, other_host, old_key
):
    first = an_account(host, "0123456789")
    second = an_account(other_host, "9876543210", bank_name="Access Bank", bank_code="044")
    last_four_only = BankAccount.objects.create(
        owner=host, bank_name="UBA", account_name="H", account_number_last4="1111"
    )

    # The operator sets the new key and keeps the old one as _PREVIOUS: both numbers still read.
    old_key.BANK_DETAILS_KEY, old_key.BANK_DETAILS_KEY_PREVIOUS = NEW_KEY, OLD_KEY
    assert crypto.decrypt_account_number(first) == "0123456789"
    assert crypto.decrypt_account_number(second) == "9876543210"
    # A number stored now is under the new key.
    third = an_account(make_host(), "5555666677")
    assert crypto.is_current(third.account_number_encrypted)

    out = io.StringIO()
    call_command("rotate_bank_details_key", "--batch-size", "1", stdout=out)
    assert "Re-encrypted 2 account number(s)" in out.getvalue()
    assert "1 already were" in out.getvalue()

    # Run again: nothing left to do, nothing rewritten.
    stored = dict(BankAccount.objects.values_list("pk", "account_number_encrypted"))
    out = io.StringIO()
    call_command("rotate_bank_details_key", stdout=out)
    assert "Re-encrypted 0 account number(s)" in out.getvalue() and "3 already were" in out.getvalue()
    assert dict(BankAccount.objects.values_list("pk", "account_number_encrypted")) == stored

    # The old key removed: every number still reads.
    old_key.BANK_DETAILS_KEY_PREVIOUS = ""
    for account, number in ((first, "0123456789"), (second, "9876543210"), (third, "5555666677")):
        account.refresh_from_db()
        assert crypto.decrypt_account_number(account) == number
    last_four_only.refresh_from_db()
    assert last_four_only.account_number_encrypted == ""


def make_host():
    from django.contrib.auth import get_user_model

    n = BankAccount.objects.count()
    return get_user_model().objects.create_user(username=f"rotated-host-{n}", role="host", country="NG")


@pytest.mark.django_db
def test_rotation_without_the_old_key_names_the_accounts_it_cannot_read_and_changes_nothing(host, old_key):
    account = an_account(host, "0123456789")
    before = account.account_number_encrypted
    old_key.BANK_DETAILS_KEY = NEW_KEY

    with pytest.raises(CommandError, match=f"BANK_DETAILS_KEY_PREVIOUS.*bank accounts {account.pk}") as refused:
        call_command("rotate_bank_details_key", stdout=io.StringIO())

    assert "0123456789" not in str(refused.value)
    account.refresh_from_db()
    assert account.account_number_encrypted == before


# --- validation and normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "country", "given", "stored"),
    [
        ("bank", "NG", "0123 456 789", "0123456789"),
        ("bank", "ZA", "62 0012 3456", "6200123456"),
        ("bank", "", "123456", "123456"),
        ("mobile_money", "KE", "0712 345 678", "254712345678"),
        ("mobile_money", "KE", "+254712345678", "254712345678"),
        ("mobile_money", "KE", "712345678", "254712345678"),
        ("mobile_money", "TZ", "0754 123 456", "255754123456"),
    ],
)
def test_numbers_are_normalised(settings, kind, country, given, stored):
    number, _ = bank_details.clean_bank_details(
        account_type=kind, country=country, account_number=given, bank_code="058" if kind == "bank" else ""
    )
    assert number == stored


@pytest.mark.parametrize(
    ("kind", "country", "given", "code", "field"),
    [
        ("bank", "NG", "012345678", "058", "account_number"),  # a NUBAN has 10 digits
        ("bank", "NG", "01234567890", "058", "account_number"),
        ("bank", "GH", "12345", "040100", "account_number"),
        ("bank", "GH", "123456789012345678901", "040100", "account_number"),
        ("bank", "GH", "12-34-5678", "040100", "account_number"),
        ("bank", "GH", "١٢٣٤٥٦٧٨", "040100", "account_number"),  # digits, but not ASCII ones
        ("bank", "KE", "0123456789012", "", "bank_code"),  # Paystack pays Kenyan banks: code needed
        ("bank", "NG", "0123456789", "05-8", "bank_code"),
        ("mobile_money", "NG", "0712345678", "", "country"),  # M-Pesa is Kenya and Tanzania
        ("mobile_money", "KE", "0612345678", "", "account_number"),
        ("mobile_money", "KE", "25571234567", "", "account_number"),
        ("mobile_money", "TZ", "254712345678", "", "account_number"),  # a Kenyan number
        ("mobile_money", "KE", "0712345678", "044", "bank_code"),
        ("savings", "KE", "0712345678", "", "account_type"),
    ],
)
def test_numbers_a_payout_could_not_use_are_refused_naming_the_field_not_the_number(
    settings, kind, country, given, code, field
):
    with pytest.raises(InvalidBankDetailsError) as refused:
        bank_details.clean_bank_details(account_type=kind, country=country, account_number=given, bank_code=code)

    assert refused.value.code == "invalid_bank_details" and refused.value.status == 400
    assert refused.value.details["field"] == field
    assert given.replace(" ", "") not in refused.value.message


def test_a_bank_code_is_optional_where_no_provider_pays_the_countrys_banks(settings):
    assert ("bank", "TN") not in settings.PAYOUT_ROUTES
    number, code = bank_details.clean_bank_details(
        account_type="bank", country="TN", account_number="12345678901234567890", bank_code=""
    )
    assert (number, code) == ("12345678901234567890", "")


# --- a changed number forgets the provider's recipient ---------------------------------------------


@pytest.mark.django_db
def test_changing_the_number_forgets_the_providers_recipient_for_the_old_one(host):
    account = an_account(host, "0123456789")
    BankAccount.objects.filter(pk=account.pk).update(recipient_code="RCP_old", recipient_provider="paystack")
    account.refresh_from_db()

    bank_details.change_bank_details(bank_account=account, account_number="0123 456 789")  # the same number
    account.refresh_from_db()
    assert (account.recipient_code, account.recipient_provider) == ("RCP_old", "paystack")

    bank_details.change_bank_details(bank_account=account, account_number="9999888877")
    account.refresh_from_db()
    assert (account.recipient_code, account.recipient_provider) == ("", "")
    assert crypto.decrypt_account_number(account) == "9999888877"
    assert account.masked_account_number == "•••• 8877"


@pytest.mark.django_db
def test_changing_the_bank_forgets_the_recipient_too(host):
    account = an_account(host, "0123456789")
    BankAccount.objects.filter(pk=account.pk).update(recipient_code="RCP_old", recipient_provider="paystack")
    account.refresh_from_db()

    bank_details.change_bank_details(bank_account=account, account_number="0123456789", bank_code="044")

    account.refresh_from_db()
    assert (account.bank_code, account.recipient_code) == ("044", "")


@pytest.mark.django_db
def test_a_recipient_known_only_by_last_four_digits_is_forgotten_when_a_full_number_is_given(bank_account):
    BankAccount.objects.filter(pk=bank_account.pk).update(recipient_code="RCP_old", recipient_provider="paystack")
    bank_account.refresh_from_db()

    crypto.set_account_number(bank_account, "0000054321")

    assert bank_account.recipient_code == ""


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_takes_the_number_once_and_shows_only_its_last_four_digits(host):
    client = client_for(host)
    body = {
        "account_type": "mobile_money",
        "bank_name": "M-Pesa",
        "account_name": "Wanjiku K.",
        "account_number": "0712 345 678",
        "country": "KE",
        "currency": "KES",
    }

    created = client.post(f"{API}/bank-accounts/", body, format="json")

    assert created.status_code == 201, created.content
    shown = created.json()
    assert shown["masked_account_number"] == "•••• 5678"
    assert (shown["account_type"], shown["bank_code"]) == ("mobile_money", "MPESA")
    assert not {"account_number", "account_number_encrypted", "recipient_code"} & set(shown)
    account = BankAccount.objects.get(pk=shown["id"])
    assert crypto.decrypt_account_number(account) == "254712345678"
    listed = client.get(f"{API}/bank-accounts/").content.decode()
    assert "712345678" not in listed and account.account_number_encrypted not in listed


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"account_number": "01234567890"}, "account_number"),
        ({"bank_code": ""}, "bank_code"),
        ({"account_type": "mobile_money", "bank_code": ""}, "country"),
    ],
)
def test_the_api_refuses_what_a_payout_could_not_use_with_the_field_named(host, changes, field):
    body = {
        "bank_name": "GTBank",
        "account_name": "Amara O.",
        "account_number": "0123456789",
        "bank_code": "058",
        "country": "NG",
        **changes,
    }

    response = client_for(host).post(f"{API}/bank-accounts/", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_bank_details"
    assert field in error["fields"]
    assert body["account_number"] not in response.content.decode()
    assert not BankAccount.objects.exists()


@pytest.mark.django_db
def test_the_schema_declares_the_number_write_only_and_never_the_encrypted_column(client):
    schema = client.get("/api/schema/?format=json")
    components = schema.json()["components"]["schemas"]

    assert "account_number_encrypted" not in schema.content.decode()
    assert "recipient_code" not in schema.content.decode()
    assert "account_number" not in components["BankAccount"]["properties"]  # what the API answers
    assert "account_number" in components["BankAccountRequest"]["properties"]  # what it reads
    assert "account_number" in components["BankAccountRequest"]["required"]


# --- the database never holds the number in clear ---------------------------------------------------

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


def tables_holding(needle: str) -> list[str]:
    """Every table.column of the database (any schema) whose text, varchar, char or JSON value contains `needle`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type = ANY(%s) AND table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')",
            [list(TEXT_TYPES)],
        )
        columns = cursor.fetchall()
        found = []
        for schema, table, column in columns:
            quoted = f"{connection.ops.quote_name(schema)}.{connection.ops.quote_name(table)}"
            cursor.execute(
                f"SELECT COUNT(*) FROM {quoted} WHERE {connection.ops.quote_name(column)}::text LIKE %s",
                [f"%{needle}%"],
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


@pytest.mark.django_db
def test_the_database_never_holds_the_number_in_clear(host, finance_user, caplog, settings):
    settings.SANDBOX_AUTOCOMPLETE = False
    assert connection.vendor == "postgresql"
    numbers = {"bank": "3141592653", "mobile": "254798765432"}
    client = client_for(host)
    caplog.set_level(logging.DEBUG)

    bank = client.post(
        f"{API}/bank-accounts/",
        {
            "bank_name": "GTBank",
            "account_name": "Amara O.",
            "account_number": "314 159 2653",
            "bank_code": "058",
            "country": "NG",
            "currency": "NGN",
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="add-bank-1",
    )
    mobile = client.post(
        f"{API}/bank-accounts/",
        {
            "account_type": "mobile_money",
            "bank_name": "M-Pesa",
            "account_name": "Amara O.",
            "account_number": "+254 798 765 432",
            "country": "KE",
        },
        format="json",
    )
    refused = client.post(  # a refusal stores nothing either
        f"{API}/bank-accounts/",
        {
            "bank_name": "GTBank",
            "account_name": "A",
            "account_number": "27182818284",
            "bank_code": "058",
            "country": "NG",
        },
        format="json",
    )
    assert (bank.status_code, mobile.status_code, refused.status_code) == (201, 201, 400)
    client.post(f"{API}/bank-accounts/{mobile.json()['id']}/set_primary/")
    # Money moves to the account: a withdrawal, its audit rows, a staff action and Wagtail's log.
    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, "50000.00")
    account = BankAccount.objects.get(pk=bank.json()["id"])
    withdrawal = client.post(
        f"{API}/withdrawals/",
        {"wallet": wallet.pk, "bank_account": account.pk, "amount": "10000.00"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="withdraw-1",
    )
    assert withdrawal.status_code == 201, withdrawal.content
    failed = client_for(finance_user).post(
        f"{API}/withdrawals/{withdrawal.json()['id']}/fail/", {"reason": "Bank details to confirm"}, format="json"
    )
    assert failed.status_code == 200, failed.content

    for number in (*numbers.values(), "27182818284"):
        assert tables_holding(number) == [], number
        # Nor the part the last four digits do not already show.
        assert tables_holding(number[:-4]) == [], number
        assert number not in caplog.text
    # The encrypted column does hold something for each: the numbers are there, just not readable.
    assert crypto.decrypt_account_number(account) == numbers["bank"]
    assert tables_holding(account.account_number_encrypted[:40]) == ["finance_bankaccount.account_number_encrypted"]

    # What people read: the API and the portal's withdrawal queue show the last four digits only.
    pages = [
        client.get(f"{API}/bank-accounts/"),
        client.get(f"{API}/withdrawals/"),
        client.get(f"{API}/withdrawals/{withdrawal.json()['id']}/"),
    ]
    staff = APIClient()
    staff.force_login(finance_user)
    pages.append(staff.get(reverse("ops_withdrawals:failed")))
    assert all(page.status_code == 200 for page in pages)
    for page in pages:
        text = page.content.decode()
        assert "2653" in text or page is pages[0]
        assert numbers["bank"][:-4] not in text and numbers["mobile"][:-4] not in text
        assert account.account_number_encrypted not in text


def test_no_admin_edits_or_shows_the_encrypted_column():
    bank_admin = admin.site._registry.get(BankAccount)
    if bank_admin is not None:
        shown = {*bank_admin.get_list_display(None), *(bank_admin.fields or ()), *(bank_admin.search_fields or ())}
        assert "account_number_encrypted" not in shown
        assert "account_number_encrypted" in (bank_admin.exclude or ())
