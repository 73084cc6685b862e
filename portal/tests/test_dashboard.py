"""The finance dashboard (DashboardView, portal.selectors.dashboard_totals): each figure at its
currency's precision, and labels that say exactly what they count."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from finance.models import Payment, WalletTransaction
from finance.services import TransactionService
from portal import selectors

pytestmark = pytest.mark.django_db


def text(response_or_html) -> str:
    html = response_or_html if isinstance(response_or_html, str) else response_or_html.content.decode()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def row(body: str, currency: str) -> str:
    """The text of the `today` table row of `currency`."""
    return re.search(rf'id="today-{currency}">(.*?)</tr>', body, re.S).group(1)


@pytest.fixture
def paid(host, guest, make_booking, make_payment):
    def pay(total, commission, currency):
        booking = make_booking(host, guest, total=total, commission=commission, currency=currency)
        TransactionService.process_booking_payment(booking, make_payment(booking))
        booking.refresh_from_db()
        return booking

    return pay


def test_today_separates_guest_payments_host_payouts_refunds_and_clawbacks(paid):
    booking = paid("1000.00", "150.00", "NGN")
    TransactionService.process_refund(booking, Decimal("200.00"), "partial")
    totals = selectors.dashboard_totals()
    (ngn,) = totals["today"]
    assert ngn["guest_payments"] == Decimal("1000.00") and ngn["payment_count"] == 1
    assert ngn["host_payouts"] == Decimal("850.00") and ngn["commission_earned"] == Decimal("150.00")
    assert ngn["refunded_to_guests"] == Decimal("200.00") and ngn["refund_count"] == 1
    assert ngn["clawed_back"] == Decimal("170.00") and ngn["commission_returned"] == Decimal("30.00")
    assert ngn["reversals"] == 0 and ngn["reversal_count"] == 0
    assert isinstance(ngn["reversals"], Decimal)


def test_today_counts_reversals_and_only_today(paid, funded_wallet):
    credit = TransactionService.credit_wallet(funded_wallet, Decimal("300.00"))
    TransactionService.reverse_transaction(credit.reference, "mistake")
    old = paid("500.00", "50.00", "NGN")
    WalletTransaction.objects.filter(booking=old).update(created_at=timezone.now() - timedelta(days=1))
    (ngn,) = selectors.dashboard_totals()["today"]
    assert ngn["reversal_count"] == 1 and ngn["reversals"] == Decimal("300.00")
    assert ngn["payment_count"] == 0 and ngn["guest_payments"] == 0


def test_figures_at_each_currency_precision(client, finance_user, paid, host):
    tnd = paid("120.500", "12.050", "TND")
    TransactionService.process_refund(tnd, Decimal("20.250"), "partial")
    paid("150000", "15000", "UGX")
    rwf = TransactionService.create_wallet(host, "RWF")
    TransactionService.credit_wallet(rwf, Decimal("2500"))
    client.force_login(finance_user)
    response = client.get("/admin/operations/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    tnd_row, ugx_row = text(row(html, "TND")), text(row(html, "UGX"))
    assert "TND 120.500 (1)" in tnd_row and "TND 108.450" in tnd_row and "TND 12.050" in tnd_row
    # 20.250 refunded: commission returned 2.025 (in proportion), 18.225 clawed back from the host.
    assert "TND 20.250 (1)" in tnd_row and "TND 18.225" in tnd_row and "TND 2.025" in tnd_row
    assert "UGX 150,000 (1)" in ugx_row and "UGX 135,000" in ugx_row and "UGX 15,000" in ugx_row
    assert "RWF 2,500" in text(re.search(r'id="balances-RWF">(.*?)</tr>', html, re.S).group(1))
    body = text(response)
    for label in (
        "Guest payments received",
        "Paid out to hosts (booking payouts)",
        "Refunded to guests",
        "Clawed back from hosts",
        "Commission returned",
        "Reversals",
        "What these figures count",
    ):
        assert label in body, label
    # No figure at the columns' four decimals, and no float spelling.
    assert not re.search(r"\d\.\d{4}\b", body), re.findall(r"\S*\d\.\d{4}\b", body)
    assert "UGX 150,000.00" not in body and "UGX 0.00" not in body


def test_an_empty_day_says_so(client, finance_user, funded_wallet):
    client.force_login(finance_user)
    body = text(client.get("/admin/operations/dashboard/"))
    assert "No payments, refunds or reversals yet today." in body
    assert "NGN 10,000.00" in body  # the wallet balances, at NGN's precision


def test_dashboard_queries_do_not_grow_with_rows(client, finance_user, paid, django_assert_max_num_queries):
    for _ in range(3):
        paid("100.00", "10.00", "NGN")
    assert Payment.objects.count() == 3
    client.force_login(finance_user)
    client.get("/admin/operations/dashboard/")
    # 14, one for the Refunds card (all its figures in one), and six for the Reconciliation card:
    # the last reconciled day and the unresolved count per provider, and the unreconciled days
    # (the days each kind of record was active, and the days reports cover). Each is one
    # aggregate, whatever the number of rows.
    with django_assert_max_num_queries(21):
        assert client.get("/admin/operations/dashboard/").status_code == 200
