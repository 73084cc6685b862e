"""Stories: a manager reads the audit log (filters as you type, a reversed range, object links,
sign-in failures, refusals and exports as readable labels); a finance user's CSV opens cleanly."""

import csv
import io
import re
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)

ACCENTED = ("Adéwálé", "Òkè")
OWNER = " ".join(ACCENTED)
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def reversed_credit(finance_user, approver, funded_wallet):
    """A credit reversed with four eyes: its reversal is in the audit log against the credit."""
    from finance import staff_actions

    credit = funded_wallet.transactions.filter(type="credit").latest("id")
    outcome = staff_actions.request_reversal(txn=credit, reason="Paid twice", actor=finance_user, idempotency_key="r1")
    staff_actions.approve_request(request=outcome.approval, actor=approver, note="ok")
    return credit


def test_manager_reads_the_audit_log(open_as, live, browser, manager, finance_user, support_user, reversed_credit):
    # A failed sign-in, a refusal and an export happen first.
    stranger = browser.new_context(base_url=live)
    login = stranger.new_page()
    login.goto("/admin/login/")
    login.get_by_label("Username").fill("mallory")
    login.get_by_label("Password").fill("guess-1")
    login.get_by_role("button", name="Sign in").click()
    expect(login.locator("body")).to_contain_text("didn't match")
    stranger.close()
    refused = open_as(support_user, "/admin/operations/withdrawals/")
    expect(refused.locator("body")).to_contain_text("Sorry, you do not have permission")

    page = open_as(manager, "/admin/operations/audit/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    info.value.path()  # the whole file has arrived: the export is recorded
    page.reload()
    results = page.locator("#results")
    for label in ("Failed sign-in", "Access denied", "Export", "Reversal", "Sign-in"):
        expect(results).to_contain_text(label)
    expect(results).to_contain_text("username tried: mallory")
    expect(results).to_contain_text("/admin/operations/withdrawals/")
    expect(results).not_to_contain_text("stayafrica.")
    shot(page, "audit-log-everything")

    # Typing a username filters without a button.
    page.get_by_label("User").press_sequentially(finance_user.username, delay=30)
    expect(page).to_have_url(re.compile(rf"user={finance_user.username}&"))
    expect(results.locator("tbody tr")).not_to_have_count(0)
    for row in results.locator("tbody tr").all():
        expect(row).to_contain_text(finance_user.username)
    expect(results).not_to_contain_text("Failed sign-in")
    shot(page, "audit-log-typed")

    # A reversed date range says so.
    page.get_by_label("From", exact=True).fill("2026-11-30")
    page.get_by_label("To", exact=True).fill("2026-11-01")
    expect(page.locator("#filter-errors")).to_have_text("The start date is after the end date.")
    shot(page, "audit-log-reversed-range")
    page.get_by_label("To", exact=True).fill("2099-12-31")
    expect(page.locator("#filter-errors")).to_be_empty()

    # The reversal's object is the credit: its reference opens the transaction page.
    page.get_by_label("User").fill("")
    page.get_by_label("Action").select_option("stayafrica.reversal")
    link = results.get_by_role("link", name=reversed_credit.reference)
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("h1")).to_contain_text(f"Transaction {reversed_credit.reference}")


def test_audit_log_on_a_phone(open_as, manager, finance_user, reversed_credit):
    page = open_as(
        manager,
        "/admin/operations/audit/?date_from=2026-11-30&date_to=2026-11-01",
        viewport={
            "width": 390,
            "height": 844,
        },
    )
    expect(page.locator("#filter-errors")).to_have_text("The start date is after the end date.")
    shot(page, "audit-log-phone")


@pytest.fixture
def accented_wallets(make_user):
    from finance.services import TransactionService

    owner = make_user("host", first_name=ACCENTED[0], last_name=ACCENTED[1])
    for currency, amount in (("NGN", "15000.50"), ("TND", "1500.125"), ("UGX", "150000")):
        wallet = TransactionService.create_wallet(owner, currency)
        TransactionService.credit_wallet(wallet, Decimal(amount))
    return owner


def test_finance_user_downloads_the_transactions_csv(open_as, finance_user, accented_wallets):
    page = open_as(finance_user, "/admin/operations/transactions/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename == f"transactions-{timezone.localdate().isoformat()}.csv"
    body = open(download.path(), "rb").read()
    assert body.startswith(BOM)
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    amounts = {row["Currency"]: row["Amount"] for row in rows if row["Owner"] == OWNER}
    assert amounts == {"NGN": "15000.50", "TND": "1500.125", "UGX": "150000"}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}", row["Date"]) for row in rows)
    assert {row["Type"] for row in rows} == {"Credit"} and {row["Status"] for row in rows} == {"Completed"}
    shot(page, "transactions-export")
