"""The money operations' idempotency store (finance/idempotency.py)."""

from datetime import date
from decimal import Decimal

import pytest

from finance import idempotency
from finance.errors import IdempotencyConflictError
from finance.models import IdempotencyRecord
from finance.services import TransactionService


def test_fingerprint_is_stable_across_releases_and_argument_order():
    """Stored records hold these digests: a change here turns every replay into a conflict."""
    params = {"wallet": 7, "amount": Decimal("100.00"), "source": "adjustments"}
    expected = "4c52f956f120963e3d9842eb52613fa076d693890613fc6edc5023fded6f7fc8"
    assert idempotency.fingerprint("credit", params) == expected
    assert idempotency.fingerprint("credit", dict(reversed(params.items()))) == expected
    assert idempotency.fingerprint("debit", params) != expected


def test_compact_digest_matches_the_api_request_hashes_already_stored():
    body = {"amount": "100.00", "bank_account": 3, "note": "é", "when": date(2026, 1, 2), "d": Decimal("1.50")}
    expected = "899a533ed20b4cde3be4d9afeb1feff1faa4bc269f9313cfdb251abf67423ac0"
    assert idempotency.digest(body, separators=(",", ":")) == expected


@pytest.mark.django_db
def test_no_key_claims_nothing():
    assert idempotency.claim(None, "credit", {"wallet": 1}) == (None, None)
    assert idempotency.claim("", "credit", {"wallet": 1}) == (None, None)
    idempotency.remember(None, transaction=None)
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_first_claim_runs_and_a_replay_gets_its_result(funded_wallet):
    txn = funded_wallet.transactions.get()
    record, previous = idempotency.claim("k-1", "credit", {"wallet": funded_wallet.pk, "amount": "5"})
    assert previous is None
    assert record.fingerprint == idempotency.fingerprint("credit", {"wallet": funded_wallet.pk, "amount": "5"})
    idempotency.remember(record, transaction=txn)
    again, previous = idempotency.claim("k-1", "credit", {"amount": "5", "wallet": funded_wallet.pk})
    assert again.pk == record.pk and previous == txn
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
def test_a_claim_is_one_statement_and_a_taken_key_leaves_the_transaction_usable(django_assert_num_queries):
    # The test runs inside a transaction, as a claim does: finding the key taken must not abort it.
    with django_assert_num_queries(1):
        record, _ = idempotency.claim("k-one", "credit", {"wallet": 1, "amount": "5"})
    with django_assert_num_queries(2):  # the INSERT that finds the key taken, then the record
        again, previous = idempotency.claim("k-one", "credit", {"wallet": 1, "amount": "5"})
    assert again.pk == record.pk and previous is None  # claimed, nothing remembered yet
    assert IdempotencyRecord.objects.get().created_at == record.created_at


@pytest.mark.django_db
def test_same_key_with_other_parameters_conflicts_and_keys_are_per_operation(funded_wallet):
    idempotency.claim("k-2", "credit", {"wallet": funded_wallet.pk, "amount": "5"})
    with pytest.raises(IdempotencyConflictError):
        idempotency.claim("k-2", "credit", {"wallet": funded_wallet.pk, "amount": "6"})
    record, previous = idempotency.claim("k-2", "debit", {"wallet": funded_wallet.pk, "amount": "6"})
    assert record is not None and previous is None


@pytest.mark.django_db
def test_a_withdrawal_result_is_replayed_as_the_withdrawal(funded_wallet, bank_account):
    withdrawal = TransactionService.initiate_withdrawal(wallet=funded_wallet, bank_account=bank_account, amount="2000")
    record, _ = idempotency.claim("k-3", "withdraw", {"wallet": funded_wallet.pk})
    idempotency.remember(record, withdrawal=withdrawal)
    _, previous = idempotency.claim("k-3", "withdraw", {"wallet": funded_wallet.pk})
    assert previous == withdrawal
