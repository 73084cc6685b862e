"""The staff roles as migrations 0002 and 0004 granted them, before the four-eyes model and
its permissions moved to finance and messaging (0005).

Frozen here so those migrations grant the same rows on a fresh database whatever
portal/roles.py says today; 0005 then moves the rows to their new apps, grants intact.
"""

ACCESS_ADMIN = "wagtailadmin.access_admin"

ROLES_BEFORE_THE_MOVE = {
    "Finance": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "finance.complete_withdrawal",
        "finance.fail_withdrawal",
        "finance.refund_booking",
        "finance.reverse_transaction",
        "portal.view_finance_dashboard",
        "portal.view_approvalrequest",
        "finance.replay_webhookevent",
        "finance.view_webhookevent",
    ],
    "Finance approver": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "portal.view_finance_dashboard",
        "portal.view_approvalrequest",
        "portal.approve_request",
    ],
    "Support": [ACCESS_ADMIN, "portal.send_broadcast", "portal.view_messaging_stats"],
    "Manager": [
        ACCESS_ADMIN,
        "finance.view_wallet",
        "finance.view_wallettransaction",
        "finance.view_withdrawal",
        "finance.view_booking",
        "finance.view_payment",
        "finance.view_ledgeraudit",
        "finance.view_webhookevent",
        "portal.view_finance_dashboard",
        "portal.view_approvalrequest",
        "portal.view_audit_log",
        "portal.view_messaging_stats",
    ],
}
