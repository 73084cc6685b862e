"""Constraints the database keeps whatever code writes the rows (finance/models.py)."""

import pytest
from django.db import IntegrityError, transaction

from finance.models import BankAccount


@pytest.mark.parametrize(
    ("field", "value"), [("country", "."), ("country", "n!"), ("currency", "!"), ("currency", "ng")]
)
def test_bank_account_rows_refuse_codes_of_the_wrong_shape(host, field, value):
    with pytest.raises(IntegrityError), transaction.atomic():
        BankAccount.objects.create(
            owner=host, bank_name="GTBank", account_name="H", account_number_last4="0001", **{field: value}
        )
    assert not BankAccount.objects.exists()


def test_bank_account_rows_may_leave_country_and_currency_blank(host):
    BankAccount.objects.create(owner=host, bank_name="GTBank", account_name="H", account_number_last4="0001")
    BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="H", account_number_last4="0002", country="NG", currency="NGN"
    )
    assert BankAccount.objects.count() == 2
