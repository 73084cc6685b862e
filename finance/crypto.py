"""Hosts' full account numbers, encrypted at rest (placeholder in this branch).

Another branch of issue 17 writes the real module (encryption with BANK_DETAILS_KEY); this
stub only fixes the name the M-Pesa payout calls, so the branches merge cleanly.
"""


def decrypt_account_number(bank_account) -> str:
    raise NotImplementedError("finance.crypto is written in the bank-details branch of issue 17.")
