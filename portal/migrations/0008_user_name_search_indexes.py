"""Indexes for "find a person by the start of their name, username or email" (issue 15).

The portal's owner searches (portal/filters.py owner_condition: the wallets list, the
transactions list) match `istartswith` on username, first and last name, and email, which Django writes
as UPPER(column::text) LIKE 'PREFIX%'. Without these, each search reads every user (about
150 ms at 100,000 users, `make bench-portal`); with them, a few index pages per column
(text_pattern_ops: prefix LIKE in any collation; equality too, for a whole email address).

PostgreSQL only, built CONCURRENTLY (the migration is not atomic); skipped on SQLite
(`make run`), whose few demo users a scan reads at once. Not declared in User.Meta: SQLite
rebuilds a table with every index of the model state when a later migration alters it, and
it has no operator classes.
"""

from django.db import migrations

TABLE = "portal_user"
COLUMNS = ("username", "first_name", "last_name", "email")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS user_{column}_upper_prefix "
            f"ON {TABLE} (UPPER({column}::text) text_pattern_ops)",
            params=None,
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS user_{column}_upper_prefix", params=None)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("portal", "0007_roles_jobs")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
