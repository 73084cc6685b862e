"""Reconciliation (finance/reconciliation): each provider's report read by its mapping, each
kind of difference found, bad files refused with nothing stored, differences resolved (audited,
permission-checked), exported, and the days that stay unreconciled."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from wagtail.models import ModelLogEntry

from finance.errors import InvalidStateError, PermissionDeniedError, TransactionError
from finance.models import (
    Payment,
    ProviderRefund,
    ReconciliationLine,
    ReconciliationReport,
    Wallet,
    WalletTransaction,
    Withdrawal,
)
from finance.reconciliation import (
    EXPORT_COLUMNS,
    MAPPINGS,
    InvalidReportError,
    day_summaries,
    export_unresolved,
    import_report,
    last_reconciled_days,
    resolve_line,
    unreconciled_days,
)
from finance.services import TransactionService
from testing.recorded_http import recorded

State = ReconciliationLine.State
DAY = date(2026, 3, 2)


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


@pytest.fixture
def applied(host, guest, make_booking):
    """A payment the ledger applied, with our reference, on `day` (its ledger transaction's time)."""

    def make(reference, *, provider="paystack", amount="1000.00", currency="NGN", day=DAY, provider_reference=None):
        total = Decimal(amount)
        booking = make_booking(host, guest, total=amount, commission=str(total / 10), currency=currency)
        payment = Payment.objects.create(
            booking=booking,
            provider=provider,
            amount=total,
            currency=currency,
            reference=reference,
            provider_reference=provider_reference,
        )
        TransactionService.process_booking_payment(booking, payment)
        payment.refresh_from_db()
        WalletTransaction.objects.filter(pk=payment.ledger_transaction_id).update(created_at=at(day))
        return payment

    return make


def upload(provider: str, name: str, actor, content: bytes | None = None) -> ReconciliationReport:
    return import_report(
        provider=provider, file_name=name, content=content if content is not None else report(name), actor=actor
    )


def report(name: str) -> bytes:
    return recorded(f"reports/{name}")


def states(report_: ReconciliationReport) -> dict[str, str]:
    return {line.provider_reference: line.state for line in report_.lines.all()}


# --- each mapping reads its fixture ----------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "name", "expected"),
    [
        (
            "paystack",
            "paystack_transactions.csv",
            [
                ("payment", "PAY-RECON0000000001", Decimal("1000.00"), "NGN", DAY),
                ("payment", "PAY-RECON0000000002", Decimal("1200.00"), "NGN", DAY),
                ("payment", "PAY-RECON0000000003", Decimal("500.00"), "NGN", DAY),
            ],
        ),
        (
            "flutterwave",
            "flutterwave_transactions.csv",
            [
                ("payment", "PAY-RECON0000000011", Decimal("1000.00"), "NGN", DAY),
                ("payment", "PAY-RECON0000000012", Decimal("990.50"), "NGN", DAY),
            ],
        ),
        (
            "stripe",
            "stripe_balance_itemized.csv",
            [
                ("payment", "pi_3RecOn0000000001", Decimal("45.00"), "USD", DAY),
                ("refund", "re_3RecOn0000000002", Decimal("20.00"), "USD", DAY),
            ],
        ),
        (
            "mpesa",
            "mpesa_statement.csv",
            [
                ("payment", "PAY-RECON0000000031", Decimal("1500.00"), "KES", DAY),
                ("payout", "RC20ABCD02", Decimal("2000.00"), "KES", DAY),
                # 01:30 in Nairobi on the 3rd is 22:30 UTC on the 2nd.
                ("refund", "RC20ABCD03", Decimal("700.00"), "KES", DAY),
            ],
        ),
    ],
)
def test_each_mapping_reads_its_recorded_report(provider, name, expected):
    mapping = MAPPINGS[provider]
    rows = mapping.read(report(name))
    assert [(row.kind, row.reference, row.amount, row.currency, row.day) for row in rows] == expected
    assert all(isinstance(row.amount, Decimal) for row in rows)
    assert mapping.documentation.startswith(("https://", "Safaricom"))


def test_every_report_fixture_names_the_documentation_it_follows():
    from testing.recorded_http import RECORDED, recorded_json

    for csv_file in (RECORDED / "reports").glob("*.csv"):
        doc = recorded_json(f"reports/{csv_file.stem}.json")["_doc"]
        assert "NOT from" in doc and len(doc) > 100


# --- matching: each kind of difference ---------------------------------------------------------


def test_a_paystack_report_finds_each_kind_of_difference(db, applied, finance_user):
    matched = applied("PAY-RECON0000000001")
    differs = applied("PAY-RECON0000000002", amount="1000.00")  # the report says 1,200.00
    ledger_only = applied("PAY-RECON0000000099")  # applied that day, absent from the report
    applied("PAY-RECON0000000098", day=DAY + timedelta(days=1))  # another day: not this report's

    result = upload("paystack", "paystack_transactions.csv", finance_user)

    assert (result.provider, result.source, result.first_day, result.last_day) == ("paystack", "upload", DAY, DAY)
    assert result.uploaded_by == finance_user and result.line_count == 4
    assert states(result) == {
        "PAY-RECON0000000001": State.MATCHED,
        "PAY-RECON0000000002": State.DIFFERS,
        "PAY-RECON0000000003": State.MISSING_IN_LEDGER,
        "PAY-RECON0000000099": State.MISSING_AT_PROVIDER,
    }
    lines = {line.provider_reference: line for line in result.lines.all()}
    assert lines["PAY-RECON0000000001"].payment == matched
    both = lines["PAY-RECON0000000002"]
    assert (both.amount, both.ledger_amount, both.payment) == (Decimal("1200.00"), Decimal("1000.00"), differs)
    unknown = lines["PAY-RECON0000000003"]
    assert (unknown.amount, unknown.ledger_amount, unknown.payment) == (Decimal("500.00"), None, None)
    missing = lines["PAY-RECON0000000099"]
    assert (missing.amount, missing.ledger_amount, missing.payment) == (None, Decimal("1000.00"), ledger_only)

    [summary] = day_summaries(provider="paystack")
    assert summary["day"] == DAY and summary["lines"] == 4 and summary["unresolved"] == 3
    assert summary["counts"] == {
        "matched": 1,
        "differs": 1,
        "missing_in_ledger": 1,
        "missing_at_provider": 1,
    }
    assert summary["totals"]["matched"] == {"NGN": Decimal("1000.00")}
    assert summary["totals"]["missing_at_provider"] == {"NGN": Decimal("1000.00")}

    entry = ModelLogEntry.objects.get(action="stayafrica.reconciliation.import")
    assert entry.user == finance_user and entry.data["lines"] == 4 and entry.data["differs"] == 1


def test_a_payment_the_provider_took_but_the_ledger_never_applied_is_missing_in_the_ledger(
    db, host, guest, make_booking, finance_user
):
    booking = make_booking(host, guest)
    Payment.objects.create(
        booking=booking,
        provider="paystack",
        amount=booking.grand_total,
        currency="NGN",
        reference="PAY-RECON0000000001",
    )
    result = upload("paystack", "paystack_transactions.csv", finance_user)
    line = result.lines.get(provider_reference="PAY-RECON0000000001")
    assert line.state == State.MISSING_IN_LEDGER and line.payment.reference == "PAY-RECON0000000001"


def test_a_currency_that_differs_is_a_difference(db, applied, finance_user):
    applied("PAY-RECON0000000011", provider="flutterwave", currency="GHS")
    result = upload("flutterwave", "flutterwave_transactions.csv", finance_user)
    line = result.lines.get(provider_reference="PAY-RECON0000000011")
    assert (line.state, line.currency, line.ledger_currency) == (State.DIFFERS, "NGN", "GHS")


def test_a_stripe_report_matches_payments_by_payment_intent_and_refunds_by_refund_id(db, applied, finance_user):
    payment = applied(
        "PAY-RECON0000000021",
        provider="stripe",
        amount="45.00",
        currency="USD",
        provider_reference="pi_3RecOn0000000001",
    )
    refund = _provider_refund(payment, amount="20.00", provider_refund_id="re_3RecOn0000000002", day=DAY)
    result = upload("stripe", "stripe_balance_itemized.csv", finance_user)
    assert states(result) == {"pi_3RecOn0000000001": State.MATCHED, "re_3RecOn0000000002": State.MATCHED}
    assert result.lines.get(kind="refund").refund == refund


def test_an_mpesa_statement_matches_payments_payouts_and_reversals(db, applied, host, finance_user):
    payment = applied("PAY-RECON0000000031", provider="mpesa", amount="1500.00", currency="KES")
    withdrawal = _sent_payout(host, provider="mpesa", amount="2000.00", receipt="RC20ABCD02", day=DAY)
    refund = _provider_refund(payment, amount="700.00", provider_refund_id="RC20ABCD03", day=DAY)
    result = upload("mpesa", "mpesa_statement.csv", finance_user)
    assert states(result) == {
        "PAY-RECON0000000031": State.MATCHED,
        "RC20ABCD02": State.MATCHED,
        "RC20ABCD03": State.MATCHED,
    }
    assert result.lines.get(kind="payout").withdrawal == withdrawal
    assert result.lines.get(kind="refund").refund == refund


def test_a_payout_sent_that_day_and_absent_from_the_statement_is_missing_at_the_provider(db, host, finance_user):
    payout = _sent_payout(host, provider="mpesa", amount="999.00", receipt="RC20NOTLISTED", day=DAY)
    result = upload("mpesa", "mpesa_statement.csv", finance_user)
    line = result.lines.get(withdrawal=payout)
    assert (line.state, line.kind, line.ledger_amount) == (State.MISSING_AT_PROVIDER, "payout", Decimal("999.00"))
    # The statement's own payout is in no ledger.
    assert result.lines.get(provider_reference="RC20ABCD02").state == State.MISSING_IN_LEDGER


def test_a_report_lists_only_its_kinds_payouts_are_not_missing_from_a_payments_export(db, host, finance_user):
    _sent_payout(host, provider="paystack", amount="1500.00", receipt="TRF_1", day=DAY)
    result = upload("paystack", "paystack_transactions.csv", finance_user)
    assert not result.lines.filter(kind="payout").exists()


def test_a_record_listed_on_the_providers_next_day_is_no_longer_missing(db, applied, finance_user):
    late = applied("PAY-RECON0000000001", day=DAY - timedelta(days=1))  # our day before theirs
    before = _csv(
        "paystack",
        [("PAY-RECON0000000050", "50000", "2026-03-01T10:00:00.000Z")],
    )
    applied("PAY-RECON0000000050", amount="500.00", day=DAY - timedelta(days=1))
    first = upload("paystack", "paystack_01.csv", finance_user, before)
    assert first.lines.get(payment=late).state == State.MISSING_AT_PROVIDER

    upload("paystack", "paystack_transactions.csv", finance_user)

    assert ReconciliationLine.objects.get(payment=late).state == State.MATCHED


# --- refused files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"reference,amount,currency,status\nPAY-1,100,NGN,success\n", "no column 'paid_at'"),
        (b"", "empty"),
        ("reference,amount,currency,status,paid_at\nPAY-1,1\u00a000,NGN,success,2026-03-02\n".encode(), "Row 2"),
        (b"reference,amount,currency,status,paid_at\nPAY-1,12.5,NGN,success,2026-03-02\n", "Row 2"),
        (b"reference,amount,currency,status,paid_at\nPAY-1,100,NGN,success,yesterday\n", "Row 2: 'paid_at'"),
        (b"reference,amount,currency,status,paid_at\nPAY-1,100,XYZ,success,2026-03-02\n", "Row 2"),
        (b"reference,amount,currency,status,paid_at\n,100,NGN,success,2026-03-02\n", "Row 2 has no reference"),
        (b"reference,amount,currency,status,paid_at\nPAY-1,100,NGN,abandoned,2026-03-02\n", "no settled"),
        ("reference;amount\n".encode("utf-16"), "not UTF-8"),
    ],
)
def test_a_file_the_mapping_cannot_read_is_refused_and_nothing_is_stored(db, finance_user, content, words):
    with pytest.raises(InvalidReportError) as refused:
        upload("paystack", "bad.csv", finance_user, content)
    assert words in refused.value.message
    assert refused.value.status == 400 and refused.value.code == "invalid_report"
    assert not ReconciliationReport.objects.exists() and not ReconciliationLine.objects.exists()
    assert not ModelLogEntry.objects.filter(action="stayafrica.reconciliation.import").exists()


def test_an_unknown_provider_is_refused(db, finance_user):
    with pytest.raises(InvalidReportError):
        upload("sandbox", "paystack_transactions.csv", finance_user, report("paystack_transactions.csv"))


def test_the_same_file_twice_answers_the_first_report(db, applied, finance_user):
    first = upload("paystack", "paystack_transactions.csv", finance_user)
    again = upload("paystack", "copy.csv", finance_user, report("paystack_transactions.csv"))
    assert again.pk == first.pk and again.duplicate and not first.duplicate
    assert ReconciliationReport.objects.count() == 1


def test_uploading_needs_the_reconcile_permission(db, support_user):
    with pytest.raises(PermissionDeniedError):
        upload("paystack", "paystack_transactions.csv", support_user)
    assert not ReconciliationReport.objects.exists()


# --- re-reading a day -------------------------------------------------------------------------------


def test_reading_a_day_again_replaces_its_lines_and_keeps_resolutions(db, applied, finance_user):
    applied("PAY-RECON0000000002", amount="1000.00")
    first = upload("paystack", "paystack_transactions.csv", finance_user)
    resolve_line(
        line=first.lines.get(state=State.DIFFERS), note="Guest paid a card fee on top; refunded.", actor=finance_user
    )

    # The same day again, with the unknown payment gone from it.
    edited = report("paystack_transactions.csv").replace(b"4099260603,PAY-RECON0000000003", b"4099260603,PAY-X")
    second = upload("paystack", "paystack_again.csv", finance_user, edited)

    assert ReconciliationLine.objects.filter(report=first).count() == 0
    assert ReconciliationLine.objects.filter(day=DAY).count() == second.line_count == 3
    differs = second.lines.get(state=State.DIFFERS)
    assert differs.resolution_note == "Guest paid a card fee on top; refunded." and differs.resolved_by == finance_user
    assert second.lines.get(provider_reference="PAY-X").needs_resolving


# --- resolving ------------------------------------------------------------------------------------


def test_resolving_a_difference_needs_a_note_and_the_permission_and_is_audited(db, finance_user, support_user):
    result = upload("paystack", "paystack_transactions.csv", finance_user)
    line = result.lines.get(provider_reference="PAY-RECON0000000003")

    with pytest.raises(PermissionDeniedError):
        resolve_line(line=line, note="Looked at it.", actor=support_user)
    with pytest.raises(TransactionError) as blank:
        resolve_line(line=line, note="   ", actor=finance_user)
    assert blank.value.details["field"] == "note"
    line.refresh_from_db()
    assert line.needs_resolving

    done = resolve_line(line=line, note="A test charge on the live key; refunded by Paystack.", actor=finance_user)

    assert done.resolved_by == finance_user and done.resolved_at is not None and not done.needs_resolving
    entry = ModelLogEntry.objects.get(action="stayafrica.reconciliation.resolve")
    assert entry.user == finance_user
    assert entry.data["reference"] == "PAY-RECON0000000003" and entry.data["amount"] == "500.00"
    assert entry.data["note"] == "A test charge on the live key; refunded by Paystack."
    with pytest.raises(InvalidStateError, match="already resolved"):
        resolve_line(line=line, note="Again.", actor=finance_user)
    assert day_summaries()[0]["unresolved"] == 2


def test_a_matched_line_has_nothing_to_resolve(db, applied, finance_user):
    applied("PAY-RECON0000000001")
    result = upload("paystack", "paystack_transactions.csv", finance_user)
    with pytest.raises(InvalidStateError):
        resolve_line(line=result.lines.get(state=State.MATCHED), note="Fine.", actor=finance_user)


# --- export ----------------------------------------------------------------------------------------


def test_export_lists_the_unresolved_differences_with_both_amounts(db, applied, finance_user):
    applied("PAY-RECON0000000001")
    differs = applied("PAY-RECON0000000002")
    upload("paystack", "paystack_transactions.csv", finance_user)
    resolve_line(
        line=ReconciliationLine.objects.get(provider_reference="PAY-RECON0000000003"), note="Known.", actor=finance_user
    )

    rows = export_unresolved(provider="paystack")

    assert [tuple(row) for row in rows] == [EXPORT_COLUMNS]
    [row] = rows
    assert row["reference"] == "PAY-RECON0000000002" and row["state"] == "Amount or currency differs"
    assert (row["provider_amount"], row["ledger_amount"], row["ledger_record"]) == (
        "1200.00",
        "1000.00",
        differs.reference,
    )
    assert row["day"] == "2026-03-02" and row["provider_currency"] == row["ledger_currency"] == "NGN"
    assert export_unresolved(provider="stripe") == []


# --- which days are reconciled -------------------------------------------------------------------


def test_unreconciled_days_are_days_with_activity_past_the_grace_and_no_report(db, applied, finance_user, settings):
    settings.RECONCILIATION_GRACE_HOURS = 36
    applied("PAY-RECON0000000001", day=DAY)
    applied("PAY-RECON0000000005", day=DAY - timedelta(days=2))
    applied("PAY-RECON0000000006", provider="flutterwave", day=DAY + timedelta(days=1))
    now = at(DAY + timedelta(days=2), 13)  # the 2nd ended 37 h ago; the 3rd only 13 h ago

    assert unreconciled_days(now)["paystack"] == [DAY - timedelta(days=2), DAY]
    assert unreconciled_days(now)["flutterwave"] == []  # within the grace
    assert unreconciled_days(at(DAY + timedelta(days=3), 13))["flutterwave"] == [DAY + timedelta(days=1)]
    assert unreconciled_days(now)["mpesa"] == [] and last_reconciled_days() == {}

    upload("paystack", "paystack_transactions.csv", finance_user)

    assert unreconciled_days(now)["paystack"] == [DAY - timedelta(days=2)]
    assert last_reconciled_days() == {"paystack": DAY}


# --- helpers -------------------------------------------------------------------------------------


def _csv(provider: str, rows: list[tuple[str, str, str]]) -> bytes:
    lines = ["id,reference,amount,currency,status,paid_at"]
    lines += [f"{n},{ref},{amount},NGN,success,{paid_at}" for n, (ref, amount, paid_at) in enumerate(rows, 1)]
    return ("\n".join(lines) + "\n").encode()


def _provider_refund(payment: Payment, *, amount: str, provider_refund_id: str, day: date) -> ProviderRefund:
    """A refund the provider made: the ledger's refund posting and its ProviderRefund, sent that day."""
    TransactionService.process_refund(payment.booking, Decimal(amount), "Guest cancelled")
    txn = WalletTransaction.objects.filter(type=WalletTransaction.Type.REFUND).latest("id")
    fields = {
        "payment": payment,
        "provider": payment.provider,
        "amount": Decimal(amount),
        "currency": payment.currency,
        "status": ProviderRefund.Status.SUCCEEDED,
        "refund_reference": f"refund-{txn.reference.lower()}",
        "provider_refund_id": provider_refund_id,
        "sent_at": at(day, 13),
        "settled_at": at(day, 14),
    }
    # The refunds engine may already have made the row for this posting: then it is updated.
    existing = ProviderRefund.objects.filter(transaction=txn)
    if existing.exists():
        existing.update(**fields)
        return existing.get()
    return ProviderRefund.objects.create(transaction=txn, **fields)


def _sent_payout(host, *, provider: str, amount: str, receipt: str, day: date) -> Withdrawal:
    from finance.models import BankAccount

    currency = {"mpesa": "KES"}.get(provider, "NGN")
    wallet = Wallet.objects.filter(user=host, currency=currency).first() or TransactionService.create_wallet(
        host, currency
    )
    TransactionService.credit_wallet(wallet, Decimal(amount))
    account = BankAccount.objects.create(
        owner=host, bank_name="M-Pesa", account_name="Host", account_number_last4="0111", is_primary=False
    )
    withdrawal = TransactionService.initiate_withdrawal(wallet, account, Decimal(amount))
    Withdrawal.objects.filter(pk=withdrawal.pk).update(
        status=Withdrawal.Status.PROCESSING,
        payout_method=provider,
        transfer_reference=withdrawal.stable_transfer_reference(),
        provider_transfer_id=receipt,
        payout_sent_at=at(day, 16),
    )
    return Withdrawal.objects.get(pk=withdrawal.pk)
