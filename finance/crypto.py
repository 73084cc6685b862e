"""Bank details at rest (placeholder in this branch: the real module is another helper's).

Only the interface the providers call is here; tests replace it with monkeypatch."""


def decrypt_account_number(bank_account) -> str:
    """The full account number of `bank_account`, decrypted with BANK_DETAILS_KEY."""
    raise NotImplementedError("finance.crypto is provided by the bank-details branch.")
