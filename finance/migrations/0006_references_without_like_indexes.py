"""References stay unique through named constraints, without PostgreSQL's LIKE indexes.

`unique=True` on a CharField also builds a varchar_pattern_ops index on PostgreSQL, for
LIKE 'prefix%' searches nothing here runs; every posting paid for writing it. The new
unique constraints are created before the old ones go, so uniqueness never lapses.
"""

from django.db import migrations, models

import finance.models


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0005_ledger_functions"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="wallettransaction",
            constraint=models.UniqueConstraint(fields=("reference",), name="transaction_reference_unique"),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.UniqueConstraint(fields=("reference",), name="payment_reference_unique"),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.UniqueConstraint(
                fields=("provider_reference",), name="payment_provider_reference_unique"
            ),
        ),
        migrations.AlterField(
            model_name="wallettransaction",
            name="reference",
            field=models.CharField(default=finance.models.new_transaction_reference, max_length=32),
        ),
        migrations.AlterField(
            model_name="payment",
            name="reference",
            field=models.CharField(default=finance.models.new_payment_reference, max_length=32),
        ),
        migrations.AlterField(
            model_name="payment",
            name="provider_reference",
            field=models.CharField(blank=True, max_length=100, null=True),
        ),
    ]
