"""The staff audit trail: Wagtail's log, with one registered action code per staff action.

Every staff action writes its entry with `wagtail.log_actions.log` inside the action's own
transaction, so an action and its record commit or roll back together. Managers read the
entries in the portal's audit page and in Wagtail's own history report.
"""

from decimal import Decimal

from wagtail.log_actions import log
from wagtail.models import ModelLogEntry

from .money import quantum

# Registered with Wagtail's log action registry by finance/wagtail_hooks.py.
ACTIONS = {
    "stayafrica.withdrawal.complete": ("Complete withdrawal", "Completed a withdrawal"),
    "stayafrica.withdrawal.fail": ("Fail withdrawal", "Failed a withdrawal"),
    "stayafrica.withdrawal.bulk_complete": ("Bulk complete withdrawals", "Started a bulk completion of withdrawals"),
    "stayafrica.refund": ("Refund", "Issued a refund"),
    "stayafrica.reversal": ("Reversal", "Reversed a transaction"),
    "stayafrica.approval.request": ("Request approval", "Requested a second approval"),
    "stayafrica.approval.approve": ("Approve", "Approved a request"),
    "stayafrica.approval.reject": ("Reject", "Rejected a request"),
    "stayafrica.webhook.replay": ("Replay webhook", "Replayed a webhook event"),
}


def log_once(instance, action: str, *, actor, key: str | None, data: dict) -> None:
    """Log the action unless this idempotency key already logged it (a double submit)."""
    if key and ModelLogEntry.objects.filter(action=action, data__idempotency_key=key).exists():
        return
    log(instance, action, user=actor, data={**data, "idempotency_key": key or ""})


def money_data(amount, currency: str, **extra) -> dict:
    """An audit entry's data: the amount at the currency's precision, people by username."""
    data = {"amount": str(Decimal(amount).quantize(quantum(currency))), "currency": currency}
    for name, value in extra.items():
        data[name] = getattr(value, "username", value) if value is not None else ""
    return data
