from django.db import migrations

from portal.roles import apply_roles


class Migration(migrations.Migration):
    """Grant the portal's permissions (approvals, dashboard, audit log, broadcasts, stats)."""

    dependencies = [("portal", "0003_approvals"), ("finance", "0002_webhooks_and_api_idempotency")]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
