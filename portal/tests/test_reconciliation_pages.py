"""The reconciliation pages (portal/views/reconciliation.py): per provider and day, the counts and
totals of each state; resolving a difference with a note (audited); the unresolved export; the
dashboard card; who may open and use them."""

import csv
import io
import re
from datetime import date
from decimal import Decimal
from html import unescape

import pytest
from wagtail.models import ModelLogEntry

from finance.models import ReconciliationLine, ReconciliationReport

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 28)
INDEX = "/admin/operations/reconciliation/"
DAY_PAGE = f"{INDEX}paystack/2026-11-28/"
State = ReconciliationLine.State


@pytest.fixture
def report_day(finance_user, paid_booking):
    """Paystack's report for DAY, matched: one line of each state (two that differ)."""
    payment = paid_booking.payments.get()
    report = ReconciliationReport.objects.create(
        provider="paystack",
        source=ReconciliationReport.Source.UPLOAD,
        file_name="paystack-settlement-2026-11-28.csv",
        first_day=DAY,
        last_day=DAY,
        line_count=4,
        uploaded_by=finance_user,
    )

    def line(state, reference, amount, currency, ledger_amount, ledger_currency, **extra):
        return ReconciliationLine.objects.create(
            report=report,
            provider="paystack",
            day=DAY,
            kind=ReconciliationLine.Kind.PAYMENT,
            state=state,
            provider_reference=reference,
            amount=Decimal(amount) if amount else None,
            currency=currency,
            ledger_amount=Decimal(ledger_amount) if ledger_amount else None,
            ledger_currency=ledger_currency,
            **extra,
        )

    return {
        "report": report,
        "matched": line(State.MATCHED, payment.reference, "1000.00", "NGN", "1000.00", "NGN", payment=payment),
        "amount": line(State.DIFFERS, "PAY-AMOUNT-1", "950.00", "NGN", "1000.00", "NGN"),
        "currency": line(State.DIFFERS, "PAY-CURRENCY-1", "1000.00", "USD", "1000.00", "NGN"),
        "in_ledger": line(State.MISSING_IN_LEDGER, "T_UNKNOWN_77", "300.00", "NGN", "", ""),
        "at_provider": line(State.MISSING_AT_PROVIDER, "PAY-ABSENT-1", "", "", "450.00", "NGN"),
    }


def page(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- the index -----------------------------------------------------------------------------------


def test_the_index_says_what_to_do_before_any_report(client, finance_user, manager):
    html = page(client, finance_user, INDEX)
    assert "No provider report has been read yet." in html
    assert 'href="/admin/operations/reconciliation/upload/"' in html
    html = page(client, manager, INDEX)
    assert "No provider report has been read yet." in html
    assert "/reconciliation/upload/" not in html and "Finance staff upload" in html


def test_the_index_shows_each_state_with_its_totals_per_day(client, finance_user, report_day):
    html = page(client, finance_user, INDEX)
    row = re.search(r'<tr id="day-paystack-2026-11-28".*?</tr>', html, re.S).group(0)
    cells = text(row)
    assert "2026-11-28" in cells and "Paystack" in cells and "Uploaded CSV" in cells
    assert "1 NGN 1,000.00" in cells  # matched
    assert "2 NGN 950.00 · USD 1,000.00" in cells  # amount or currency differs, per currency
    assert "1 NGN 300.00" in cells and "1 NGN 450.00" in cells  # missing in the ledger / at the provider
    assert re.search(r">4</strong>", row)  # unresolved
    assert f'href="{DAY_PAGE}"' in row


def test_the_index_filters_by_provider_and_unresolved(client, finance_user, report_day):
    assert "day-paystack-2026-11-28" not in page(client, finance_user, f"{INDEX}?provider=flutterwave")
    assert "day-paystack-2026-11-28" in page(client, finance_user, f"{INDEX}?unresolved=on")
    ReconciliationLine.objects.filter(state__in=ReconciliationLine.UNRESOLVED_STATES).update(
        resolved_at="2026-11-29T10:00:00Z", resolved_by=finance_user, resolution_note="Checked"
    )
    assert "day-paystack-2026-11-28" not in page(client, finance_user, f"{INDEX}?unresolved=on")
    assert "All resolved" in page(client, finance_user, INDEX)
    html = page(client, finance_user, f"{INDEX}?day_from=2026-11-29&day_to=2026-11-28")
    assert "is after" in html


# --- one provider's day ----------------------------------------------------------------------------


def test_the_day_page_shows_both_sides_of_each_difference(client, finance_user, report_day):
    html = page(client, finance_user, DAY_PAGE)
    summary = text(re.search(r'<section id="day-summary".*?</section>', html, re.S).group(0))
    assert "Matched 1 NGN 1,000.00" in summary
    assert "Amount or currency differs 2 NGN 950.00 · USD 1,000.00" in summary
    assert "Unresolved: 4" in summary
    amount_row = text(re.search(rf'<tr id="line-{report_day["amount"].pk}".*?</tr>', html, re.S).group(0))
    assert "NGN 950.00" in amount_row and "NGN 1,000.00" in amount_row and "amount differs" in amount_row
    currency_row = text(re.search(rf'<tr id="line-{report_day["currency"].pk}".*?</tr>', html, re.S).group(0))
    assert "USD 1,000.00" in currency_row and "NGN 1,000.00" in currency_row and "currency differs" in currency_row
    matched = report_day["matched"]
    assert f'href="/admin/operations/transactions/{matched.payment.ledger_transaction.reference}/"' in html
    assert html.count("Resolve…") == 4
    assert "paystack-settlement-2026-11-28.csv" in html


def test_the_day_page_filters_by_state(client, finance_user, report_day):
    html = page(client, finance_user, f"{DAY_PAGE}?state=unresolved")
    assert f'id="line-{report_day["matched"].pk}"' not in html and f'id="line-{report_day["amount"].pk}"' in html
    html = page(client, finance_user, f"{DAY_PAGE}?state=missing_at_provider")
    assert f'id="line-{report_day["at_provider"].pk}"' in html and f'id="line-{report_day["amount"].pk}"' not in html


def test_a_day_without_a_report_is_not_found(client, finance_user, report_day):
    client.force_login(finance_user)
    assert client.get(f"{INDEX}paystack/2026-11-27/").status_code == 404
    assert client.get(f"{INDEX}paystack/yesterday/").status_code == 404


# --- resolving -------------------------------------------------------------------------------------


def test_finance_resolves_a_difference_with_a_note_in_place_and_audited(client, finance_user, report_day):
    line = report_day["amount"]
    client.force_login(finance_user)
    confirm = f"{INDEX}lines/{line.pk}/resolve/confirm/"
    asking = client.get(confirm, HTTP_HX_REQUEST="true").content.decode()
    assert f'id="note-{line.pk}"' in asking and "required" in asking

    refused = client.post(confirm, {"note": "   "}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400
    assert "Write a note saying why this difference is settled" in refused.content.decode()

    note = "Paystack deducted its 50.00 fee from the settlement; fee booked separately."
    shown = client.post(confirm, {"note": note}, HTTP_HX_REQUEST="true").content.decode()
    assert "Resolve PAY-AMOUNT-1 (amount or currency differs)?" in shown
    assert "Paystack reports NGN 950.00; the ledger has NGN 1,000.00." in shown
    token = re.search(r"confirmation_token&quot;: &quot;([^&]+)&quot;", shown).group(1)

    done = client.post(
        f"{INDEX}lines/{line.pk}/resolve/",
        {"note": note, "confirmation_token": token},
        HTTP_HX_REQUEST="true",
    )
    assert done.status_code == 200
    cell = done.content.decode()
    assert "Resolved" in cell and str(finance_user) in cell and note in cell
    assert "Unresolved: 3" in cell and 'hx-swap-oob="true"' in cell  # the day's summary, updated
    line.refresh_from_db()
    assert line.resolved_by == finance_user and line.resolution_note == note and line.resolved_at
    assert ModelLogEntry.objects.filter(user=finance_user, data__icontains="fee booked separately").exists()


def test_a_resolve_without_its_confirmation_changes_nothing(client, finance_user, report_day):
    line = report_day["in_ledger"]
    client.force_login(finance_user)
    response = client.post(f"{INDEX}lines/{line.pk}/resolve/", {"note": "Sure"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    line.refresh_from_db()
    assert line.resolved_at is None


def test_a_manager_reads_the_day_but_cannot_resolve(client, manager, report_day):
    html = page(client, manager, DAY_PAGE)
    assert "Resolve…" not in html and "hx-post=" not in html and 'method="post"' not in html
    assert "Unresolved: 4" in html
    line = report_day["amount"]
    refused = client.post(f"{INDEX}lines/{line.pk}/resolve/confirm/", {"note": "Looks fine"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 403
    assert "You don't have permission to resolve reconciliation differences." in unescape(refused.content.decode())
    line.refresh_from_db()
    assert line.resolved_at is None


# --- export ------------------------------------------------------------------------------------------


def exported(client, url) -> list[dict]:
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def test_the_export_lists_only_unresolved_lines(client, finance_user, report_day):
    client.force_login(finance_user)
    rows = exported(client, f"{INDEX}unresolved/export/")
    assert sorted(r["Reference"] for r in rows) == ["PAY-ABSENT-1", "PAY-AMOUNT-1", "PAY-CURRENCY-1", "T_UNKNOWN_77"]
    amount = next(r for r in rows if r["Reference"] == "PAY-AMOUNT-1")
    assert (amount["Provider amount"], amount["Provider currency"]) == ("950.00", "NGN")
    assert (amount["Ledger amount"], amount["Ledger currency"]) == ("1000.00", "NGN")
    assert amount["State"] == "Amount or currency differs" and amount["Day"] == "2026-11-28"

    ReconciliationLine.objects.filter(pk=report_day["amount"].pk).update(
        resolved_at="2026-11-29T10:00:00Z", resolved_by=finance_user, resolution_note="Fee"
    )
    day_rows = exported(client, f"{INDEX}unresolved/export/?provider=paystack&day=2026-11-28")
    assert "PAY-AMOUNT-1" not in {r["Reference"] for r in day_rows} and len(day_rows) == 3
    assert exported(client, f"{INDEX}unresolved/export/?provider=paystack&day=2026-11-27") == []


# --- upload ------------------------------------------------------------------------------------------


def test_an_unreadable_report_is_refused_next_to_the_form(client, finance_user):
    html = page(client, finance_user, f"{INDEX}upload/")
    assert 'enctype="multipart/form-data"' in html and "Upload and match" in html
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("notes.csv", b"hello,world\n1,2\n", content_type="text/csv")
    response = client.post(f"{INDEX}upload/", {"provider": "paystack", "report": upload})
    assert response.status_code == 400
    html = response.content.decode()
    assert "notes.csv was not read:" in html and "Nothing was stored." in html
    assert not ReconciliationReport.objects.exists()


def test_an_upload_without_a_file_says_so(client, finance_user):
    client.force_login(finance_user)
    response = client.post(f"{INDEX}upload/", {"provider": "paystack"})
    assert response.status_code == 400 and "This field is required." in response.content.decode()


def test_a_manager_cannot_upload(client, manager):
    html = page(client, manager, INDEX)
    assert "Upload a report" not in html
    assert client.get(f"{INDEX}upload/").status_code == 302
    assert client.post(f"{INDEX}upload/", {"provider": "paystack"}).status_code == 302


# --- roles, menu and dashboard --------------------------------------------------------------------


@pytest.mark.parametrize("who", ["support_user", "host"])
def test_support_and_hosts_cannot_open_it(client, request, who, report_day):
    client.force_login(request.getfixturevalue(who))
    for url in (INDEX, DAY_PAGE, f"{INDEX}unresolved/export/"):
        assert client.get(url).status_code == 302, url


@pytest.mark.parametrize(("who", "shown"), [("finance_user", True), ("manager", True), ("support_user", False)])
def test_the_menu_shows_reconciliation_to_those_who_may_open_it(client, request, who, shown):
    client.force_login(request.getfixturevalue(who))
    menu = client.get("/admin/", follow=True).content.decode()
    assert (f'"{INDEX}"' in menu) == shown


def test_the_dashboard_card_shows_the_last_day_and_the_unresolved_count(client, finance_user, report_day):
    html = page(client, finance_user, "/admin/operations/dashboard/")
    card = text(re.search(r'<section class="ops-card[^"]*" id="reconciliation-card".*?</section>', html, re.S).group(0))
    assert "4 differences are unresolved." in card
    assert "Paystack: last reconciled day 2026-11-28 (4 unresolved)" in card
