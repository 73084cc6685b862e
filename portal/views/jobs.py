"""Background jobs: what the workers are doing, what failed and why, and retrying a failed job."""

import django_filters
import django_tables2 as tables
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from finance import permissions
from finance.errors import TransactionError
from jobs import selectors
from jobs.policy import label_for
from jobs.services import retry_job

from ..tables import DateTimeColumn
from .base import TableListView
from .confirmation import Confirmation, ConfirmationMixin

REFRESH_SECONDS = 3


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        label="Status",
        choices=[(key, label) for key, (label, _q) in selectors.STATUS_FILTERS.items()],
        empty_label="Any status",
        method="filter_status",
    )
    task_path = django_filters.ChoiceFilter(label="Job", choices=selectors.job_kinds, empty_label="Any job")

    class Meta:
        model = DBTaskResult
        fields = []

    def filter_status(self, queryset, name, value):
        return selectors.filter_by_status(queryset, value)


class JobTable(tables.Table):
    enqueued_at = DateTimeColumn(verbose_name="Enqueued", format="Y-m-d H:i:s", order_by=("enqueued_at", "id"))
    job = tables.Column(accessor="task_path", verbose_name="Job", orderable=False)
    status = tables.Column(verbose_name="Status", orderable=False, empty_values=())
    attempts = tables.Column(accessor="record__attempts", verbose_name="Attempts", orderable=False, empty_values=())
    error = tables.Column(accessor="record__last_error", verbose_name="Last error", orderable=False)
    finished_at = DateTimeColumn(verbose_name="Finished", format="Y-m-d H:i:s", order_by=("finished_at", "id"))
    action = tables.Column(verbose_name="Action", orderable=False, empty_values=())

    class Meta:
        model = DBTaskResult
        fields = ("enqueued_at", "job", "status", "attempts", "error", "finished_at", "action")
        order_by = ("-enqueued_at",)
        row_attrs = {"id": lambda record: f"job-{record.pk}"}

    def __init__(self, *args, can_retry=False, **kwargs):
        # Someone who may not retry (a manager) gets no Action column at all.
        super().__init__(*args, exclude=() if can_retry else ("action",), **kwargs)
        self.can_retry = can_retry

    def render_job(self, value, record):
        return format_html("{}<br><small>{}</small>", label_for(value), record.pk)

    def render_status(self, record):
        words = selectors.status_in_words(record)
        primary = " w-status--primary" if record.status == TaskResultStatus.SUCCESSFUL else ""
        badge = format_html('<span class="w-status{}">{}</span>', primary, words)
        next_at = selectors.next_attempt_at(record)
        if next_at:
            return format_html("{}<br><small>next try {}</small>", badge, DateTimeColumn("H:i:s").render(next_at))
        return badge

    def render_attempts(self, record):
        job_record = getattr(record, "record", None)
        if job_record is None:
            return "—"
        return f"{job_record.attempts} of {job_record.max_attempts}"

    def render_action(self, record):
        if not self.can_retry or record.status != TaskResultStatus.FAILED:
            return ""
        url = reverse("ops_jobs:confirm", args=[record.pk])
        return format_html('<a class="button button-small button-secondary" href="{}">Retry…</a>', url)


class JobListView(TableListView):
    permission_required = permissions.VIEW_JOBS
    page_title = "Background jobs"
    header_icon = "resubmit"
    template_name = "portal/jobs.html"
    table_class = JobTable
    filterset_class = JobFilter
    export_filename = "background-jobs"
    export_columns = [
        ("Enqueued", "enqueued_at"),
        ("Job id", "id"),
        ("Job", lambda job: label_for(job.task_path)),
        ("Task", "task_path"),
        ("Status", selectors.status_in_words),
        ("Attempts", "record.attempts"),
        ("Max attempts", "record.max_attempts"),
        ("Last error", "record.last_error"),
        ("Started", "started_at"),
        ("Finished", "finished_at"),
    ]

    def get_queryset(self):
        return selectors.jobs()

    def get_table_kwargs(self):
        return {"can_retry": permissions.allows(self.request.user, permissions.RETRY_JOB)}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["failed_count"] = selectors.count_failed()
        # While a job shown is still waiting or running, the list refreshes itself.
        unfinished = (TaskResultStatus.READY, TaskResultStatus.RUNNING)
        if any(row.record.status in unfinished for row in self.table.page.object_list):
            context["refresh_every"] = REFRESH_SECONDS
        if not any(self.request.GET.get(name) for name in self.filterset.filters):
            context["empty_title"] = "No background jobs yet."
            context["empty_help"] = (
                "Bulk withdrawal completions, receipt e-mails, broadcasts and the periodic jobs appear here "
                "while they wait, run and after they finish."
            )
        return context


class JobRetryView(ConfirmationMixin, JobListView):
    """Retry a failed job after a confirmation that says what it will do again."""

    permission_required = permissions.RETRY_JOB
    confirmation_action = "job.retry"

    @cached_property
    def job(self) -> DBTaskResult:
        return get_object_or_404(DBTaskResult.objects.select_related("record"), pk=self.kwargs["pk"])

    def get_confirmation_params(self):
        if self.job.status != TaskResultStatus.FAILED:
            raise TransactionError(
                f"Only a failed job can be retried; this one is {selectors.status_in_words(self.job).lower()}."
            )
        return {}

    def get_confirmation_target(self):
        return self.job.pk

    def describe_confirmation(self, params):
        label = label_for(self.job.task_path)
        record = getattr(self.job, "record", None)
        effects = [
            f"It failed with: {record.last_error}" if record and record.last_error else "It failed.",
            "It goes back to the queue with a fresh set of attempts; a worker runs it within seconds. "
            "Jobs are safe to run again: work it already finished is not done twice.",
        ]
        return Confirmation(
            label=f"Confirm retry of {label}",
            question=f"Retry the job “{label}”?",
            effects=effects,
            yes="Yes, retry",
            url=reverse("ops_jobs:retry", args=[self.job.pk]),
            cancel_url=reverse("ops_jobs:index") + "?status=failed",
        )

    def render_confirmation(self, confirmation, status):
        # The confirmation above the list of jobs, the list shown as its own page shows it.
        self.confirmation = confirmation
        response = super(ConfirmationMixin, self).get(self.request)
        response.status_code = status
        return response

    def get_context_data(self, **kwargs):
        return super().get_context_data(confirmation=getattr(self, "confirmation", None), **kwargs)

    def render_invalid(self, error):
        messages.error(self.request, error.message)
        return redirect(reverse("ops_jobs:index") + "?status=failed")

    def perform(self, params, key):
        label = label_for(self.job.task_path)
        try:
            retry_job(self.job.pk, actor=self.request.user)
        except TransactionError as error:
            messages.error(self.request, f"“{label}” was not retried: {error.message}")
        else:
            messages.success(self.request, f"“{label}” is back in the queue.")
        return redirect(reverse("ops_jobs:index") + "?status=failed")
