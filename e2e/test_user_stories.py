"""One test per user story of the operations portal (issue 5, §8), in a real browser."""

import csv
import io
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from finance.models import Wallet, WalletTransaction, Withdrawal

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_finance_completes_and_fails_withdrawals_and_the_wallet_shows_it(open_as, finance_user, pending_withdrawals):
    first, second, _ = pending_withdrawals
    page = open_as(finance_user, "/admin/operations/withdrawals/")
    shot(page, "withdrawals-queue")

    row = page.locator(f"#withdrawal-{first.pk}")
    row.get_by_role("button", name=f"Mark {first.reference} as paid").click()
    expect(row.locator(".ops-confirm")).to_contain_text("NGN 10,000.00 to NGN 8,500.00")
    shot(page, "withdrawal-confirm")
    row.get_by_role("button", name="Yes, mark as paid").click()
    expect(page.locator(f"#withdrawal-{first.pk}")).to_contain_text("Completed")
    expect(page.locator(".messages")).to_contain_text(f"Withdrawal {first.reference} completed")

    row = page.locator(f"#withdrawal-{second.pk}")
    row.get_by_role("button", name=f"Fail {second.reference}").click()
    row.get_by_role("button", name="Review failure…").click()  # no reason yet: refused
    expect(page.locator(f"#withdrawal-{second.pk} [role=alert]")).to_contain_text("Say why the withdrawal failed")
    page.get_by_label("Reason (required, the host is told)").fill("Account number rejected by the bank")
    row.get_by_role("button", name="Review failure…").click()
    confirmation = row.get_by_role("group", name=f"Confirm fail {second.reference}")
    expect(confirmation).to_contain_text("Account number rejected by the bank")
    expect(confirmation).to_contain_text("NGN 2,000.00 returns to")
    assert Withdrawal.objects.get(pk=second.pk).status == "pending"  # nothing moves before "Yes"
    confirmation.get_by_role("button", name="Yes, fail it").click()
    expect(page.locator(f"#withdrawal-{second.pk}")).to_contain_text("Failed")
    expect(page.locator(".messages")).to_contain_text(f"Withdrawal {second.reference} failed")
    shot(page, "withdrawals-after")

    wallet = Wallet.objects.get(pk=first.wallet_id)
    page.goto(f"/admin/operations/wallets/{wallet.pk}/")
    expect(page.locator("#wallet-balance")).to_have_text("NGN 8,500.00")
    expect(page.locator("#wallet-held")).to_have_text("NGN 1,000.00")
    expect(page.locator("#wallet-available")).to_have_text("NGN 7,500.00")
    shot(page, "wallet-page")


def tab_to(page, target, limit=200):
    """Press Tab until `target` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")


@pytest.mark.parametrize("viewport", [None, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_finance_completes_a_withdrawal_with_the_keyboard_only(open_as, finance_user, pending_withdrawals, viewport):
    first = pending_withdrawals[0]
    suffix = "phone" if viewport else "desktop"
    page = open_as(finance_user, "/admin/operations/withdrawals/", viewport=viewport)
    complete = page.get_by_role("button", name=f"Mark {first.reference} as paid")
    tab_to(page, complete)
    page.keyboard.press("Enter")  # opens the confirmation, which takes the focus
    confirmation = page.get_by_role("group", name=f"Confirm mark {first.reference} as paid")
    expect(confirmation).to_contain_text(f"Record that NGN 1,500.00 was paid to {first.wallet.user}'s GTBank •••• 4321")
    expect(confirmation).to_contain_text("from NGN 10,000.00 to NGN 8,500.00")
    yes = confirmation.get_by_role("button", name="Yes, mark as paid")
    expect(yes).to_be_focused()
    shot(page, f"withdrawal-confirm-keyboard-{suffix}")

    page.keyboard.press("Escape")  # cancels: the row is back, its Mark as paid button focused again
    expect(confirmation).to_have_count(0)
    expect(complete).to_be_focused()
    assert Withdrawal.objects.get(pk=first.pk).status == "pending"

    page.keyboard.press("Enter")
    expect(yes).to_be_focused()
    page.keyboard.press("Enter")  # confirms
    row = page.locator(f"#withdrawal-{first.pk}")
    expect(row).to_contain_text("Completed")
    expect(page.locator(".messages")).to_contain_text(f"Withdrawal {first.reference} completed: NGN 1,500.00")
    shot(page, f"withdrawal-done-keyboard-{suffix}")
    assert Withdrawal.objects.get(pk=first.pk).status == "completed"

    page.goto(f"/admin/operations/wallets/{first.wallet_id}/")
    expect(page.locator("#wallet-balance")).to_have_text("NGN 8,500.00")
    expect(page.locator("#wallet-held")).to_have_text("NGN 3,000.00")


def select_all_and_confirm(page, withdrawals):
    for w in withdrawals:
        page.get_by_label(f"Select {w.reference}").check()
    page.get_by_role("button", name="Send selected payouts…").click()
    expect(page.locator("#bulk-progress")).to_contain_text(f"Send {len(withdrawals)} payouts?")
    expect(page.get_by_role("button", name="Yes, send them")).to_be_focused()


def test_bulk_complete_shows_progress(open_as, finance_user, pending_withdrawals, start_job_worker):
    start_job_worker()  # the background worker that carries the batch out
    page = open_as(finance_user, "/admin/operations/withdrawals/")
    select_all_and_confirm(page, pending_withdrawals)
    shot(page, "withdrawals-bulk-confirm")
    page.get_by_role("button", name="Yes, send them").click()
    expect(page.locator("#bulk-progress progress")).to_be_visible()
    expect(page.locator("#bulk-progress")).to_contain_text(f"Bulk completion by {finance_user}: 3 of 3 done")
    expect(page.locator("#bulk-progress")).to_contain_text("Done: 3 of 3 completed")
    shot(page, "withdrawals-bulk")
    for w in pending_withdrawals:
        expect(page.locator(f"#withdrawal-{w.pk}")).to_contain_text("Completed")
    assert Withdrawal.objects.filter(status="completed").count() == 3


def test_a_colleague_follows_a_bulk_completion_whose_starter_closed_the_tab(
    open_as, finance_user, manager, pending_withdrawals, start_job_worker
):
    page = open_as(finance_user, "/admin/operations/withdrawals/")
    select_all_and_confirm(page, pending_withdrawals)
    page.get_by_role("button", name="Yes, send them").click()
    expect(page.locator("#bulk-progress")).to_contain_text(f"Bulk completion by {finance_user}: 0 of 3 done")
    expect(page.locator("#bulk-progress")).to_contain_text("Waiting for a worker")
    page.close()  # the starter leaves before anything is paid: the batch no longer needs the tab

    colleague = open_as(manager, "/admin/operations/withdrawals/")
    batch = colleague.get_by_role("region", name="Bulk completions")
    expect(batch).to_contain_text(f"Bulk completion by {finance_user}: 0 of 3 done")
    shot(colleague, "withdrawals-bulk-colleague-waiting")
    start_job_worker()
    expect(batch).to_contain_text("Done: 3 of 3 completed")
    for w in pending_withdrawals:  # the colleague's rows update as the job finishes them
        expect(colleague.locator(f"#withdrawal-{w.pk}")).to_contain_text("Completed")
    shot(colleague, "withdrawals-bulk-colleague-done")
    assert Withdrawal.objects.filter(status="completed").count() == 3

    back = open_as(finance_user, "/admin/operations/withdrawals/")  # the starter comes back
    expect(back.get_by_role("region", name="Bulk completions")).to_contain_text("Done: 3 of 3 completed")


def test_refund_a_booking(open_as, finance_user, paid_booking):
    page = open_as(finance_user, "/admin/operations/refunds/")
    page.get_by_label("Booking number, payment reference or guest username").fill(str(paid_booking.pk))
    page.get_by_role("button", name="Find booking").click()
    page.get_by_role("link", name=f"Booking #{paid_booking.pk}").click()
    expect(page.locator("#refundable")).to_have_text("NGN 1,000.00")
    page.get_by_label("Amount to refund").fill("300.00")
    page.get_by_label("Reason (required)").fill("Pool was closed")
    page.get_by_role("button", name="Review refund").click()
    expect(page.get_by_role("group", name="Confirm refund")).to_contain_text("Refund NGN 300.00")
    shot(page, "refund-confirm")
    page.get_by_role("button", name="Yes, refund").click()
    expect(page.locator(".messages")).to_contain_text("Refunded NGN 300.00")
    expect(page.locator("#refundable")).to_have_text("NGN 700.00")
    shot(page, "refunds")
    assert WalletTransaction.objects.filter(type="refund").count() == 1


def test_reversal_needs_a_second_approver(open_as, finance_user, approver, funded_wallet):
    credit = funded_wallet.transactions.get()
    page = open_as(finance_user, f"/admin/operations/wallets/{funded_wallet.pk}/")
    page.get_by_role("link", name=f"Reverse {credit.reference}").click()
    expect(page.locator("main")).to_contain_text("NGN 10,000.00 to NGN 0.00")
    page.get_by_label("Reason (required)").fill("Credited to the wrong host")
    page.get_by_role("button", name="Review reversal").click()
    expect(page.get_by_role("group", name="Confirm reversal request")).to_contain_text("Credited to the wrong host")
    page.get_by_role("button", name="Yes, request reversal").click()
    expect(page.locator(".messages")).to_contain_text("A second finance approver must approve it")
    expect(page.locator("#pending-approvals")).to_contain_text("You requested this")
    expect(page.locator("#pending-approvals").get_by_role("button", name="Approve")).to_have_count(0)
    shot(page, "approvals-requester")

    second = open_as(approver, "/admin/operations/approvals/")
    second.locator("#pending-approvals").get_by_role("button", name="Approve").click()
    confirmation = second.get_by_role("group", name="Confirm approval of request")
    expect(confirmation).to_contain_text(f"{funded_wallet.user}'s balance goes from NGN 10,000.00 to NGN 0.00")
    shot(second, "approvals-confirm")
    confirmation.get_by_role("button", name="Yes, approve").click()
    expect(second.locator(".messages")).to_contain_text("approved and carried out")
    shot(second, "approvals-approved")
    credit.refresh_from_db()
    assert credit.status == "reversed"


def test_manager_finds_actions_in_audit_log_and_exports_csv(open_as, manager, finance_user, pending_withdrawals):
    from finance import staff_actions

    staff_actions.complete_withdrawal(withdrawal=pending_withdrawals[0], actor=finance_user, idempotency_key="e2e-1")
    staff_actions.fail_withdrawal(
        withdrawal=pending_withdrawals[1], actor=finance_user, reason="=HYPERLINK(evil)", idempotency_key="e2e-2"
    )
    page = open_as(manager, "/admin/operations/audit/")
    page.get_by_label("Action").select_option("stayafrica.withdrawal.fail")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator("#results")).to_contain_text(pending_withdrawals[1].reference)
    assert "action=stayafrica.withdrawal.fail" in page.url
    shot(page, "audit-log")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.reader(io.StringIO(open(info.value.path(), encoding="utf-8-sig").read())))  # after the BOM
    assert rows[0][:3] == ["When", "Who", "Action"]
    assert len(rows) == 2 and rows[1][2] == "Fail withdrawal"  # the action's label, not its code
    assert "'=HYPERLINK(evil)" in rows[1]


def test_host_downloads_statement_and_cannot_open_another(open_as, host, other_host, paid_booking):
    page = open_as(host, "/statement/", viewport={"width": 390, "height": 844})
    expect(page.locator("[data-closing=NGN]")).to_have_text("NGN 850.00")
    shot(page, "statement-phone")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    text = open(info.value.path(), encoding="utf-8").read()
    assert "Opening balance" in text and "Booking payout" in text
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    assert open(info.value.path(), "rb").read(4) == b"%PDF"
    response = page.goto(f"/statement/{other_host.pk}/")
    assert response.status == 404
    # Staff pages are not a host's: they are sent back to their own statement.
    page.goto("/admin/operations/withdrawals/")
    assert page.url.endswith("/statement/")


def test_support_agent_is_refused_finance_pages(open_as, support_user):
    page = open_as(support_user, "/admin/operations/withdrawals/")
    # Refused, and back on support's own first page, with the reason.
    expect(page.locator(".messages")).to_contain_text("permission")
    assert page.url.endswith("/admin/operations/broadcasts/")
    expect(page.get_by_role("navigation").get_by_text("Withdrawals")).to_have_count(0)
    shot(page, "support-refused")


def test_finance_dashboard_and_ledger_health(open_as, finance_user, pending_withdrawals):
    page = open_as(finance_user, "/admin/operations/dashboard/")
    expect(page.locator("main")).to_contain_text("Totals per currency")
    page.get_by_role("button", name="Check the ledger now").click()
    expect(page.locator("#ledger-health")).to_contain_text("ledger checks pass")
    shot(page, "dashboard")
    page.goto("/admin/operations/wallets/")
    page.get_by_label("Currency").select_option("NGN")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    shot(page, "wallets")
    assert Decimal(1)
