"""Background jobs of the money domain (run by the jobs engine's workers, at least once each)."""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from jobs.policy import PermanentJobError, job
from jobs.services import record_check
from jobs.worker import current_attempt, describe

# complete_withdrawal_batch and post_sandbox_webhook are declared beside the code they belong
# to; imported here so that every process (the portal lists jobs it never runs) knows their
# labels and retry policies.
from .bulk import complete_withdrawal_batch  # noqa: F401
from .ledger_checks import run_ledger_checks
from .models import Payment
from .money import format_money
from .providers.sandbox import post_sandbox_webhook  # noqa: F401

Receipt = Payment.ReceiptStatus

logger = logging.getLogger("finance")

# The periodic ledger check's name among the jobs engine's check results (GET /metrics reads it).
LEDGER_CHECK = "ledger"


@job(label="Receipt e-mail", max_attempts=6, base_delay=30, max_delay=3600)
def send_receipt(payment_id: int) -> str:
    """E-mail the guest the receipt of an applied payment, once.

    A mail failure raises, so the engine retries; the payment shows the failure to staff
    ('retrying', then 'failed' after the last attempt). A receipt already sent is not sent again.
    """
    payment = Payment.objects.select_related("booking__guest", "booking__rental_property").filter(pk=payment_id).first()
    if payment is None:
        raise PermanentJobError(f"Payment {payment_id} no longer exists.")
    if payment.receipt_status == Receipt.SENT:
        return "already sent"
    guest = payment.booking.guest
    if not guest.email:
        _set_receipt_state(payment, Receipt.FAILED, "The guest has no e-mail address.")
        raise PermanentJobError("The guest has no e-mail address.")
    try:
        send_mail(
            subject=f"Your StayAfrica receipt {payment.reference}",
            message=_receipt_text(payment),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[guest.email],
        )
    except Exception as error:
        state = Receipt.FAILED if current_attempt().is_last else Receipt.RETRYING
        _set_receipt_state(payment, state, describe(error))
        raise
    _set_receipt_state(payment, Receipt.SENT, "")
    return "sent"


def _receipt_text(payment: Payment) -> str:
    booking, guest = payment.booking, payment.booking.guest
    amount = format_money(payment.amount, payment.currency)
    return (
        f"Hello {guest.get_full_name() or guest.username},\n\n"
        f"We received your payment of {amount} for {booking.rental_property.title} "
        f"({booking.check_in:%d %b %Y} to {booking.check_out:%d %b %Y}).\n"
        f"Payment reference: {payment.reference}\nProvider: {payment.provider}\n\n"
        "Your booking is confirmed. Thank you for staying with StayAfrica."
    )


def _set_receipt_state(payment: Payment, state: str, error: str) -> None:
    # Committed on its own: the job's failure must not take the recorded reason with it.
    with transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(
            receipt_status=state,
            receipt_error=error,
            receipt_sent_at=timezone.now() if state == Receipt.SENT else None,
            updated_at=timezone.now(),
        )


# One attempt: the next period runs it again. A run that cannot finish (the database away)
# stays as a failed job, which jobs_failed_total shows; a finished run leaves no job row, its
# result is the CheckResult row.
@job(label="Ledger check", max_attempts=1, keep_result=False)
def check_ledger() -> bool:
    """Run every ledger invariant check (as `manage.py check_ledger` does) and record the result:
    ok or not, when, and the names of the failing checks. Each failing check is logged as an
    ERROR naming it; violations are the ledger's state, not the job's failure, so the job succeeds."""
    results = run_ledger_checks()
    failed = [result for result in results if not result.ok]
    for result in failed:
        logger.error(
            "ledger check failed: %s (%s violations): %s. First: %s",
            result.name,
            result.violation_count,
            result.description,
            "; ".join(result.violations[:3]),
        )
    record_check(LEDGER_CHECK, ok=not failed, failures=[result.name for result in failed])
    if not failed:
        logger.info("ledger check passed: %s checks", len(results))
    return not failed
