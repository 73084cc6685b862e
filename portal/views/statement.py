"""The host's payout statement at /statement/: own data only, HTML, CSV and PDF; and a page per
statement line at /statement/<reference>/."""

from datetime import date, timedelta

from django import forms
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
    return render(
        request,
        "host/statement.html",
        {"form": form, "statements": statements, "start": start, "end": end, "host": host, **_ws_context(host)},
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

            yield [s.currency, start, "", "Opening balance", "", "", "", "", money(s.opening)]
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
                ]
            yield [s.currency, end, "", "Closing balance", "", "", "", "", money(s.closing)]

    return stream_csv(
        f"statement-{start}-{end}",
        ["Currency", "Date", "Reference", "Description", "Type", "Gross", "Commission", "Amount", "Balance"],
        rows(),
        on_finish=lambda count, complete: record_export(
            request, list_name=f"Statement {start} – {end}", rows=count, complete=complete
        ),
    )


def _pdf(request, host, statements, start, end):
    from weasyprint import HTML

    html = render_to_string("pdf/statement.html", {"statements": statements, "start": start, "end": end, "host": host})
    pdf = HTML(string=html, base_url=request.build_absolute_uri("/")).write_pdf()
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="statement-{start}-{end}.pdf"'
    return response
