"""Indexes for the transactions list's search and its sort by amount within currency (issue 15).

* txn_reference_trgm: a pg_trgm GIN index on UPPER(reference), so the list's search by part of
  a reference (`reference__icontains`, which Django writes as UPPER(reference::text) LIKE
  UPPER('%...%')) reads a few index pages instead of the whole million-row table. PostgreSQL
  only (pg_trgm ships with it, in Debian's postgresql-15); on SQLite (`make run`) it is skipped
  and the search scans, which a demo's few rows afford. It is built here and not declared in
  WalletTransaction.Meta: SQLite rebuilds a table with every index of the model state whenever
  a later migration alters the table, and it cannot build a GIN index.
* txn_currency_amount (currency, amount, id) REPLACES txn_amount (amount): sorting by amount is
  by currency first, so amounts in different currencies are never compared; the index serves
  that order (either direction) and, with the currency filter, "largest NGN first". One index
  net for postings to write, as before.

Built CONCURRENTLY on PostgreSQL (the migration is not atomic), so postings are not blocked
while the indexes build on a large table.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

TABLE = "finance_wallettransaction"


def _run(schema_editor, statements):
    postgresql = schema_editor.connection.vendor == "postgresql"
    for sql, postgresql_only in statements:
        if postgresql or not postgresql_only:
            schema_editor.execute(sql.format(c="CONCURRENTLY " if postgresql else ""), params=None)


def forwards(apps, schema_editor):
    _run(
        schema_editor,
        [
            (
                f"CREATE INDEX {{c}}IF NOT EXISTS txn_reference_trgm ON {TABLE} USING gin (UPPER(reference) gin_trgm_ops)",
                True,
            ),
            (f"CREATE INDEX {{c}}IF NOT EXISTS txn_currency_amount ON {TABLE} (currency, amount, id)", False),
            ("DROP INDEX {c}IF EXISTS txn_amount", False),
            # Statistics on UPPER(reference) (an expression index's are gathered by ANALYZE): without
            # them the planner guesses a fragment such as "TXN-" rare and reads every match through the
            # trigram index instead of the newest rows first. A sample: seconds on a large table.
            (f"ANALYZE {TABLE}", True),
        ],
    )


def backwards(apps, schema_editor):
    _run(
        schema_editor,
        [
            (f"CREATE INDEX {{c}}IF NOT EXISTS txn_amount ON {TABLE} (amount)", False),
            ("DROP INDEX {c}IF EXISTS txn_currency_amount", False),
            ("DROP INDEX {c}IF EXISTS txn_reference_trgm", True),
        ],
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("finance", "0012_payment_checkout_and_receipt_state")]

    operations = [
        TrigramExtension(),  # CREATE EXTENSION IF NOT EXISTS pg_trgm; nothing on SQLite
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
            state_operations=[
                migrations.RemoveIndex(model_name="wallettransaction", name="txn_amount"),
                migrations.AddIndex(
                    model_name="wallettransaction",
                    index=models.Index(fields=["currency", "amount", "id"], name="txn_currency_amount"),
                ),
            ],
        ),
    ]
