"""Issue 15: the transactions and wallets lists a finance team can search, in a real browser."""

import re
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from finance.models import WalletTransaction
from finance.services import TransactionService

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def ledger(make_user):
    """Amara Okafor (NGN: this month and last month), Kofi Mensah (GHS, this month)."""
    amara = make_user("host", first_name="Amara", last_name="Okafor")
    kofi = make_user("host", first_name="Kofi", last_name="Mensah", country="GH")
    ngn = TransactionService.create_wallet(amara, "NGN")
    ghs = TransactionService.create_wallet(kofi, "GHS")
    recent = TransactionService.credit_wallet(ngn, Decimal("2500.00"), description="Booking payout")
    older = TransactionService.credit_wallet(ngn, Decimal("1200.00"), description="Booking payout")
    cedi = TransactionService.credit_wallet(ghs, Decimal("800.00"), description="Booking payout")
    today = timezone.localdate()
    last_month = today.replace(day=1) - timedelta(days=1)
    noon = time(12)
    zone = timezone.get_current_timezone()
    WalletTransaction.objects.filter(pk=older.pk).update(created_at=datetime.combine(last_month, noon, tzinfo=zone))
    WalletTransaction.objects.filter(pk__in=[recent.pk, cedi.pk]).update(
        created_at=datetime.combine(today, time(9), tzinfo=zone)
    )
    return {"ngn": ngn, "ghs": ghs, "recent": recent, "older": older, "cedi": cedi}


def test_finance_searches_transactions_by_reference_owner_currency_and_period(open_as, finance_user, ledger):
    recent, older, cedi = ledger["recent"], ledger["older"], ledger["cedi"]
    page = open_as(finance_user, "/admin/operations/transactions/")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(3)
    # Owner and currency columns.
    first_row = rows.filter(has_text=cedi.reference)
    expect(first_row.locator('td[data-label="Owner"]')).to_have_text("Kofi Mensah")
    expect(first_row.locator('td[data-label="Currency"]')).to_have_text("GHS")
    shot(page, "transactions-list")

    # A piece of a reference, typed in lower case, filters as it is typed.
    search = page.get_by_label("Reference")
    search.fill(recent.reference[4:10].lower())
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(recent.reference)
    expect(page).to_have_url(re.compile(rf"\?reference={recent.reference[4:10].lower()}&"))  # a link to share
    search.fill("zzzz")
    expect(page.locator(".ops-empty")).to_contain_text("Nothing matches these filters")
    expect(page.locator(".ops-empty")).to_contain_text("Reference: “zzzz”")
    shot(page, "transactions-nothing-matches")
    page.locator(".ops-empty").get_by_role("link", name="Clear filters").click()
    expect(rows).to_have_count(3)

    # The owner's name.
    page.get_by_label("Owner").fill("Amara Oka")
    expect(rows).to_have_count(2)
    expect(page.locator("#results")).not_to_contain_text("Kofi Mensah")
    page.get_by_label("Owner").fill("")
    expect(rows).to_have_count(3)

    # Currency.
    page.get_by_label("Currency").select_option("GHS")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(cedi.reference)
    page.get_by_label("Currency").select_option("")
    expect(rows).to_have_count(3)

    # Date presets: this month, last month (the dates they mean are shown under the choice).
    page.get_by_label("Period").select_option(label="This month")
    expect(rows).to_have_count(2)
    first, last = _month(timezone.localdate())
    expect(page.locator("#id_period-feedback")).to_have_text(f"{first:%-d %b %Y} – {last:%-d %b %Y}")
    page.get_by_label("Period").select_option(label="Last month")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(older.reference)
    shot(page, "transactions-last-month")

    # From after To says so, under From.
    page.get_by_label("Period").select_option("")
    page.get_by_label("From", exact=True).fill("2025-02-01")
    page.get_by_label("To", exact=True).fill("2025-01-01")
    expect(page.locator("#id_date_from-feedback")).to_contain_text("“From” (2025-02-01) is after “To” (2025-01-01).")
    expect(page.locator(".ops-empty")).to_contain_text("The filters need a change")
    shot(page, "transactions-date-error")

    # Clicking a reference opens the transaction's page.
    page.goto("/admin/operations/transactions/")
    page.get_by_role("link", name=older.reference, exact=True).click()
    expect(page).to_have_url(f"{page.url.split('/admin/')[0]}/admin/operations/transactions/{older.reference}/")
    expect(page.locator("main")).to_contain_text(older.reference)


def _month(day):
    first = day.replace(day=1)
    return first, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def test_wallet_balances_are_filtered_and_sorted_within_one_currency(open_as, finance_user, ledger, make_user):
    # Another naira wallet, poorer, and a cedi wallet whose number is larger than any naira balance.
    poorer = TransactionService.create_wallet(make_user("host", first_name="Chidi", last_name="Eze"), "NGN")
    TransactionService.credit_wallet(poorer, Decimal("300.00"))
    rich = TransactionService.create_wallet(make_user("host", first_name="Ama", last_name="Asante"), "GHS")
    TransactionService.credit_wallet(rich, Decimal("9000.00"))

    page = open_as(finance_user, "/admin/operations/wallets/")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(4)

    # A balance bound without a currency: the form says to choose one.
    page.get_by_label("Balance from").fill("1000")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#id_balance_min-feedback")).to_have_text("Choose a currency to filter by balance.")
    expect(rows).to_have_count(0)
    shot(page, "wallets-balance-needs-currency")

    # With a currency, the inputs say which, and the bound applies.
    page.get_by_label("Currency").select_option("NGN")
    expect(page.locator("#id_balance_min-label")).to_have_text("Balance from (NGN)")
    expect(page.locator("#id_balance_min-feedback")).to_have_text("")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Amara Okafor")
    expect(rows.first).to_contain_text("NGN 3,700.00")

    # Sorting by balance keeps each currency's wallets together, and says why.
    page.goto("/admin/operations/wallets/")
    page.locator("#results thead").get_by_role("link", name="Balance").click()
    expect(page.locator("#table-hint")).to_contain_text("Sorted by currency first, then by balance")
    currencies = page.locator('#results td[data-label="Currency"]').all_inner_texts()
    assert currencies == ["GHS", "GHS", "NGN", "NGN"], currencies
    balances = page.locator('#results td[data-label="Balance"]').all_inner_texts()
    assert balances == ["GHS 800.00", "GHS 9,000.00", "NGN 300.00", "NGN 3,700.00"], balances
    shot(page, "wallets-sorted-by-balance")

    phone = open_as(
        finance_user, "/admin/operations/wallets/?currency=GHS&sort=-balance&balance_min=500", viewport=PHONE
    )
    expect(phone.locator("#results tbody tr")).to_have_count(2)
    shot(phone, "wallets-balance-390")
    phone.goto("/admin/operations/transactions/?owner=Amara")
    expect(phone.locator("#results tbody tr")).to_have_count(2)
    shot(phone, "transactions-list-390")
