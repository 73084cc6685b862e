"""Roles and sessions (issue 16, §1): an htmx action after the session expired signs in and comes
back; a refused htmx action says so in place; each role sees only the controls it may use; staff
land on their Operations page after signing in, hosts on their statement."""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pass-12345"  # conftest.make_user's password
QUEUE = "/admin/operations/withdrawals/"
CHANGING = "form[method=post], [hx-post], input[name=ids], #bulk-complete"
ACTION_BUTTONS = re.compile(
    r"^(Send payout|Mark .* as paid|Send selected payouts…|Fail…|Reverse|Refund|Approve…|Reject…|Replay…|Retry…"
    r"|Review refund)"
)


def sign_in(page, username):
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_an_action_after_the_session_expired_signs_in_and_returns_to_the_queue(
    open_as, finance_user, pending_withdrawals
):
    from django.contrib.sessions.models import Session

    page = open_as(finance_user, QUEUE + "?sort=amount")
    first = pending_withdrawals[0]
    Session.objects.all().delete()  # the session expires while the page is open

    page.get_by_role("button", name=f"Mark {first.reference} as paid").click()

    expect(page).to_have_url(re.compile(r"/admin/login/\?next=%2Fadmin%2Foperations%2Fwithdrawals%2F%3Fsort%3Damount$"))
    expect(page.locator(f"#withdrawal-{first.pk}")).to_have_count(0)  # no sign-in form inside a row
    shots(page, "roles-session-expired-sign-in")
    sign_in(page, finance_user.username)
    expect(page).to_have_url(re.compile(r"/admin/operations/withdrawals/\?sort=amount$"))
    expect(page.get_by_role("button", name=f"Mark {first.reference} as paid")).to_be_visible()


def test_an_action_no_longer_permitted_says_so_in_the_row(open_as, finance_user, pending_withdrawals):
    from django.contrib.auth.models import Group

    page = open_as(finance_user, QUEUE)
    first = pending_withdrawals[0]
    finance_user.groups.set([Group.objects.get(name="Manager")])  # the role changes while the page is open

    page.get_by_role("button", name=f"Mark {first.reference} as paid").click()

    row = page.locator(f"#withdrawal-{first.pk}")
    expect(row.get_by_role("alert")).to_have_text("You don't have permission to complete withdrawals.")
    expect(page.get_by_text("Search all pages")).to_have_count(0)
    expect(page.locator("main table")).to_have_count(1)  # no page nested inside the queue
    shots(page, "roles-refused-in-row")


READABLE = [
    ("/admin/operations/dashboard/", "Finance dashboard"),
    ("/admin/operations/wallets/", "Wallets"),
    ("/admin/operations/transactions/", "Transactions"),
    (QUEUE, "Withdrawal queue"),
    (QUEUE + "processing/", "Withdrawal queue"),
    (QUEUE + "completed/", "Withdrawal queue"),
    (QUEUE + "failed/", "Withdrawal queue"),
    ("/admin/operations/refunds/", "Refunds"),
    ("/admin/operations/approvals/", "Approvals"),
    ("/admin/operations/webhooks/", "Webhook inbox"),
    ("/admin/operations/jobs/", "Background jobs"),
    ("/admin/operations/undeliverable/", "Undeliverable messages"),
    ("/admin/operations/audit/", "Audit log"),
]


def assert_nothing_to_change(page):
    expect(page.locator(f"main {CHANGING.replace(', ', ', main ')}")).to_have_count(0)
    expect(page.locator("main").get_by_role("button", name=ACTION_BUTTONS)).to_have_count(0)


def test_a_manager_reads_every_operations_page_with_nothing_to_change(
    open_as, manager, finance_user, pending_withdrawals, paid_booking
):
    from finance import staff_actions

    staff_actions.refund_booking(
        booking=paid_booking, amount=Decimal("100.00"), reason="Late check-in", actor=finance_user, idempotency_key="r1"
    )
    page = open_as(manager, "/admin/")
    expect(page).to_have_url(re.compile(r"/admin/operations/dashboard/$"))
    for path, title in READABLE:
        page.goto(path)
        expect(page.locator("h1")).to_contain_text(title)
        assert_nothing_to_change(page)

    page.goto(QUEUE)
    for w in pending_withdrawals:
        expect(page.locator(f"#withdrawal-{w.pk}")).to_contain_text(w.reference)
    shots(page, "roles-manager-withdrawals")
    page.goto("/admin/operations/refunds/")
    expect(page.locator("#refunds-made")).to_contain_text("NGN 100.00")
    shots(page, "roles-manager-refunds")


def test_finance_without_the_approver_role_cannot_decide_approvals(open_as, finance_user, make_user, funded_wallet):
    from finance import staff_actions

    other = make_user(groups=["Finance"])
    txn = funded_wallet.transactions.get()
    staff_actions.request_reversal(txn=txn, reason="Duplicate credit", actor=other, idempotency_key="rv1")

    page = open_as(finance_user, "/admin/operations/approvals/")
    row = page.locator("#pending-approvals tbody tr")
    expect(row).to_contain_text("Needs someone with the Finance approver role.")
    expect(page.get_by_role("button", name=re.compile("^(Approve|Reject)"))).to_have_count(0)


@pytest.mark.parametrize(
    ("who", "lands_on"),
    [
        ("finance_user", r"/admin/operations/dashboard/$"),
        ("support_user", r"/admin/operations/broadcasts/$"),
        ("host", r"/statement/$"),
    ],
)
def test_signing_in_on_the_admin_form_lands_on_the_roles_own_page(new_page, request, who, lands_on):
    user = request.getfixturevalue(who)
    page = new_page()
    page.goto("/admin/login/")
    sign_in(page, user.username)
    expect(page).to_have_url(re.compile(lands_on))
    expect(page.get_by_text("Search all pages")).to_have_count(0)


def test_a_host_who_opens_admin_reads_their_statement_and_signs_out(open_as, host):
    page = open_as(host, "/admin/")
    expect(page).to_have_url(re.compile(r"/statement/$"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    # Signed out for real: the statement asks to sign in again.
    page.goto("/statement/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/statement/"))
