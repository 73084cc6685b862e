"""Demo data: hosts, guests, properties across African markets, bookings, payments,
wallets with history, bank accounts, pending withdrawals and staff in every role.

Idempotent: a second run finds the demo users and changes nothing. All money moves
through TransactionService, so the ledger is consistent (`check_ledger` passes).

`--large` adds 100,000 wallets and 1,000,000 journal entries for the portal benchmark,
written in bulk with SQL (PostgreSQL only).
"""

import random
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from finance.models import BankAccount, Booking, Payment, Property
from finance.money import round_money
from finance.services import TransactionService

User = get_user_model()
DEMO_PASSWORD = "stayafrica-demo"

STAFF = [
    # username, groups, description
    ("admin", [], "superuser: everything"),
    ("finance", ["Finance"], "finance staff: withdrawals, refunds, reversals"),
    ("approver", ["Finance", "Finance approver"], "finance approver: second pair of eyes"),
    ("support", ["Support"], "support agent: broadcasts, messaging stats"),
    ("manager", ["Manager"], "manager: reads everything, the audit log"),
]

MARKETS = [
    # host username, name, country, city, currency, nightly rate
    ("amara", "Amara Okafor", "NG", "Lagos", "NGN", "45000.00"),
    ("wanjiku", "Wanjiku Kamau", "KE", "Nairobi", "KES", "8500.00"),
    ("thabo", "Thabo Nkosi", "ZA", "Cape Town", "ZAR", "1450.00"),
    ("kwame", "Kwame Mensah", "GH", "Accra", "GHS", "650.00"),
    ("nakato", "Nakato Ssempala", "UG", "Kampala", "UGX", "180000"),
    ("uwase", "Uwase Mukamana", "RW", "Kigali", "RWF", "75000"),
    ("yasmine", "Yasmine Ben Ali", "TN", "Tunis", "TND", "210.500"),
]

GUESTS = [
    ("guest", "Grace Adeyemi", "NG"),
    ("otieno", "Brian Otieno", "KE"),
    ("lerato", "Lerato Dlamini", "ZA"),
    ("abena", "Abena Asante", "GH"),
    ("sophie", "Sophie Martin", "FR"),
    ("james", "James Carter", "US"),
]

PROPERTY_NAMES = ["Ocean View Villa", "Garden Cottage", "City Loft", "Safari Lodge Suite"]


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
        if User.objects.filter(username="finance").exists():
            self.stdout.write("Demo data already loaded.")
        else:
            with transaction.atomic():
                self._load_demo(random.Random(2026))
            self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        if large:
            load_large_dataset(self.stdout)

    def _load_demo(self, rng: random.Random):
        for username, groups, _ in STAFF:
            user = _user(username, username.title(), "staff", "", superuser=username == "admin")
            user.groups.set(Group.objects.filter(name__in=groups))
        guests = [_user(u, name, "guest", country) for u, name, country in GUESTS]
        finance = User.objects.get(username="finance")
        for username, name, country, city, currency, rate in MARKETS:
            host = _user(username, name, "host", country)
            bank = BankAccount.objects.create(
                owner=host,
                bank_name=f"{city} Commercial Bank",
                account_name=name,
                account_number_last4=f"{rng.randrange(10000):04d}",
                currency=currency,
                country=country,
                is_primary=True,
            )
            for title in rng.sample(PROPERTY_NAMES, 2):
                prop = Property.objects.create(
                    host=host,
                    title=f"{title}, {city}",
                    country=country,
                    city=city,
                    currency=currency,
                    nightly_rate=Decimal(rate),
                )
                for _ in range(3):
                    _paid_booking(prop, rng.choice(guests), rng)
                _pending_booking(prop, rng.choice(guests), rng)
            wallet = TransactionService.create_wallet(host, currency)
            wallet.refresh_from_db()
            if wallet.available_balance > 0:
                first = round_money(wallet.available_balance * Decimal("0.3"), currency)
                done = TransactionService.initiate_withdrawal(wallet=wallet, bank_account=bank, amount=first)
                TransactionService.complete_withdrawal(done, actor=finance)
                wallet.refresh_from_db()
                TransactionService.initiate_withdrawal(
                    wallet=wallet, bank_account=bank, amount=round_money(wallet.available_balance / 4, currency)
                )
        # A refund, so statements and the dashboard show one.
        booking = Booking.objects.filter(status=Booking.Status.CONFIRMED).order_by("pk").first()
        if booking:
            TransactionService.process_refund(
                booking, round_money(booking.grand_total / 5, booking.currency), "Guest left a night early"
            )


def _user(username, full_name, role, country, superuser=False) -> User:
    first, _, last = full_name.partition(" ")
    user = User.objects.create_user(
        username=username,
        email=f"{username}@stayafrica.example",
        password=DEMO_PASSWORD,
        first_name=first,
        last_name=last,
        role=role,
        country=country,
        is_staff=role == "staff",
        is_superuser=superuser,
    )
    return user


def _new_booking(prop: Property, guest: User, rng: random.Random) -> Booking:
    nights = rng.randint(2, 6)
    start = date.today() - timedelta(days=rng.randint(1, 60))
    total = prop.nightly_rate * nights
    return Booking.objects.create(
        guest=guest,
        rental_property=prop,
        check_in=start,
        check_out=start + timedelta(days=nights),
        grand_total=total,
        commission_fee=round_money(total * Decimal("0.12"), prop.currency),
        currency=prop.currency,
    )


def _paid_booking(prop: Property, guest: User, rng: random.Random) -> None:
    booking = _new_booking(prop, guest, rng)
    payment = Payment.objects.create(
        booking=booking, provider="sandbox", amount=booking.grand_total, currency=booking.currency
    )
    TransactionService.process_booking_payment(booking, payment)


def _pending_booking(prop: Property, guest: User, rng: random.Random) -> None:
    _new_booking(prop, guest, rng)


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
