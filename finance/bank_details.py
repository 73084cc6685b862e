"""Where a host's payouts go: adding a bank account or mobile-money wallet, with a number a
provider transfer can use.

Every way in (the API, the demo) comes through here: the number is checked for the account's
kind and country, normalised, and stored only through finance.crypto (encrypted, plus its
last four digits). Refusals are InvalidBankDetailsError naming the field, never the number.
"""

import re

from django.conf import settings
from django.db import transaction

from . import crypto
from .errors import InvalidBankDetailsError
from .models import BankAccount

# The countries whose mobile money a payout can reach: M-Pesa (Safaricom in Kenya, Vodacom in
# Tanzania). A wallet number is the subscriber's phone number in international form.
MOBILE_MONEY_PREFIX = {"KE": "254", "TZ": "255"}
MPESA = "MPESA"
# A Nigerian bank account number is a 10-digit NUBAN; elsewhere banks use 6 to 20 digits.
BANK_NUMBER_LENGTHS = {"NG": (10, 10)}
BANK_NUMBER_DEFAULT = (6, 20)
BANK_CODE = re.compile(r"^[A-Za-z0-9]{1,20}$")


def clean_bank_details(*, account_type: str, country: str, account_number: str, bank_code: str = "") -> tuple[str, str]:
    """The account number and bank code to store for an account of `account_type` in
    `country`: the number as digits only (a phone number as 2547XXXXXXXX / 2557XXXXXXXX), the
    bank code as given ("MPESA" for mobile money). InvalidBankDetailsError otherwise."""
    country = (country or "").upper()
    bank_code = (bank_code or "").strip()
    number = (account_number or "").replace(" ", "")
    if account_type == BankAccount.AccountType.MOBILE_MONEY:
        return _mpesa_number(number, country), _mobile_money_code(bank_code)
    if account_type != BankAccount.AccountType.BANK:
        raise InvalidBankDetailsError("Choose bank or mobile_money as the account type.", field="account_type")
    if not number.isdigit() or not number.isascii():
        raise InvalidBankDetailsError("The account number may hold only digits (and spaces).", field="account_number")
    shortest, longest = BANK_NUMBER_LENGTHS.get(country, BANK_NUMBER_DEFAULT)
    if not shortest <= len(number) <= longest:
        rule = "a Nigerian account number (NUBAN) has 10 digits" if country == "NG" else "6 to 20 digits"
        raise InvalidBankDetailsError(f"The account number has {len(number)} digits: {rule}.", field="account_number")
    if bank_code and not BANK_CODE.match(bank_code):
        raise InvalidBankDetailsError("The bank code is letters and digits only, up to 20.", field="bank_code")
    if not bank_code and ("bank", country) in settings.PAYOUT_ROUTES:
        raise InvalidBankDetailsError(
            f"A bank code is required for a bank account in {country}: the provider's code for the bank "
            "(e.g. 058 for GTBank in Nigeria).",
            field="bank_code",
        )
    return number, bank_code


def _mpesa_number(number: str, country: str) -> str:
    prefix = MOBILE_MONEY_PREFIX.get(country)
    if prefix is None:
        raise InvalidBankDetailsError(
            "Mobile-money payouts reach M-Pesa in Kenya (KE) and Tanzania (TZ) only.", field="country"
        )
    digits = number.removeprefix("+")
    if not digits.isdigit() or not digits.isascii():
        raise InvalidBankDetailsError("An M-Pesa number is a phone number: digits only.", field="account_number")
    if digits.startswith(prefix):
        local = digits[len(prefix) :]
    elif digits.startswith("0"):
        local = digits[1:]
    else:
        local = digits
    if len(local) != 9 or not local.startswith("7"):
        raise InvalidBankDetailsError(
            f"Give the M-Pesa phone number as {prefix}7XXXXXXXX (or 07XXXXXXXX).", field="account_number"
        )
    return prefix + local


def _mobile_money_code(bank_code: str) -> str:
    if bank_code and bank_code.upper() != MPESA:
        raise InvalidBankDetailsError(
            "Mobile money is paid through M-Pesa: leave the bank code empty.", field="bank_code"
        )
    return MPESA


def add_bank_account(
    *,
    owner,
    account_number: str,
    bank_name: str,
    account_name: str,
    account_type: str = BankAccount.AccountType.BANK,
    bank_code: str = "",
    currency: str = "",
    country: str = "",
) -> BankAccount:
    """A new payout account for `owner`, primary if it is their first; the number validated
    and stored encrypted."""
    number, bank_code = clean_bank_details(
        account_type=account_type, country=country, account_number=account_number, bank_code=bank_code
    )
    account = BankAccount(
        owner=owner,
        account_type=account_type,
        bank_name=bank_name,
        bank_code=bank_code,
        account_name=account_name,
        currency=currency,
        country=country,
    )
    crypto.set_account_number(account, number)
    with transaction.atomic():
        # Locks the owner's primary account: two concurrent first accounts cannot both be primary.
        has_primary = BankAccount.objects.select_for_update().filter(owner=owner, is_primary=True).exists()
        account.is_primary = not has_primary
        account.save()
    return account


def change_bank_details(*, bank_account: BankAccount, account_number: str, bank_code: str | None = None) -> BankAccount:
    """Give `bank_account` a new number (and bank code); a provider's recipient code for the old
    number is forgotten, so the next payout goes to the new one."""
    number, code = clean_bank_details(
        account_type=bank_account.account_type,
        country=bank_account.country,
        account_number=account_number,
        bank_code=bank_account.bank_code if bank_code is None else bank_code,
    )
    if code != bank_account.bank_code:
        bank_account.recipient_code = bank_account.recipient_provider = ""
    bank_account.bank_code = code
    crypto.set_account_number(bank_account, number)
    bank_account.save(
        update_fields=[
            "bank_code",
            "account_number_encrypted",
            "account_number_last4",
            "recipient_code",
            "recipient_provider",
        ]
    )
    return bank_account
