"""CSV exports (portal/csv_export.py): spreadsheet formulas neutralised, one rule per kind of cell,
a byte-order mark, a dated file name, and the end of the stream reported."""

from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from portal.csv_export import BOM, cell, dated_filename, label, money, neutralise, person, resolve, stream_csv


def test_neutralise_quotes_formula_prefixes():
    for value in ["=1+1", "+1", "-1+2", "-A1", "@SUM(A1)", "\tx", "\rx"]:
        assert neutralise(value) == "'" + value
    assert neutralise("plain") == "plain"
    assert neutralise("-150.00") == "-150.00"  # a debit stays a number a spreadsheet can add up


def test_a_datetime_is_iso_8601_in_the_current_zone_to_the_second():
    moment = datetime(2026, 11, 30, 13, 5, 9, 123456, tzinfo=ZoneInfo("UTC"))
    assert cell(moment) == "2026-11-30T13:05:09+00:00"
    with timezone.override("Africa/Lagos"):
        assert cell(moment) == "2026-11-30T14:05:09+01:00"
    assert cell(date(2026, 11, 30)) == "2026-11-30"


def test_other_cells():
    assert cell(None) == ""
    assert cell(True) == "yes" and cell(False) == "no"
    assert cell(Decimal("1E+3")) == "1000"
    assert cell(12) == "12"


@pytest.mark.parametrize(
    ("currency", "amount", "written"),
    [("NGN", "1500", "1500.00"), ("TND", "1.5", "1.500"), ("UGX", "1500.0000", "1500"), ("NGN", "-2.5", "-2.50")],
)
def test_money_is_written_at_the_currencys_precision(currency, amount, written):
    row = SimpleNamespace(amount=Decimal(amount), currency=currency)
    assert money("amount")(row) == written


def test_money_reads_its_currency_where_told_and_leaves_blanks_blank():
    entry = SimpleNamespace(data={"amount": "100.25", "currency": "TND"})
    assert money("data.amount", currency="data.currency")(entry) == "100.250"
    assert money("data.amount", currency="data.currency")(SimpleNamespace(data={})) == ""
    assert money("amount")(SimpleNamespace(amount="12", currency="XXX")) == "12"  # unknown currency: as stored


def test_choices_as_labels_and_people_as_shown():
    class Thing:
        status = "completed"

        def get_status_display(self):
            return "Completed"

    class Person:
        def __str__(self):
            return "Adéwálé Òkè"

    row = SimpleNamespace(txn=Thing(), user=Person(), nobody=None)
    assert label("txn.status")(row) == "Completed"
    assert person("user")(row) == "Adéwálé Òkè"
    assert person("nobody")(row) == ""
    assert resolve(row, "nobody.username") == ""


def test_the_file_name_carries_todays_date():
    today = timezone.localdate().isoformat()
    assert dated_filename("transactions") == f"transactions-{today}.csv"
    assert dated_filename("transactions.csv") == f"transactions-{today}.csv"


def test_the_stream_starts_with_a_byte_order_mark_and_reports_how_it_ended():
    ended = []
    response = stream_csv(
        "things", ["Name"], (["Òkè"], ["=x"]), on_finish=lambda n, complete: ended.append((n, complete))
    )
    body = b"".join(response.streaming_content)
    assert body == BOM.encode() + "Name\r\nÒkè\r\n'=x\r\n".encode()
    assert ended == [(2, True)]


@pytest.mark.django_db  # closing a response sends request_finished, which tidies the database connections
def test_a_stream_closed_early_reports_the_rows_sent():
    ended = []
    rows = (["row", n] for n in range(100))
    response = stream_csv("things", ["A", "B"], rows, on_finish=lambda n, complete: ended.append((n, complete)))
    stream = iter(response.streaming_content)
    next(stream), next(stream)  # the header and one row, then the client goes away
    response.close()
    assert ended == [(1, False)]
