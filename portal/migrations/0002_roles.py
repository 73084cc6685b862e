from django.db import migrations

from portal.roles import apply_roles

from ._roles_before_the_move import ROLES_BEFORE_THE_MOVE


def grant_roles(apps, schema_editor):
    apply_roles(apps, schema_editor, roles=ROLES_BEFORE_THE_MOVE)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("finance", "0001_initial"),
        ("wagtailadmin", "0001_create_admin_access_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
