"""The databases the benchmarks measure on: DATABASE_URL's name with a suffix of their own,
so a benchmark never touches the data of the database it was pointed at."""

import os
from urllib.parse import urlparse


def bench_database_url(suffix: str) -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stayafrica")
    url = urlparse(base)
    return url._replace(path=url.path + suffix).geturl()


def psql_args(url: str) -> list[str]:
    """Connection arguments for PostgreSQL's command-line tools (psql, createdb, pgbench)."""
    u = urlparse(url)
    return ["-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]
