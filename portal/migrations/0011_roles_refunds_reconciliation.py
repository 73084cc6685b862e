from django.db import migrations

from portal.roles import apply_roles, revoke_roles

# Frozen here, as in the earlier role migrations.
GRANTS = {
    "Finance": ["finance.retry_refund", "finance.reconcile", "finance.view_reconciliationreport"],
    "Manager": ["finance.view_reconciliationreport"],
}


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=GRANTS)


def take_back_roles(apps, schema_editor):
    revoke_roles(apps, schema_editor, roles=GRANTS)


class Migration(migrations.Migration):
    """Finance retries failed refunds and reconciles the providers' reports; managers read the reconciliation."""

    dependencies = [("portal", "0010_roles_read_broadcasts"), ("finance", "0018_refunds_receivables_reconciliation")]

    operations = [migrations.RunPython(grant_roles, take_back_roles)]
