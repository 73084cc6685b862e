from django.db import migrations

from portal.roles import apply_roles, revoke_roles

# Frozen here, as in 0002 and 0004: this migration grants these rows whatever portal/roles.py
# says later.
GRANTS = {
    "Support": ["messaging.view_deadlettermessage"],
    "Manager": ["messaging.view_deadlettermessage"],
}


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=GRANTS)


def take_back_roles(apps, schema_editor):
    revoke_roles(apps, schema_editor, roles=GRANTS)


class Migration(migrations.Migration):
    """Support and managers read the undeliverable messages (messaging's dead letters)."""

    dependencies = [("portal", "0005_move_approvals_and_permissions"), ("messaging", "0003_dead_letters")]

    operations = [migrations.RunPython(grant_roles, take_back_roles)]
