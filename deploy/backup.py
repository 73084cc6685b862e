"""Backup and restore of a deployment: PostgreSQL and the messaging write-ahead logs.

    python -m deploy.backup backup             # make backup
    python -m deploy.backup restore <dir>      # make restore BACKUP=<dir>

A backup is a directory `stayafrica-<UTC time>/` under BACKUP_DIR (default ./backups):
`database.dump` (pg_dump's custom format: one snapshot, so consistent), `messaging-wal/<n>/`
(the wal.*.LOG files of each messaging data directory, in the order given) and
`manifest.json` (time, database name, pg_dump version, every file's size and SHA-256). It
is written under a hidden `.partial` name and renamed when complete, so a directory that
looks like a backup is a whole one.

A restore goes only into an existing, empty database, and only after every checksum
matches; then it runs `manage.py check_ledger` on the result.

The standard library and PostgreSQL's client tools (and the names of the secrets Django
requires, for check_ledger): pg_dump does not need Django's settings, so neither DEBUG nor
any secret is required. The password in DATABASE_URL reaches
libpq through PGPASSWORD, never a command line (which `ps` shows) or the output.
"""

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

# The secrets every deployment must set (read without loading Django's settings).
from portal.secrets_check import ALWAYS_REQUIRED

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
DUMP = "database.dump"
WAL_DIR = "messaging-wal"
WAL_FILES = "wal.*.LOG"  # erlang_messaging/src/message_wal.erl's generations
MANIFEST_FORMAT = 1
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A refusal or failure, told to the operator in one message; nothing was changed."""


@dataclass(frozen=True)
class Database:
    """DATABASE_URL split for libpq: `uri` carries no password, `password` goes in PGPASSWORD."""

    uri: str
    name: str
    host: str
    port: int
    password: str

    def env(self) -> dict[str, str]:
        env = {**os.environ}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def __str__(self) -> str:
        return f"{self.name} on {self.host}:{self.port}"


def database_from_env(environ: dict[str, str]) -> Database:
    url = environ.get("BACKUP_DATABASE_URL") or environ.get("DATABASE_URL") or ""
    if not url:
        raise BackupError("DATABASE_URL is not set: the PostgreSQL database, e.g. postgres://user@host:5432/stayafrica")
    if environ.get("DATABASE_POOLER") == "pgbouncer" and not environ.get("BACKUP_DATABASE_URL"):
        # pg_dump's snapshot and pg_restore's single transaction need one server session.
        raise BackupError(
            "DATABASE_URL goes through PgBouncer (DATABASE_POOLER=pgbouncer): "
            "set BACKUP_DATABASE_URL to PostgreSQL itself."
        )
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise BackupError(f"DATABASE_URL must name a PostgreSQL database (postgres://...), not {parts.scheme}://")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    netloc = f"{user}@{hostport}" if user else hostport
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise BackupError("DATABASE_URL names no database (postgres://user@host:5432/<name>).")
    return Database(
        uri=urlunsplit(("postgresql", netloc, parts.path, parts.query, "")),
        name=name,
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        password=unquote(password),
    )


def messaging_data_dirs(environ: dict[str, str]) -> list[Path]:
    """MESSAGING_DATA_DIRS (separated by spaces or colons), else MESSAGING_DATA_DIR, else none."""
    listed = environ.get("MESSAGING_DATA_DIRS") or environ.get("MESSAGING_DATA_DIR") or ""
    return [Path(item) for item in listed.replace(":", " ").split()]


def run(command: list[str], *, env: dict[str, str] | None = None, what: str) -> str:
    """Run a client tool; its own error text (libpq's never holds the password) on failure."""
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not installed (Debian: apt-get install postgresql-client).") from None
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, path: Path) -> dict:
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def fsync(path: Path) -> None:
    """A backup reported written survives a power cut: its files and directory reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- backup ----------------------------------------------------------------------------------


def copy_wal(data_dirs: list[Path], target: Path) -> list[dict]:
    """Copy each data directory's WAL files into target/messaging-wal/<n>/; what was copied.

    Taken from a running node, a file is what a crash at that moment would leave: the node
    repairs a torn last term when it opens the log. A generation that disappears while we
    copy was deleted because Django had confirmed all of it, so it is not needed."""
    nodes = []
    for number, data_dir in enumerate(data_dirs, start=1):
        if not data_dir.is_dir():
            raise BackupError(f"Messaging data directory {data_dir} does not exist (MESSAGING_DATA_DIR(S)).")
        node_dir = target / WAL_DIR / str(number)
        node_dir.mkdir(parents=True)
        copied = []
        for source in sorted(data_dir.glob(WAL_FILES)):
            try:
                shutil.copyfile(source, node_dir / source.name)
            except FileNotFoundError:
                continue
            copied.append(source.name)
        nodes.append({"source": str(data_dir.resolve()), "path": f"{WAL_DIR}/{number}", "files": copied})
    return nodes


def dump_database(database: Database, path: Path) -> dict:
    run(
        ["pg_dump", "--format=custom", "--no-password", f"--file={path}", f"--dbname={database.uri}"],
        env=database.env(),
        what=f"pg_dump of {database}",
    )
    return dump_versions(path)


def dump_versions(path: Path) -> dict:
    """The server and pg_dump versions, as the dump's own table of contents records them."""
    listing = run(["pg_restore", "--list", str(path)], what="Reading the dump")
    versions = {}
    for line in listing.splitlines():
        for label, key in (("Dumped from database version:", "server"), ("Dumped by pg_dump version:", "pg_dump")):
            if label in line:
                versions[key] = line.split(label, 1)[1].strip()
    return versions


def write_manifest(staging: Path, *, created_at: datetime, database: Database, versions: dict, wal: list[dict]):
    files = [file_entry(staging, path) for path in sorted(staging.rglob("*")) if path.is_file()]
    manifest = {
        "format": MANIFEST_FORMAT,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "database": {"name": database.name, "host": database.host, "port": database.port},
        "server_version": versions.get("server", ""),
        "pg_dump_version": versions.get("pg_dump", ""),
        "messaging_wal": wal,
        "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for path in [*staging.rglob("*"), staging]:
        fsync(path)
    return manifest


def backup(environ: dict[str, str]) -> tuple[Path, dict]:
    database = database_from_env(environ)
    data_dirs = messaging_data_dirs(environ)
    root = Path(environ.get("BACKUP_DIR") or "backups").resolve()
    created_at = datetime.now(UTC).replace(microsecond=0)
    final = root / f"stayafrica-{created_at:%Y%m%dT%H%M%SZ}"
    staging = root / f".{final.name}.partial"
    if final.exists() or staging.exists():
        raise BackupError(f"{final} already exists: wait a second and run it again.")
    root.mkdir(parents=True, exist_ok=True)
    staging.mkdir(mode=0o700)  # the dump holds every account: readable by its owner only
    try:
        # The logs first, then the dump: a message the copied log counts as confirmed was
        # stored by Django before we copied it, hence before the dump's snapshot, so a
        # restore loses no message the restored node would not replay.
        wal = copy_wal(data_dirs, staging)
        versions = dump_database(database, staging / DUMP)
        manifest = write_manifest(staging, created_at=created_at, database=database, versions=versions, wal=wal)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, manifest


# --- restore ---------------------------------------------------------------------------------


def read_manifest(backup_dir: Path) -> dict:
    path = backup_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{backup_dir} is not a backup: it has no {MANIFEST}.") from None
    except ValueError:
        raise BackupError(f"{path} is damaged: it is not valid JSON.") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise BackupError(f"{path} has format {manifest.get('format')!r}; this tool reads {MANIFEST_FORMAT}.")
    refuse_unlisted_files(path, manifest)
    return manifest


def refuse_unlisted_files(path: Path, manifest: dict) -> None:
    """A restore reads only files whose checksum the manifest lists, all inside the backup."""
    listed = {entry["path"] for entry in manifest["files"]}
    needed = {DUMP} | {f"{node['path']}/{name}" for node in manifest["messaging_wal"] for name in node["files"]}
    outside = [name for name in listed if name.startswith("/") or ".." in Path(name).parts]
    if needed - listed or outside:
        raise BackupError(f"{path} is damaged: it does not list {DUMP} and each log file inside the backup.")


def verify_checksums(backup_dir: Path, manifest: dict) -> None:
    """Every file the manifest lists is there, of its size and SHA-256."""
    damaged = []
    for entry in manifest["files"]:
        path = backup_dir / entry["path"]
        if not path.is_file():
            damaged.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            damaged.append(f"{entry['path']} does not match its checksum")
    if damaged:
        raise BackupError(f"The backup {backup_dir} is damaged, nothing was restored: " + "; ".join(damaged) + ".")


def refuse_unless_empty(database: Database) -> None:
    """The target must exist and hold nothing in public: a restore never overwrites data."""
    count = run(
        [
            "psql", "--no-psqlrc", "--no-password", "--tuples-only", "--no-align", "--quiet",
            f"--dbname={database.uri}", "--command",
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
        ],
        env=database.env(),
        what=f"Connecting to {database} (it must exist and be empty: createdb it first)",
    ).strip()  # fmt: skip
    if count != "0":
        raise BackupError(
            f"The database {database} is not empty ({count} tables, views or sequences in its public schema): "
            "a restore never overwrites data. Restore into a new database (createdb)."
        )


def refuse_wal_targets(manifest: dict, data_dirs: list[Path]) -> None:
    """One empty (or new) data directory per backed-up node, in the backup's order."""
    nodes = manifest["messaging_wal"]
    if not data_dirs or not nodes:
        return
    if len(data_dirs) != len(nodes):
        sources = ", ".join(node["source"] for node in nodes)
        raise BackupError(
            f"The backup holds the write-ahead logs of {len(nodes)} messaging data directories ({sources}), "
            f"but {len(data_dirs)} were given: set MESSAGING_DATA_DIRS to {len(nodes)} directories, in that order."
        )
    for data_dir in data_dirs:
        if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
            raise BackupError(f"Messaging data directory {data_dir} is not empty: a restore never overwrites a log.")


def restore_database(database: Database, dump: Path) -> None:
    # One transaction: a dump that fails half-way (or a table someone created meanwhile)
    # leaves the database as empty as it was.
    run(
        [
            "pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", "--no-password",
            f"--dbname={database.uri}", str(dump),
        ],
        env=database.env(),
        what=f"pg_restore into {database}",
    )  # fmt: skip


def restore_wal(backup_dir: Path, manifest: dict, data_dirs: list[Path]) -> int:
    """Copy each backed-up node's log files (checked against the manifest) into its data directory."""
    copied = 0
    # Nothing to copy when either list is empty; otherwise refuse_wal_targets made them agree.
    for node, data_dir in zip(manifest["messaging_wal"], data_dirs, strict=False):
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in node["files"]:
            shutil.copyfile(backup_dir / node["path"] / name, data_dir / Path(name).name)
            copied += 1
    return copied


def check_ledger(environ: dict[str, str], database_url: str) -> subprocess.CompletedProcess:
    """`manage.py check_ledger` on the restored database.

    It only reads the ledger: it signs nothing, calls no provider and no messaging node. So
    where the secrets Django's settings insist on (with DEBUG off) are not set, a throwaway
    value stands in, and no payment provider is switched on."""
    env = {**environ, "DATABASE_URL": database_url, "PAYMENT_PROVIDERS": "none", "SANDBOX_PAYMENTS_ENABLED": "false"}
    env.pop("DATABASE_POOLER", None)
    for name in ALWAYS_REQUIRED:
        env.setdefault(name, secrets.token_urlsafe(50))
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check_ledger"], cwd=ROOT, env=env, capture_output=True, text=True
    )


@dataclass(frozen=True)
class Restored:
    manifest: dict
    wal_files: int  # copied into the messaging data directories
    ledger_check: subprocess.CompletedProcess


def restore(backup_dir: Path, environ: dict[str, str]) -> Restored:
    """Check everything that could refuse, then restore the database and the logs, then the ledger."""
    manifest = read_manifest(backup_dir)
    verify_checksums(backup_dir, manifest)
    database = database_from_env(environ)
    data_dirs = messaging_data_dirs(environ)
    refuse_wal_targets(manifest, data_dirs)
    refuse_unless_empty(database)
    restore_database(database, backup_dir / DUMP)
    wal_files = restore_wal(backup_dir, manifest, data_dirs)
    url = environ.get("BACKUP_DATABASE_URL") or environ["DATABASE_URL"]
    return Restored(manifest, wal_files, check_ledger(environ, url))


# --- command line ----------------------------------------------------------------------------


def human_size(size: float) -> str:
    units = ["B", "KB", "MB", "GB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.0f} B" if units[0] == "B" else f"{size:.1f} {units[0]}"


def plural(count: int, noun: str, nouns: str = "") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def report_backup(path: Path, manifest: dict) -> None:
    total = sum(entry["bytes"] for entry in manifest["files"])
    database = manifest["database"]
    print(f"Backup written to {path}")
    print(f"  database {database['name']} on {database['host']}:{database['port']}, {manifest['server_version']}")
    wal = manifest["messaging_wal"]
    if wal:
        files = plural(sum(len(node["files"]) for node in wal), "file")
        print(f"  messaging write-ahead logs: {files} from {plural(len(wal), 'data directory', 'data directories')}")
    else:
        print("  no messaging write-ahead logs: MESSAGING_DATA_DIR(S) not set")
    print(f"  {plural(len(manifest['files']), 'file')}, {human_size(total)}; checksums in {MANIFEST}")


def report_restore(backup_dir: Path, environ: dict[str, str], restored: Restored) -> int:
    print(f"Restored {backup_dir.name} into {database_from_env(environ)}")
    if restored.wal_files:
        targets = ", ".join(map(str, messaging_data_dirs(environ)))
        print(f"  messaging write-ahead logs: {plural(restored.wal_files, 'file')} into {targets}")
    elif restored.manifest["messaging_wal"]:
        print("  messaging write-ahead logs NOT restored: set MESSAGING_DATA_DIR (or MESSAGING_DATA_DIRS)")
    check = restored.ledger_check
    print("==> manage.py check_ledger")
    print(check.stdout, end="")
    if check.returncode != 0:
        print(check.stderr, end="", file=sys.stderr)
        print("The restore finished, but the ledger check FAILED (above).", file=sys.stderr)
    return check.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.backup", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="back up DATABASE_URL and the messaging WAL into BACKUP_DIR")
    restore_parser = commands.add_parser("restore", help="restore a backup into the empty DATABASE_URL")
    restore_parser.add_argument("backup_dir", type=Path)
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        if args.command == "backup":
            report_backup(*backup(environ))
            return 0
        return report_restore(args.backup_dir, environ, restore(args.backup_dir, environ))
    except BackupError as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
