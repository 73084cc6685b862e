"""Refunds that reach the guest: the provider side of `TransactionService.process_refund`.

(Issue 18; the refund engine lands here. The prep commit only fixes the names other modules call.)
"""

from .models import WebhookEvent
from .providers.base import ProviderEvent


def apply_refund_event(inbox: WebhookEvent, event: ProviderEvent, *, actor) -> tuple[str, str]:
    """Apply a provider's refund callback (stored in the inbox, inside its transaction): returns
    the inbox outcome and its reason (finance.payments._apply records them)."""
    raise NotImplementedError
