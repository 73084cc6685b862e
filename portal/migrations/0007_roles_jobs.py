from django.db import migrations

from portal.roles import apply_roles, revoke_roles

# Frozen here, as in the earlier role migrations.
GRANTS = {
    "Finance": ["jobs.view_jobrecord", "jobs.retry_job"],
    "Support": ["jobs.view_jobrecord", "jobs.retry_job"],
    "Manager": ["jobs.view_jobrecord"],
}


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=GRANTS)


def take_back_roles(apps, schema_editor):
    revoke_roles(apps, schema_editor, roles=GRANTS)


class Migration(migrations.Migration):
    """Finance and support see background jobs and retry failed ones; managers see them."""

    dependencies = [("portal", "0006_roles_dead_letters"), ("jobs", "0001_initial")]

    operations = [migrations.RunPython(grant_roles, take_back_roles)]
