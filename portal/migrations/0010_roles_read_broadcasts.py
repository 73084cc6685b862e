from django.db import migrations

from portal.roles import apply_roles, revoke_roles

# Frozen here, as in the earlier role migrations.
GRANTS = {
    "Support": ["messaging.view_broadcast"],
    "Manager": ["messaging.view_broadcast"],
}


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=GRANTS)


def take_back_roles(apps, schema_editor):
    revoke_roles(apps, schema_editor, roles=GRANTS)


class Migration(migrations.Migration):
    """Managers read the broadcasts (and support, who sends them, reads them too) without sending any."""

    dependencies = [("portal", "0009_audit_target"), ("messaging", "0004_broadcast_fan_out_job")]

    operations = [migrations.RunPython(grant_roles, take_back_roles)]
