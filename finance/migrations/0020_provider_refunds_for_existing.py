"""Every refund recorded before refunds were sent to providers gets its ProviderRefund.

Those refunds sit in "refunds payable" and never reached the guest: each becomes a failed
refund staff can see and act on (retry it through the provider, or mark it refunded if the
guest was paid by hand). A reversed one is cancelled: its money already left refunds payable.
"""

from decimal import Decimal

from django.db import migrations

REASON = (
    "Recorded before refunds were sent to providers: retry it to send it now, "
    "or mark it refunded if the guest was paid by hand."
)


def open_refunds_for_existing(apps, schema_editor):
    WalletTransaction = apps.get_model("finance", "WalletTransaction")
    Payment = apps.get_model("finance", "Payment")
    ProviderRefund = apps.get_model("finance", "ProviderRefund")
    refunds = (
        WalletTransaction.objects.filter(
            type="refund", status__in=("completed", "reversed"), provider_refund__isnull=True
        )
        .order_by("pk")
        .iterator()
    )
    for txn in refunds:
        metadata = txn.metadata or {}
        payment = Payment.objects.filter(reference=metadata.get("payment_reference", "")).first()
        if payment is None:  # nothing to refund against: the ledger check will name it
            continue
        ProviderRefund.objects.create(
            transaction=txn,
            payment=payment,
            provider=payment.provider,
            amount=Decimal(str(metadata.get("refund_amount") or txn.amount)),
            currency=txn.currency,
            status="cancelled" if txn.status == "reversed" else "failed",
            failure_reason="" if txn.status == "reversed" else REASON,
            refund_reference=f"refund-{txn.reference.lower()}",
        )


class Migration(migrations.Migration):
    dependencies = [("finance", "0019_negative_balances")]

    operations = [migrations.RunPython(open_refunds_for_existing, migrations.RunPython.noop)]
