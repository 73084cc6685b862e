"""The demo data set `manage.py seed_demo` loads: a marketplace a team would recognise.

Staff in every role, the named demo hosts and guests of the README, and a few hundred more
hosts and guests across the seven markets, with properties, bank accounts, about six months
of bookings and payouts, withdrawals in every state, refunds, a reversal, a webhook inbox
with flagged events, approvals pending and decided, and broadcasts.

Loaded in parts (PARTS), each in its own transaction and each skipped when it is already
there, so loading twice adds nothing and a database where a part failed half-way (rolled
back) is completed on the next run. Every part draws from its own random.Random seeded with
the part's name: the data is the same on every machine and does not depend on which parts
ran before.

All money moves through TransactionService (and the staff actions, the webhook pipeline and
the broadcast service above it), so `check_ledger` passes. What the services stamp with the
current time is then moved back into the past (created_at and the like, never an amount), in
the order the money moved, so running balances read in date order.
"""

import csv
import functools
import hashlib
import heapq
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.test.utils import override_settings
from django.utils import timezone
from wagtail.models import ModelLogEntry

from . import crypto, reconciliation, refunds, staff_actions
from .bank_details import MOBILE_MONEY_PREFIX, clean_bank_details
from .models import (
    ApprovalRequest,
    BankAccount,
    Booking,
    HostReceivable,
    LedgerAudit,
    LedgerEntry,
    Payment,
    Property,
    ProviderRefund,
    ReceivableRecovery,
    ReconciliationLine,
    ReconciliationReport,
    Wallet,
    WalletTransaction,
    WebhookEvent,
    Withdrawal,
)
from .money import quantum, round_money, to_minor_units
from .payments import receive_webhook
from .providers.base import SUCCESS, RefundResult
from .providers.sandbox import SIGNATURE_HEADER, refund_event_body, sign
from .reconciliation.mappings import PAYMENT, REFUND
from .reconciliation.matching import ledger_records as match_ledger_records
from .services import TransactionService

User = get_user_model()
DEMO_PASSWORD = "stayafrica-demo"

# --- who: the logins of the README (print_demo_logins lists them) --------------------------

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

# --- how much -------------------------------------------------------------------------------

EXTRA_HOSTS = 300
EXTRA_GUESTS = 400
BOOKINGS = 3000
HISTORY_DAYS = 182  # about six months of bookings and payouts
PENDING_SHARE = 0.08  # bookings not paid yet
REFUND_SHARE = 0.02
NAMED_HOST_WEIGHT = 8  # the README's hosts are busy: their statements have plenty to show
COMMISSION = Decimal("0.12")
FAILED_PAYOUT_REASONS = [
    "Bank rejected the transfer: account name does not match",
    "Account closed at the receiving bank",
    "Invalid branch code",
]
REFUND_REASONS = ["Guest left a night early", "Hot water out for two days", "Double booking, guest moved"]


@dataclass(frozen=True)
class Market:
    currency: str
    weight: int  # share of the generated hosts and guests
    rate: Decimal  # a typical nightly rate
    step: Decimal  # rates are round numbers of this
    cities: tuple[str, ...]
    banks: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(","))


COUNTRIES = {
    "NG": Market(
        "NGN", 22, Decimal("45000"), Decimal("500"),
        _names("Lagos, Abuja, Port Harcourt, Ibadan, Calabar"),
        _names("Access Bank, GTBank, Zenith Bank, First Bank of Nigeria"),
        _names("Chinedu, Ngozi, Emeka, Adaeze, Tunde, Funmilayo, Oluwaseun, Yetunde, Ibrahim, Aisha, Chukwuma, "
               "Ifeoma, Babajide, Folake, Obinna, Zainab, Segun, Kemi, Uche, Halima"),
        _names("Okafor, Adeyemi, Okonkwo, Balogun, Eze, Nwosu, Bello, Abubakar, Adebayo, Ogunleye, Okeke, "
               "Ibrahim, Onyeka, Afolabi, Musa, Oyelaran"),
    ),
    "KE": Market(
        "KES", 18, Decimal("8500"), Decimal("100"),
        _names("Nairobi, Mombasa, Kisumu, Diani, Naivasha"),
        _names("Equity Bank, KCB Bank, Co-operative Bank, NCBA Bank"),
        _names("Wanjiru, Achieng, Otieno, Njeri, Kipchoge, Akinyi, Wafula, Chebet, Mutua, Nyambura, Omondi, "
               "Wairimu, Kiprono, Atieno, Baraka, Zawadi, Juma, Moraa, Kamau, Wambui"),
        _names("Kamau, Mwangi, Otieno, Odhiambo, Njoroge, Kiprotich, Wanjala, Mutua, Kariuki, Ochieng, "
               "Chepkemoi, Waweru, Onyango, Kimani, Nyaga, Korir"),
    ),
    "ZA": Market(
        "ZAR", 20, Decimal("1450"), Decimal("50"),
        _names("Cape Town, Johannesburg, Durban, Stellenbosch, Knysna"),
        _names("FNB, Standard Bank, Capitec, Nedbank, Absa"),
        _names("Thabo, Lerato, Sipho, Nomvula, Bongani, Zanele, Pieter, Annelie, Themba, Naledi, Johan, "
               "Palesa, Lwazi, Ayanda, Kagiso, Refilwe, Mandla, Busisiwe, Willem, Thandiwe"),
        _names("Nkosi, Dlamini, Mokoena, Ndlovu, van der Merwe, Botha, Khumalo, Mahlangu, Zulu, Naidoo, "
               "Pillay, Mthembu, Molefe, Pretorius, Sithole, Radebe"),
    ),
    "GH": Market(
        "GHS", 12, Decimal("650"), Decimal("10"),
        _names("Accra, Kumasi, Cape Coast, Takoradi, Ada Foah"),
        _names("GCB Bank, Ecobank Ghana, Fidelity Bank, Stanbic Bank Ghana"),
        _names("Kwame, Abena, Kofi, Ama, Yaw, Akosua, Kwabena, Efua, Kojo, Adwoa, Kwaku, Esi, Nana, Afua, "
               "Kwesi, Yaa, Fiifi, Akua, Selorm, Dede"),
        _names("Mensah, Asante, Owusu, Boateng, Appiah, Osei, Agyeman, Darko, Adjei, Ofori, Amoah, "
               "Frimpong, Acheampong, Quaye, Tetteh, Annan"),
    ),
    "UG": Market(
        "UGX", 9, Decimal("180000"), Decimal("5000"),
        _names("Kampala, Entebbe, Jinja, Fort Portal"),
        _names("Stanbic Bank Uganda, Centenary Bank, dfcu Bank"),
        _names("Nakato, Babirye, Mukasa, Okello, Namubiru, Kato, Achola, Nalwoga, Opio, Atim, Kizza, "
               "Namukasa, Tumusiime, Akello, Nansubuga, Mugisha, Apio, Wasswa, Kisakye, Nabirye"),
        _names("Ssempala, Mukasa, Okello, Nsubuga, Byaruhanga, Tumwine, Kiggundu, Lubega, Atuhaire, Ssali, "
               "Namutebi, Kigozi, Musoke, Kyomuhendo, Ssemakula, Ochen"),
    ),
    "RW": Market(
        "RWF", 8, Decimal("75000"), Decimal("1000"),
        _names("Kigali, Musanze, Rubavu, Huye"),
        _names("Bank of Kigali, Equity Bank Rwanda, I&M Bank Rwanda"),
        _names("Uwase, Mugisha, Keza, Habimana, Ishimwe, Niyonsaba, Mutesi, Nshuti, Ineza, Kagabo, Umutoni, "
               "Gatete, Iradukunda, Manzi, Uwera, Ntwari, Gasana, Ingabire, Hirwa, Kamikazi"),
        _names("Mukamana, Habimana, Uwimana, Niyonzima, Nsengiyumva, Mugabo, Nkurunziza, Hakizimana, "
               "Ndayisaba, Mutabazi, Kayitesi, Bizimana, Munyaneza, Rukundo, Gatera, Uwamahoro"),
    ),
    "TN": Market(
        "TND", 11, Decimal("210"), Decimal("5"),
        _names("Tunis, Sousse, Hammamet, Djerba, Sidi Bou Said"),
        _names("BIAT, Attijari Bank, STB, Amen Bank"),
        _names("Yasmine, Mohamed, Amira, Ahmed, Salma, Youssef, Ines, Karim, Mariem, Walid, Nour, Sami, "
               "Rania, Hatem, Leila, Anis, Sarra, Mehdi, Olfa, Bilel"),
        _names("Ben Ali, Trabelsi, Gharbi, Jebali, Hammami, Bouazizi, Mansouri, Ben Salah, Chaabane, Ayari, "
               "Dridi, Sassi, Jaziri, Khelifi, Mejri, Ferchichi"),
    ),
}  # fmt: skip

MARKET_OF_CURRENCY = {market.currency: market for market in COUNTRIES.values()}

PROPERTY_KINDS = _names(
    "Ocean View Villa, Garden Cottage, City Loft, Safari Lodge Suite, Family Apartment, Studio, Beach House, "
    "Hillside Chalet, Penthouse, Guest House, Townhouse, Lake View Cabin"
)
# Each bank's code in the provider's bank list (Paystack's GET /bank?country=…, Flutterwave's
# GET /v3/banks/{country}): what a transfer names the bank by. Tunisia has no payout provider:
# its banks have no code and its hosts are paid manually.
BANK_CODES = {
    # Nigeria: the NIBSS codes both Paystack and Flutterwave list.
    "Access Bank": "044",
    "GTBank": "058",
    "Zenith Bank": "057",
    "First Bank of Nigeria": "011",
    # Kenya: the Central Bank of Kenya's bank codes.
    "Equity Bank": "68",
    "KCB Bank": "01",
    "Co-operative Bank": "11",
    "NCBA Bank": "07",
    # South Africa: the banks' universal branch codes.
    "FNB": "250655",
    "Standard Bank": "051001",
    "Capitec": "470010",
    "Nedbank": "198765",
    "Absa": "632005",
    # Ghana: the banks' sort codes.
    "GCB Bank": "040100",
    "Ecobank Ghana": "130100",
    "Fidelity Bank": "240100",
    "Stanbic Bank Ghana": "190100",
    # Uganda and Rwanda: the banks' clearing codes.
    "Stanbic Bank Uganda": "031",
    "Centenary Bank": "061",
    "dfcu Bank": "051",
    "Bank of Kigali": "040",
    "Equity Bank Rwanda": "192",
    "I&M Bank Rwanda": "100",
}
# How many digits an account number has in each market (Nigeria's NUBAN: 10).
ACCOUNT_DIGITS = {"NG": 10, "KE": 13, "ZA": 10, "GH": 13, "UG": 12, "RW": 14, "TN": 20}
MOBILE_MONEY_SHARE = 0.4  # of the generated Kenyan hosts, paid to their M-Pesa wallet
# The named host whose account the sandbox refuses transfers to (SANDBOX_TRANSFER_FAILS_LAST4):
# the demo's failed payout.
FAILING_PAYOUT_HOST = "kwame"

# The provider a guest in each market pays with (labels only: these payouts are posted directly).
PROVIDER_BY_COUNTRY = {
    "NG": "paystack",
    "GH": "paystack",
    "KE": "mpesa",
    "ZA": "stripe",
    "UG": "flutterwave",
    "RW": "flutterwave",
    "TN": "stripe",
}
DEMO_PAYMENT_PREFIX = "PAY-DEMO-"
DEMO_EVENT_PREFIX = "evt_demo_"


# --- the parts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    name: str
    is_loaded: Callable[[], bool]
    load: Callable[[datetime], str]  # returns what it loaded, in words


def load_demo(write: Callable[[str], None]) -> None:
    """Load every part not loaded yet, each in its own transaction; `write` reports progress."""
    now = timezone.now()
    # The approval outcome e-mails the staff actions send are not worth printing on the console.
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend"):
        for part in PARTS:
            if part.is_loaded():
                write(f"  {part.name}: already loaded")
                continue
            with transaction.atomic():
                write(f"  {part.name}: {part.load(now)}")


# --- people -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    username: str
    first_name: str
    last_name: str
    role: str
    country: str


@functools.cache
def demo_people() -> tuple[Person, ...]:
    """Everyone the demo signs in as or lists, staff first; the same list on every run."""
    people = [Person(username, username.title(), "", "staff", "") for username, _, _ in STAFF]
    people += [_person(username, name, "host", country) for username, name, country, *_ in MARKETS]
    people += [_person(username, name, "guest", country) for username, name, country in GUESTS]
    rng = random.Random("people")
    taken = {person.username for person in people}
    for role, count in (("host", EXTRA_HOSTS), ("guest", EXTRA_GUESTS)):
        for _ in range(count):
            country = rng.choices(list(COUNTRIES), weights=[m.weight for m in COUNTRIES.values()])[0]
            market = COUNTRIES[country]
            first, last = rng.choice(market.first_names), rng.choice(market.last_names)
            username = _unique(f"{first}.{last}".lower().replace(" ", ""), taken)
            people.append(Person(username, first, last, role, country))
    return tuple(people)


def _person(username: str, full_name: str, role: str, country: str) -> Person:
    first, _, last = full_name.partition(" ")
    return Person(username, first, last, role, country)


def _unique(username: str, taken: set[str]) -> str:
    candidate, n = username, 1
    while candidate in taken:
        n += 1
        candidate = f"{username}{n}"
    taken.add(candidate)
    return candidate


def _people_loaded() -> bool:
    usernames = [p.username for p in demo_people()]
    return User.objects.filter(username__in=usernames).count() == len(usernames)


def load_people(now: datetime) -> str:
    """Create the demo users that do not exist yet (all with the published demo password)."""
    people = demo_people()
    existing = set(User.objects.filter(username__in=[p.username for p in people]).values_list("username", flat=True))
    password = make_password(DEMO_PASSWORD)  # hashed once: hashing per user would take minutes
    missing = [p for p in people if p.username not in existing]
    User.objects.bulk_create(
        [
            User(
                username=p.username,
                email=f"{p.username}@stayafrica.example",
                password=password,
                first_name=p.first_name,
                last_name=p.last_name,
                role=p.role,
                country=p.country,
                is_staff=p.role == "staff",
                is_superuser=p.username == "admin",
                date_joined=now - timedelta(days=HISTORY_DAYS + 30),
            )
            for p in missing
        ],
        batch_size=500,
    )
    groups = {username: names for username, names, _ in STAFF}
    for user in User.objects.filter(username__in=[p.username for p in missing if p.role == "staff"]):
        user.groups.set(Group.objects.filter(name__in=groups[user.username]))
    return f"{len(missing)} users"


# --- properties and bank accounts ---------------------------------------------------------------


def _hosts():
    usernames = [p.username for p in demo_people() if p.role == "host"]
    return User.objects.filter(username__in=usernames).order_by("pk")


def _listings_loaded() -> bool:
    hosts = _hosts()
    return not hosts.filter(properties__isnull=True).exists() and not hosts.filter(bank_accounts__isnull=True).exists()


def load_listings(now: datetime) -> str:
    """One bank account and one to three properties for each host who has none."""
    named = {username: (city, currency, Decimal(rate)) for username, _, _, city, currency, rate in MARKETS}
    hosts = list(_hosts().prefetch_related("properties", "bank_accounts"))
    accounts, properties = [], []
    for host in hosts:
        market = COUNTRIES[host.country]
        rng = random.Random(f"listings:{host.username}")
        home_city, _, base_rate = named.get(host.username, (rng.choice(market.cities), None, market.rate))
        if not host.bank_accounts.all():
            # The bank name and last four digits drawn first, as before full numbers were kept:
            # the rest of the host's listing draws stay the same.
            bank_name, last4 = rng.choice(market.banks), f"{rng.randrange(10000):04d}"
            accounts.append(_demo_account(host, market, bank_name, last4, named=host.username in named))
        if host.properties.all():
            continue
        count = 2 if host.username in named else rng.choice((1, 1, 2, 2, 3))
        for kind in rng.sample(PROPERTY_KINDS, count):
            city = home_city if host.username in named else rng.choice(market.cities)
            rate = (
                base_rate
                if host.username in named
                else _round_to(base_rate * Decimal(rng.uniform(0.5, 2.2)), market.step)
            )
            properties.append(
                Property(
                    host=host,
                    title=f"{kind}, {city}",
                    country=host.country,
                    city=city,
                    currency=market.currency,
                    nightly_rate=rate,
                )
            )
    BankAccount.objects.bulk_create(accounts, batch_size=500)
    Property.objects.bulk_create(properties, batch_size=500)
    return f"{len(properties)} properties, {len(accounts)} bank accounts"


def _demo_account(host, market: "Market", bank_name: str, last4: str, *, named: bool) -> BankAccount:
    """A host's payout account with a full number, stored only through finance.crypto (the
    development BANK_DETAILS_KEY: the demo runs with DEBUG on)."""
    rng = random.Random(f"bank:{host.username}")
    if host.username == FAILING_PAYOUT_HOST:
        last4 = settings.SANDBOX_TRANSFER_FAILS_LAST4
    elif last4 == settings.SANDBOX_TRANSFER_FAILS_LAST4:
        last4 = "0001"  # only the one host's payouts fail
    if host.country in MOBILE_MONEY_PREFIX and not named and rng.random() < MOBILE_MONEY_SHARE:
        kind, bank_name, bank_code = BankAccount.AccountType.MOBILE_MONEY, "M-Pesa", ""
        number = f"{MOBILE_MONEY_PREFIX[host.country]}7{rng.randrange(10**4):04d}{last4}"
    else:
        kind, bank_code = BankAccount.AccountType.BANK, BANK_CODES.get(bank_name, "")
        number = "".join(str(rng.randrange(10)) for _ in range(ACCOUNT_DIGITS[host.country] - 4)) + last4
    number, bank_code = clean_bank_details(
        account_type=kind, country=host.country, account_number=number, bank_code=bank_code
    )
    account = BankAccount(
        owner=host,
        account_type=kind,
        bank_name=bank_name,
        bank_code=bank_code,
        account_name=host.get_full_name(),
        currency=market.currency,
        country=host.country,
        is_primary=True,
    )
    crypto.set_account_number(account, number)
    return account


def _round_to(amount: Decimal, step: Decimal) -> Decimal:
    return max(step, (amount / step).quantize(Decimal(1)) * step)


# --- bookings, payouts, withdrawals, refunds -----------------------------------------------------


def _money_loaded() -> bool:
    return Payment.objects.filter(reference__startswith=DEMO_PAYMENT_PREFIX).exists()


class Timeline:
    """Money events replayed in date order, then dated: what each one wrote gets its date."""

    def __init__(self):
        self._events: list = []
        self._order = 0
        self.transaction_dates: dict[int, datetime] = {}
        self.withdrawal_dates: dict[int, tuple[datetime, datetime | None]] = {}
        self.refund_dates: dict[int, datetime] = {}  # ProviderRefund pk: when it was made

    def add(self, when: datetime, action: Callable[[datetime], None]) -> None:
        self._order += 1
        heapq.heappush(self._events, (when, self._order, action))

    def run(self) -> None:
        while self._events:
            when, _, action = heapq.heappop(self._events)
            action(when)

    def date_rows(self, since: datetime) -> None:
        """Move what the services stamped `now` back to each event's date."""
        WalletTransaction.objects.bulk_update(
            [WalletTransaction(pk=pk, created_at=when) for pk, when in self.transaction_dates.items()],
            ["created_at"],
            batch_size=500,
        )
        Withdrawal.objects.bulk_update(
            [
                Withdrawal(pk=pk, created_at=made, processed_at=done)
                for pk, (made, done) in self.withdrawal_dates.items()
            ],
            ["created_at", "processed_at"],
            batch_size=500,
        )
        posted = WalletTransaction.objects.filter(pk=OuterRef("transaction_id")).values("created_at")[:1]
        LedgerEntry.objects.filter(created_at__gte=since).update(created_at=Subquery(posted))
        LedgerAudit.objects.filter(created_at__gte=since, transaction__isnull=False).update(created_at=Subquery(posted))
        HostReceivable.objects.filter(created_at__gte=since).update(created_at=Subquery(posted))
        ReceivableRecovery.objects.filter(created_at__gte=since).update(created_at=Subquery(posted))
        last_recovery = (
            ReceivableRecovery.objects.filter(receivable=OuterRef("pk"))
            .order_by("-created_at")
            .values("created_at")[:1]
        )
        HostReceivable.objects.filter(recovered_at__gte=since).update(recovered_at=Subquery(last_recovery))
        # The provider took the refund minutes after it was made and paid it a few hours later.
        ProviderRefund.objects.bulk_update(
            [
                ProviderRefund(
                    pk=pk,
                    created_at=made,
                    sent_at=made + timedelta(minutes=4),
                    settled_at=made + timedelta(hours=5),
                    updated_at=made + timedelta(hours=5),
                )
                for pk, made in self.refund_dates.items()
            ],
            ["created_at", "sent_at", "settled_at", "updated_at"],
            batch_size=500,
        )


def load_money(now: datetime) -> str:
    rng = random.Random("money")
    started = timezone.now()
    properties = list(Property.objects.filter(host__in=_hosts()).select_related("host").order_by("pk"))
    guest_names = [p.username for p in demo_people() if p.role == "guest"]
    guests = list(User.objects.filter(username__in=guest_names).order_by("pk"))
    named = {username for username, *_ in MARKETS}
    weights = [NAMED_HOST_WEIGHT if p.host.username in named else 1 for p in properties]

    # Every host's wallet, in the order of the hosts (the README's first): scripts that take
    # "the first wallets" find the named hosts'.
    wallets = {host.pk: TransactionService.create_wallet(host, COUNTRIES[host.country].currency) for host in _hosts()}
    bookings, payments = _book(rng, now, properties, weights, guests)
    timeline = Timeline()
    _plan_payouts(timeline, rng, bookings, payments, wallets)
    _plan_withdrawals(timeline, rng, now, wallets)
    timeline.run()
    host_in_debt = _plan_host_in_debt(timeline, now, wallets)
    timeline.run()
    timeline.date_rows(since=started)
    # Stays that ended are completed (a status only: the money moved at payment).
    Booking.objects.filter(
        pk__in=[b.pk for b in bookings], status=Booking.Status.CONFIRMED, check_out__lt=now.date()
    ).update(status=Booking.Status.COMPLETED)
    _send_some_payouts(rng, now, timeline)
    return (
        f"{len(bookings)} bookings, {len(timeline.transaction_dates)} transactions, "
        f"{len(timeline.withdrawal_dates)} withdrawals; {host_in_debt} withdrew, then a refund left them owing"
    )


# The named hosts, in the order tried, for the story of a refund after the host withdrew (the
# first whose wallet has nothing held back, so the wallet itself reads negative).
DEBT_HOSTS = ("thabo", "wanjiku", "amara", "uwase", "nakato", "yasmine")
DEBT_REFUND_REASON = "Guest could not get in: the host was away and the keys never arrived"


def _plan_host_in_debt(timeline: Timeline, now: datetime, wallets: dict[int, Wallet]) -> str:
    """A named host withdraws everything they have, then the guest of an earlier stay is refunded
    in full: the wallet goes negative by the host's share (a receivable), and the host's next
    booking payout recovers about half of it. In the last hours, after the host's other money
    moved, so the wallet's running balance reads in date order. Returns the host's username."""
    start = now - timedelta(hours=5)
    # The hosts whose open sandbox payments the webhook part applies (its first 30, as it picks
    # them): their payouts would recover the whole debt.
    paid_soon = set(
        Payment.objects.filter(
            reference__startswith=DEMO_PAYMENT_PREFIX, provider="sandbox", status=Payment.Status.PENDING
        )
        .order_by("pk")[:30]
        .values_list("booking__rental_property__host", flat=True)
    )
    for username in DEBT_HOSTS:
        host = User.objects.get(username=username)
        wallet = wallets[host.pk]
        wallet.refresh_from_db()
        dates = timeline.transaction_dates
        moved = [dates[pk] for pk in wallet.transactions.values_list("pk", flat=True) if pk in dates]
        quiet = max(moved, default=start) < start and host.pk not in paid_soon
        if wallet.held_balance == 0 and wallet.available_balance > 0 and quiet:
            break
    payment = _unrefunded_demo_payments(booking__rental_property__host=host).order_by("-amount", "pk").first()
    bank = BankAccount.objects.get(owner=host, is_primary=True)
    finance = User.objects.get(username="finance")

    def withdraw_everything(when):
        wallet.refresh_from_db()
        withdrawal = TransactionService.initiate_withdrawal(
            wallet=wallet, bank_account=bank, amount=wallet.available_balance
        )
        timeline.transaction_dates[withdrawal.transaction_id] = when
        timeline.withdrawal_dates[withdrawal.pk] = (when, None)
        timeline.add(when + timedelta(minutes=40), paid_out(withdrawal))

    def paid_out(withdrawal):
        def run(when):
            TransactionService.complete_withdrawal(withdrawal, actor=finance)
            timeline.withdrawal_dates[withdrawal.pk] = (timeline.withdrawal_dates[withdrawal.pk][0], when)

        return run

    def refund_in_full(when):
        txn = TransactionService.process_refund(payment.booking, payment.amount, DEBT_REFUND_REASON)
        timeline.transaction_dates[txn.pk] = when
        timeline.refund_dates[_refunded_by_provider(txn)] = when

    def next_payout(when):
        # A new stay half as long as the refunded one: its payout recovers about half the debt.
        refunded = payment.booking
        prop = refunded.rental_property
        nights = max(1, (refunded.check_out - refunded.check_in).days // 2)
        total = prop.nightly_rate * nights
        booking = Booking.objects.create(
            guest=refunded.guest,
            rental_property=prop,
            check_in=when.date() + timedelta(days=9),
            check_out=when.date() + timedelta(days=9 + nights),
            grand_total=total,
            commission_fee=round_money(total * COMMISSION, prop.currency),
            currency=prop.currency,
        )
        new = Payment.objects.create(
            reference=f"{DEMO_PAYMENT_PREFIX}{BOOKINGS + 1:06d}",
            booking=booking,
            provider=payment.provider,
            amount=total,
            currency=prop.currency,
        )
        Booking.objects.filter(pk=booking.pk).update(created_at=when - timedelta(minutes=6))
        Payment.objects.filter(pk=new.pk).update(created_at=when - timedelta(minutes=6))
        txn = TransactionService.process_booking_payment(booking, new)
        timeline.transaction_dates[txn.pk] = when

    timeline.add(start, withdraw_everything)
    timeline.add(start + timedelta(hours=1, minutes=30), refund_in_full)
    timeline.add(start + timedelta(hours=3), next_payout)
    return host.username


PROCESSING_AGES = (  # how long ago the payouts still in flight were sent
    timedelta(minutes=4),
    timedelta(minutes=25),
    timedelta(minutes=50),
    timedelta(hours=3),
    timedelta(hours=7),
    timedelta(hours=23),
)


def _send_some_payouts(rng, now: datetime, timeline: Timeline) -> None:
    """A few payouts sent through the sandbox whose transfer has no outcome yet: processing,
    so still held, sent minutes to a day ago (the queue's Processing tab; the oldest are past
    PAYOUT_QUERY_AFTER_MINUTES and PAYOUT_STUCK_AFTER_MINUTES)."""
    open_ones = Withdrawal.objects.filter(pk__in=timeline.withdrawal_dates, status=Withdrawal.Status.PENDING)
    sent = list(open_ones.select_related("bank_account").order_by("pk")[: len(PROCESSING_AGES)])
    for withdrawal, age in zip(sent, PROCESSING_AGES, strict=False):
        withdrawal.status = Withdrawal.Status.PROCESSING
        withdrawal.payout_method = "sandbox"
        withdrawal.transfer_reference = withdrawal.stable_transfer_reference()
        withdrawal.provider_transfer_id = f"trf_sandbox_{rng.getrandbits(48):012x}"
        # Never before the host asked for it.
        withdrawal.payout_sent_at = max(now - age, timeline.withdrawal_dates[withdrawal.pk][0])
    Withdrawal.objects.bulk_update(
        sent, ["status", "payout_method", "transfer_reference", "provider_transfer_id", "payout_sent_at"]
    )


def _book(rng, now, properties, weights, guests) -> tuple[list[Booking], list[Payment]]:
    """The bookings, oldest first, and a payment row for each paid one (plus some still open)."""
    plans = []
    for _ in range(BOOKINGS):
        prop = rng.choices(properties, weights=weights)[0]
        pending = rng.random() < PENDING_SHARE
        ago = timedelta(hours=rng.uniform(1, 24 * (10 if pending else HISTORY_DAYS)))
        booked = now - ago
        nights = rng.randint(1, 7)
        check_in = booked.date() + timedelta(days=rng.randint(2, 45))
        plans.append((booked, prop, rng.choice(guests), nights, check_in, pending))
    plans.sort(key=lambda plan: plan[0])
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                guest=guest,
                rental_property=prop,
                check_in=check_in,
                check_out=check_in + timedelta(days=nights),
                grand_total=prop.nightly_rate * nights,
                commission_fee=round_money(prop.nightly_rate * nights * COMMISSION, prop.currency),
                currency=prop.currency,
            )
            for _, prop, guest, nights, check_in, _ in plans
        ],
        batch_size=500,
    )
    for booking, plan in zip(bookings, plans, strict=True):
        booking.created_at = plan[0]
    Booking.objects.bulk_update(bookings, ["created_at"], batch_size=500)
    payments = []
    for n, (booking, plan) in enumerate(zip(bookings, plans, strict=True), start=1):
        pending = plan[5]
        if pending and n % 2:  # half the unpaid bookings never reached a checkout
            continue
        provider = "sandbox" if pending else PROVIDER_BY_COUNTRY[booking.rental_property.country]
        payments.append(
            Payment(
                reference=f"{DEMO_PAYMENT_PREFIX}{n:06d}",
                booking=booking,
                provider=provider,
                amount=booking.grand_total,
                currency=booking.currency,
            )
        )
    payments = Payment.objects.bulk_create(payments, batch_size=500)
    for payment in payments:
        payment.created_at = payment.booking.created_at
    Payment.objects.bulk_update(payments, ["created_at"], batch_size=500)
    return bookings, [p for p in payments if p.provider != "sandbox"]


def _plan_payouts(timeline: Timeline, rng, bookings, payments, wallets: dict[int, Wallet]) -> None:
    """Each paid booking's payout a few minutes after booking, and a refund for a few."""

    def pay(payment):
        def run(when):
            txn = TransactionService.process_booking_payment(payment.booking, payment)
            timeline.transaction_dates[txn.pk] = when

        return run

    def refund(payment, share, reason):
        def run(when):
            wallet = wallets[payment.booking.rental_property.host_id]
            wallet.refresh_from_db()
            amount = round_money(payment.amount * share, payment.currency)
            if amount <= 0 or amount > wallet.available_balance:  # the host has paid it out already
                return
            txn = TransactionService.process_refund(payment.booking, amount, reason)
            timeline.transaction_dates[txn.pk] = when
            timeline.refund_dates[_refunded_by_provider(txn)] = when

        return run

    for payment in payments:
        paid = payment.booking.created_at + timedelta(minutes=rng.randint(1, 20))
        timeline.add(paid, pay(payment))
        if rng.random() < REFUND_SHARE:
            share = rng.choice((Decimal("0.2"), Decimal("0.5"), Decimal(1)))
            later = paid + timedelta(days=rng.randint(1, 10))
            if later < timezone.now():
                timeline.add(later, refund(payment, share, rng.choice(REFUND_REASONS)))


def _refunded_by_provider(txn: WalletTransaction) -> int:
    """The provider's answer to the refund `txn` opened: accepted and paid (a refund months old
    has long reached the guest). Recorded as the send job records it (finance.refunds), so the
    job process_refund enqueued finds it settled and sends nothing: the demo's providers are
    labels, and `make run`'s worker must not call their real APIs. Returns the refund's pk."""
    refund = ProviderRefund.objects.get(transaction=txn)
    answer = RefundResult(status=SUCCESS, provider_refund_id=_provider_refund_id(refund))
    refunds.record_refund_answer(refund.pk, answer)
    return refund.pk


def _provider_refund_id(refund: ProviderRefund) -> str:
    """An id in the provider's own style, the same on every run (from our refund reference)."""
    digest = hashlib.sha256(refund.refund_reference.encode()).hexdigest()
    if refund.provider == "stripe":
        return f"re_3Demo{digest[:19]}"
    if refund.provider == "mpesa":  # a transaction receipt: ten letters and digits
        return digest[:10].upper()
    return str(int(digest[:10], 16))  # Paystack and Flutterwave number their refunds


def _plan_withdrawals(timeline: Timeline, rng, now, wallets: dict[int, Wallet]) -> None:
    """Every few weeks each host withdraws part of what is available; the bank pays most."""
    banks = {a.owner_id: a for a in BankAccount.objects.filter(owner__in=_hosts(), is_primary=True)}
    finance = User.objects.get(username="finance")

    def withdraw(host_id):
        def run(when):
            wallet = wallets[host_id]
            wallet.refresh_from_db()
            minimum = settings.MINIMUM_WITHDRAWAL.get(wallet.currency, Decimal(0))
            share = Decimal(rng.randint(40, 80)) / 100
            step = MARKET_OF_CURRENCY[wallet.currency].step * 10  # people withdraw round sums
            amount = (wallet.available_balance * share / step).to_integral_value(rounding=ROUND_DOWN) * step
            if amount < 2 * minimum or amount <= 0:
                return
            withdrawal = TransactionService.initiate_withdrawal(
                wallet=wallet, bank_account=banks[host_id], amount=amount
            )
            timeline.transaction_dates[withdrawal.transaction_id] = when
            timeline.withdrawal_dates[withdrawal.pk] = (when, None)
            settled = when + timedelta(hours=rng.randint(6, 72))
            if settled < now - timedelta(days=3):  # the last few days' are still in the queue
                failing = rng.random() < 0.08
                timeline.add(settled, resolve(withdrawal, failing, rng.choice(FAILED_PAYOUT_REASONS)))

        return run

    def resolve(withdrawal, failing, reason):
        def run(when):
            if failing:
                TransactionService.fail_withdrawal(withdrawal, reason, actor=finance)
            else:
                TransactionService.complete_withdrawal(withdrawal, actor=finance)
            timeline.withdrawal_dates[withdrawal.pk] = (timeline.withdrawal_dates[withdrawal.pk][0], when)

        return run

    start = now - timedelta(days=HISTORY_DAYS)
    for host_id in sorted(banks):
        when = start + timedelta(days=rng.randint(14, 40), hours=rng.randint(8, 17))
        while when < now:
            timeline.add(when, withdraw(host_id))
            when += timedelta(days=rng.randint(18, 45), hours=rng.randint(-4, 4))


# --- the webhook inbox ----------------------------------------------------------------------------


def _webhooks_loaded() -> bool:
    return WebhookEvent.objects.filter(event_id__startswith=DEMO_EVENT_PREFIX).exists()


def load_webhooks(now: datetime) -> str:
    """Signed sandbox events through the real pipeline: most applied, some failed payments, and
    the ones staff must look at (flagged: an amount or currency that differs, an unknown
    reference; rejected: a body that is not JSON)."""
    rng = random.Random("webhooks")
    open_payments = list(
        Payment.objects.filter(
            reference__startswith=DEMO_PAYMENT_PREFIX, provider="sandbox", status=Payment.Status.PENDING
        ).order_by("pk")
    )
    planned = [("payment.succeeded", p.reference, p.amount, p.currency) for p in open_payments[:30]]
    planned += [("payment.failed", p.reference, p.amount, p.currency) for p in open_payments[30:35]]
    # The guest paid another amount, or in another currency: flagged for staff.
    planned += [("payment.succeeded", p.reference, p.amount * 2, p.currency) for p in open_payments[35:38]]
    planned += [("payment.succeeded", p.reference, p.amount, "USD") for p in open_payments[38:40]]
    # References no payment has, and the first success sent twice under a new id (already applied).
    planned += [("payment.succeeded", f"PAY-UNKNOWN{n:04d}", Decimal("1500.00"), "KES") for n in range(3)]
    planned += [("payment.succeeded", p.reference, p.amount, p.currency) for p in open_payments[:1]]
    planned += [("refund.processed", "PAY-UNKNOWN0000", Decimal("1500.00"), "KES")]  # a type we ignore
    events = [_event(n, *event) for n, event in enumerate(planned, start=1)]
    # Authentic (signed) but malformed: rejected.
    events += [b'{"id": "evt_demo_truncated", "type": "payment.succeeded", "data": {"ref', b"<html>502</html>"]
    # The sandbox is the demo's provider: on here whatever the environment says.
    with override_settings(SANDBOX_PAYMENTS_ENABLED=True):
        for raw in events:
            receive_webhook("sandbox", raw, {SIGNATURE_HEADER: sign(raw)}, source="demo")
    received = list(WebhookEvent.objects.filter(received_at__gte=now))
    for event in received:
        event.received_at = now - timedelta(days=rng.uniform(0.1, 14))
        event.processed_at = event.received_at + timedelta(seconds=rng.randint(1, 30))
    WebhookEvent.objects.bulk_update(received, ["received_at", "processed_at"])
    flagged = sum(1 for e in received if e.outcome in WebhookEvent.NEEDS_ATTENTION)
    return f"{len(received)} webhook events, {flagged} needing attention"


def _event(n: int, kind: str, reference: str, amount: Decimal, currency: str) -> bytes:
    event_id = f"{DEMO_EVENT_PREFIX}{n:04d}"
    data = {"reference": reference, "amount": str(amount), "currency": currency}
    return json.dumps({"id": event_id, "type": kind, "data": data}).encode()


# --- four-eyes approvals -------------------------------------------------------------------------


def _approvals_loaded() -> bool:
    return ApprovalRequest.objects.filter(requested_by__username="finance").exists()


def load_approvals(now: datetime) -> str:
    """Finance files requests, the approver decides some: approved (one of them a reversal,
    carried out), rejected, and still pending. Plus a few withdrawals completed or failed by
    finance directly, so the audit log has their entries."""
    finance = User.objects.get(username="finance")
    approver = User.objects.get(username="approver")
    reversals = [
        staff_actions.request_reversal(
            txn=payout,
            reason="Chargeback from the guest's bank",
            actor=finance,
            idempotency_key=f"demo-reverse-{payout.pk}",
        ).approval
        for payout in _reversible_payouts(3)
    ]
    _decide(reversals, approver)  # before the large withdrawals hold the hosts' money
    completions = []
    for withdrawal in _large_withdrawals(3):
        outcome = staff_actions.complete_withdrawal(
            withdrawal=withdrawal, actor=finance, idempotency_key=f"demo-complete-{withdrawal.pk}"
        )
        if outcome.needs_approval:
            completions.append(outcome.approval)
    _decide(completions, approver)
    requests = reversals + completions
    direct = _small_open_withdrawals(6)
    for withdrawal in direct[:4]:
        staff_actions.complete_withdrawal(
            withdrawal=withdrawal, actor=finance, idempotency_key=f"demo-complete-{withdrawal.pk}"
        )
    for withdrawal in direct[4:]:
        staff_actions.fail_withdrawal(
            withdrawal=withdrawal,
            actor=finance,
            reason=FAILED_PAYOUT_REASONS[0],
            idempotency_key=f"demo-fail-{withdrawal.pk}",
        )
    return f"{len(requests)} approval requests, {len(direct)} withdrawals decided by finance"


def _decide(requests: list[ApprovalRequest], approver) -> None:
    """The first approved (and so carried out), the second rejected, the rest left pending."""
    for request in requests[:1]:
        staff_actions.approve_request(request=request, actor=approver, note="Checked with the host.")
    for request in requests[1:2]:
        staff_actions.reject_request(request=request, actor=approver, note="Bank details to confirm first.")


def _reversible_payouts(count: int) -> list[WalletTransaction]:
    """Recent payouts without refunds whose host can give the money back."""
    payouts = (
        WalletTransaction.objects.filter(
            type=WalletTransaction.Type.BOOKING_PAYMENT,
            status=WalletTransaction.Status.COMPLETED,
            payment__refunded_amount=0,
            payment__reference__startswith=DEMO_PAYMENT_PREFIX,
        )
        .select_related("wallet")
        .order_by("-created_at")[:200]
    )
    chosen, hosts = [], set()
    for payout in payouts:
        if payout.wallet_id not in hosts and payout.wallet.available_balance >= 2 * payout.amount:
            chosen.append(payout)
            hosts.add(payout.wallet_id)
        if len(chosen) == count:
            break
    return chosen


def _large_withdrawals(count: int) -> list[Withdrawal]:
    """New withdrawals just over the approval threshold, from the hosts who can afford one."""
    chosen = []
    for wallet in Wallet.objects.filter(user__in=_hosts()).order_by("pk"):
        limit = settings.APPROVAL_THRESHOLDS.get(wallet.currency)
        if limit is None or wallet.available_balance < limit * 2:
            continue
        bank = BankAccount.objects.get(owner_id=wallet.user_id, is_primary=True)
        amount = round_money(limit * Decimal("1.2"), wallet.currency)
        chosen.append(TransactionService.initiate_withdrawal(wallet=wallet, bank_account=bank, amount=amount))
        if len(chosen) == count:
            break
    return chosen


def _small_open_withdrawals(count: int) -> list[Withdrawal]:
    pending = Withdrawal.objects.filter(status=Withdrawal.Status.PENDING, wallet__user__in=_hosts())
    small = []
    for withdrawal in pending.select_related("wallet").order_by("amount", "pk"):
        limit = settings.APPROVAL_THRESHOLDS.get(withdrawal.currency)
        if limit is not None and withdrawal.amount * 4 < limit:
            small.append(withdrawal)
        if len(small) == count:
            break
    return small


# --- broadcasts ------------------------------------------------------------------------------------


def _broadcasts_loaded() -> bool:
    from messaging.models import Broadcast

    return Broadcast.objects.filter(author__username="support").exists()


BROADCASTS = [
    # days ago, audience, country, text
    (
        40,
        "all_hosts",
        "",
        "Payouts now reach most banks within one working day. Thank you for hosting with StayAfrica!",
    ),
    (21, "hosts_in_country", "KE", "M-Pesa maintenance on Sunday 02:00-04:00 EAT: guest payments may be delayed."),
    (9, "all_guests", "", "Planning a trip for the holidays? Book early: coastal stays fill up fast."),
    (2, "user_ids", "", "Your statement for last month is ready under Statement."),
]


def load_broadcasts(now: datetime) -> str:
    """Broadcasts from support, delivered (written here: no Erlang node runs while seeding)."""
    from messaging import services
    from messaging.models import Broadcast, Message

    support = User.objects.get(username="support")
    named_hosts = list(User.objects.filter(username__in=[m[0] for m in MARKETS]).values_list("pk", flat=True))
    for days, audience, country, text in BROADCASTS:
        user_ids = named_hosts if audience == "user_ids" else ()
        broadcast = services.create_broadcast(support, audience=audience, text=text, country=country, user_ids=user_ids)
        services.fan_out_here(broadcast, services.broadcast_recipients(broadcast), attempt=1)
        sent = now - timedelta(days=days, hours=3)
        Broadcast.objects.filter(pk=broadcast.pk).update(created_at=sent, completed_at=sent + timedelta(seconds=40))
        Message.objects.filter(broadcast=broadcast).update(created_at=sent + timedelta(seconds=20))
    return f"{len(BROADCASTS)} broadcasts"


# --- refunds at the providers ----------------------------------------------------------------------


def _provider_refunds_loaded() -> bool:
    # The money part's refunds are at the payments' providers; these are the sandbox's and by hand.
    return ProviderRefund.objects.filter(provider__in=("sandbox", refunds.MANUAL)).exists()


def load_provider_refunds(now: datetime) -> str:
    """Refunds in each state a refund goes through, on bookings the guests paid through the
    sandbox: two paid back and one failed by the sandbox's signed callback (through the webhook
    pipeline: its amount ends in SANDBOX_REFUND_FAILS_CENTS, the guest's card is closed, and
    finance may retry it), one still queued (its send job waits for `make run`'s worker, which
    settles it a moment later), and one to refund by hand (made while its provider was off)."""
    cents = Decimal(f"0.{settings.SANDBOX_REFUND_FAILS_CENTS}")
    # Hosts who can give their share back: these refunds leave no wallet negative.
    paid = [p for p in _unrefunded_demo_payments(provider="sandbox").order_by("pk") if _host_can_cover(p)]
    two_decimals = [p for p in paid if quantum(p.currency) == Decimal("0.01") and p.amount > 1]
    failing = two_decimals[0]
    others = [p for p in paid if p != failing]
    # (payment, amount, reason, answered by the sandbox in the seed)
    plans = [
        (others[0], others[0].amount, REFUND_REASONS[2], True),
        (others[1], round_money(others[1].amount / 2, others[1].currency), REFUND_REASONS[1], True),
        (
            failing,
            (failing.amount * Decimal("0.4")).to_integral_value(rounding=ROUND_DOWN) + cents,
            REFUND_REASONS[0],
            True,
        ),
        (others[2], round_money(others[2].amount / 5, others[2].currency), REFUND_REASONS[0], False),
    ]
    with override_settings(SANDBOX_PAYMENTS_ENABLED=True, SANDBOX_AUTOCOMPLETE=False):
        for payment, amount, reason, answered in plans:
            txn = TransactionService.process_refund(payment.booking, amount, reason)
            if answered:
                _sandbox_answers(ProviderRefund.objects.get(transaction=txn))
    _refund_by_hand()
    states = ProviderRefund.objects.filter(provider__in=("sandbox", refunds.MANUAL)).values_list("status", flat=True)
    return f"{len(states)} refunds: " + ", ".join(sorted(states))


def _unrefunded_demo_payments(**filters):
    """The demo's payments whose money reached the host's wallet and that no refund touched yet."""
    return Payment.objects.filter(
        reference__startswith=DEMO_PAYMENT_PREFIX,
        ledger_transaction__status=WalletTransaction.Status.COMPLETED,
        refunded_amount=0,
        **filters,
    ).select_related("booking__rental_property", "ledger_transaction__wallet")


def _host_can_cover(payment: Payment) -> bool:
    """Whether the host's wallet holds the whole payment: refunding it leaves the wallet positive."""
    return payment.ledger_transaction.wallet.available_balance >= payment.amount


def _sandbox_answers(refund: ProviderRefund) -> None:
    """What `make run`'s worker does, here and now: the send job sends the refund (the sandbox
    accepts it), then the sandbox's signed callback comes in through the webhook pipeline."""
    refunds.send_refund.call(refund.pk, refund.attempt)
    refund.refresh_from_db()
    raw = refund_event_body(refund)
    receive_webhook("sandbox", raw, {SIGNATURE_HEADER: sign(raw)}, source="demo")


def _refund_by_hand() -> None:
    """A Flutterwave payment refunded on a deployment with Flutterwave switched off: no provider
    can send it, so finance pays the guest by other means and marks it refunded."""
    payment = next(p for p in _unrefunded_demo_payments(provider="flutterwave").order_by("-pk") if _host_can_cover(p))
    others = {name: countries for name, countries in settings.PAYMENT_PROVIDERS.items() if name != "flutterwave"}
    with override_settings(PAYMENT_PROVIDERS=others):
        TransactionService.process_refund(payment.booking, payment.amount, "Property closed for repairs")


# --- reconciliation --------------------------------------------------------------------------------

RED_PROVIDER = "mpesa"  # its reports stop a few days back: the dashboard's card shows it red
RED_GAP_DAYS = 5
DIFFERENCES_PROVIDER = "paystack"  # one of its days has a difference of each kind
RESOLUTION_NOTE = "Paystack settled this payment net of a chargeback fee; the fee is booked to provider fees."


def _reconciliation_loaded() -> bool:
    return ReconciliationReport.objects.filter(uploaded_by__username="finance").exists()


def load_reconciliation(now: datetime) -> str:
    """Finance uploaded each provider's report week by week over the look-back window, as CSV
    in the provider's own columns (written here from the ledger's records: the provider agrees
    with us), read by `reconciliation.import_report`. One Paystack day has a difference of each
    kind (an amount that differs, resolved with a note; a payment missing in the ledger; one
    missing at the provider), and M-Pesa's last days are not reconciled yet."""
    finance = User.objects.get(username="finance")
    today = now.astimezone(UTC).date()
    # From a little before the first day the dashboard's check looks at.
    first = today - timedelta(days=reconciliation.LOOKBACK_DAYS + 2)
    day_of_differences = _day_of_differences(first, today - timedelta(days=2))
    reports = []
    for provider in reconciliation.RECONCILED_PROVIDERS:
        last = today - timedelta(days=RED_GAP_DAYS if provider == RED_PROVIDER else 1)
        week = first
        while week <= last:
            end = min(week + timedelta(days=6), last)
            # Each export reaches into the next week's first day, as exports by date often do (the
            # next report replaces that day's lines): a report covers the days from its first row
            # to its last, so weeks that meet leave no day between them unreconciled.
            rows = _report_rows(provider, week, min(end + timedelta(days=1), last), day_of_differences)
            if rows:
                name = f"{provider}-{week.isoformat()}-to-{end.isoformat()}.csv"
                report = reconciliation.import_report(
                    provider=provider, file_name=name, content=_csv(rows), actor=finance
                )
                uploaded = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
                report.created_at = min(now, uploaded + timedelta(hours=9))
                report.save(update_fields=["created_at"])
                _backdate_audit(report, report.created_at)
                reports.append(report)
            week = end + timedelta(days=1)
    differs = ReconciliationLine.objects.get(
        provider=DIFFERENCES_PROVIDER, day=day_of_differences, state=ReconciliationLine.State.DIFFERS
    )
    resolved = reconciliation.resolve_line(line=differs, note=RESOLUTION_NOTE, actor=finance)
    # Resolved the morning after the day's report was read, like the uploads' dates.
    when = min(now, datetime.combine(day_of_differences + timedelta(days=2), datetime.min.time(), tzinfo=UTC))
    ReconciliationLine.objects.filter(pk=resolved.pk).update(resolved_at=when + timedelta(hours=10))
    _backdate_audit(resolved, when + timedelta(hours=10))
    lines = sum(report.line_count for report in reports)
    return f"{len(reports)} provider reports, {lines} lines"


def _backdate_audit(instance, when: datetime) -> None:
    """Move the audit entry an action on `instance` just wrote to when the demo says it happened
    (the history's dates are in the past; the audit log must agree with them)."""
    ModelLogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(type(instance)), object_id=str(instance.pk)
    ).update(timestamp=when)


def _day_of_differences(first: date, last: date) -> date:
    """The latest day with at least four Paystack payments (some must still match)."""
    days: dict[date, int] = {}
    for day, _ in match_ledger_records(DIFFERENCES_PROVIDER, PAYMENT, first, last):
        days[day] = days.get(day, 0) + 1
    return max(day for day, count in days.items() if count >= 4)


def _report_rows(provider: str, first: date, last: date, day_of_differences: date) -> list[dict]:
    """The provider's report of the days, in its columns, from the ledger's records (oldest first)."""
    writer = REPORT_WRITERS[provider]
    records = []
    for kind in reconciliation.MAPPINGS[provider].kinds:
        records += [
            (_moment(kind, record), kind, record) for _, record in match_ledger_records(provider, kind, first, last)
        ]
    records.sort(key=lambda item: (item[0], item[1], item[2].pk))
    rows = []
    if provider == DIFFERENCES_PROVIDER and first <= day_of_differences <= last:
        on_the_day = [item for item in records if item[0].astimezone(UTC).date() == day_of_differences]
        missing_at_provider, differs = on_the_day[0], on_the_day[1]
        records.remove(missing_at_provider)
        for moment, kind, record in records:
            fee = Decimal("150.00") if record == differs[2] else Decimal(0)
            rows.append(writer(moment, kind, record, record.amount - fee))
        # A guest paid through a Paystack payment page with a reference of Paystack's own: the
        # ledger has no such payment.
        stranger = Payment(reference="T738209154621", amount=Decimal("52000.00"), currency="NGN")
        rows.append(writer(differs[0] + timedelta(minutes=17), PAYMENT, stranger, stranger.amount))
        return rows
    return [writer(moment, kind, record, record.amount) for moment, kind, record in records]


def _moment(kind: str, record) -> datetime:
    """When the record's money moved on our side (the time matching reads its day from)."""
    if kind == PAYMENT:
        return record.ledger_transaction.created_at
    if kind == REFUND:
        return record.sent_at
    return record.payout_sent_at


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _their_id(record, digits: int = 10) -> str:
    """The provider's own id of a row, the same on every run."""
    return str(int(hashlib.sha256(f"{type(record).__name__}:{record.pk}".encode()).hexdigest()[:12], 16))[:digits]


def _major(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(quantum(currency)))


def _iso_utc(moment: datetime) -> str:
    """Paystack's and Flutterwave's timestamps: UTC, milliseconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _paystack_row(moment: datetime, kind: str, payment, amount: Decimal) -> dict:
    # https://paystack.com/docs/api/transaction/#list: amounts in the currency's subunit.
    return {
        "id": _their_id(payment),
        "reference": payment.reference,
        "amount": to_minor_units(amount, payment.currency),
        "currency": payment.currency,
        "status": "success",
        "channel": "card",
        "paid_at": _iso_utc(moment),
    }


def _flutterwave_row(moment: datetime, kind: str, payment, amount: Decimal) -> dict:
    return {
        "id": _their_id(payment, 7),
        "tx_ref": payment.reference,
        "flw_ref": f"FLW-MOCK-{_their_id(payment, 8)}",
        "amount": _major(amount, payment.currency),
        "currency": payment.currency,
        "status": "successful",
        "payment_type": "card",
        "created_at": _iso_utc(moment),
    }


def _stripe_row(moment: datetime, kind: str, record, amount: Decimal) -> dict:
    # The itemized balance change report: a refund's gross is negative, its source its re_ id.
    payment = record if kind == PAYMENT else record.payment
    return {
        "balance_transaction_id": f"txn_3Demo{_their_id(record, 12)}",
        "created_utc": moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "currency": record.currency.lower(),
        "gross": _major(amount if kind == PAYMENT else -amount, record.currency),
        "reporting_category": "charge" if kind == PAYMENT else "refund",
        "source_id": f"ch_3Demo{_their_id(record, 12)}" if kind == PAYMENT else record.provider_refund_id,
        "payment_intent_id": payment.provider_reference,
        "payment_metadata[payment_reference]": payment.reference,
    }


NAIROBI = ZoneInfo("Africa/Nairobi")


def _mpesa_row(moment: datetime, kind: str, record, amount: Decimal) -> dict:
    # The organisation statement: Nairobi time, day first; money in under Paid In, out under Withdrawn.
    if kind == PAYMENT:
        receipt, details, account = _their_id(record).upper(), "Pay Bill Online", record.reference
    elif kind == REFUND:
        receipt, details, account = record.provider_refund_id, f"Reversal of {record.payment.reference}", ""
    else:
        receipt, details, account = record.provider_transfer_id, "Business Payment to Customer", ""
    money = _major(amount, "KES")
    return {
        "Receipt No.": receipt,
        "Completion Time": moment.astimezone(NAIROBI).strftime("%d-%m-%Y %H:%M:%S"),
        "Details": details,
        "Transaction Status": "Completed",
        "Paid In": money if kind == PAYMENT else "",
        "Withdrawn": "" if kind == PAYMENT else f"-{money}",
        "A/C No.": account,
    }


REPORT_WRITERS = {
    "paystack": _paystack_row,
    "flutterwave": _flutterwave_row,
    "stripe": _stripe_row,
    "mpesa": _mpesa_row,
}


PARTS = [
    Part("people", _people_loaded, load_people),
    Part("properties and bank accounts", _listings_loaded, load_listings),
    Part("bookings, payouts, withdrawals and refunds", _money_loaded, load_money),
    Part("webhook inbox", _webhooks_loaded, load_webhooks),
    Part("approvals", _approvals_loaded, load_approvals),
    Part("broadcasts", _broadcasts_loaded, load_broadcasts),
    Part("refunds at the providers", _provider_refunds_loaded, load_provider_refunds),
    Part("reconciliation", _reconciliation_loaded, load_reconciliation),
]
