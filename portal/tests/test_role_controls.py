"""Each role sees only the controls it may use (portal/tables.py, portal/views/finance.py,
portal/viewsets.py): a manager reads every Operations page it holds, with nothing that changes
anything; each menu item is shown exactly to those whose index page opens."""

import re
from decimal import Decimal

import pytest

from finance.services import TransactionService
from portal.viewsets import OperationsGroup

pytestmark = pytest.mark.django_db

CONTROLS = re.compile(
    r'method="post"|hx-post=|name="ids"|Send selected payouts'
    # An action's name as an element's text, except a filter's <option> naming an audited action.
    r"|>(Complete|Mark as paid|Send payout|Fail…|Reverse|Replay…|Retry…|Approve…|Reject…|Review refund)<(?!/option)"
)


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))


def test_a_manager_reads_the_withdrawal_queue_without_any_control(client, manager, withdrawal):
    client.force_login(manager)
    html = client.get("/admin/operations/withdrawals/").content.decode()
    assert withdrawal.reference in html
    assert not CONTROLS.search(html), CONTROLS.search(html)


def test_finance_staff_keep_selection_and_actions(client, finance_user, withdrawal):
    client.force_login(finance_user)
    html = client.get("/admin/operations/withdrawals/").content.decode()
    assert 'name="ids"' in html and "Send selected payouts" in html and f"Mark {withdrawal.reference} as paid" in html


@pytest.mark.parametrize(
    "path",
    [
        "/admin/operations/dashboard/",
        "/admin/operations/wallets/",
        "/admin/operations/transactions/",
        "/admin/operations/withdrawals/completed/",
        "/admin/operations/withdrawals/failed/",
        "/admin/operations/refunds/",
        "/admin/operations/approvals/",
        "/admin/operations/webhooks/",
        "/admin/operations/jobs/",
        "/admin/operations/undeliverable/",
        "/admin/operations/audit/",
        "/admin/operations/reconciliation/",
    ],
)
def test_a_manager_opens_every_page_to_read_with_nothing_to_change(client, manager, paid_booking, path):
    client.force_login(manager)
    response = client.get(path)
    assert response.status_code == 200
    assert not CONTROLS.search(response.content.decode())


def test_refunds_are_readable_but_only_finance_gets_the_form(client, manager, finance_user, paid_booking):
    client.force_login(finance_user)
    from finance import staff_actions

    staff_actions.refund_booking(
        booking=paid_booking, amount=Decimal("100.00"), reason="Late check-in", actor=finance_user, idempotency_key="r1"
    )
    url = f"/admin/operations/refunds/?booking={paid_booking.pk}"
    assert "Review refund" in client.get(url).content.decode()

    client.force_login(manager)
    html = client.get(url).content.decode()
    assert "Refunds made" in html and "NGN 100.00" in html and "Refunds are made by finance staff." in html
    assert "Review refund" not in html
    refused = client.post("/admin/operations/refunds/confirm/", {"booking": paid_booking.pk, "amount": "10"})
    assert refused.status_code == 302 and refused["Location"] == "/admin/"


def test_support_cannot_open_refunds(client, support_user):
    client.force_login(support_user)
    assert client.get("/admin/operations/refunds/").status_code == 302


@pytest.mark.parametrize("who", ["finance_user", "approver", "support_user", "manager"])
def test_each_menu_item_is_shown_exactly_to_those_whose_page_opens(client, request, who):
    client.force_login(request.getfixturevalue(who))
    menu = client.get("/admin/", follow=True).content.decode()
    for section in OperationsGroup.items:
        url = f"/admin/operations/{section.name.removeprefix('ops_')}/"
        opens = client.get(url).status_code == 200
        assert (f'"{url}"' in menu) == opens, (section.menu_label, opens)
