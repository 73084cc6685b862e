"""`make bench-stack`: the production shape (deploy/stack.py) under wrk, through nginx.

nginx (TLS on loopback) in front of two gunicorn app servers and two clustered Erlang nodes,
one background-job worker, PostgreSQL and Redis: what `make stack` runs, with DEBUG off and
every secret set. wrk (bench/wrk/*.lua) drives it from this machine, the same threads and
connections for every scenario, a warm-up first, then BENCH_SECONDS measured:
  anchor       GET /health/live/, the minimal Django view: the framework's ceiling through
               the same nginx and the same gunicorn workers, in the same run;
  my_wallet    GET /api/payments/wallets/my_wallet/ with a host's Bearer token (hosts rotated);
  withdrawals  POST /api/payments/withdrawals/ with a new Idempotency-Key each time, from
               wallets funded for the whole run, to the hosts' bank accounts;
  webhooks     Paystack charge.success webhooks, signed, one per pending payment prepared
               beforehand (each paid once: the payout, the booking confirmed, the receipt job;
               as many payments as the anchor's rate could use, with a margin).
Every answer must be 2xx and wrk must see no socket error, or the run FAILED: a refusal is a
failed run, not a fast one. The work must also be in the database afterwards (a withdrawal
per 2xx, every webhook applied), and `manage.py check_ledger` healthy.
Targets at 16 connections: my_wallet ≥ 0.5 × the anchor, withdrawals ≥ 0.2 × the anchor,
p99 ≤ 50 ms for both. The webhooks have no target of their own: their figures are printed.

The database is DATABASE_URL's name + `_stack_bench`, created anew each run (the Makefile
passes TEST_DATABASE_URL); Redis is REDIS_URL (default the local one), under a key prefix
of its own. Logs are kept in a temporary directory when a run fails.
"""

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from bench_database import bench_database_url, psql_args  # bench/, this script's directory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WRK_SCRIPTS = ROOT / "bench" / "wrk"
SECONDS = int(os.environ.get("BENCH_SECONDS", 10))
WARMUP_SECONDS = int(os.environ.get("BENCH_WARMUP_SECONDS", 2))
THREADS = 2
CONNECTIONS = 16

# Sizing for this 2-core machine, the same for the anchor and every scenario. Everything
# shares the two cores: wrk, nginx (TLS), gunicorn, PostgreSQL, Redis, the Erlang nodes.
#  - gunicorn: sync workers, one request each at a time. An API request waits on PostgreSQL
#    for part of its time, so each app server runs 2 (4 in all, 2 per core): while one waits
#    another uses the core. Measured with 1, 2 and 3 per app server: the API scenarios within
#    the noise of one another (±10 %), the anchor about 15 % slower with 1, nothing gained
#    with 3 (more processes, connections and memory for the same two cores).
#  - nginx: 1 worker. It only relays over 16 keep-alive TLS connections, about a tenth of a
#    millisecond of CPU a request; a second worker measured no faster.
APP_WORKERS = 2
NGINX_WORKERS = 1

HOSTS = 400  # many hosts: 16 concurrent withdrawals never queue on one wallet row
CURRENCY = "NGN"
WITHDRAWAL = Decimal("1000.00")  # NGN's minimum withdrawal
# Faster than withdrawals can go on this machine: the wallets hold enough for all of them.
# The webhooks' payments are prepared after the anchor's run, as many as the anchor (which
# does nothing) could answer, plus a margin: no webhook is faster than the anchor.
WITHDRAWAL_CEILING_PER_SECOND = 4000
WEBHOOK_MARGIN = 1.25
BOOKING_TOTAL = Decimal("48000.00")
BOOKING_COMMISSION = Decimal("5760.00")

TARGET_MY_WALLET_RATIO = 0.5
TARGET_WITHDRAWALS_RATIO = 0.2
TARGET_P99_MS = 50.0


def fresh_database(url: str) -> None:
    """Created anew, so every run starts from the same state (no tables grown by earlier runs)."""
    args, name = psql_args(url), urlparse(url).path.lstrip("/")
    subprocess.run(["dropdb", *args, "--if-exists", "--force", name], check=True, capture_output=True)
    subprocess.run(["createdb", *args, name], check=True, capture_output=True)


def production_environment(url: str, paystack_url: str) -> dict:
    """What every process of the stack gets: production secrets (new for this run), the bench
    database, Redis under a prefix of its own. DEBUG off (the stack sets it too)."""
    from testing.production_secrets import PRODUCTION_SECRETS
    from testing.web_server import UNREACHABLE_PROVIDER_APIS

    env = {
        **os.environ,
        **PRODUCTION_SECRETS,
        "DEBUG": "false",
        "MESSAGING_COOKIE": secrets.token_urlsafe(32),
        "DATABASE_URL": url,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CACHE_KEY_PREFIX": f"stack-bench-{os.getpid()}-{secrets.token_hex(4)}",
        "SANDBOX_PAYMENTS_ENABLED": "false",
        **UNREACHABLE_PROVIDER_APIS,
        "PAYSTACK_API_URL": paystack_url,
    }
    env.pop("FINANCE_LOG_LEVEL", None)  # production logging in the stack, as deployed
    return env


def setup_django(env: dict):
    """This process: the same production settings as the stack (its secrets sign the webhooks);
    the seeding's thousands of ledger lines stay off the console."""
    os.environ.update(env)
    os.environ["FINANCE_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    import logging

    logging.getLogger("messaging").setLevel(logging.WARNING)


# --- seeding ------------------------------------------------------------------------------


def seed_hosts(run_dir: Path) -> Path:
    """Hosts with funded NGN wallets, bank accounts and API tokens, and a property each. Writes
    the file the wrk scripts read (token wallet bank_account per line)."""
    from django.db import transaction

    from finance.api.tokens import issue_api_token
    from finance.models import BankAccount, Property
    from finance.services import TransactionService
    from portal.models import User

    # Every withdrawal the whole run could make, twice over, from every wallet.
    withdrawals = WITHDRAWAL_CEILING_PER_SECOND * (SECONDS + WARMUP_SECONDS)
    funds = WITHDRAWAL * (withdrawals // HOSTS + 1) * 2
    with transaction.atomic():
        hosts = User.objects.bulk_create(
            [User(username=f"bench-host-{n}", role=User.Role.HOST, country="NG") for n in range(HOSTS)]
        )
        accounts = BankAccount.objects.bulk_create(
            [
                BankAccount(
                    owner=host,
                    bank_name="Bench Bank",
                    account_name=host.username,
                    account_number_last4=f"{n % 10000:04d}",
                    currency=CURRENCY,
                    country="NG",
                    is_primary=True,
                )
                for n, host in enumerate(hosts)
            ]
        )
        Property.objects.bulk_create(
            [Property(host=h, title=f"Bench flat {h.pk}", country="NG", currency=CURRENCY) for h in hosts]
        )
    lines = []
    for host, account in zip(hosts, accounts, strict=True):
        wallet = TransactionService.create_wallet(host, currency=CURRENCY)
        TransactionService.credit_wallet(wallet, funds, description="Bench funding")
        lines.append(f"{issue_api_token(host)} {wallet.pk} {account.pk}")
    path = run_dir / "hosts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare_webhooks(run_dir: Path, per_second: float) -> dict:
    """Pending Paystack payments, one for every webhook the warm-up and the measured run can
    send at `per_second`, spread over the hosts' properties; their charge.success bodies,
    signed with PAYSTACK_SECRET_KEY, one file per phase (signature, a space, the body)."""
    from django.conf import settings
    from django.db import connection, transaction

    from finance.models import Booking, Payment, Property
    from portal.models import User

    properties = list(Property.objects.filter(title__startswith="Bench flat"))
    key = settings.PAYSTACK_SECRET_KEY.encode()
    files = {}
    with transaction.atomic():
        guest = User.objects.create(username="bench-guest", email="guest@bench.example", role=User.Role.GUEST)
        for phase, seconds in (("warmup", WARMUP_SECONDS), ("run", SECONDS)):
            bookings = Booking.objects.bulk_create(
                [
                    Booking(
                        guest=guest,
                        rental_property=properties[n % len(properties)],
                        check_in=date.today() + timedelta(days=30),
                        check_out=date.today() + timedelta(days=32),
                        grand_total=BOOKING_TOTAL,
                        commission_fee=BOOKING_COMMISSION,
                        currency=CURRENCY,
                    )
                    for n in range(int(per_second * seconds) + 100)
                ],
                batch_size=2000,
            )
            payments = Payment.objects.bulk_create(
                [Payment(booking=b, provider="paystack", amount=b.grand_total, currency=CURRENCY) for b in bookings],
                batch_size=2000,
            )
            files[f"webhooks-{phase}"] = path = run_dir / f"webhooks-{phase}.txt"
            with open(path, "w") as out:
                for payment in payments:
                    PAYSTACK.remember(payment)
                    body = paystack_charge_success(payment)
                    out.write(f"{hmac.new(key, body, hashlib.sha512).hexdigest()} {body.decode()}\n")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) finance_booking, finance_payment")
    connection.close()
    return files


class PaystackVerifyOnLoopback:
    """Paystack's verify endpoint (GET /transaction/verify/<reference>) on loopback, answering
    in its recorded shape for the charges this benchmark posts: the app servers confirm each
    charge with it before applying the webhook, as they do with Paystack in production
    (PAYSTACK_API_URL points them here). Unknown references answer 404, as Paystack does."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from testing.recorded_http import recorded_json

        self.charges: dict[str, tuple[int, str]] = {}
        charges, shape = self.charges, recorded_json("paystack_verify_transaction.json")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                reference = self.path.rsplit("/", 1)[-1]
                if reference not in charges:
                    return self.answer(404, {"status": False, "message": "Transaction reference not found"})
                amount, currency = charges[reference]
                data = {**shape["data"], "reference": reference, "amount": amount, "currency": currency}
                return self.answer(200, {**shape, "data": data})

            def answer(self, status: int, body: dict):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):  # the benchmark measures requests, not logging
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def remember(self, payment) -> None:
        self.charges[payment.reference] = (int(payment.amount * 100), payment.currency)


PAYSTACK = None  # the loopback verify endpoint, started by main()


def paystack_charge_success(payment) -> bytes:
    """The body Paystack posts when a charge succeeds (the fields finance/providers/paystack.py
    reads, and a few it does not), compact JSON on one line."""
    minor = int(payment.amount * 100)
    event = {
        "event": "charge.success",
        "data": {
            "id": 4_000_000_000 + payment.pk,
            "domain": "live",
            "status": "success",
            "reference": payment.reference,
            "amount": minor,
            "gateway_response": "Successful",
            "paid_at": "2025-01-01T12:00:00.000Z",
            "channel": "card",
            "currency": payment.currency,
            "customer": {"email": "guest@bench.example"},
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def vacuum_and_checkpoint():
    """What autovacuum and the checkpointer would do minutes after the seeding, done now, so
    neither wakes up on the seeded tables in the middle of a measured run."""
    from django.db import DatabaseError, connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError as error:  # needs superuser or pg_checkpoint
            print(f"(no CHECKPOINT before the runs: {error})".strip())


# --- the runs -------------------------------------------------------------------------------

RESULT_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)


def run_wrk(url: str, script: str, args: list[str], seconds: int) -> dict:
    """wrk with one of bench/wrk's scripts; what its done() printed, in ms and req/s."""
    command = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "-s",
        str(WRK_SCRIPTS / script),
        url,
        "--",
        *args,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    match = RESULT_LINE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({' '.join(command)}):\n{out.stdout}{out.stderr}")
    values = {key: int(value) for key, value in (pair.split("=") for pair in match.group(1).split())}
    socket_errors = sum(values[k] for k in ("connect", "read", "write", "timeout"))
    return {
        "rps": values["requests"] / (values["duration_us"] / 1e6),
        "requests": values["requests"],
        "p50": values["p50_us"] / 1000,
        "p90": values["p90_us"] / 1000,
        "p99": values["p99_us"] / 1000,
        "max": values["max_us"] / 1000,
        "non2xx": values["non2xx"],
        "repeats": values["repeats"],
        "socket_errors": socket_errors,
        "errors": {k: values[k] for k in ("connect", "read", "write", "timeout") if values[k]},
        "samples": re.findall(r"^BENCH-SAMPLE (.*)$", out.stdout, re.MULTILINE),
    }


def scenarios(files: dict, run_tag: str) -> list[tuple[str, str, callable]]:
    """(name, wrk script, phase → the script's arguments)."""
    hosts, threads = str(files["hosts"]), str(THREADS)
    return [
        ("anchor: GET /health/live/", "anchor.lua", lambda phase: []),
        ("my_wallet", "my_wallet.lua", lambda phase: [hosts, threads]),
        ("withdrawals", "withdrawals.lua", lambda phase: [hosts, threads, f"{run_tag}-{phase}", str(WITHDRAWAL)]),
        ("webhooks (Paystack)", "webhooks.lua", lambda phase: [str(files[f"webhooks-{phase}"]), threads]),
    ]


def failure(result: dict) -> str:
    """Why a run does not count ('' when it does)."""
    reasons = []
    if result["non2xx"]:
        reasons.append(f"{result['non2xx']} non-2xx (e.g. {result['samples'][0] if result['samples'] else '?'})")
    if result["socket_errors"]:
        reasons.append(f"socket errors {result['errors']}")
    if result["repeats"]:
        reasons.append(f"{result['repeats']} webhook bodies sent twice: prepare more (WEBHOOK_MARGIN)")
    return "; ".join(reasons)


def verify_work(results: dict, run_tag: str) -> list[str]:
    """The 2xx answers stand for real work: a new withdrawal for each one (no replayed key),
    every webhook applied (none flagged, none a duplicate)."""
    from django.db.models import Count

    from finance.models import ApiIdempotencyRecord, Payment, WebhookEvent, Withdrawal

    problems = []
    created = ApiIdempotencyRecord.objects.filter(key__startswith=f"{run_tag}-run-", status_code=201).count()
    answered = results["withdrawals"]["requests"]
    if created < answered or Withdrawal.objects.count() < created:
        problems.append(f"{answered} withdrawals answered 2xx, {created} created in the measured run")
    outcomes = dict(WebhookEvent.objects.values_list("outcome").annotate(n=Count("id")))
    applied = outcomes.pop(WebhookEvent.Outcome.APPLIED, 0)
    if outcomes:
        problems.append(f"webhook events not applied: {outcomes}")
    paid = Payment.objects.filter(status=Payment.Status.SUCCESS).count()
    answered = results["webhooks"]["requests"]
    if applied < answered or paid != applied:
        problems.append(f"{answered} webhooks answered 2xx, {applied} applied, {paid} payments paid")
    return problems


def check_ledger(env: dict) -> tuple[bool, str]:
    out = subprocess.run(
        [sys.executable, "manage.py", "check_ledger"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode == 0, "\n".join(lines if out.returncode else lines[-1:])


def print_table(rows: list[tuple[str, dict]], anchor: dict) -> list[str]:
    """The one table; returns the targets missed."""
    targets = {
        "my_wallet": TARGET_MY_WALLET_RATIO,
        "withdrawals": TARGET_WITHDRAWALS_RATIO,
    }
    header = (
        f"{'scenario':<26} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'× anchor':>9}  "
        f"{'target':<28} result"
    )
    print(header)
    print("-" * len(header))
    missed = []
    for name, r in rows:
        ratio = r["rps"] / anchor["rps"]
        key = name.split(" ")[0]
        if r["failed"]:
            target, verdict = targets_text(targets.get(key)), "FAILED"
        elif r is anchor:
            target, verdict = "(the anchor)", ""
        elif key in targets:
            target = targets_text(targets[key])
            met = ratio >= targets[key] and r["p99"] <= TARGET_P99_MS
            verdict = "MET" if met else "MISSED"
            if not met:
                missed.append(name)
        else:
            target, verdict = "(none: every answer 2xx)", "ok"
        print(
            f"{name:<26} {r['rps']:>8.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['non2xx']:>8} {ratio:>9.2f}  "
            f"{target:<28} {verdict}"
        )
    return missed


def targets_text(ratio: float | None) -> str:
    return f"≥ {ratio} × anchor, p99 ≤ {TARGET_P99_MS:.0f} ms" if ratio else ""


def main() -> int:
    from deploy.stack import Stack

    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    began = time.monotonic()
    global PAYSTACK
    url = bench_database_url("_stack_bench")
    PAYSTACK = PaystackVerifyOnLoopback()
    env = production_environment(url, PAYSTACK.url)
    fresh_database(url)
    setup_django(env)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    run_dir = Path(tempfile.mkdtemp(prefix="stayafrica-bench-stack-"))
    files = {"hosts": seed_hosts(run_dir)}
    vacuum_and_checkpoint()
    connections.close_all()

    u = urlparse(url)
    print(
        f"Stack benchmark on {u.hostname}:{u.port or 5432}/{u.path.lstrip('/')}: {os.cpu_count()} cores, "
        f"wrk -t{THREADS} -c{CONNECTIONS}, {WARMUP_SECONDS} s warm-up + {SECONDS} s per scenario"
    )
    print(
        f"nginx ({NGINX_WORKERS} worker, TLS, no access log) → 2 app servers × {APP_WORKERS} gunicorn sync workers, "
        f"DEBUG off; {HOSTS} hosts, withdrawals of {WITHDRAWAL} {CURRENCY}\n"
    )
    rows, failed, run_tag = [], [], secrets.token_hex(4)
    # No access logs (neither nginx's nor gunicorn's): the bench measures requests, not logging.
    stack = Stack(
        run_dir=run_dir / "stack", env=env, app_workers=APP_WORKERS, nginx_workers=NGINX_WORKERS, access_log=False
    )
    with stack:
        for name, script, arguments in scenarios(files, run_tag):
            if script == "webhooks.lua":
                files.update(prepare_webhooks(run_dir, per_second=rows[0][1]["rps"] * WEBHOOK_MARGIN))
            run_wrk(stack.url, script, arguments("warmup"), WARMUP_SECONDS)
            result = run_wrk(stack.url, script, arguments("run"), SECONDS)
            result["failed"] = failure(result)
            if result["failed"]:
                failed.append(f"{name}: {result['failed']}")
            rows.append((name, result))
    results = {name.split(" ")[0].rstrip(":"): result for name, result in rows}
    missed = print_table(rows, results["anchor"])

    problems = verify_work(results, run_tag)
    healthy, ledger_report = check_ledger(env)
    print(f"\ncheck_ledger: {ledger_report}")
    for problem in problems:
        print(f"Not the work answered: {problem}")
    for line in failed:
        print(f"FAILED {line}")
    if missed:
        print(f"Targets MISSED: {', '.join(missed)}")
    print(f"\nWall time {time.monotonic() - began:.0f} s.", end=" ")
    if failed or problems or not healthy:
        print(f"Logs kept in {run_dir}.")
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
