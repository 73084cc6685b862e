"""Issue 16 §4: the demo data a team would recognise, seen in the portal by its staff.

One story, so the demo is seeded once (live_server flushes every table between tests).
"""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from playwright.sync_api import expect

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_demo_data_fills_every_list_a_finance_team_opens(open_as, settings):
    settings.DEBUG = True  # seed_demo runs only in development
    call_command("seed_demo", stdout=io.StringIO())
    users = get_user_model().objects
    finance, manager = users.get(username="finance"), users.get(username="manager")

    # The transactions list: many pages of payouts, refunds and withdrawals in seven currencies.
    page = open_as(finance, "/admin/operations/transactions/")
    rows = page.locator("#results tbody tr")
    expect(rows.first).to_be_visible()
    expect(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Next →")).to_be_visible()
    shots(page, "demo-transactions")
    page.goto("/admin/operations/transactions/?page=40")
    expect(page.locator(".ops-pagination")).to_contain_text("Page 40")
    expect(rows.first).to_be_visible()
    for currency in ("NGN", "KES", "ZAR", "GHS", "UGX", "RWF", "TND"):
        page.goto(f"/admin/operations/transactions/?currency={currency}")
        expect(rows.first.locator('td[data-label="Currency"]')).to_have_text(currency)

    # The withdrawal queue has rows in its pending, completed and failed tabs.
    page.goto("/admin/operations/withdrawals/")
    tabs = page.get_by_role("navigation", name="Withdrawals by status")
    withdrawals = page.locator("#results tbody tr")
    expect(withdrawals.first).to_be_visible()
    shots(page, "demo-withdrawals-pending")
    for tab in ("Completed", "Failed"):
        tabs.get_by_role("link", name=tab).click()
        expect(tabs.get_by_role("link", name=tab)).to_have_attribute("aria-current", "page")
        expect(withdrawals.first).to_contain_text(tab)
    shots(page, "demo-withdrawals-failed")

    # The webhook inbox opens on the events that need attention: flagged and rejected ones.
    page.goto("/admin/operations/webhooks/")
    events = page.locator("#results tbody tr")
    expect(events.first).to_be_visible()
    expect(page.locator("#results")).to_contain_text("differs from the payment")
    expect(page.locator("#results")).to_contain_text("No payment matches this event's reference")
    expect(page.locator("#results")).to_contain_text("Rejected")
    shots(page, "demo-webhooks")

    # Approvals: requests waiting for a second approver, and decided ones.
    page.goto("/admin/operations/approvals/")
    expect(page.locator("#pending-approvals tbody tr").first).to_be_visible()
    decided = page.locator("#decided-approvals")
    expect(decided).to_contain_text("Approved")
    expect(decided).to_contain_text("Rejected")
    shots(page, "demo-approvals")

    # The manager reads what staff did in the audit log.
    audit = open_as(manager, "/admin/operations/audit/")
    expect(audit.locator("#results tbody tr").first).to_be_visible()
    expect(audit.locator("#results")).to_contain_text("approver")
    shots(audit, "demo-audit-log")
