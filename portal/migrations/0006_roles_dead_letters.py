from django.db import migrations

from portal.roles import apply_roles

# Frozen here, as in 0002 and 0004: this migration grants these rows whatever portal/roles.py
# says later.
GRANTS = {
    "Support": ["messaging.view_deadlettermessage"],
    "Manager": ["messaging.view_deadlettermessage"],
}


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=GRANTS)


def revoke_roles(apps, schema_editor):
    """Migrating back takes the grants away again (the permission row itself may stay)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in GRANTS.items():
        for code in codes:
            app_label, codename = code.split(".")
            permissions = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            for group in Group.objects.filter(name=name):
                group.permissions.remove(*permissions)


class Migration(migrations.Migration):
    """Support and managers read the undeliverable messages (messaging's dead letters)."""

    dependencies = [("portal", "0005_move_approvals_and_permissions"), ("messaging", "0003_dead_letters")]

    operations = [migrations.RunPython(grant_roles, revoke_roles)]
