"""Reconciliation against the providers' reports (issue 18): per provider and day, what matched
the ledger and what differs; finance uploads a report and resolves each difference with a note.

The matching, the resolving (audited) and the dashboard's figures are finance.reconciliation's;
these views read the lines, sum them per provider and day, and call it.
"""

import json
from collections import defaultdict
from datetime import date

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.functional import cached_property
from django.views import View
from django_tables2.data import TableListData

from finance import permissions, reconciliation
from finance.errors import TransactionError, require_reason
from finance.models import ReconciliationLine, ReconciliationReport
from finance.money import format_money

from ..audit_events import record_export
from ..csv_export import stream_csv
from ..filters import UNRESOLVED, ReconciliationDayFilter, ReconciliationLineFilter
from ..tables import ReconciliationDayTable, ReconciliationLineTable, money_totals, provider_name
from .base import OperationsView, PermissionRequiredMixin, TableListView
from .confirmation import Confirmation, ConfirmationMixin, clean_text

State = ReconciliationLine.State
# A report bigger than this is refused before it is read (a day's settlement report is far smaller).
MAX_REPORT_BYTES = 10 * 1024 * 1024
EMPTY_INDEX = "No provider report has been read yet."


def day_url(provider: str, day: date) -> str:
    return reverse("ops_reconciliation:day", args=[provider, day.isoformat()])


# --- sums per provider and day ----------------------------------------------------------------


def summarise(pairs: list[dict]) -> list[dict]:
    """finance.reconciliation.day_summaries for these (provider, day) pairs, in their order, each
    with its day page's URL and its reports' sources. One grouped query over the pairs' days."""
    if not pairs:
        return []
    wanted = {(p["provider"], p["day"]) for p in pairs}
    providers = {provider for provider, _ in wanted}
    days = [day for _, day in wanted]
    found = {
        (s["provider"], s["day"]): s
        for s in reconciliation.day_summaries(
            provider=next(iter(providers)) if len(providers) == 1 else "", first_day=min(days), last_day=max(days)
        )
        if (s["provider"], s["day"]) in wanted
    }
    sources = defaultdict(set)
    covering = ReconciliationLine.objects.filter(provider__in=providers, day__in=days)
    for provider, day, source in covering.values_list("provider", "day", "report__source").distinct().order_by():
        sources[provider, day].add(source)
    rows = []
    for p in pairs:
        key = (p["provider"], p["day"])
        summary = found.get(key) or {"provider": key[0], "day": key[1], "lines": 0, "unresolved": 0}
        summary.setdefault("counts", {})
        summary.setdefault("totals", {})
        rows.append({**summary, "url": day_url(*key), "sources": sources[key]})
    return rows


class DaySummaries(TableListData):
    """The (provider, day) pairs of the filtered lines, newest day first, summed one page at a
    time: a page's 25 days cost one grouped query, whatever the history holds."""

    def __init__(self, lines):
        super().__init__(lines.values("provider", "day").distinct().order_by("-day", "provider"))

    def __len__(self):
        return self._count

    @cached_property
    def _count(self):
        return self.data.count()

    def __getitem__(self, key):
        if isinstance(key, slice):
            return summarise(list(self.data[key]))
        return summarise([self.data[key]])[0]

    def __iter__(self):
        return iter(summarise(list(self.data)))


def provider_overview() -> list[dict]:
    """Per provider that has a report: its last reconciled day and its unresolved lines."""
    last_days = reconciliation.last_reconciled_days()
    unresolved = reconciliation.unresolved_counts()
    providers = sorted(set(last_days) | set(unresolved))
    return [
        {
            "provider": provider,
            "name": provider_name(provider),
            "last_day": last_days.get(provider),
            "url": day_url(provider, last_days[provider]) if last_days.get(provider) else "",
            "unresolved": unresolved.get(provider, 0),
        }
        for provider in providers
    ]


def dashboard_card() -> dict:
    """The dashboard's Reconciliation card: the last reconciled day per provider, the unresolved
    count, and the days that stayed unreconciled (red: the ProviderDayUnreconciled alert's rule)."""
    overview = provider_overview()
    unreconciled = reconciliation.unreconciled_days()
    return {
        "providers": overview,
        "unresolved": sum(p["unresolved"] for p in overview),
        "unreconciled": [
            {"provider": provider_name(provider), "day": day}
            for provider, days in sorted(unreconciled.items())
            for day in days
        ],
    }


# --- the index ------------------------------------------------------------------------------


class ReconciliationIndexView(TableListView):
    permission_required = permissions.VIEW_RECONCILIATION
    page_title = "Reconciliation"
    header_icon = "doc-full"
    template_name = "portal/reconciliation.html"
    partial_template_name = "portal/includes/reconciliation_days.html"
    filterset_class = ReconciliationDayFilter
    paginator_class = Paginator  # counts days, not lines: cheap, and the page says "of N"

    def get_queryset(self):
        return ReconciliationLine.objects.all()

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv":
            return redirect(reverse("ops_reconciliation:export"))
        return super().get(request, *args, **kwargs)

    def table_class(self, lines, **kwargs):
        """The table TableListView builds from the filtered lines: their days, summed a page at a time."""
        return ReconciliationDayTable(DaySummaries(lines), **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            overview=provider_overview(),
            can_upload=permissions.allows(self.request.user, permissions.RECONCILE),
            empty_title=EMPTY_INDEX,
            any_report=ReconciliationReport.objects.exists(),
            filtered_empty_title="No provider's day matches these filters:",
        )
        return context


# --- upload ----------------------------------------------------------------------------------


def upload_provider_choices():
    return [(name, provider_name(name)) for name in sorted(reconciliation.MAPPINGS)]


class ReportUploadForm(forms.Form):
    provider = forms.ChoiceField(label="Provider", choices=upload_provider_choices)
    report = forms.FileField(
        label="Report (CSV)",
        help_text="The provider's settlement or transaction report, as downloaded from its dashboard.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )

    def clean_report(self):
        report = self.cleaned_data["report"]
        if report.size > MAX_REPORT_BYTES:
            raise forms.ValidationError(
                f"This file is {report.size // (1024 * 1024)} MB; a report may be up to "
                f"{MAX_REPORT_BYTES // (1024 * 1024)} MB. Download one day or a shorter period at a time."
            )
        return report


class ReportUploadView(OperationsView):
    permission_required = permissions.RECONCILE
    refused_action = "upload provider reports"
    page_title = "Upload a provider report"
    header_icon = "upload"
    template_name = "portal/reconciliation_upload.html"

    def get_breadcrumbs_items(self):
        items = super().get_breadcrumbs_items()
        return [*items[:2], {"url": reverse("ops_reconciliation:index"), "label": "Reconciliation"}, items[2]]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.setdefault("form", ReportUploadForm())
        context["max_mb"] = MAX_REPORT_BYTES // (1024 * 1024)
        return context

    def post(self, request):
        form = ReportUploadForm(request.POST, request.FILES)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        provider, upload = form.cleaned_data["provider"], form.cleaned_data["report"]
        try:
            report = reconciliation.import_report(
                provider=provider, file_name=upload.name, content=upload.read(), actor=request.user
            )
        except TransactionError as error:
            form.add_error("report", f"{upload.name} was not read: {error.message} Nothing was stored.")
            return self.render_to_response(self.get_context_data(form=form), status=error.status)
        days = (
            f"{report.first_day:%Y-%m-%d}"
            if report.first_day == report.last_day
            else f"{report.first_day:%Y-%m-%d} to {report.last_day:%Y-%m-%d}"
        )
        if getattr(report, "duplicate", False):
            messages.info(
                request,
                f"{upload.name} was already read on {report.created_at:%Y-%m-%d %H:%M} (the same file): "
                "its lines are shown as matched then.",
            )
        else:
            messages.success(
                request,
                f"Read {report.file_name or upload.name}: {report.line_count} line{pluralize(report.line_count)} "
                f"from {provider_name(report.provider)} for {days}, matched against the ledger.",
            )
        if report.first_day == report.last_day:
            return redirect(day_url(report.provider, report.first_day))
        query = f"provider={report.provider}&day_from={report.first_day:%Y-%m-%d}&day_to={report.last_day:%Y-%m-%d}"
        return redirect(f"{reverse('ops_reconciliation:index')}?{query}")


# --- one provider's day -----------------------------------------------------------------------


class DayMixin:
    @cached_property
    def provider(self) -> str:
        return self.kwargs["provider"]

    @cached_property
    def day(self) -> date:
        try:
            return date.fromisoformat(self.kwargs["day"])
        except ValueError:
            raise Http404("Not a day: write it as YYYY-MM-DD.") from None


def day_summary(provider: str, day: date) -> dict:
    found = summarise([{"provider": provider, "day": day}])[0]
    found["state_rows"] = [
        {
            "state": state,
            "label": label,
            "count": found["counts"].get(state, 0),
            "totals": money_totals(found["totals"].get(state, {})),
        }
        for state, label in State.choices
    ]
    return found


class ReconciliationDayView(DayMixin, TableListView):
    permission_required = permissions.VIEW_RECONCILIATION
    header_icon = "doc-full"
    template_name = "portal/reconciliation_day.html"
    partial_template_name = "portal/includes/reconciliation_lines.html"
    table_class = ReconciliationLineTable
    filterset_class = ReconciliationLineFilter
    paginator_class = Paginator
    per_page = 50

    def get_page_title(self):
        return f"Reconciliation: {provider_name(self.provider)}, {self.day:%Y-%m-%d}"

    def get_breadcrumbs_items(self):
        items = super().get_breadcrumbs_items()
        return [*items[:2], {"url": reverse("ops_reconciliation:index"), "label": "Reconciliation"}, items[2]]

    def get_queryset(self):
        lines = ReconciliationLine.objects.filter(provider=self.provider, day=self.day)
        return lines.select_related(
            "payment__ledger_transaction",
            "withdrawal__transaction",
            "refund__transaction",
            "refund__payment",
            "resolved_by",
        ).order_by("state", "id")

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv":
            return redirect(f"{reverse('ops_reconciliation:export')}?provider={self.provider}&day={self.day}")
        if not self.get_queryset().exists():
            raise Http404("No report covers this provider's day.")
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        reports = ReconciliationReport.objects.filter(
            provider=self.provider, first_day__lte=self.day, last_day__gte=self.day
        ).select_related("uploaded_by")
        context.update(
            summary=day_summary(self.provider, self.day),
            reports=reports,
            export_url=f"{reverse('ops_reconciliation:export')}?provider={self.provider}&day={self.day}",
            unresolved_url=f"{self.request.path}?state={UNRESOLVED}",
            empty_title="No line of this day is in this state.",
        )
        return context


# --- resolving a difference -------------------------------------------------------------------


class LineMixin(PermissionRequiredMixin):
    permission_required = permissions.VIEW_RECONCILIATION

    @cached_property
    def line(self) -> ReconciliationLine:
        return get_object_or_404(ReconciliationLine.objects.select_related("resolved_by"), pk=self.kwargs["pk"])

    def cell(self, *, status=200, message="", summary=False, **extra):
        """The line's Resolution cell, re-rendered in place; after a resolve, the day's summary
        too (out of band) and a Wagtail message."""
        context = {
            "line": self.line,
            "can_resolve": permissions.allows(self.request.user, permissions.RECONCILE),
            **extra,
        }
        html = render_to_string("portal/includes/reconciliation_resolution.html", context, request=self.request)
        if summary:
            html += render_to_string(
                "portal/includes/reconciliation_summary.html",
                {"summary": day_summary(self.line.provider, self.line.day), "oob": True},
                request=self.request,
            )
        response = HttpResponse(html, status=status)
        if message:
            response["HX-Trigger"] = json.dumps({"w-messages:add": {"text": message, "type": "success", "clear": True}})
        return response

    def render_refusal(self, message):
        return self.cell(status=403, refusal=message)


class LineResolutionView(LineMixin, View):
    """The Resolution cell as it stands (Cancel puts it back)."""

    def get(self, request, pk):
        return self.cell(focus=True)


def clean_note(note) -> str:
    return require_reason(
        clean_text(note), "Write a note saying why this difference is settled; it goes in the audit log.", field="note"
    )


class ResolveLineView(ConfirmationMixin, LineMixin, View):
    """Resolve one difference: the note first, then a confirmation that shows both sides and the
    note, then finance.reconciliation.resolve_line (audited); each step replaces the cell."""

    permission_required = permissions.RECONCILE
    refused_action = "resolve reconciliation differences"
    confirmation_action = "reconciliation.resolve"

    def get(self, request, *args, **kwargs):
        if self.confirming:
            return self.asking_note()
        return super().get(request, *args, **kwargs)

    def asking_note(self, status=200, **extra):
        if not self.line.needs_resolving:
            return self.cell(status=409 if self.line.resolved_at else 400)
        return self.cell(status=status, asking_note=True, **extra)

    def get_confirmation_params(self):
        return {"note": clean_note(self.request.POST.get("note"))}

    def get_confirmation_target(self):
        return self.line.pk

    def describe_confirmation(self, params):
        line = self.line
        provider_side = format_money(line.amount, line.currency) if line.amount is not None else "nothing"
        ledger_side = format_money(line.ledger_amount, line.ledger_currency) if line.ledger_amount is not None else ""
        who = provider_name(line.provider)
        says = {
            State.DIFFERS: f"{who} reports {provider_side}; the ledger has {ledger_side}.",
            State.MISSING_IN_LEDGER: f"{who} reports {provider_side}; the ledger has no record.",
            State.MISSING_AT_PROVIDER: f"The ledger has {ledger_side}; {who}'s report lacks it.",
        }.get(line.state, "")
        target = f"#resolution-{line.pk}"
        return Confirmation(
            label=f"Confirm resolve {line.provider_reference}",
            question=f"Resolve {line.provider_reference} ({line.get_state_display().lower()})?",
            effects=[
                says,
                "Nothing in the ledger changes: the line is marked resolved with your name and note, in the audit log.",
            ],
            quote=params["note"],
            quote_label="Note",
            fields=[("note", params["note"])],
            yes="Yes, resolve",
            url=reverse("ops_reconciliation:resolve", args=[line.pk]),
            cancel_get=reverse("ops_reconciliation:line", args=[line.pk]),
            target=target,
            small=True,
            id=f"confirm-resolve-{line.pk}",
        )

    def post(self, request, *args, **kwargs):
        if not self.line.needs_resolving:
            return self.cell(status=409 if self.line.resolved_at else 400)
        return super().post(request, *args, **kwargs)

    def render_confirmation(self, confirmation, status):
        return self.cell(status=status, confirmation=confirmation)

    def render_invalid(self, error):
        return self.asking_note(status=400, error=error.message, note=self.request.POST.get("note", ""))

    def perform(self, params, key):
        try:
            line = reconciliation.resolve_line(line=self.line, note=params["note"], actor=self.request.user)
        except TransactionError as error:
            self.__dict__.pop("line", None)
            return self.cell(status=error.status, refusal=error.message)
        self.line = line
        return self.cell(summary=True, message=f"Resolved {line.provider_reference}.")


# --- export -----------------------------------------------------------------------------------


# Headers for finance.reconciliation.EXPORT_COLUMNS, in its order.
EXPORT_HEADERS = {
    "provider": "Provider",
    "day": "Day",
    "kind": "Kind",
    "reference": "Reference",
    "state": "State",
    "provider_amount": "Provider amount",
    "provider_currency": "Provider currency",
    "provider_status": "Provider status",
    "ledger_amount": "Ledger amount",
    "ledger_currency": "Ledger currency",
    "ledger_record": "Ledger record",
    "report": "Report",
}


class ExportUnresolvedView(PermissionRequiredMixin, View):
    """The unresolved lines as CSV (finance.reconciliation.export_unresolved): every provider's,
    one provider's (?provider=), or one provider's day (?provider=&day=)."""

    permission_required = permissions.VIEW_RECONCILIATION

    def get(self, request):
        provider, day = request.GET.get("provider", ""), request.GET.get("day", "")
        name = "reconciliation-unresolved" + (f"-{provider}" if provider else "")
        one_day = None
        if day:
            try:
                one_day = date.fromisoformat(day)
            except ValueError:
                raise Http404("Not a day: write it as YYYY-MM-DD.") from None
            name += f"-for-{one_day:%Y-%m-%d}"
        rows = reconciliation.export_unresolved(provider=provider, first_day=one_day, last_day=one_day)
        columns = reconciliation.EXPORT_COLUMNS
        return stream_csv(
            name,
            [EXPORT_HEADERS.get(column, column) for column in columns],
            ([row[column] for column in columns] for row in rows),
            on_finish=lambda sent, complete: record_export(
                request, list_name="Unresolved reconciliation lines", rows=sent, complete=complete
            ),
        )
