"""What hosts owe the platform (issue 18, part 2) on the portal's pages: the wallet page's "Owed by
the host" panel, the wallet list's "Owes the platform" filter, the dashboard's "Owed by hosts"
card, and the host's statement (HTML, CSV, PDF)."""

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from finance.ledger_checks import run_ledger_checks
from finance.models import HostReceivable, ReceivableRecovery, Wallet
from finance.services import TransactionService
from portal.selectors import host_statement

pytestmark = pytest.mark.django_db

MINUS = "\u2212"
A4_WIDTH, A4_HEIGHT = 595.28, 841.89  # points


def login(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def owing_host(host, guest, make_booking, make_payment, bank_account):
    """The issue's story: a host is paid 7,200.00 for a booking of 8,000.00 (800.00 commission)
    and withdraws it; the guest is then refunded in full, which takes the host's wallet to
    −7,200.00 (their share). Their next booking payout, 3,000.00, repays part of it: they
    still owe 4,200.00."""
    first = make_booking(host, guest, total="8000.00", commission="800.00")
    TransactionService.process_booking_payment(first, make_payment(first))
    wallet = Wallet.objects.get(user=host, currency="NGN")
    withdrawal = TransactionService.initiate_withdrawal(wallet, bank_account, Decimal("7200.00"))
    TransactionService.complete_withdrawal(withdrawal)
    refund = TransactionService.process_refund(first, Decimal("8000.00"), "The roof leaked")
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("-7200.00")
    second = make_booking(host, guest, total="3000.00", commission="0.00")
    payout = TransactionService.process_booking_payment(second, make_payment(second))
    wallet.refresh_from_db()
    assert wallet.available_balance == Decimal("-4200.00")
    return {"wallet": wallet, "refund": refund, "payout": payout, "booking": first}


# --- the wallet page -------------------------------------------------------------------------


def test_the_wallet_page_shows_the_negative_balance_and_what_the_host_owes(client, finance_user, owing_host):
    wallet, refund, payout = owing_host["wallet"], owing_host["refund"], owing_host["payout"]
    login(client, finance_user)
    page = client.get(f"/admin/operations/wallets/{wallet.pk}/").content.decode()
    balance = re.search(r'id="wallet-balance">(.*?)</dd>', page, re.S).group(1)
    available = re.search(r'id="wallet-available">(.*?)</dd>', page, re.S).group(1)
    for figure in (balance, available):
        assert f'class="ops-negative">{MINUS}NGN 4,200.00' in figure  # red, and signed before the code
    panel = re.search(r'<section[^>]*id="owed".*?</section>', page, re.S).group(0)
    assert "Owed by the host" in panel
    assert re.search(r'id="owed-total">NGN 4,200.00<', panel)
    # The open receivable: the refund linked to its page, its booking, owed, recovered, still owed.
    assert f'href="/admin/operations/transactions/{refund.reference}/"' in panel
    assert f"#{owing_host['booking'].pk}" in panel
    for figure in ("NGN 7,200.00", "NGN 3,000.00", "NGN 4,200.00"):
        assert figure in panel, figure
    # The recovery: which payout, how much.
    recoveries = re.search(r'id="owed-recoveries".*?</table>', panel, re.S).group(0)
    assert "Booking payout" in recoveries and payout.reference in recoveries and "NGN 3,000.00" in recoveries
    assert "next booking payouts recover it first" in panel
    assert "no withdrawal is possible until it is recovered" in panel


def test_a_recovered_debt_stays_on_the_page_as_history(
    client, finance_user, owing_host, guest, make_booking, make_payment
):
    wallet = owing_host["wallet"]
    more = make_booking(wallet.user, guest, total="5000.00", commission="0.00")
    TransactionService.process_booking_payment(more, make_payment(more))  # repays the last 4,200.00
    login(client, finance_user)
    page = client.get(f"/admin/operations/wallets/{wallet.pk}/").content.decode()
    assert "ops-negative" not in page  # 800.00 available again
    assert 'id="wallet-available">NGN 800.00' in page
    panel = re.search(r'<section[^>]*id="owed".*?</section>', page, re.S).group(0)
    assert "everything the host owed has been recovered" in panel
    assert "NGN 4,200.00" in panel and "NGN 3,000.00" in panel  # both recoveries listed


def test_a_wallet_that_never_owed_anything_has_no_panel(client, finance_user, funded_wallet):
    login(client, finance_user)
    page = client.get(f"/admin/operations/wallets/{funded_wallet.pk}/").content.decode()
    assert "Owed by the host" not in page and "ops-negative" not in page
    assert 'id="wallet-balance">NGN 10,000.00' in page


# --- the wallet list -------------------------------------------------------------------------


def test_the_wallet_list_filters_wallets_that_owe_the_platform(client, finance_user, owing_host, other_host):
    TransactionService.create_wallet(other_host, "NGN")
    login(client, finance_user)
    everyone = client.get("/admin/operations/wallets/").content.decode()
    assert "Owes the platform" in everyone
    assert other_host.username in everyone and f"{MINUS}NGN 4,200.00" in everyone
    owing = client.get("/admin/operations/wallets/?owes=yes").content.decode()
    assert owing_host["wallet"].user.username in owing and other_host.username not in owing
    assert f"{MINUS}NGN 4,200.00" in owing
    not_owing = client.get("/admin/operations/wallets/?owes=no").content.decode()
    assert other_host.username in not_owing and owing_host["wallet"].user.username not in not_owing


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_card_totals_what_hosts_owe_per_currency(client, finance_user, owing_host):
    login(client, finance_user)
    page = client.get("/admin/operations/dashboard/").content.decode()
    card = re.search(r'<section[^>]*id="owed-card".*?</section>', page, re.S).group(0)
    assert "Owed by hosts" in card
    line = re.search(r'id="owed-NGN">(.*?)</li>', card, re.S).group(1)
    assert "NGN 4,200.00" in line and "by 1 host" in line
    assert 'href="/admin/operations/wallets/?owes=yes&amp;currency=NGN"' in line
    # The link lists exactly the wallets that owe.
    listed = client.get("/admin/operations/wallets/?owes=yes&currency=NGN").content.decode()
    assert owing_host["wallet"].user.username in listed


def test_the_dashboard_card_says_when_nobody_owes_anything(client, finance_user, funded_wallet):
    login(client, finance_user)
    page = client.get("/admin/operations/dashboard/").content.decode()
    card = re.search(r'<section[^>]*id="owed-card".*?</section>', page, re.S).group(0)
    assert "No host owes anything" in card and "ops-card-alert" not in card


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["finance_user", "approver", "manager"])
def test_finance_approvers_and_managers_see_what_hosts_owe(client, request, who, owing_host):
    login(client, request.getfixturevalue(who))
    wallet_page = client.get(f"/admin/operations/wallets/{owing_host['wallet'].pk}/")
    assert wallet_page.status_code == 200 and "Owed by the host" in wallet_page.content.decode()
    dashboard = client.get("/admin/operations/dashboard/")
    assert dashboard.status_code == 200 and "Owed by hosts" in dashboard.content.decode()


@pytest.mark.parametrize("who", ["support_user", "host"])
def test_support_and_hosts_never_see_the_wallet_page(client, request, who, owing_host):
    login(client, request.getfixturevalue(who))
    assert client.get(f"/admin/operations/wallets/{owing_host['wallet'].pk}/").status_code == 302


# --- the host's statement --------------------------------------------------------------------


def test_the_statement_says_what_the_host_owes_and_which_lines_did_it(client, owing_host):
    host, refund, payout = owing_host["wallet"].user, owing_host["refund"], owing_host["payout"]
    login(client, host)
    page = client.get("/statement/").content.decode()
    # Today: nothing to withdraw, and what is owed, with why and how it is repaid.
    assert re.search(r'data-available="NGN">NGN 0.00<', page)
    assert re.search(r'data-owed="NGN">NGN 4,200.00<', page)
    assert "Your next booking payouts repay this first" in page
    # The summary box: owed at the period's end, under a closing balance below zero.
    assert re.search(r"Owed to StayAfrica on [^<]*</th><td[^>]*>NGN 4,200.00<", page)
    assert re.search(r'data-summary="closing">NGN -4,200.00<', page)
    # The refund line says how far below zero it took the wallet; the payout what it repaid.
    refund_row = re.search(rf"<tr class=\"movement\">(?:(?!</tr>).)*{refund.reference}.*?</tr>", page, re.S).group(0)
    assert "Your wallet went below zero by NGN 7,200.00" in refund_row
    payout_row = re.search(rf"<tr class=\"movement\">(?:(?!</tr>).)*{payout.reference}.*?</tr>", page, re.S).group(0)
    assert "NGN 3,000.00 of this payout repaid what you owed" in payout_row


def test_the_statement_summary_still_adds_up(owing_host):
    today = timezone.localdate()
    (ngn,) = host_statement(owing_host["wallet"].user, today - timedelta(days=1), today)
    summary = ngn.summary
    assert summary.payouts == Decimal("11000.00") and summary.commission == Decimal("0.00")  # 800 kept, 800 returned
    assert summary.refunds == Decimal("-8000.00") and summary.withdrawals == Decimal("-7200.00")
    assert summary.closing == ngn.closing == ngn.lines[-1].balance == Decimal("-4200.00")
    assert summary.owed == Decimal("4200.00")  # not a movement: what the closing balance is owed as
    assert summary.rounded().owed == Decimal("4200.00")
    assert all(check.ok for check in run_ledger_checks())  # negative only by what is recorded as owed


def test_a_period_that_ended_before_the_refund_owes_nothing(client, owing_host):
    HostReceivable.objects.update(created_at=timezone.now() + timedelta(days=3))  # the refund: later
    ReceivableRecovery.objects.update(created_at=timezone.now() + timedelta(days=3))
    today = timezone.localdate()
    (ngn,) = host_statement(owing_host["wallet"].user, today - timedelta(days=1), today)
    assert ngn.summary.owed == 0
    login(client, owing_host["wallet"].user)
    page = client.get("/statement/").content.decode()
    assert "Owed to StayAfrica on" not in page


def test_the_statement_csv_has_the_notes_and_what_is_owed(client, owing_host):
    login(client, owing_host["wallet"].user)
    body = b"".join(client.get("/statement/?format=csv").streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    by_reference = {row["Reference"]: row for row in rows if row["Reference"]}
    refund, payout = by_reference[owing_host["refund"].reference], by_reference[owing_host["payout"].reference]
    assert refund["Amount"] == "-7200.00" and "went below zero by NGN 7,200.00" in refund["Note"]
    assert payout["Amount"] == "3000.00" and payout["Note"] == "NGN 3,000.00 of this payout repaid what you owed."
    owed = [row for row in rows if row["Description"] == "Owed to StayAfrica"]
    assert len(owed) == 1 and owed[0]["Balance"] == "4200.00"
    closing = [row for row in rows if row["Description"] == "Closing balance"]
    assert closing[0]["Balance"] == "-4200.00"


def test_the_statement_pdf_says_what_is_owed_and_fits_a4(client, owing_host):
    import pdfplumber

    login(client, owing_host["wallet"].user)
    response = client.get("/statement/?format=pdf")
    assert response.status_code == 200
    with pdfplumber.open(io.BytesIO(response.content)) as pdf:
        pages = [(page.width, page.height, page.extract_words(), page.extract_text()) for page in pdf.pages]
        # The Details column alone (its words wrap beside the Type column's).
        first = pdf.pages[0]
        heading = {w["text"]: w for w in first.extract_words()}
        details = first.within_bbox((heading["Details"]["x0"], 0, heading["Type"]["x0"], first.height)).extract_text()
    for width, height, words, _text in pages:
        assert (round(width, 2), round(height, 2)) == (A4_WIDTH, A4_HEIGHT)
        for word in words:
            assert 0 <= word["x0"] and word["x1"] <= A4_WIDTH, word["text"]
    text = " ".join(" ".join(page[3].split()) for page in pages)
    assert "Owed to StayAfrica on" in text and "NGN 4,200.00" in text  # the summary box
    details = " ".join(details.split())
    assert "Your wallet went below zero by NGN 7,200.00" in details
    assert "NGN 3,000.00 of this payout repaid what you owed" in details
