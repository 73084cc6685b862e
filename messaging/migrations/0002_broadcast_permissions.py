"""The broadcast and messaging-stats permissions now belong to messaging (they were declared
on portal's four-eyes model). State only: portal 0005 moves the existing Permission rows,
with their grants, onto messaging.Broadcast's content type."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("messaging", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(
            name="broadcast",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("send_broadcast", "Can send broadcasts"),
                    ("view_messaging_stats", "Can read the messaging stats"),
                ],
            },
        ),
    ]
