"""Reconciliation in the browser (issue 18): finance uploads Paystack's report for today, sees the
counts and totals of each state, resolves each difference with a note; the unresolved count
reaches 0, the audit log shows the resolutions, the export lists the unresolved lines before
and none after, and the dashboard shows the day as reconciled.

The CSV is built here from ledger data made through the services (payments applied). Paystack's
report covers payments only (finance/reconciliation/mappings.py), so payouts and refunds are not
in this story."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from finance.services import TransactionService

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def paystack_payments(host, guest, make_booking, make_payment):
    """Four Paystack payments of NGN 1,000.00 the ledger applied today."""
    payments = []
    for _ in range(4):
        booking = make_booking(host, guest, total="1000.00", commission="150.00")
        payment = make_payment(booking, provider="paystack")
        TransactionService.process_booking_payment(booking, payment)
        payment.refresh_from_db()
        payments.append(payment)
    return payments


def paystack_csv(payments) -> bytes:
    """Paystack's transactions export: amounts in kobo. One matched, one whose amount differs,
    one whose currency differs, one the ledger lacks; the fourth payment is left out."""
    paid_at = (timezone.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rows = [
        (payments[0].reference, "4100001", "100000", "NGN"),
        (payments[1].reference, "4100002", "95000", "NGN"),
        (payments[2].reference, "4100003", "100000", "USD"),
        ("T_NOT_OURS_7781", "4100004", "30000", "NGN"),
    ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "reference", "amount", "currency", "status", "paid_at"])
    for reference, provider_id, amount, currency in rows:
        writer.writerow([provider_id, reference, amount, currency, "success", paid_at])
    return out.getvalue().encode()


def download_rows(page, link_name) -> list[dict]:
    with page.expect_download() as download:
        page.get_by_role("link", name=link_name).click()
    text = open(download.value.path(), encoding="utf-8-sig").read()
    return list(csv.DictReader(io.StringIO(text)))


def test_finance_uploads_a_report_and_resolves_each_difference(open_as, finance_user, manager, paystack_payments):
    page = open_as(finance_user, "/admin/operations/reconciliation/")
    expect(page.get_by_text("No provider report has been read yet.")).to_be_visible()
    page.get_by_role("link", name="Upload a report").click()
    page.get_by_label("Provider").select_option("paystack")
    page.get_by_label("Report (CSV)").set_input_files(
        {"name": "paystack-today.csv", "mimeType": "text/csv", "buffer": paystack_csv(paystack_payments)}
    )
    shots(page, "reconciliation-upload")
    page.get_by_role("button", name="Upload and match").click()

    today = timezone.now().date().isoformat()
    expect(page).to_have_url(re.compile(rf"/reconciliation/paystack/{today}/$"))
    summary = page.locator("#day-summary")
    expect(summary.locator("#state-matched")).to_contain_text("1")
    expect(summary.locator("#state-matched")).to_contain_text("NGN 1,000.00")
    expect(summary.locator("#state-differs")).to_contain_text("NGN 950.00 · USD 1,000.00")
    expect(summary.locator("#state-missing_in_ledger")).to_contain_text("NGN 300.00")
    expect(summary.locator("#state-missing_at_provider")).to_contain_text("NGN 1,000.00")
    expect(page.locator("#unresolved-count")).to_contain_text("Unresolved: 4")
    shots(page, "reconciliation-day")

    before = download_rows(page, "Export unresolved (CSV)")
    assert len(before) == 4

    for n in range(4):
        page.get_by_role("button", name=re.compile("^Resolve ")).first.click()
        page.get_by_label(re.compile("^Note")).fill(f"Checked with Paystack support, ticket PS-{n + 1}.")
        page.get_by_role("button", name="Review…").click()
        expect(page.get_by_role("group", name=re.compile("^Confirm resolve"))).to_be_visible()
        if n == 0:
            shots(page, "reconciliation-resolve-confirm")
        page.get_by_role("button", name="Yes, resolve").click()
        expect(page.locator("#unresolved-count")).to_contain_text(f"Unresolved: {3 - n}")
    expect(page.get_by_text(f"Resolved by {finance_user}").first).to_be_visible()
    shots(page, "reconciliation-resolved")
    assert download_rows(page, "Export unresolved (CSV)") == []

    # A manager reads the audit log: each resolution with its note.
    audit = open_as(manager, "/admin/operations/audit/")
    for n in range(1, 5):
        expect(audit.get_by_text(f"ticket PS-{n}.").first).to_be_visible()
    shots(audit, "reconciliation-audit")

    page.goto("/admin/operations/dashboard/")
    card = page.locator("#reconciliation-card")
    expect(card.locator(".ops-big")).to_have_text("0")
    expect(card).to_contain_text("differences are unresolved.")
    expect(card.get_by_role("alert")).to_have_count(0)  # no provider day left unreconciled
    expect(card).to_contain_text(f"Paystack: last reconciled day {today}")
    shots(page, "reconciliation-dashboard")
