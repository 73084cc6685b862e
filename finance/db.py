"""Running the money domain's hand-written SQL: plain statements, one round trip each.

On PostgreSQL a posting is one call of a PL/pgSQL function (finance/migrations/0005), whose
statements the server plans once per session and caches. The ledger used to PREPARE its
statements per connection instead; a prepared statement belongs to one server session, and
PgBouncer in transaction mode gives each transaction whichever server session is free, so
that broke behind it. A function call is a plain statement that works on any session.
Other databases (SQLite in development) run the ledger's SQL as is.

`insert_once` claims a unique key (idempotency keys, the webhook inbox) in one statement.
"""

from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS, connection


def fetch_one(sql: str, params: list):
    """Run `sql` (with %s placeholders) and return its first row, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def call(function: str, args: list):
    """`SELECT * FROM function(args...)` (PostgreSQL): the one row the function returns."""
    return fetch_one(_call_sql(function, len(args)), args)


_CALLS: dict[tuple[str, int], str] = {}


def _call_sql(function: str, count: int) -> str:
    key = (function, count)
    sql = _CALLS.get(key)
    if sql is None:
        sql = _CALLS[key] = f"SELECT * FROM {function}({', '.join(['%s'] * count)})"
    return sql


def insert_once(instance, *, unique: tuple[str, ...]) -> bool:
    """INSERT `instance` (a new model instance) unless a row with the same `unique` fields (a
    unique constraint's) exists: True, with its primary key set, when it was inserted.

    One statement, and no error to recover from: a unique violation raised by the ORM's INSERT
    aborts the transaction around it, unless that INSERT ran in a savepoint of its own (two
    more round trips). Like a plain INSERT, it waits for a concurrent transaction that
    inserted the same key; then it inserts if that one rolled back, and finds its row if it
    committed. `INSERT ... ON CONFLICT DO NOTHING RETURNING`: PostgreSQL, SQLite 3.35 and later.
    """
    meta = type(instance)._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    # What Model.save does before an INSERT: auto_now_add and the like, then the backend's form.
    params = [f.get_db_prep_save(f.pre_save(instance, add=True), connection) for f in fields]
    row = fetch_one(_insert_once_sql(type(instance), tuple(unique)), params)
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = DEFAULT_DB_ALIAS
    return True


_INSERTS: dict[tuple, str] = {}


def _insert_once_sql(model, unique: tuple[str, ...]) -> str:
    sql = _INSERTS.get((model, unique))
    if sql is None:
        meta, quote = model._meta, connection.ops.quote_name
        columns = [quote(f.column) for f in meta.concrete_fields if not f.primary_key]
        conflict = ", ".join(quote(meta.get_field(name).column) for name in unique)
        sql = _INSERTS[(model, unique)] = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
            f" ON CONFLICT ({conflict}) DO NOTHING RETURNING {quote(meta.pk.column)}"
        )
    return sql


def money(value) -> Decimal:
    """A money column read by raw SQL, as an exact Decimal.

    PostgreSQL returns Decimal already. SQLite stores DECIMAL columns as REAL, and the ORM
    converts them on read; raw SQL must do the same: the float's shortest repr, rounded to
    the column's 4 decimals. That gives back exactly the amount written whenever it has
    at most 15 significant digits; a REAL keeps no more than that.
    """
    if isinstance(value, Decimal) or value is None:
        return value
    return Decimal(repr(value)).quantize(Decimal("0.0001"))
