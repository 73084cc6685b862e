from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0006_references_without_like_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalrequest",
            name="approval_reason",
            field=models.TextField(blank=True),
        ),
    ]
