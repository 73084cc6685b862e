"""Running the ledger's hand-written SQL: prepared once per connection on PostgreSQL.

Planning a statement can cost as much as running it. The ledger's statements come in a
limited number of shapes (by kind of movement, journal legs and related updates), so on
PostgreSQL each shape is PREPAREd the first time a connection meets it and only
EXECUTEd afterwards. Prepared statements belong to the session and outlive rollbacks,
so the cache lives and dies with the connection. Other databases (SQLite in
development) run the SQL as is.
"""

import itertools
import re
from decimal import Decimal

from django.db import connection


def fetch_one(sql: str, params: list):
    """Run `sql` (with %s placeholders) and return its first row, or None."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _execute_prepared(cursor, sql, params)
        else:
            cursor.execute(sql, params)
        return cursor.fetchone()


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


def _execute_prepared(cursor, sql: str, params: list) -> None:
    names = _prepared_statements()
    name = names.get(sql)
    if name is None:
        name = f"finance_stmt_{len(names) + 1}"
        numbers = itertools.count(1)
        cursor.execute(f"PREPARE {name} AS " + re.sub("%s", lambda _: f"${next(numbers)}", sql))
        names[sql] = name
    cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})" if params else f"EXECUTE {name}", params)


def _prepared_statements() -> dict[str, str]:
    raw = connection.connection
    cache = getattr(connection, "_finance_prepared", None)
    if cache is None or cache[0] is not raw:
        cache = connection._finance_prepared = (raw, {})
    return cache[1]
