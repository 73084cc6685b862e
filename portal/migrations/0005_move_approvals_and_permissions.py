"""Finish moving the four-eyes model to finance and each custom permission to its owner.

- ApprovalRequest leaves portal's state (finance 0004 took the table, rows kept).
- Its content type becomes finance's, so every Permission row on it (the four default
  ones, approve_request, view_finance_dashboard) keeps its id and every group's grant.
- send_broadcast and view_messaging_stats move to messaging.Broadcast; view_audit_log
  stays in portal (the audit page is the portal's), on portal.User.
Moving a Permission row keeps its id, so group and user grants need no rewriting; where
the target app already has the row (post_migrate ran in between), the grants are carried
over to it and the old row goes.
"""

from django.db import migrations

# (codename, its owner before, its owner after), each owner an (app_label, model) pair.
PERMISSION_MOVES = [
    ("send_broadcast", ("finance", "approvalrequest"), ("messaging", "broadcast")),
    ("view_messaging_stats", ("finance", "approvalrequest"), ("messaging", "broadcast")),
    ("view_audit_log", ("finance", "approvalrequest"), ("portal", "user")),
]


def content_type(apps, app_label, model):
    ContentType = apps.get_model("contenttypes", "ContentType")
    return ContentType.objects.get_or_create(app_label=app_label, model=model)[0]


def move_permission(apps, codename, old_type, new_type):
    Permission = apps.get_model("auth", "Permission")
    old = Permission.objects.filter(content_type=old_type, codename=codename).first()
    if old is None:
        return
    existing = Permission.objects.filter(content_type=new_type, codename=codename).first()
    if existing is None:
        old.content_type = new_type
        old.save(update_fields=["content_type"])
        return
    for group in old.group_set.all():
        group.permissions.add(existing)
    for user in old.user_set.all():
        user.user_permissions.add(existing)
    old.delete()


def move_model_content_type(apps, model, old_app, new_app):
    """Re-label the model's content type; merge into the new one if it exists already."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    ModelLogEntry = apps.get_model("wagtailcore", "ModelLogEntry")
    old = ContentType.objects.filter(app_label=old_app, model=model).first()
    if old is None:
        return
    new = ContentType.objects.filter(app_label=new_app, model=model).first()
    if new is None:
        old.app_label = new_app
        old.save(update_fields=["app_label"])
        return
    for codename in Permission.objects.filter(content_type=old).values_list("codename", flat=True):
        move_permission(apps, codename, old, new)
    ModelLogEntry.objects.filter(content_type=old).update(content_type=new)
    old.delete()


def forwards(apps, schema_editor):
    move_model_content_type(apps, "approvalrequest", "portal", "finance")
    for codename, before, after in PERMISSION_MOVES:
        move_permission(apps, codename, content_type(apps, *before), content_type(apps, *after))


def backwards(apps, schema_editor):
    for codename, before, after in PERMISSION_MOVES:
        move_permission(apps, codename, content_type(apps, *after), content_type(apps, *before))
    move_model_content_type(apps, "approvalrequest", "finance", "portal")


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0004_roles_portal_permissions"),
        ("finance", "0004_approvalrequest"),
        ("messaging", "0002_broadcast_permissions"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("wagtailcore", "0063_modellogentry"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApprovalRequest")],
            database_operations=[],
        ),
        migrations.AlterModelOptions(
            name="user",
            options={
                "permissions": [("view_audit_log", "Can read the staff audit log")],
                "verbose_name": "user",
                "verbose_name_plural": "users",
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
