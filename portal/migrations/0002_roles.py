from django.db import migrations

from portal.roles import apply_roles


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("finance", "0001_initial"),
        ("wagtailadmin", "0001_create_admin_access_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
