"""The withdrawal queue's tabs and filters (portal/views/finance.py WithdrawalQueueView, portal/filters.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from finance import staff_actions
from finance.models import BankAccount, Withdrawal
from finance.services import TransactionService

pytestmark = pytest.mark.django_db

QUEUE = "/admin/operations/withdrawals/"


@pytest.fixture
def ngn(funded_wallet, bank_account):
    return [TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal(a)) for a in ("1500", "2000")]


@pytest.fixture
def kes(other_host):
    wallet = TransactionService.create_wallet(other_host, "KES")
    TransactionService.credit_wallet(wallet, Decimal("5000.00"))
    bank = BankAccount.objects.create(
        owner=other_host, bank_name="Equity", account_name="Two", account_number_last4="1"
    )
    return TransactionService.initiate_withdrawal(wallet, bank, Decimal("1000.00"))


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def page(client, url):
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def test_tabs_split_open_completed_and_failed_with_who_when_and_why(client_for, finance_user, ngn, kes):
    first, second = ngn
    staff_actions.complete_withdrawal(withdrawal=first, actor=finance_user, idempotency_key="k1")
    staff_actions.fail_withdrawal(withdrawal=second, actor=finance_user, reason="Bank refused", idempotency_key="k2")
    client = client_for(finance_user)

    pending = page(client, QUEUE)
    assert kes.reference in pending and first.reference not in pending and second.reference not in pending
    stored = Withdrawal.objects.get(pk=kes.pk).amount
    assert f'data-amount="{stored}" data-currency="KES"' in pending  # what the selected total adds up
    assert 'id="ops-currency-decimals"' in pending and '"KES": 2' in pending
    assert kes.transaction.reference in pending  # the WD reference with its ledger transaction

    completed = page(client, QUEUE + "completed/")
    assert first.reference in completed and second.reference not in completed and kes.reference not in completed
    assert str(finance_user) in completed and "When" in completed
    assert f"/admin/operations/transactions/{first.transaction.reference}/" in completed
    assert "Complete selected" not in completed and "Bank refused" not in completed

    failed = page(client, QUEUE + "failed/")
    assert second.reference in failed and "Bank refused" in failed and str(finance_user) in failed


def test_filters_by_currency_host_amount_and_age(client_for, finance_user, ngn, kes, other_host):
    client = client_for(finance_user)
    only_kes = page(client, QUEUE + "?currency=KES")
    assert kes.reference in only_kes and ngn[0].reference not in only_kes
    by_host = page(client, f"{QUEUE}?host={other_host.email.upper()}")
    assert kes.reference in by_host and ngn[0].reference not in by_host
    above = page(client, QUEUE + "?currency=NGN&amount_min=1600")
    assert ngn[1].reference in above and ngn[0].reference not in above

    Withdrawal.objects.filter(pk=ngn[0].pk).update(created_at=timezone.now() - timedelta(days=4))
    old = page(client, QUEUE + "?age=3")
    assert ngn[0].reference in old and ngn[1].reference not in old and kes.reference not in old


def test_amounts_without_a_currency_are_a_field_error_not_a_comparison(client_for, finance_user, ngn, kes):
    body = page(client_for(finance_user), QUEUE + "?amount_min=10")
    assert "Choose a currency first: amounts in different currencies cannot be compared." in body
    assert ngn[0].reference not in body and kes.reference not in body


@pytest.mark.parametrize(
    "query",
    [
        "?amount_min=abc&currency=NGN",
        "?age=99",
        "?currency=XXX",
        "?requested_from=2024-13-45",
        "?page=abc",
        "?sort=nope",
    ],
)
def test_bad_filter_input_is_never_a_server_error(client_for, finance_user, ngn, query):
    response = client_for(finance_user).get(QUEUE + query)
    assert response.status_code < 500


def test_filtering_with_htmx_answers_the_results_of_the_same_tab(client_for, finance_user, ngn):
    staff_actions.complete_withdrawal(withdrawal=ngn[0], actor=finance_user, idempotency_key="k1")
    response = client_for(finance_user).get(
        QUEUE + "completed/?currency=NGN", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results"
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="results"') and ngn[0].reference in body and ngn[1].reference not in body


def test_a_reversed_requested_range_says_so(client_for, finance_user, ngn):
    page = client_for(finance_user).get(QUEUE, {"requested_from": "2026-02-01", "requested_to": "2026-01-01"})
    assert page.status_code == 200
    assert "“Requested from” (2026-02-01) is after “Requested up to” (2026-01-01)." in page.content.decode()


def test_the_host_filter_finds_a_host_by_first_and_last_name(client_for, finance_user, ngn):
    host = ngn[0].wallet.user
    host.first_name, host.last_name = "Amara", "Okafor"
    host.save()
    found = client_for(finance_user).get(QUEUE, {"host": "Amara Oka"}).content.decode()
    assert ngn[0].reference in found and ngn[1].reference in found
