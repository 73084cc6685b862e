from django.db import migrations

from portal.roles import apply_roles

from ._roles_before_the_move import ROLES_BEFORE_THE_MOVE


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=ROLES_BEFORE_THE_MOVE)


class Migration(migrations.Migration):
    """Grant the portal's permissions (approvals, dashboard, audit log, broadcasts, stats)."""

    dependencies = [("portal", "0003_approvals"), ("finance", "0002_webhooks_and_api_idempotency")]

    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
