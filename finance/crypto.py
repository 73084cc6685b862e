"""Hosts' full account numbers, encrypted at rest.

A number is stored only as a Fernet token (AES-128-CBC + HMAC-SHA256, the `cryptography`
package) in BankAccount.account_number_encrypted, keyed from BANK_DETAILS_KEY. The key may be
any long random string: the Fernet key is derived from it (SHA-256, urlsafe base64), so an
operator does not have to produce Fernet's own key format.

Rotation: set the new value in BANK_DETAILS_KEY and the old one in BANK_DETAILS_KEY_PREVIOUS;
numbers stored under either decrypt (MultiFernet), new ones are written under the new key.
`manage.py rotate_bank_details_key` then re-encrypts every stored number under the new key,
after which BANK_DETAILS_KEY_PREVIOUS can be removed.

Nothing here logs, formats or raises with the number in it.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from .errors import BankDetailsKeyError


def _fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def keys() -> MultiFernet:
    """The current key first (it encrypts), then the previous one (it still decrypts)."""
    if not settings.BANK_DETAILS_KEY:
        raise BankDetailsKeyError("BANK_DETAILS_KEY is not set: account numbers can be neither stored nor read.")
    secrets = [s for s in (settings.BANK_DETAILS_KEY, settings.BANK_DETAILS_KEY_PREVIOUS) if s]
    return MultiFernet([_fernet(s) for s in dict.fromkeys(secrets)])


def encrypt_account_number(number: str) -> str:
    """The Fernet token (ASCII text) of `number` under the current BANK_DETAILS_KEY."""
    return keys().encrypt(number.encode()).decode("ascii")


def decrypt_account_number(bank_account) -> str:
    """The full account number of `bank_account`; BankDetailsKeyError when neither
    BANK_DETAILS_KEY nor BANK_DETAILS_KEY_PREVIOUS decrypts it, or it has none stored."""
    token = bank_account.account_number_encrypted
    if not token:
        raise BankDetailsKeyError(
            f"Bank account {bank_account.pk} has no full account number stored (only its last four digits).",
            field="account_number",
        )
    try:
        return keys().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise BankDetailsKeyError(
            f"The account number of bank account {bank_account.pk} was encrypted with a key that is neither "
            "BANK_DETAILS_KEY nor BANK_DETAILS_KEY_PREVIOUS: set the key it was stored under as "
            "BANK_DETAILS_KEY_PREVIOUS (then run manage.py rotate_bank_details_key), or ask the host for the "
            "number again."
        ) from None


def set_account_number(bank_account, number: str) -> None:
    """Store `number` (already validated, digits only) encrypted, and its last four digits, on
    `bank_account` without saving it. A provider's recipient code belongs to the old number:
    it is forgotten when the number changes, so the next payout cannot reach the old account."""
    if bank_account.recipient_code and not _holds(bank_account, number):
        bank_account.recipient_code = ""
        bank_account.recipient_provider = ""
    bank_account.account_number_encrypted = encrypt_account_number(number)
    bank_account.account_number_last4 = number[-4:]


def _holds(bank_account, number: str) -> bool:
    """Whether `bank_account` already stores exactly `number` (its last four digits alone
    cannot show that)."""
    if not bank_account.account_number_encrypted:
        return False
    try:
        return decrypt_account_number(bank_account) == number
    except BankDetailsKeyError:
        return False


def rotate_token(token: str) -> str:
    """`token` re-encrypted under the current key (MultiFernet.rotate); BankDetailsKeyError
    when no configured key decrypts it."""
    try:
        return keys().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise BankDetailsKeyError(
            "A stored account number was encrypted with a key that is neither BANK_DETAILS_KEY nor "
            "BANK_DETAILS_KEY_PREVIOUS."
        ) from None


def is_current(token: str) -> bool:
    """Whether the current BANK_DETAILS_KEY alone decrypts `token`."""
    try:
        _fernet(settings.BANK_DETAILS_KEY).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError, ValueError):
        return False
    return True
