"""Demo data (finance/demo.py): staff in every role, a few hundred hosts and guests across
the seven markets, six months of bookings, payouts, withdrawals in every state, refunds, a
reversal, a webhook inbox, approvals and broadcasts; refunds at the providers in each state, a
host whose refund after a withdrawal left a receivable, and the providers' reports reconciled.

Idempotent, part by part: a second run adds nothing, and a part that failed is loaded on the
next run. All money moves through TransactionService, so the ledger is consistent
(`check_ledger` passes).

`--large` adds 100,000 wallets and 1,000,000 journal entries for the portal benchmark,
written in bulk with SQL (PostgreSQL only).
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from finance.demo import load_demo

User = get_user_model()


class Command(BaseCommand):
    help = "Load demo data (idempotent). --large adds 100k wallets and 1M journal entries (PostgreSQL)."

    def add_arguments(self, parser):
        parser.add_argument("--large", action="store_true", help="also load the large benchmark data set")

    def handle(self, *args, large=False, **options):
        # The demo logins have a password printed in the README: never on a real deployment.
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates demo logins with a published password, so it runs only in development: "
                "DEBUG is off. For the demo, run it with DEBUG=true (make run does)."
            )
        self.stdout.write("Loading demo data (parts already loaded are skipped):")
        load_demo(self.stdout.write)
        self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        if large:
            load_large_dataset(self.stdout)


# --- the large data set ----------------------------------------------------------------

LARGE_WALLETS = 100_000
CREDITS_PER_WALLET = 5  # each credit is two journal entries: 1,000,000 entries in all
LARGE_CURRENCIES = ["NGN", "KES", "ZAR", "GHS", "USD"]


def load_large_dataset(stdout) -> None:
    if connection.vendor != "postgresql":
        raise CommandError("--large needs PostgreSQL: set DATABASE_URL=postgres://...")
    if User.objects.filter(username="bulk-host-1").exists():
        stdout.write("Large data set already loaded.")
        return
    stdout.write(f"Loading {LARGE_WALLETS:,} wallets and {LARGE_WALLETS * CREDITS_PER_WALLET * 2:,} journal entries...")
    users = connection.ops.quote_name(User._meta.db_table)  # the AUTH_USER_MODEL's table
    currencies = "ARRAY[" + ",".join(f"'{c}'" for c in LARGE_CURRENCIES) + "]"
    statements = [
        # Hosts with unusable passwords: they exist for scale, not to sign in.
        f"""INSERT INTO {users} (password, is_superuser, username, first_name, last_name, email, is_staff,
                is_active, date_joined, role, country)
            SELECT '!', false, 'bulk-host-' || n, 'Bulk', 'Host ' || n, 'bulk' || n || '@example.com', false,
                true, now(), 'host', 'NG'
            FROM generate_series(1, {LARGE_WALLETS}) n""",
        f"""INSERT INTO finance_wallet (user_id, currency, status, balance, held_balance, created_at, updated_at)
            SELECT u.id, ({currencies})[1 + (u.id % {len(LARGE_CURRENCIES)})], 'active', 0, 0, now(), now()
            FROM {users} u WHERE u.username LIKE 'bulk-host-%%'""",
        # Five credits per wallet, spread over the last 90 days.
        f"""INSERT INTO finance_wallettransaction (reference, wallet_id, type, status, direction, amount, currency,
                balance_after, description, metadata, created_at, updated_at)
            SELECT 'TXN-BULK' || lpad(to_hex(w.id * 8 + k), 12, '0'), w.id, 'credit', 'completed', 'in',
                (10 + (w.id * 7 + k * 13) % 990)::numeric, w.currency,
                0, 'Bulk credit', '{{}}'::jsonb,
                now() - ((w.id + k * 17) % 90) * interval '1 day' - (k * interval '1 minute'),
                now()
            FROM finance_wallet w CROSS JOIN generate_series(1, {CREDITS_PER_WALLET}) k
            WHERE w.user_id IN (SELECT id FROM {users} WHERE username LIKE 'bulk-host-%%')""",
        """INSERT INTO finance_ledgerentry (transaction_id, wallet_id, system_account, currency, amount, created_at)
            SELECT t.id, t.wallet_id, '', t.currency, t.amount, t.created_at
            FROM finance_wallettransaction t WHERE t.reference LIKE 'TXN-BULK%%'
            UNION ALL
            SELECT t.id, NULL, 'adjustments', t.currency, -t.amount, t.created_at
            FROM finance_wallettransaction t WHERE t.reference LIKE 'TXN-BULK%%'""",
        # Running balance after each credit, then each wallet's balance.
        """UPDATE finance_wallettransaction t SET balance_after = r.running
            FROM (SELECT id, sum(amount) OVER (PARTITION BY wallet_id ORDER BY created_at, id) AS running
                  FROM finance_wallettransaction WHERE reference LIKE 'TXN-BULK%%') r
            WHERE t.id = r.id""",
        f"""UPDATE finance_wallet w SET balance = s.total
            FROM (SELECT wallet_id, sum(amount) AS total FROM finance_ledgerentry
                  WHERE wallet_id IS NOT NULL GROUP BY wallet_id) s
            WHERE w.id = s.wallet_id
              AND w.user_id IN (SELECT id FROM {users} WHERE username LIKE 'bulk-host-%%')""",
        "ANALYZE",
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    stdout.write("Large data set loaded.")
