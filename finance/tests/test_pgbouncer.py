"""The ledger behind PgBouncer in transaction pooling mode, as production runs it.

A real PgBouncer (testing/pgbouncer.py) sits in front of the test database, with fewer
server connections than threads, so one client's consecutive transactions land on
different server sessions. The concurrency scenario of test_services_concurrency.py then
runs with every thread's connection going through it, configured as DATABASE_POOLER=
pgbouncer configures production (no persistent connections, no server-side cursors).
Session state a posting relied on (a PREPAREd statement) would be missing on the next
session; the ledger's PL/pgSQL functions are plain statements any session can run.
"""

import pytest
from django.db import connection, connections

from finance.tests.test_services_concurrency import THREADS, run_scenario
from testing.pgbouncer import PgBouncer


@pytest.fixture
def pgbouncer():
    settings = connection.settings_dict
    bouncer = PgBouncer(host=settings["HOST"] or "127.0.0.1", port=int(settings["PORT"] or 5432), pool_size=3)
    with bouncer:
        yield bouncer


def through(bouncer: PgBouncer):
    """A `connect` hook: this thread's default connection goes through `bouncer`."""
    settings = {
        **connection.settings_dict,
        "HOST": "127.0.0.1",
        "PORT": str(bouncer.port),
        "CONN_MAX_AGE": 0,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }

    def connect():
        # Connections are per thread: this replaces the default one for this thread only.
        connections["default"] = type(connections["default"])(settings, "default")

    return connect


@pytest.mark.django_db(transaction=True)
def test_concurrent_operations_through_pgbouncer_keep_every_invariant(make_user, pgbouncer):
    assert pgbouncer.pool_size < THREADS, "every thread must share server sessions"
    database = connection.settings_dict["NAME"]
    succeeded = run_scenario(make_user, connect=through(pgbouncer))
    # Every operation of the threads went through PgBouncer (plus BEGIN/COMMIT-wrapped ones).
    assert pgbouncer.transactions(database) >= succeeded
