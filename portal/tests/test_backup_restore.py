"""The backup and restore drill (deploy/backup.py: `make backup`, `make restore BACKUP=<dir>`).

The drill does what an operator would on a bad day: back up a live deployment (PostgreSQL
with the demo data and fresh activity, a running messaging node holding messages Django has
not stored), restore into a new empty database and data directory, and check that nothing
was lost. The other tests hold the refusals on a small database: a restore never overwrites
data and never restores a damaged backup.

The tools run as production would: DEBUG off, no secret in the environment but DATABASE_URL.
Every database made here is dropped at the end.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest
import requests

from testing.erlang_node import ErlangNode
from testing.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
MESSAGES_IN_FLIGHT = 5
PASSWORD = "drill-password-not-to-be-printed"

# Fresh activity on top of the demo data, through the real TransactionService: credits and
# debits, a withdrawal initiated and completed, a refund.
ACTIVITY = """
from decimal import Decimal

from django.db.models import F

from finance.models import BankAccount, Booking, Wallet
from finance.money import round_money
from finance.services import TransactionService

# Wallets with money to spare (the demo has a host who owes the platform: no debit from that one).
wallets = list(Wallet.objects.filter(balance__gt=F("held_balance") + 1000).order_by("pk")[:3])
for wallet in wallets:
    TransactionService.credit_wallet(wallet, Decimal("250.00"), description="drill credit")
    TransactionService.debit_wallet(wallet, Decimal("100.00"), description="drill debit")
wallet = wallets[0]
wallet.refresh_from_db()
bank = BankAccount.objects.get(owner=wallet.user, is_primary=True)
amount = round_money(wallet.available_balance / 2, wallet.currency)
TransactionService.complete_withdrawal(TransactionService.initiate_withdrawal(wallet, bank, amount))
booking = Booking.objects.filter(status=Booking.Status.CONFIRMED).order_by("-pk").first()
TransactionService.process_refund(booking, Decimal("10.00"), "drill refund")
"""


# --- databases -------------------------------------------------------------------------------


def database_url(name: str, *, password: str = "") -> str:
    url = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stayafrica"))
    user = url.username or "postgres"
    userinfo = f"{user}:{password}" if password else user
    return url._replace(netloc=f"{userinfo}@{url.hostname or '127.0.0.1'}:{url.port or 5432}", path=f"/{name}").geturl()


def execute(url: str, sql: str) -> list[tuple]:
    connection = psycopg2.connect(url.replace("postgres://", "postgresql://", 1))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture
def databases():
    """`databases("role")` makes an empty database named after DATABASE_URL's; all are dropped after."""
    base = urlparse(os.environ.get("DATABASE_URL", "postgres:///stayafrica")).path.lstrip("/") or "stayafrica"
    made = []

    def make(role: str) -> str:
        name = f"{base}_{role}_{uuid.uuid4().hex[:8]}"
        execute(database_url("postgres"), f'CREATE DATABASE "{name}"')
        made.append(name)
        return database_url(name)

    yield make
    for name in made:
        execute(database_url("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tables(url: str) -> list[str]:
    return [row[0] for row in execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def snapshot(url: str) -> dict:
    """What must survive a restore: every table's row count, every wallet, every sequence."""
    names = tables(url)
    wallets = "SELECT id, currency, balance, held_balance FROM finance_wallet ORDER BY id"
    return {
        "rows": {table: execute(url, f'SELECT count(*) FROM "{table}"')[0][0] for table in names},
        "wallets": execute(url, wallets) if "finance_wallet" in names else [],
        "sequences": dict(
            execute(url, "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")
        ),
    }


# --- the tools, as production runs them ------------------------------------------------------


def production_env(**extra) -> dict:
    """DEBUG off and not one secret: only what the tools need to run, and `extra`."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **extra}


def backup_tool(*args: str, **env):
    return subprocess.run(
        [sys.executable, "-m", "deploy.backup", *args],
        cwd=ROOT,
        env=production_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def manage(url: str, *args: str):
    """A manage.py command in development mode (seed_demo refuses to run otherwise)."""
    env = {**os.environ, "DEBUG": "true", "DATABASE_URL": url, "FINANCE_LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def only_backup_in(backup_dir: Path) -> Path:
    made = list(backup_dir.iterdir())
    assert len(made) == 1 and made[0].name.startswith("stayafrica-"), made
    return made[0]


# --- the messaging node ----------------------------------------------------------------------


def send_messages(node: ErlangNode, secret: str, count: int) -> None:
    for n in range(count):
        body = {
            "id": str(uuid.uuid4()),
            "conversation_id": 1,
            "sender_id": 1,
            "receiver_id": 2,
            "text": f"Drill message {n}",
            "priority": "normal",
        }
        answer = requests.post(f"{node.url}/messages", json=body, headers={"X-Messaging-Token": secret}, timeout=15)
        assert answer.status_code == 202, answer.text


def unconfirmed_messages(node: ErlangNode, secret: str) -> int:
    return requests.get(f"{node.url}/stats", headers={"X-Messaging-Token": secret}, timeout=15).json()[
        "wal_unconfirmed"
    ]


# --- the drill -------------------------------------------------------------------------------


@pytest.mark.erlang
def test_backup_restore_drill(databases, tmp_path):
    started = time.monotonic()
    source = databases("drill_source")
    for command in (("migrate", "--noinput", "-v", "0"), ("seed_demo",), ("shell", "-c", ACTIVITY)):
        result = manage(source, *command)
        assert result.returncode == 0, result.stderr
    seeded = time.monotonic()

    # A running node that accepted messages Django (nowhere to be reached) has not stored.
    secret = uuid.uuid4().hex
    nowhere = f"http://127.0.0.1:{free_port()}"
    with ErlangNode(django_url=nowhere, secret=secret) as node:
        send_messages(node, secret, MESSAGES_IN_FLIGHT)
        original = snapshot(source)
        backups = tmp_path / "backups"
        result = backup_tool("backup", DATABASE_URL=source, BACKUP_DIR=str(backups), MESSAGING_DATA_DIR=node.data_dir)
        assert result.returncode == 0, result.stderr
        backed_up = time.monotonic()
        backup = only_backup_in(backups)
        assert f"Backup written to {backup}" in result.stdout

        target = databases("drill_restored")
        restored_wal = tmp_path / "restored-wal"
        result = backup_tool("restore", str(backup), DATABASE_URL=target, MESSAGING_DATA_DIR=str(restored_wal))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Ledger healthy" in result.stdout
        restored = time.monotonic()

        original_wal = {path.name: path.read_bytes() for path in Path(node.data_dir).glob("wal.*.LOG")}

    assert manage(target, "check_ledger").returncode == 0
    after = snapshot(target)
    assert after["rows"] == original["rows"]
    assert after["wallets"] == original["wallets"]
    assert after["sequences"] == original["sequences"]
    assert original_wal and {path.name: path.read_bytes() for path in restored_wal.iterdir()} == original_wal

    # The restored log is one a node reads: it holds the messages Django never stored.
    with ErlangNode(django_url=nowhere, secret=secret, MESSAGING_DATA_DIR=str(restored_wal)) as node:
        assert unconfirmed_messages(node, secret) == MESSAGES_IN_FLIGHT

    print(
        f"\nDrill: {len(original['rows'])} tables, {sum(original['rows'].values())} rows, "
        f"{len(original['wallets'])} wallets, {len(original['sequences'])} sequences and "
        f"{len(original_wal)} WAL files ({MESSAGES_IN_FLIGHT} messages in flight) restored equal; "
        f"seed {seeded - started:.1f} s, backup {backed_up - seeded:.1f} s (with the node's start), "
        f"restore with check_ledger {restored - backed_up:.1f} s, in all {time.monotonic() - started:.1f} s"
    )


# --- refusals, on a small database -----------------------------------------------------------


@pytest.fixture
def small_backup(databases, tmp_path):
    """A real backup of a small database (one table of 50 rows) and of one WAL file: (url, dir)."""
    url = databases("backup_source")
    execute(url, "CREATE TABLE note (id serial PRIMARY KEY, text text)")
    execute(url, "INSERT INTO note (text) SELECT 'note ' || n FROM generate_series(1, 50) n")
    data_dir = tmp_path / "node-data"
    data_dir.mkdir()
    (data_dir / "wal.1.LOG").write_bytes(os.urandom(4096))
    result = backup_tool(
        "backup", DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "backups"), MESSAGING_DATA_DIR=str(data_dir)
    )
    assert result.returncode == 0, result.stderr
    return url, only_backup_in(tmp_path / "backups")


def test_a_restore_into_a_database_with_data_is_refused_and_changes_nothing(small_backup):
    url, backup = small_backup
    execute(url, "UPDATE note SET text = 'changed since the backup' WHERE id = 1")
    before = snapshot(url), execute(url, "SELECT * FROM note ORDER BY id")

    result = backup_tool("restore", str(backup), DATABASE_URL=url)

    assert result.returncode == 1
    assert "is not empty (2 tables, views or sequences in its public schema)" in result.stderr
    assert "a restore never overwrites data" in result.stderr
    assert (snapshot(url), execute(url, "SELECT * FROM note ORDER BY id")) == before


@pytest.mark.parametrize("damaged", ["database.dump", "messaging-wal/1/wal.1.LOG"])
def test_a_damaged_backup_is_refused(small_backup, databases, tmp_path, damaged):
    _, backup = small_backup
    path = backup / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    target = databases("damaged_target")

    result = backup_tool("restore", str(backup), DATABASE_URL=target, MESSAGING_DATA_DIR=str(tmp_path / "wal"))

    assert result.returncode == 1
    assert f"is damaged, nothing was restored: {damaged} does not match its checksum" in result.stderr
    assert tables(target) == []
    assert not (tmp_path / "wal").exists()


def test_a_manifest_that_leaves_a_file_unchecked_is_refused(small_backup, databases):
    _, backup = small_backup
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"] = [entry for entry in manifest["files"] if entry["path"] != "database.dump"]
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target = databases("unlisted_target")

    result = backup_tool("restore", str(backup), DATABASE_URL=target)

    assert result.returncode == 1
    assert "manifest.json is damaged: it does not list database.dump" in result.stderr
    assert tables(target) == []


def test_a_restore_into_a_messaging_directory_with_files_is_refused(small_backup, databases, tmp_path):
    _, backup = small_backup
    data_dir = tmp_path / "busy-node"
    data_dir.mkdir()
    (data_dir / "wal.7.LOG").write_bytes(b"a live node's log")
    target = databases("busy_target")

    result = backup_tool("restore", str(backup), DATABASE_URL=target, MESSAGING_DATA_DIR=str(data_dir))

    assert result.returncode == 1
    assert f"Messaging data directory {data_dir} is not empty" in result.stderr
    assert tables(target) == []
    assert [path.name for path in data_dir.iterdir()] == ["wal.7.LOG"]
    assert (data_dir / "wal.7.LOG").read_bytes() == b"a live node's log"


def test_each_nodes_log_goes_back_to_its_own_directory(databases, tmp_path):
    url = databases("two_nodes")
    logs = {"a": os.urandom(1000), "b": os.urandom(2000)}
    for node, data in logs.items():
        (tmp_path / node).mkdir()
        (tmp_path / node / "wal.1.LOG").write_bytes(data)
    dirs = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    assert backup_tool("backup", DATABASE_URL=url, BACKUP_DIR=str(tmp_path), MESSAGING_DATA_DIRS=dirs).returncode == 0
    backup = next(tmp_path.glob("stayafrica-*"))

    one_dir = backup_tool("restore", str(backup), DATABASE_URL=databases("one"), MESSAGING_DATA_DIR=str(tmp_path / "x"))
    assert one_dir.returncode == 1
    assert "set MESSAGING_DATA_DIRS to 2 directories, in that order" in one_dir.stderr

    restored = f"{tmp_path / 'a2'} {tmp_path / 'b2'}"
    result = backup_tool("restore", str(backup), DATABASE_URL=databases("two"), MESSAGING_DATA_DIRS=restored)
    # The database restores (check_ledger then fails on it: it holds no ledger at all).
    assert "Restored" in result.stdout
    assert (tmp_path / "a2" / "wal.1.LOG").read_bytes() == logs["a"]
    assert (tmp_path / "b2" / "wal.1.LOG").read_bytes() == logs["b"]


def test_a_failed_backup_leaves_nothing_that_looks_like_a_backup(tmp_path):
    result = backup_tool(
        "backup", DATABASE_URL=database_url(f"missing_{uuid.uuid4().hex[:8]}"), BACKUP_DIR=str(tmp_path)
    )

    assert result.returncode == 1
    assert "pg_dump of missing_" in result.stderr and "does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_password_is_never_shown(small_backup, databases, tmp_path):
    source, _ = small_backup
    name = urlparse(source).path.lstrip("/")
    with_password = database_url(name, password=PASSWORD)
    made = backup_tool("backup", DATABASE_URL=with_password, BACKUP_DIR=str(tmp_path / "again"))
    backup = only_backup_in(tmp_path / "again")
    target = urlparse(databases("password_target")).path.lstrip("/")
    restored = backup_tool("restore", str(backup), DATABASE_URL=database_url(target, password=PASSWORD))

    assert made.returncode == 0, made.stderr
    assert "Restored" in restored.stdout
    shown = made.stdout + made.stderr + restored.stdout + restored.stderr + (backup / "manifest.json").read_text()
    assert PASSWORD not in shown
    server = urlparse(source)
    assert json.loads((backup / "manifest.json").read_text())["database"] == {
        "name": name,
        "host": server.hostname,
        "port": server.port,
    }
