"""Running the ledger's hand-written SQL: plain statements, one round trip each.

On PostgreSQL a posting is one call of a PL/pgSQL function (finance/migrations/0005), whose
statements the server plans once per session and caches. The ledger used to PREPARE its
statements per connection instead; a prepared statement belongs to one server session, and
PgBouncer in transaction mode gives each transaction whichever server session is free, so
that broke behind it. A function call is a plain statement that works on any session.
Other databases (SQLite in development) run the ledger's SQL as is.
"""

from decimal import Decimal

from django.db import connection


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
