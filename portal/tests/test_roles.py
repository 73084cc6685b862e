"""Each staff role holds exactly its abilities, on a fresh database and after the move of the
four-eyes model and its permissions from portal to finance and messaging (portal 0005)."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from portal.roles import ROLE_PERMISSIONS, apply_roles

OUR_APPS = ("finance", "messaging", "portal")

# What each role could do before the move, under the permissions' old names.
ABILITIES_BEFORE_THE_MOVE = {
    "Finance": {
        "finance.complete_withdrawal",
        "finance.fail_withdrawal",
        "finance.refund_booking",
        "finance.replay_webhookevent",
        "finance.reverse_transaction",
        "finance.view_booking",
        "finance.view_payment",
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_webhookevent",
        "finance.view_withdrawal",
        "portal.view_approvalrequest",
        "portal.view_finance_dashboard",
    },
    "Finance approver": {
        "finance.view_booking",
        "finance.view_payment",
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "portal.approve_request",
        "portal.view_approvalrequest",
        "portal.view_finance_dashboard",
    },
    "Support": {"portal.send_broadcast", "portal.view_messaging_stats"},
    "Manager": {
        "finance.view_booking",
        "finance.view_ledgeraudit",
        "finance.view_payment",
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_webhookevent",
        "finance.view_withdrawal",
        "portal.view_approvalrequest",
        "portal.view_audit_log",
        "portal.view_finance_dashboard",
        "portal.view_messaging_stats",
    },
}

RENAMED = {
    "portal.view_approvalrequest": "finance.view_approvalrequest",
    "portal.approve_request": "finance.approve_request",
    "portal.view_finance_dashboard": "finance.view_finance_dashboard",
    "portal.send_broadcast": "messaging.send_broadcast",
    "portal.view_messaging_stats": "messaging.view_messaging_stats",
}

# Granted by later migrations (portal 0006: the undeliverable messages; 0010: reading broadcasts;
# 0011: retrying refunds and reconciling the providers' reports).
GRANTED_SINCE = {
    "Finance": {"finance.retry_refund", "finance.reconcile", "finance.view_reconciliationreport"},
    "Support": {"messaging.view_deadlettermessage", "messaging.view_broadcast"},
    "Manager": {
        "messaging.view_deadlettermessage",
        "messaging.view_broadcast",
        "finance.view_reconciliationreport",
    },
}

ABILITIES_NOW = {
    role: {RENAMED.get(code, code) for code in codes} | GRANTED_SINCE.get(role, set())
    for role, codes in ABILITIES_BEFORE_THE_MOVE.items()
}

BEFORE_THE_MOVE = [("portal", "0004_roles_portal_permissions"), ("finance", "0003_transaction_list_indexes")]
MESSAGING_BEFORE_THE_MOVE = ("messaging", "0001_initial")


def abilities(group_model, name: str) -> set[str]:
    group = group_model.objects.get(name=name)
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
        if app in OUR_APPS
    }


def test_the_roles_module_names_exactly_each_roles_abilities():
    for role, codes in ROLE_PERMISSIONS.items():
        assert {c for c in codes if c.split(".")[0] in OUR_APPS} == ABILITIES_NOW[role], role


def test_each_role_has_exactly_its_abilities(db, roles):
    for role, expected in ABILITIES_NOW.items():
        assert abilities(Group, role) == expected, role


@pytest.mark.django_db(transaction=True)
def test_the_move_keeps_every_grant_and_every_approval_row():
    """Migrate back to before the move, grant and file there, migrate forward: nothing lost."""
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate([*BEFORE_THE_MOVE, MESSAGING_BEFORE_THE_MOVE])
    old = executor.loader.project_state([*BEFORE_THE_MOVE, MESSAGING_BEFORE_THE_MOVE]).apps
    apply_roles(old, roles={role: sorted(codes) for role, codes in ABILITIES_BEFORE_THE_MOVE.items()})
    for role, expected in ABILITIES_BEFORE_THE_MOVE.items():
        assert abilities(old.get_model("auth", "Group"), role) == expected, role
    user = old.get_model("portal", "User").objects.create(username="requester", role="staff")
    old.get_model("portal", "ApprovalRequest").objects.create(
        kind="refund", requested_by=user, amount="12.5000", currency="NGN", idempotency_key="kept"
    )

    executor = MigrationExecutor(connection)
    executor.migrate(leaves)

    from finance.models import ApprovalRequest

    for role, expected in ABILITIES_NOW.items():
        assert abilities(Group, role) == expected, role
    kept = ApprovalRequest.objects.get(idempotency_key="kept")
    assert (kept.kind, kept.requested_by.username, str(kept.amount)) == ("refund", "requester", "12.5000")
