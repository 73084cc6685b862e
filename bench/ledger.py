"""`make bench-ledger`: TransactionService against pgbench on the same PostgreSQL.

Anchor: pgbench's built-in `simple-update` script (one account UPDATE plus one history
INSERT per transaction), the physical limit of this database on this machine. Then
TransactionService at the same client counts, in two mixes:
  uniform  credits and debits spread over many wallets;
  hot      booking payments that all credit the one platform-revenue account.
Each client is its own OS process with its own connection, like a web worker.
Prints ops/s, p50 and p99 latency, and ratios to the anchor; the targets are
uniform at 8 clients ≥ 0.5 × pgbench, hot ≥ 0.85 × uniform, p99 ≤ 50 ms.

Everything runs twice: straight to PostgreSQL, then through a PgBouncer in transaction
pooling mode that the bench starts on a free port (testing/pgbouncer.py, as the tests do),
with pgbench and the clients (DATABASE_POOLER=pgbouncer) both going through it.
"""

import logging
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bench_database import bench_database_url, psql_args  # bench/, this script's directory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = tuple(int(c) for c in os.environ.get("BENCH_CLIENTS", "1,8,16").split(","))
SECONDS = float(os.environ.get("BENCH_SECONDS", 8))
WALLETS = 2000
TARGET_UNIFORM_RATIO = 0.5
TARGET_HOT_RATIO = 0.85
TARGET_P99_MS = 50.0


def setup_django(url: str, pooler: str = ""):
    """Production settings: DEBUG off (no per-query recording), INFO logging on."""
    os.environ["DATABASE_URL"] = url
    os.environ["DATABASE_POOLER"] = pooler
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    # DEBUG off refuses the published development secrets: private ones for this run (the
    # benchmark takes no payments, so the sandbox stays off).
    from testing.production_secrets import PRODUCTION_SECRETS

    os.environ.update(PRODUCTION_SECRETS, SANDBOX_PAYMENTS_ENABLED="false")
    import django

    django.setup()


# --- the anchor ------------------------------------------------------------------------


def pgbench_database(url: str) -> str:
    return urlparse(url).path.lstrip("/") + "_pgbench"


def fresh_databases(url: str) -> None:
    """Both databases created anew, so every run starts from the same state: tables and
    indexes left grown (and autovacuum busy on them) by earlier runs would skew the figures."""
    args = psql_args(url)
    for db in (urlparse(url).path.lstrip("/"), pgbench_database(url)):
        subprocess.run(["dropdb", *args, "--if-exists", "--force", db], check=True, capture_output=True)
        subprocess.run(["createdb", *args, db], check=True, capture_output=True)


def init_pgbench(url: str) -> None:
    """pgbench's tables (scale 10), straight on the server."""
    db, args = pgbench_database(url), psql_args(url)
    subprocess.run(["pgbench", *args, "-i", "-s", "10", "-q", db], check=True, capture_output=True)


def run_pgbench(url: str, clients: int) -> dict:
    """pgbench simple-update at `url`'s host and port (the server, or PgBouncer)."""
    db, args = pgbench_database(url), psql_args(url)
    logs = Path(tempfile.mkdtemp(prefix="pgbench-logs-"))  # not shared with another run
    out = subprocess.run(
        [
            "pgbench",
            *args,
            "-b",
            "simple-update",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(int(SECONDS)),
            "-r",
            "--log",
            "--log-prefix",
            str(logs / "log"),
            db,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=logs,
    ).stdout
    tps = float(next(line for line in out.splitlines() if line.startswith("tps")).split("=")[1].split()[0])
    latencies = []
    for log in logs.glob("log*"):
        for line in log.read_text().splitlines():
            latencies.append(int(line.split()[2]) / 1000)  # µs → ms
    shutil.rmtree(logs)
    return {"ops": tps, **percentiles(latencies)}


# --- TransactionService clients -----------------------------------------------------------


def percentiles(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return {"p50": float("nan"), "p99": float("nan")}
    ordered = sorted(latencies_ms)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def client(url: str, pooler: str, mix: str, seed: int, start, wallet_ids: list[int], payment_ids: list[int], out):
    # Production logging (INFO), as in production; the client's console goes nowhere here.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    setup_django(url, pooler)
    from decimal import Decimal

    from finance.models import Payment, Wallet
    from finance.services import TransactionService

    rng = random.Random(seed)
    wallets = list(Wallet.objects.filter(pk__in=wallet_ids))
    payments = list(Payment.objects.filter(pk__in=payment_ids).select_related("booking"))
    latencies, done, refused = [], 0, 0
    start.wait()  # every client is connected and ready: the measured window starts now
    began = time.perf_counter()
    deadline = began + SECONDS
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            if mix == "uniform":
                wallet = rng.choice(wallets)
                amount = Decimal(rng.randint(100, 5000)) / 100
                if rng.random() < 0.5:
                    TransactionService.credit_wallet(wallet, amount)
                else:
                    TransactionService.debit_wallet(wallet, amount)
            else:
                if not payments:
                    break
                payment = payments.pop()
                TransactionService.process_booking_payment(payment.booking, payment)
        except Exception:
            refused += 1
        latencies.append((time.perf_counter() - started) * 1000)
        done += 1
    out.put((done, refused, latencies, time.perf_counter() - began))


def prepare(clients: int) -> tuple[list[int], list[list[int]]]:
    """Wallets for the uniform mix; per-client unpaid bookings for the hot mix."""
    from datetime import date, timedelta
    from decimal import Decimal

    from django.db import transaction

    from finance.models import Booking, Payment, Property, Wallet
    from portal.models import User

    with transaction.atomic():
        if Wallet.objects.count() < WALLETS:
            users = User.objects.bulk_create(
                [User(username=f"bench-{n}-{time.time_ns()}", role="host") for n in range(WALLETS)]
            )
            Wallet.objects.bulk_create([Wallet(user=u, currency="NGN") for u in users])
        wallet_ids = list(Wallet.objects.order_by("pk").values_list("pk", flat=True)[:WALLETS])
        # Payouts go to as many hosts as the uniform mix has wallets: the one account every
        # payout shares is platform revenue, as in a marketplace with many hosts.
        hosts = list(User.objects.filter(wallets__pk__in=wallet_ids))
        guest, _ = User.objects.get_or_create(username="bench-guest")
        properties = Property.objects.bulk_create(
            [Property(host=h, title="Bench", country="NG", currency="NGN") for h in hosts]
        )
        per_client = int(SECONDS * 5000 / clients) + 100  # more than any client can pay in the time
        bookings = Booking.objects.bulk_create(
            [
                Booking(
                    guest=guest,
                    rental_property=properties[n % len(properties)],
                    check_in=date.today(),
                    check_out=date.today() + timedelta(days=2),
                    grand_total=Decimal("1000.00"),
                    commission_fee=Decimal("120.00"),
                    currency="NGN",
                )
                for n in range(per_client * clients)
            ]
        )
        payments = Payment.objects.bulk_create(
            [Payment(booking=b, provider="sandbox", amount=b.grand_total, currency="NGN") for b in bookings]
        )
    ids = [p.pk for p in payments]
    return wallet_ids, [ids[i::clients] for i in range(clients)]


def fund(wallet_ids):
    """Give every uniform-mix wallet enough balance that debits mostly succeed."""
    from decimal import Decimal

    from finance.models import Wallet
    from finance.services import TransactionService

    for wallet in Wallet.objects.filter(pk__in=wallet_ids, balance__lt=1000):
        TransactionService.credit_wallet(wallet, Decimal("100000.00"))


def vacuum_seeded_tables():
    """VACUUM ANALYZE what the seeding just wrote, as `pgbench -i` does for its tables, so
    autovacuum does not wake up on them in the middle of a measured run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM (ANALYZE) finance_booking, finance_payment, finance_wallet,"
            " finance_wallettransaction, finance_ledgerentry, finance_ledgeraudit"
        )


def checkpoint():
    """Write out what the seeding dirtied now, so no run pays for another's checkpoint."""
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError as error:  # needs superuser or pg_checkpoint
        print(f"(no CHECKPOINT before the runs: {error})".strip())


def run_service(url: str, pooler: str, mix: str, clients: int, wallet_ids, payment_slices) -> dict:
    # Fresh interpreters (spawn), so each client reads its settings from the environment,
    # DATABASE_POOLER included, exactly as a web worker would.
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    start = spawn.Barrier(clients)
    procs = [
        spawn.Process(target=client, args=(url, pooler, mix, seed, start, wallet_ids, payment_slices[seed], queue))
        for seed in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=SECONDS + 120) for _ in procs]
    for p in procs:
        p.join()
    latencies = [lat for r in results for lat in r[2]]
    # Each client's operations over its own measured window, summed.
    ops = sum(r[0] / r[3] for r in results if r[3] > 0)
    return {"ops": ops, "refused": sum(r[1] for r in results), **percentiles(latencies)}


def run_table(title: str, url: str, pooler: str = "") -> dict:
    """pgbench and both mixes at every client count, all through `url`; prints one table."""
    from django.db import connections

    print(f"\n{title}\n")
    header = f"{'clients':>7} {'workload':<22} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'× pgbench':>10}"
    print(header)
    print("-" * len(header))
    summary = {}
    for clients in CLIENTS:
        wallet_ids, payment_slices = prepare(clients)
        fund(wallet_ids)
        vacuum_seeded_tables()
        checkpoint()
        connections.close_all()
        anchor = run_pgbench(url, clients)
        rows = {"pgbench simple-update": anchor}
        rows["uniform credit/debit"] = run_service(url, pooler, "uniform", clients, wallet_ids, payment_slices)
        rows["hot: booking payments"] = run_service(url, pooler, "hot", clients, wallet_ids, payment_slices)
        for name, r in rows.items():
            print(
                f"{clients:>7} {name:<22} {r['ops']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                f"{r['ops'] / anchor['ops']:>10.2f}",
                flush=True,
            )
        summary[clients] = rows
    print_targets(summary)
    return summary


def print_targets(summary: dict) -> None:
    eight = summary.get(8)
    if eight is None:
        print("\nTargets are set at 8 clients: include 8 in BENCH_CLIENTS to check them.")
        return
    uniform_ratio = eight["uniform credit/debit"]["ops"] / eight["pgbench simple-update"]["ops"]
    hot_ratio = eight["hot: booking payments"]["ops"] / eight["uniform credit/debit"]["ops"]
    p99 = max(eight["uniform credit/debit"]["p99"], eight["hot: booking payments"]["p99"])
    print("\nTargets at 8 clients:")
    print_target("uniform / pgbench", uniform_ratio, f"≥ {TARGET_UNIFORM_RATIO}", uniform_ratio >= TARGET_UNIFORM_RATIO)
    print_target("hot / uniform", hot_ratio, f"≥ {TARGET_HOT_RATIO}", hot_ratio >= TARGET_HOT_RATIO)
    print_target("worst p99 (ms)", p99, f"≤ {TARGET_P99_MS:.0f}", p99 <= TARGET_P99_MS)


def print_target(name: str, value: float, target: str, met: bool) -> None:
    print(f"  {name:<18} = {value:6.2f}  (target {target})  {'MET' if met else 'MISSED'}")


def main():
    if not shutil.which("pgbench"):
        sys.exit("pgbench is missing: apt-get install postgresql-client")
    url = bench_database_url("_bench")
    fresh_databases(url)
    setup_django(url)
    # The seeding below posts thousands of credits in this process: keep their success
    # lines off the console (the clients send theirs to /dev/null).
    logging.getLogger("finance").setLevel(logging.WARNING)
    from django.core.management import call_command

    from testing.pgbouncer import PgBouncer

    call_command("migrate", verbosity=0)
    init_pgbench(url)
    u = urlparse(url)
    print(f"Ledger benchmark on {u.hostname}:{u.port}, {SECONDS:.0f} s per run, {os.cpu_count()} cores")
    run_table("Direct to PostgreSQL", url)
    # Enough server connections for every client: the pool adds a hop, not a queue.
    with PgBouncer(host=u.hostname or "127.0.0.1", port=u.port or 5432, pool_size=max(CLIENTS)) as bouncer:
        via = u._replace(netloc=f"{u.username or 'postgres'}@127.0.0.1:{bouncer.port}").geturl()
        run_table(f"Through PgBouncer (transaction pooling, port {bouncer.port})", via, pooler="pgbouncer")
    call_command("check_ledger", stdout=open(os.devnull, "w"))
    print("\ncheck_ledger: healthy after the runs")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
