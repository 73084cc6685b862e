"""API tokens moved from rest_framework.authtoken (kept in clear text, never expiring) to
django-rest-knox (digests only, expiring): the old table and the tokens in it go. Clients
ask POST /api/payments/auth/token/ for a new token. Nothing to undo: the old tokens are gone."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0008_one_pending_request_per_target"),
    ]

    operations = [
        migrations.RunSQL("DROP TABLE IF EXISTS authtoken_token", reverse_sql=migrations.RunSQL.noop),
    ]
