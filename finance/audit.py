"""The staff audit trail: Wagtail's log, with one registered action code per staff action.

Every staff action writes its entry with `wagtail.log_actions.log` inside the action's own
transaction, so an action and its record commit or roll back together. Managers read the
entries in the portal's audit page and in Wagtail's own history report.
"""

from decimal import Decimal

from wagtail.log_actions import log
from wagtail.models import ModelLogEntry

import request_context

from .money import quantum

# Registered with Wagtail's log action registry by finance/wagtail_hooks.py.
ACTIONS = {
    "stayafrica.withdrawal.complete": ("Complete withdrawal", "Completed a withdrawal"),
    "stayafrica.withdrawal.send_payout": ("Send payout", "Sent a withdrawal's payout to the provider"),
    "stayafrica.withdrawal.fail": ("Fail withdrawal", "Failed a withdrawal"),
    "stayafrica.withdrawal.bulk_complete": ("Bulk complete withdrawals", "Started a bulk completion of withdrawals"),
    "stayafrica.refund": ("Refund", "Issued a refund"),
    "stayafrica.reversal": ("Reversal", "Reversed a transaction"),
    "stayafrica.refund.retry": ("Retry refund", "Sent a failed refund to the provider again"),
    "stayafrica.refund.mark_refunded": ("Mark refunded", "Marked a refund paid to the guest by hand"),
    "stayafrica.approval.request": ("Request approval", "Requested a second approval"),
    "stayafrica.approval.approve": ("Approve", "Approved a request"),
    "stayafrica.approval.reject": ("Reject", "Rejected a request"),
    "stayafrica.webhook.replay": ("Replay webhook", "Replayed a webhook event"),
    "stayafrica.access.denied": ("Access denied", "Was refused a page or an action for lack of permission"),
}


def log_once(instance, action: str, *, actor, key: str | None, data: dict) -> None:
    """Log the action unless this idempotency key already logged it (a double submit)."""
    if key and ModelLogEntry.objects.filter(action=action, data__idempotency_key=key).exists():
        return
    log(instance, action, user=actor, data={**data, "idempotency_key": key or ""})


def log_denied(actor, *, permission: str = "", path: str = "", method: str = "", what: str = "") -> None:
    """Record that `actor` (a signed-in person) was refused a page or an action for lack of a
    permission: who (the entry's user, and its object), what (`path` and `method`, or the action
    `what`, and the `permission` missing), when (the entry's timestamp). One row per refusal.

    Anonymous visitors are not recorded: they are sent to sign in, and their requests name nobody.
    A refusal inside a transaction that then rolls back loses its record with it (the staff actions
    check permissions before they open their transaction, so theirs are kept)."""
    if actor is None or not getattr(actor, "is_authenticated", False):
        return
    actor = getattr(actor, "_wrapped", actor)  # request.user is a lazy object
    request = request_context.current_request()
    if request is not None and not path:  # a staff action refused while serving a request: which one
        path, method = request.path, request.method
    log(
        actor,
        "stayafrica.access.denied",
        user=actor,
        title=path or what or permission,
        data={"username": actor.get_username(), "permission": permission, "path": path, "method": method, "what": what},
    )


def money_data(amount, currency: str, **extra) -> dict:
    """An audit entry's data: the amount at the currency's precision, people by username."""
    data = {"amount": str(Decimal(amount).quantize(quantum(currency))), "currency": currency}
    for name, value in extra.items():
        data[name] = getattr(value, "username", value) if value is not None else ""
    return data
