"""Every CSV export, downloaded as the person who would download it and read back with Python's
csv module: the rules a spreadsheet needs (portal/csv_export.py).

To add an export: add an `Export` to EXPORTS. `test_every_export_is_in_the_list` fails until
every list view with `export_columns`, and every view module that streams a CSV, is there.
"""

import csv
import importlib
import io
import pkgutil
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from wagtail.log_actions import registry
from wagtail.models import ModelLogEntry

import portal.views
from finance import staff_actions
from finance.models import BankAccount
from finance.money import currency_decimals
from finance.services import TransactionService
from messaging.models import Broadcast, DeadLetterMessage
from portal.views import audit, broadcasts, dead_letters, finance, jobs, reconciliation, statement, webhooks
from portal.views.base import TableListView
from testing import jobs as test_jobs
from testing.jobs import run_ready_jobs

pytestmark = pytest.mark.django_db

ACCENTED = ("Adéwálé", "Òkè")
OWNER = " ".join(ACCENTED)
BOM = b"\xef\xbb\xbf"
ISO_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
FRACTION_OF_A_SECOND = re.compile(r"\d{2}:\d{2}:\d{2}\.\d")


@dataclass
class Export:
    """One export: where it is (`url(data)`), who downloads it (a fixture), and its columns to check."""

    name: str
    views: tuple  # the view classes (or modules) that serve it
    role: str
    url: object  # callable(data) -> path with query
    timestamps: list[str] = field(default_factory=list)  # headers of ISO 8601 date-time columns
    dates: list[str] = field(default_factory=list)  # headers of date or date-time columns
    amounts: dict[str, str] = field(default_factory=dict)  # amount header -> its currency's header
    currency: str = ""  # one currency for every amount (no currency column)
    people: list[str] = field(default_factory=list)  # headers where the accented owner shows
    labels: dict[str, set] = field(default_factory=dict)  # header -> values it must not hold (codes)
    min_rows: int = 1
    extra_data: str = ""  # a fixture with the rows only this export lists (refunds, reconciliation lines)


ACTION_CODES = {"stayafrica.refund", "stayafrica.withdrawal.fail", "stayafrica.export", "stayafrica.auth.login"}

EXPORTS = [
    Export(
        "wallets",
        (finance.WalletListView,),
        "finance_user",
        lambda d: "/admin/operations/wallets/?export=csv",
        amounts={"Balance": "Currency", "Held": "Currency", "Available": "Currency"},
        people=["Owner"],
        labels={"Status": {"active"}},
        min_rows=3,
    ),
    Export(
        "transactions",
        (finance.TransactionListView,),
        "finance_user",
        lambda d: "/admin/operations/transactions/?export=csv",
        timestamps=["Date"],
        amounts={"Amount": "Currency", "Balance after": "Currency"},
        people=["Owner"],
        labels={"Type": {"credit", "withdrawal_hold"}, "Status": {"completed", "pending"}, "Direction": {"in", "out"}},
        min_rows=4,
    ),
    Export(
        "a wallet's transactions",
        (finance.WalletDetailView,),
        "finance_user",
        lambda d: f"/admin/operations/wallets/{d['TND'].pk}/?export=csv",
        timestamps=["Date"],
        amounts={"Amount": "Currency", "Balance after": "Currency"},
        people=["Owner"],
        labels={"Status": {"completed"}},
    ),
    Export(
        "withdrawals",
        (finance.WithdrawalQueueView,),
        "finance_user",
        lambda d: "/admin/operations/withdrawals/?export=csv",
        timestamps=["Requested"],
        amounts={"Amount": "Currency"},
        people=["Host"],
        labels={"Status": {"pending", "processing"}},
    ),
    Export(
        "audit log",
        (audit.AuditLogView,),
        "manager",
        lambda d: "/admin/operations/audit/?export=csv",
        timestamps=["When"],
        amounts={"Amount": "Currency"},
        labels={"Action": ACTION_CODES},
        min_rows=2,
    ),
    Export(
        "background jobs",
        (jobs.JobListView,),
        "finance_user",
        lambda d: "/admin/operations/jobs/?export=csv",
        timestamps=["Enqueued", "Started", "Finished"],
        labels={"Status": {"FAILED", "failed"}},
    ),
    Export(
        "undeliverable messages",
        (dead_letters.DeadLetterListView,),
        "support_user",
        lambda d: "/admin/operations/undeliverable/?export=csv",
        timestamps=["Last seen", "First seen"],
    ),
    Export(
        "broadcasts",
        (broadcasts,),
        "support_user",
        lambda d: "/admin/operations/broadcasts/?export=csv",
        timestamps=["Sent"],
        people=["By"],
        labels={"Priority": {"high", "normal"}, "Status": {"queued"}},
    ),
    Export(
        "host statement",
        (statement,),
        "accented_host",
        lambda d: "/statement/?format=csv",
        dates=["Date"],
        amounts={"Amount": "Currency", "Balance": "Currency", "Gross": "Currency", "Commission": "Currency"},
        min_rows=6,
    ),
    Export(
        "refunds",
        (finance,),
        "finance_user",
        lambda d: "/admin/operations/refunds/?export=csv",
        timestamps=["Created", "Sent", "Settled"],
        amounts={"Refunded to guest": "Currency", "Host's share": "Currency"},
        people=["Guest"],
        labels={"Status": {"queued", "succeeded", "failed"}, "Provider": {"sandbox", "manual"}},
        extra_data="refund_to_the_accented_guest",
    ),
    Export(
        "unresolved reconciliation lines",
        (reconciliation,),
        "finance_user",
        lambda d: "/admin/operations/reconciliation/unresolved/export/",
        dates=["Day"],
        amounts={"Provider amount": "Provider currency", "Ledger amount": "Ledger currency"},
        labels={"State": {"differs", "missing_in_ledger", "missing_at_provider"}},
        extra_data="paystack_report_read",
    ),
    # The webhook inbox's columns are formatted in its own view (portal/views/webhooks.py);
    # the byte-order mark, the dated name and the fractions rule apply to it like to any export.
    Export(
        "webhook events",
        (webhooks,),
        "finance_user",
        lambda d: "/admin/operations/webhooks/?export=csv&show=all",
        min_rows=0,
    ),
]


@pytest.fixture
def accented_host(make_user):
    return make_user("host", first_name=ACCENTED[0], last_name=ACCENTED[1])


@pytest.fixture
def refund_to_the_accented_guest(accented_host, guest, finance_user, make_booking, make_payment):
    """A refund of part of what the accented user paid as a guest (queued at the sandbox)."""
    booking = make_booking(guest, accented_host, total="1000.00", commission="150.00")
    TransactionService.process_booking_payment(booking, make_payment(booking))
    staff_actions.refund_booking(
        booking=booking, amount="120.50", reason="Late check-in", actor=finance_user, idempotency_key="rf1"
    )


@pytest.fixture
def paystack_report_read(finance_user):
    """A Paystack report whose lines the ledger lacks: three unresolved differences."""
    from finance.reconciliation import import_report
    from testing.recorded_http import recorded

    import_report(
        provider="paystack",
        file_name="paystack.csv",
        content=recorded("reports/paystack_transactions.csv"),
        actor=finance_user,
    )


@pytest.fixture
def data(accented_host, finance_user, support_user, guest):
    """Wallets in a two-, a three- and a zero-decimal currency, a withdrawal in each of two,
    an audit entry with a TND amount, a failed job, an undeliverable message, a broadcast."""
    wallets = {}
    for currency, amount in (("NGN", "15000.50"), ("TND", "1500.125"), ("UGX", "150000")):
        wallets[currency] = TransactionService.create_wallet(accented_host, currency)
        TransactionService.credit_wallet(wallets[currency], Decimal(amount))
    bank = BankAccount.objects.create(
        owner=accented_host, bank_name="GTBank", account_name=OWNER, account_number_last4="4321", is_primary=True
    )
    TransactionService.initiate_withdrawal(wallets["NGN"], bank, Decimal("2500.00"))
    tnd = TransactionService.initiate_withdrawal(wallets["TND"], bank, Decimal("100.250"))
    staff_actions.fail_withdrawal(withdrawal=tnd, actor=finance_user, reason="Bank closed", idempotency_key="x1")
    TransactionService.initiate_withdrawal(wallets["TND"], bank, Decimal("200.500"))
    test_jobs.fail_permanently.enqueue()
    run_ready_jobs()
    now = timezone.now()
    DeadLetterMessage.objects.create(
        message_id=str(uuid.uuid4()),
        reason="Messages cannot contain the NUL character.",
        sender_id=accented_host.pk,
        receiver_id=guest.pk,
        payload={"text": "hello"},
        first_seen=now - timedelta(minutes=5),
        last_seen=now,
    )
    support_user.first_name, support_user.last_name = ACCENTED  # the author, as the page shows them
    support_user.save()
    Broadcast.objects.create(
        author=support_user, audience=Broadcast.Audience.ALL_HOSTS, text="Maintenance tonight", total=1
    )
    return wallets


def download(user, path):
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    body = b"".join(response.streaming_content)
    return response, body


def read(body: bytes) -> list[dict]:
    return read_with_headers(body)[1]


def read_with_headers(body: bytes) -> tuple[list[str], list[dict]]:
    assert body.startswith(BOM), body[:20]
    text = body[len(BOM) :].decode("utf-8")
    assert not text.startswith("\ufeff")  # one mark, not two
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


@pytest.mark.parametrize("export", EXPORTS, ids=[e.name for e in EXPORTS])
def test_the_export_reads_cleanly_in_a_spreadsheet(request, export, data):
    user = request.getfixturevalue(export.role)
    if export.extra_data:
        request.getfixturevalue(export.extra_data)
    response, body = download(user, export.url(data))

    disposition = response["Content-Disposition"]
    today = timezone.localdate().isoformat()
    assert re.fullmatch(rf'attachment; filename="[a-z0-9-]+-{today}\.csv"', disposition), disposition
    headers, rows = read_with_headers(body)
    assert headers and len(rows) >= export.min_rows, (headers, rows)
    for column in [*export.timestamps, *export.dates, *export.amounts, *export.people, *export.labels]:
        assert column in headers, (column, headers)
    for row in rows:
        for header, value in row.items():
            assert not FRACTION_OF_A_SECOND.search(value or ""), (header, value)
        for header in export.timestamps:
            assert row[header] == "" or ISO_SECONDS.fullmatch(row[header]), (header, row[header])
        for header in export.dates:
            assert ISO_DATE.fullmatch(row[header]) or ISO_SECONDS.fullmatch(row[header]), (header, row[header])
        for header, currency_header in export.amounts.items():
            if not row[header]:
                continue
            places = currency_decimals(row[currency_header])
            whole, _, fraction = row[header].lstrip("-").partition(".")
            assert whole.isdigit() and len(fraction) == places and (places or "." not in row[header]), (
                header,
                row[currency_header],
                row[header],
            )
        for header, codes in export.labels.items():
            assert row[header] not in codes, (header, row[header])
    for header in export.people:
        assert OWNER in {row[header] for row in rows}, (header, [row[header] for row in rows])
    for header in list(export.amounts)[:1]:  # the main amount column is filled in (others may be blank)
        assert any(row[header] for row in rows), header
    for header in export.timestamps[:1]:
        assert any(row[header] for row in rows), header


def test_amounts_have_each_currencys_decimals(finance_user, data):
    _, body = download(finance_user, "/admin/operations/wallets/?export=csv")
    balances = {row["Currency"]: row["Balance"] for row in read(body)}
    assert balances == {"NGN": "15000.50", "TND": "1500.125", "UGX": "150000"}


def test_the_audit_export_names_actions_by_their_labels(manager, data):
    _, body = download(manager, "/admin/operations/audit/?export=csv")
    rows = read(body)
    labels = dict(registry.get_choices())
    fail = next(row for row in rows if row["Action code"] == "stayafrica.withdrawal.fail")
    assert fail["Action"] == labels["stayafrica.withdrawal.fail"] == "Fail withdrawal"
    assert (fail["Amount"], fail["Currency"]) == ("100.250", "TND")
    assert all(row["Action"] == labels[row["Action code"]] for row in rows)


def test_an_export_is_recorded_with_its_filters_and_rows(finance_user, data):
    download(finance_user, "/admin/operations/transactions/?export=csv&status=completed&type=")
    entry = ModelLogEntry.objects.get(action="stayafrica.export")
    assert entry.user == finance_user and entry.label == "Transactions"
    assert entry.data["filters"] == {"status": "completed"}
    assert entry.data["url"] == "/admin/operations/transactions/?status=completed&type="
    assert entry.data["rows"] == 3 and entry.data["complete"] is True  # three credits; the holds are pending


# --- every export is in EXPORTS ----------------------------------------------------------------


def _views(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "view_class", None)
            if view_class is not None:
                yield view_class


def _covers(view_class) -> bool:
    for export in EXPORTS:
        for covered in export.views:
            if isinstance(covered, type) and issubclass(view_class, covered):
                if view_class.export_columns is covered.export_columns:  # the same export, e.g. JobRetryView's
                    return True
    return False


def test_every_export_is_in_the_list():
    listed = {
        view for view in _views(get_resolver().url_patterns) if issubclass(view, TableListView) and view.export_columns
    }
    assert listed, "no list view with export_columns found: has the URL walk broken?"
    missing = sorted(view.__name__ for view in listed if not _covers(view))
    assert not missing, f"exports not in EXPORTS (add them): {missing}"

    # Exports built by hand: every view module that streams a CSV.
    streaming = set()
    for info in pkgutil.iter_modules(portal.views.__path__):
        module = importlib.import_module(f"portal.views.{info.name}")
        if module.__name__ != "portal.views.base" and "stream_csv" in vars(module):
            streaming.add(module.__name__)
    covered_modules = {v.__name__ for export in EXPORTS for v in export.views if not isinstance(v, type)}
    assert streaming <= covered_modules, f"CSV exports not in EXPORTS (add them): {streaming - covered_modules}"
