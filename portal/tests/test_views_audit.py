"""The audit log page (portal/views/audit.py): filters and CSV."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from wagtail.log_actions import log

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


def test_the_text_filters_apply_as_you_type_and_match_a_username_prefix(client, manager, finance_user, withdrawal):
    staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=finance_user, reason="Bank closed", idempotency_key="a2")
    login(client, manager)
    page = client.get("/admin/operations/audit/").content.decode()
    assert 'type="search" name="user"' in page and 'type="search" name="object"' in page
    typed = client.get(
        f"/admin/operations/audit/?user={finance_user.username[:4]}", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results"
    )
    assert withdrawal.reference.encode() in typed.content


def test_a_reversed_date_range_is_an_error_the_page_shows(client, manager):
    login(client, manager)
    page = client.get("/admin/operations/audit/?date_from=2026-11-30&date_to=2026-11-01")
    assert page.status_code == 200
    assert b"The start date is after the end date." in page.content
    partial = client.get(
        "/admin/operations/audit/?date_from=2026-11-30&date_to=2026-11-01",
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="results",
    ).content.decode()
    assert 'id="filter-errors"' in partial and 'hx-swap-oob="true"' in partial
    assert "The start date is after the end date." in partial
    fixed = client.get(
        "/admin/operations/audit/?date_from=2026-11-01&date_to=2026-11-30",
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="results",
    ).content.decode()
    assert "The start date is after the end date." not in fixed  # the error clears


def test_objects_link_to_their_pages(client, manager, finance_user, withdrawal, paid_booking):
    staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=finance_user, reason="Bank closed", idempotency_key="a3")
    txn = withdrawal.transaction
    log(txn, "stayafrica.reversal", user=finance_user, data={"reference": "x"})
    log(paid_booking, "stayafrica.refund", user=finance_user, data={})
    login(client, manager)
    b"".join(client.get("/admin/operations/withdrawals/?export=csv").streaming_content)  # recorded once streamed
    page = client.get("/admin/operations/audit/").content.decode()
    assert f'href="/admin/operations/transactions/{txn.reference}/"' in page  # the withdrawal's and the reversal's
    assert page.count(f'href="/admin/operations/transactions/{txn.reference}/"') == 2
    assert f'href="/admin/operations/wallets/?owner={manager.username}"' in page  # their sign-in: their wallets
    assert '<a href="/admin/operations/withdrawals/">Withdrawal queue</a>' in page  # the export links to its list
    assert "Fail withdrawal" in page and "stayafrica.withdrawal.fail" not in page.split("<tbody")[1]


def test_links_go_where_the_viewer_may_go(client, manager, make_user, finance_user, paid_booking, funded_wallet):
    credit = funded_wallet.transactions.filter(type="credit").latest("id")
    outcome = staff_actions.request_reversal(txn=credit, reason="Paid twice", actor=finance_user, idempotency_key="r1")
    log(paid_booking, "stayafrica.refund", user=finance_user, data={})
    approval = f'href="/admin/operations/approvals/#approval-{outcome.approval.pk}"'
    refunds = f'href="/admin/operations/refunds/?booking={paid_booking.pk}"'

    login(client, manager)  # managers read approvals, but do not refund
    page = client.get("/admin/operations/audit/").content.decode()
    assert approval in page and refunds not in page and str(paid_booking) in page

    login(client, make_user(superuser=True))
    page = client.get("/admin/operations/audit/").content.decode()
    assert approval in page and refunds in page


def test_the_page_reads_its_entries_in_a_fixed_number_of_queries(client, manager, finance_user, withdrawal):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/admin/operations/audit/").status_code == 200
        return len(captured)

    login(client, manager)
    staff_actions.fail_withdrawal(withdrawal=withdrawal, actor=finance_user, reason="Bank closed", idempotency_key="q")
    client.get("/admin/operations/audit/")  # warm the caches (content types)
    few = queries()
    for n in range(20):
        data = {"username": finance_user.username, "path": f"/p{n}", "permission": "x"}
        log(finance_user, "stayafrica.access.denied", user=finance_user, data=data)
    assert queries() == few
