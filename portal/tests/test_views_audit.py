"""The audit log page (portal/views/audit.py): filters and CSV."""

from decimal import Decimal

import pytest

from finance import staff_actions
from finance.services import TransactionService

pytestmark = pytest.mark.django_db


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2500.00"))


def login(client, user):
    client.force_login(user)
    return client


def test_audit_log_filters_and_exports(client, manager, finance_user, withdrawal):
    staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=finance_user, reason="=evil()", idempotency_key="a1")
    login(client, manager)
    page = client.get(f"/admin/operations/audit/?user={finance_user.username}&action=stayafrica.withdrawal.fail")
    assert withdrawal.reference.encode() in page.content
    export = b"".join(client.get("/admin/operations/audit/?export=csv").streaming_content).decode()
    assert "'=evil()" in export
