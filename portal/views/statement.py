"""The host's payout statement at /statement/: own data only, HTML, CSV and PDF; and a page per
statement line at /statement/<reference>/."""

from dataclasses import dataclass
from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone

import request_context
from finance.money import quantum
from messaging.erlang import issue_websocket_token, websocket_url

from ..audit_events import record_export
from ..csv_export import stream_csv
from ..filters import Period
from ..selectors import host_statement, host_transaction


class PeriodForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The start of the period must come before its end.")
        return data


def _period(request):
    today = timezone.localdate()
    default = {"start": today - timedelta(days=30), "end": today}
    form = PeriodForm(request.GET or None, initial=default)
    if form.is_bound and form.is_valid():
        return form, form.cleaned_data["start"], form.cleaned_data["end"]
    return form, default["start"], default["end"]


@dataclass(frozen=True)
class Preset:
    label: str
    start: date
    end: date


def period_presets(today: date) -> list[Preset]:
    """The periods a host asks for most, as links beside the custom From/To: the lists' own
    month presets (portal.filters.Period), with this month and this year ending today."""
    first_of_month, _ = Period.days(Period.THIS_MONTH, today)
    return [
        Preset("This month", first_of_month, today),
        Preset("Last month", *Period.days(Period.LAST_MONTH, today)),
        Preset("This year", today.replace(month=1, day=1), today),
    ]


def statement_number(host, start: date, end: date) -> str:
    """ST-<host id>-<start>-<end>: the same host and period always print the same number, so a
    statement downloaded twice (or re-issued later) is recognisably the same statement, and the
    number alone tells support whose statement it is and which period it covers."""
    return f"ST-{host.pk}-{start:%Y%m%d}-{end:%Y%m%d}"


def _host_only(request, user_id=None):
    """Hosts see their own statement; any other id (or a non-host) answers 404."""
    user = request.user
    if user.role != "host":
        raise Http404
    if user_id is not None and int(user_id) != user.pk:
        raise Http404
    return user


@login_required
def statement(request, user_id=None):
    host = _host_only(request, user_id)
    form, start, end = _period(request)
    statements = host_statement(host, start, end)
    fmt = request.GET.get("format")
    if fmt == "csv":
        return _csv(host, statements, start, end)
    if fmt == "pdf":
        return _pdf(request, host, statements, start, end)
    presets = period_presets(timezone.localdate())
    return render(
        request,
        "host/statement.html",
        {
            "form": form,
            "statements": statements,
            "start": start,
            "end": end,
            "host": host,
            "presets": presets,
            "number": statement_number(host, start, end),
            **_ws_context(host),
        },
    )


@login_required
def statement_transaction(request, reference):
    """One transaction of the host's own wallets; anyone else's reference (or none) answers 404."""
    host = _host_only(request)
    line = host_transaction(host, reference)
    if line is None:
        raise Http404("No transaction with this reference on your statement.")
    return render(request, "host/transaction.html", {"line": line, "txn": line.txn, "host": host, **_ws_context(host)})


def _ws_context(user) -> dict:
    """The Erlang WebSocket URL and a short-lived token, for live broadcasts on host pages
    (host.js renews the token before it expires)."""
    issued = issue_websocket_token(user.pk)
    return {"ws_url": websocket_url(), "ws_token": issued.token, "ws_token_expires_in": issued.expires_in}


def _csv(host, statements, start: date, end: date):
    request = request_context.current_request()  # now: the export is recorded once the stream ends

    def rows():
        for s in statements:
            places = quantum(s.currency)  # the currency's precision, e.g. 150.00 for NGN

            def money(value, places=places):
                return "" if value is None else format(value.quantize(places), "f")

            yield [s.currency, start, "", "Opening balance", "", "", "", "", money(s.opening), ""]
            for line in s.lines:
                yield [
                    s.currency,
                    line.date,  # a datetime: ISO 8601 to the second (portal.csv_export.cell)
                    line.reference,
                    line.description,
                    line.kind,
                    money(line.gross),
                    money(line.commission),
                    money(line.amount),
                    money(line.balance),
                    line.note,
                ]
            yield [s.currency, end, "", "Closing balance", "", "", "", "", money(s.closing), ""]
            if s.summary.owed:
                # A figure at the period's end like the closing balance (not a movement), so in
                # the Balance column: what a closing balance below zero is owed as.
                owed_note = "Recovered first from your next booking payouts."
                yield [s.currency, end, "", "Owed to StayAfrica", "", "", "", "", money(s.summary.owed), owed_note]

    return stream_csv(
        f"statement-{start}-{end}",
        ["Currency", "Date", "Reference", "Description", "Type", "Gross", "Commission", "Amount", "Balance", "Note"],
        rows(),
        on_finish=lambda count, complete: record_export(
            request, list_name=f"Statement {start} – {end}", rows=count, complete=complete
        ),
    )


def _pdf(request, host, statements, start, end):
    from weasyprint import HTML

    context = {
        "statements": statements,
        "start": start,
        "end": end,
        "host": host,
        "number": statement_number(host, start, end),
        "issued": timezone.localdate(),
        "company_name": settings.STATEMENT_COMPANY_NAME,
        "company_address": settings.STATEMENT_COMPANY_ADDRESS,
    }
    html = render_to_string("pdf/statement.html", context)
    pdf = HTML(string=html, base_url=request.build_absolute_uri("/")).write_pdf()
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="statement-{start}-{end}.pdf"'
    return response
