"""Who may do what: each staff ability is one Django permission, named here once.

The roles (portal/roles.py) grant these permissions to groups. The staff actions
(`finance.staff_actions`, `messaging.services`) refuse an actor without the permission,
and the portal and the API ask `allows()` the same question to hide or refuse what a user
may not do, so a rule cannot answer differently in two places.
"""

from .errors import PermissionDeniedError

# Finance staff actions (money moves or is scheduled to move).
COMPLETE_WITHDRAWAL = "finance.complete_withdrawal"
FAIL_WITHDRAWAL = "finance.fail_withdrawal"
REFUND_BOOKING = "finance.refund_booking"
REVERSE_TRANSACTION = "finance.reverse_transaction"
APPROVE_REQUEST = "finance.approve_request"
REPLAY_WEBHOOK = "finance.replay_webhookevent"
RETRY_REFUND = "finance.retry_refund"
RECONCILE = "finance.reconcile"

# Finance reading.
VIEW_FINANCE_DASHBOARD = "finance.view_finance_dashboard"
VIEW_APPROVALS = "finance.view_approvalrequest"
VIEW_WALLETS = "finance.view_wallet"
VIEW_TRANSACTIONS = "finance.view_wallettransaction"
VIEW_WITHDRAWALS = "finance.view_withdrawal"
VIEW_WEBHOOKS = "finance.view_webhookevent"
VIEW_RECONCILIATION = "finance.view_reconciliationreport"

# Messaging.
SEND_BROADCAST = "messaging.send_broadcast"
VIEW_BROADCASTS = "messaging.view_broadcast"
VIEW_MESSAGING_STATS = "messaging.view_messaging_stats"
VIEW_DEAD_LETTERS = "messaging.view_deadlettermessage"

# Background jobs (the jobs app).
VIEW_JOBS = "jobs.view_jobrecord"
RETRY_JOB = "jobs.retry_job"

# The audit log page belongs to the portal.
VIEW_AUDIT_LOG = "portal.view_audit_log"


def allows(user, *permissions: str) -> bool:
    """True when `user` holds every one of `permissions` (Django's has_perm already refuses
    anonymous and inactive users)."""
    return user is not None and all(user.has_perm(permission) for permission in permissions)


def require(actor, permission: str) -> None:
    """Refuse a missing actor or one without `permission` (PermissionDeniedError, 403)."""
    if actor is None:
        raise PermissionDeniedError("A staff action needs a signed-in person to perform it.")
    if not allows(actor, permission):
        from .audit import log_denied  # here: the audit imports Wagtail, which needs the apps loaded

        log_denied(actor, permission=permission, what=permission)
        raise PermissionDeniedError(f"You do not have permission for this action ({permission}).")
