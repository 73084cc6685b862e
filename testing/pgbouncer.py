"""A real PgBouncer in transaction pooling mode for tests and benchmarks.

Started from Debian's /usr/sbin/pgbouncer on a free loopback port, with its config, auth
file, log and pid file in a temporary directory of its own (so parallel pytest-xdist
workers never share one), in front of the PostgreSQL server given; stopped by its PID.
Every database name is forwarded as is, so the test database pytest-django created is
reachable through it under the same name.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .processes import free_port, stop_process
from .waiting import wait_until

PGBOUNCER = "/usr/sbin/pgbouncer"

CONFIG = """\
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = {user}
stats_users = {user}
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
; psycopg2 and pgbench may send these at login; PgBouncer need not track them.
ignore_startup_parameters = extra_float_digits,options
"""


class _Exited(Exception):
    """PgBouncer exited while we waited for it to listen."""


class PgBouncer:
    """`with PgBouncer(host=..., port=..., user=...) as bouncer:` → bouncer.port.

    `pool_size` is the number of server connections per database and user: fewer than the
    clients means transactions from one client connection land on different server sessions,
    which is exactly what breaks session state such as prepared statements.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres", pool_size: int = 4):
        self.server_host, self.server_port, self.user, self.pool_size = host, port, user, pool_size
        self.port = None
        self.directory = None
        self.process = None

    def start(self, timeout: float = 15.0, attempts: int = 3) -> "PgBouncer":
        if not Path(PGBOUNCER).exists():
            raise RuntimeError(f"{PGBOUNCER} is missing: apt-get install pgbouncer (make setup does).")
        self.directory = tempfile.mkdtemp(prefix="pgbouncer-test-")
        for _attempt in range(attempts):  # another process may take the free port first
            self.port = free_port()
            self._write_config()
            self.process = subprocess.Popen(
                [PGBOUNCER, *self._run_as(), str(Path(self.directory) / "pgbouncer.ini")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            try:
                if self._wait_listening(timeout):
                    return self
            except _Exited:  # it could not bind the port: try another
                pass
            self.stop()
        raise RuntimeError(f"PgBouncer did not start after {attempts} attempts:\n{self.log()[-3000:]}")

    def _write_config(self) -> None:
        directory = Path(self.directory)
        (directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        (directory / "pgbouncer.ini").write_text(
            CONFIG.format(
                server_host=self.server_host,
                server_port=self.server_port,
                port=self.port,
                pool_size=self.pool_size,
                directory=directory,
                user=self.user,
            )
        )

    def _run_as(self) -> list[str]:
        """PgBouncer refuses to run as root: then it runs as the postgres user, which must
        be able to write its log and pid file in our directory."""
        if os.geteuid() != 0:
            return []
        account = pwd.getpwnam("postgres")
        for path in [self.directory, *Path(self.directory).iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        return ["-u", "postgres"]

    def _wait_listening(self, timeout: float) -> bool:
        return wait_until(self._listening, seconds=timeout)

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise _Exited()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        path = Path(self.directory or "/nonexistent") / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}"

    def transactions(self, database: str) -> int:
        """How many transactions PgBouncer has passed on to `database` (SHOW STATS on its
        admin console): the proof that traffic really went through it."""
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer")
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute("SHOW STATS")
                columns = [column[0] for column in cursor.description]
                rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            admin.close()
        return sum(int(row["total_xact_count"]) for row in rows if row["database"] == database)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (PgBouncer's immediate shutdown), then SIGKILL if it lingers."""
        stop_process(self.process, timeout=timeout)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
