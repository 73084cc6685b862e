"""Small mixins composed into the portal's views, in the manner of wagtail.admin.views.generic."""

import functools
import uuid
from collections.abc import Callable

from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.generic import TemplateView
from django_htmx.http import reswap
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator
from django_tables2.rows import BoundRow, BoundRows
from django_tables2.utils import signature
from wagtail.admin.views.generic.base import WagtailAdminTemplateMixin

from finance import permissions
from finance.audit import log_denied

from ..audit_events import record_export
from ..csv_export import column_value, stream_csv


def new_idempotency_key() -> str:
    """Generated when a money form renders; the service refuses to act twice on one key."""
    return uuid.uuid4().hex


def as_tuple(required: str | tuple) -> tuple:
    return (required,) if isinstance(required, str) else tuple(required)


def permission_label(code: str) -> str:
    """'finance.complete_withdrawal' -> 'complete withdrawal', from the permission's own name
    ("Can complete withdrawal"); the code itself when there is no such permission."""
    app_label, _, codename = code.partition(".")
    found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
    name = found.name if found else codename.replace("_", " ")
    return name.removeprefix("Can ").removeprefix("can ")


class PermissionRequiredMixin:
    """The view's own permission check (the service checks again).

    A refusal answered to an htmx request (a row's Complete, a filter, a poll) is a 403 with a
    sentence shown in place of what was asked for (`render_refusal`). Raised as PermissionDenied,
    Wagtail would answer it with a redirect to its home page, which htmx would follow and nest
    inside the queue."""

    permission_required: str | tuple = ""
    refused_action = ""  # ends "You don't have permission to …"; default: the permission's name

    def has_permission(self, user) -> bool:
        return permissions.allows(user, *as_tuple(self.permission_required))

    def dispatch(self, request, *args, **kwargs):
        if not self.has_permission(request.user):
            log_denied(
                request.user,
                permission=" + ".join(as_tuple(self.permission_required)),
                path=request.path,
                method=request.method,
            )
            if getattr(request, "htmx", False) and request.user.is_authenticated:
                return mark_refusal(self.render_refusal(self.refusal_message()))
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def refusal_message(self) -> str:
        user = self.request.user
        missing = [code for code in as_tuple(self.permission_required) if not permissions.allows(user, code)]
        what = self.refused_action or " and ".join(permission_label(code) for code in missing) or "do this"
        return f"You don't have permission to {what}."

    def render_refusal(self, message: str):
        """The refusal in place of the htmx request's target (its contents: the target stays)."""
        response = render(self.request, "portal/includes/refusal.html", {"refusal": message}, status=403)
        return reswap(response, "innerHTML")


def mark_refusal(response):
    """Tell portal.js to show this 403 (htmx leaves 4xx answers unswapped by default)."""
    response["X-Refusal"] = "permission"
    return response


class OperationsBreadcrumbsMixin:
    breadcrumbs_items = [
        {"url": reverse_lazy("wagtailadmin_home"), "label": "Home"},
        {"url": reverse_lazy("ops_dashboard:index"), "label": "Operations"},
    ]

    def get_breadcrumbs_items(self):
        home, operations = self.breadcrumbs_items
        if not permissions.allows(self.request.user, permissions.VIEW_FINANCE_DASHBOARD):
            operations = {**operations, "url": ""}  # no link to a page this person cannot open
        return [home, operations, {"url": "", "label": self.get_page_title()}]


class OperationsView(PermissionRequiredMixin, OperationsBreadcrumbsMixin, WagtailAdminTemplateMixin, TemplateView):
    """A page of the portal in Wagtail's admin furniture."""


class HtmxPartialMixin:
    """Render only `partial_template_name` when htmx asks for the #results region."""

    partial_template_name = ""
    partial_target = "results"

    def render_to_response(self, context, **kwargs):
        htmx = getattr(self.request, "htmx", None)
        if htmx and htmx.target == self.partial_target and not htmx.boosted:
            return render(self.request, self.partial_template_name, context)
        return super().render_to_response(context, **kwargs)


class KeysFirstPaginator(LazyPaginator):
    """LazyPaginator (no COUNT) that reads a page in two steps: the primary keys at the page's
    OFFSET, in the table's order, then those rows by key.

    Skipping N rows of a wide table means reading N heap rows; skipping N keys of an index
    that covers the ORDER BY and the key is an index-only scan, several times faster on a
    deep page of a large table. A shallow page of the whole, unfiltered table (the list as it
    opens) is read in one query, as a plain paginator would: skipping a few rows costs little
    there, and the walk down the ORDER BY's index is the plan. A filtered list keeps the two
    steps: the keys' query joins nothing, so the planner picks the filter's index (joined to
    the owners, an owner search was planned as a walk of the whole ledger, 30 ms instead of 0.3).
    """

    SHALLOW_ROWS = 1000

    def __init__(self, object_list, per_page, *args, **kwargs):
        super().__init__(_KeysFirstRows(object_list), per_page, *args, **kwargs)


class _KeysFirstRows:
    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, key):
        queryset = getattr(self.rows.data, "data", None)
        if not isinstance(key, slice) or not isinstance(queryset, QuerySet):
            return self.rows[key]
        if (key.start or 0) < KeysFirstPaginator.SHALLOW_ROWS and not queryset.query.where:
            records = list(queryset[key])
        else:
            keys = list(queryset.values_list("pk", flat=True)[key])
            found = {obj.pk: obj for obj in queryset.filter(pk__in=keys).order_by()} if keys else {}
            records = [found[k] for k in keys if k in found]
        return _Rows(data=records, table=self.rows.table, pinned_data=self.rows.pinned_data)

    def __len__(self):
        return len(self.rows)


class _Rows(BoundRows):
    """BoundRows.__iter__, with _Row for the records."""

    def __iter__(self):
        yield from self.generator_pinned_row(self.pinned_data.get("top"))
        for record in self.data:
            yield _Row(record, table=self.table)
        yield from self.generator_pinned_row(self.pinned_data.get("bottom"))


class _Row(BoundRow):
    """django-tables2's row, calling each cell's render method as the library does, but with the
    method's signature looked up once per method instead of once per cell (inspect.signature per
    cell was about a sixth of the transactions list's time under cProfile)."""

    def _call_render(self, bound_column, value=None):
        kwargs = self._optional_cell_arguments(bound_column, value)
        render = bound_column.render
        try:
            args, catch_all = _signature(getattr(render, "__func__", render), hasattr(render, "__self__"))
        except TypeError:  # not hashable: no cache
            args, catch_all = signature(render)
        if not catch_all:
            kwargs_for_render = {key: kwargs[key] for key in args if key in kwargs}
            content = None if len(kwargs_for_render) < len(args) else render(**kwargs_for_render)
        else:
            content = render(**kwargs)
        return bound_column.link(content, **kwargs) if bound_column.link else content


@functools.lru_cache(maxsize=1024)
def _signature(function, bound: bool):
    """django_tables2.utils.signature() of `function` (bound: as a method, without `self`)."""
    args, catch_all = signature(function)
    return (args[1:] if bound else args), catch_all


class TableListView(HtmxPartialMixin, OperationsView):
    """A django-tables2 table filtered by django-filter, updated in place with htmx, CSV export."""

    template_name = "portal/list.html"
    partial_template_name = "portal/includes/list_results.html"
    table_class = None
    filterset_class = None
    per_page = 25
    paginator_class = LazyPaginator  # no COUNT(*) over a million rows; lists may choose Paginator
    # The CSV export: its file's base name (stream_csv adds the date) and its columns, each
    # (header, attribute path) or (header, callable(obj) -> value): see portal.csv_export's
    # money(), label() and person() for amounts, choices and people.
    export_filename = "export"
    export_columns: list[tuple[str, str | Callable]] = []
    export_related: tuple[str, ...] = ()  # select_related for the export's columns only

    def get_queryset(self):
        raise NotImplementedError

    def get_table_kwargs(self) -> dict:
        """Extra arguments for the table (what it shows may depend on who is asking)."""
        return {}

    def get_filterset(self):
        return self.filterset_class(self.request.GET or None, queryset=self.get_queryset(), request=self.request)

    def get(self, request, *args, **kwargs):
        self.filterset = self.get_filterset()
        if self.filterset.is_bound and not self.filterset.is_valid():
            queryset = self.filterset.queryset.none()
        else:
            queryset = self.filterset.qs
        # Not `table_class(queryset, request=request)`: that configures the table for the request with
        # django-tables2's default Paginator, whose COUNT(*) runs even though the RequestConfig below
        # replaces it with `paginator_class`.
        self.table = self.table_class(queryset, **self.get_table_kwargs())
        self.table.request = request
        if request.GET.get("export") == "csv":
            if request.GET.get("sort"):
                self.table.order_by = request.GET["sort"]
            return self.export(self.table)
        RequestConfig(request, paginate={"per_page": self.per_page, "paginator_class": self.paginator_class}).configure(
            self.table
        )
        return super().get(request, *args, **kwargs)

    def export(self, table):
        data = table.data.data  # the filtered queryset, in the table's current order
        if self.export_related:
            data = data.select_related(*self.export_related)
        columns = [spec for _, spec in self.export_columns]
        list_name = str(self.get_page_title())
        return stream_csv(
            self.export_filename,
            [header for header, _ in self.export_columns],
            ([column_value(obj, spec) for spec in columns] for obj in data.iterator(chunk_size=2000)),
            on_finish=lambda rows, complete: record_export(
                self.request, list_name=list_name, rows=rows, complete=complete
            ),
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(table=self.table, filterset=self.filterset, results_url=self.request.path)
        shown = len(self.table.page.object_list)
        context["first_index"] = (self.table.page.number - 1) * self.per_page + 1
        context["last_index"] = context["first_index"] + shown - 1
        if not issubclass(self.paginator_class, LazyPaginator):
            context["total_count"] = self.table.paginator.count
        return context
