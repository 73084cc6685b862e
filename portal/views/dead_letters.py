"""Undeliverable messages: what the messaging service handed over but could not be stored.

Read-only. Each row is a messaging.DeadLetterMessage: the message is settled (never retried),
and this page is where support sees that it was lost, and why.
"""

import django_filters
import django_tables2 as tables
from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery
from django.template.defaultfilters import truncatechars
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe

from finance import permissions
from messaging.models import DeadLetterMessage

from ..tables import DateTimeColumn
from .base import TableListView

PREVIEW_LENGTH = 80
NUMBER_CELL = {"td": {"class": "ops-num"}, "th": {"class": "ops-num"}}
NUL_TAG = '<span class="w-status" title="A NUL character (U+0000), which cannot be stored">NUL</span>'


def reason_choices() -> list[tuple[str, str]]:
    """The reasons on record: a short, fixed set (validation messages and database error classes)."""
    reasons = DeadLetterMessage.objects.order_by("reason").values_list("reason", flat=True).distinct()
    return [(reason, reason) for reason in reasons]


class DeadLetterFilter(django_filters.FilterSet):
    reason = django_filters.ChoiceFilter(label="Reason", choices=reason_choices, empty_label="Any reason")

    class Meta:
        model = DeadLetterMessage
        fields = []


class DeadLetterTable(tables.Table):
    # Ties broken by id, as in the model's ordering and its index: pages stay stable.
    last_seen = DateTimeColumn(verbose_name="Last seen", format="Y-m-d H:i:s", order_by=("last_seen", "id"))
    first_seen = DateTimeColumn(verbose_name="First seen", format="Y-m-d H:i:s", order_by=("first_seen", "id"))
    reason = tables.Column(verbose_name="Reason")
    sender = tables.Column(accessor="sender_id", verbose_name="Sender", orderable=False, empty_values=())
    receiver = tables.Column(accessor="receiver_id", verbose_name="Receiver", orderable=False, empty_values=())
    message = tables.Column(accessor="payload", verbose_name="Message", orderable=False)
    times_seen = tables.Column(verbose_name="Times seen", attrs=NUMBER_CELL)

    class Meta:
        model = DeadLetterMessage
        fields = ("last_seen", "first_seen", "reason", "sender", "receiver", "message", "times_seen")
        order_by = ("-last_seen",)
        row_attrs = {"id": lambda record: f"dead-letter-{record.pk}"}

    def render_sender(self, record):
        return _user_cell(record.sender_id, record.sender_name)

    def render_receiver(self, record):
        return _user_cell(record.receiver_id, record.receiver_name)

    def render_message(self, value, record):
        text = value.get("text") if isinstance(value, dict) else None
        preview = _nul_marked(truncatechars(text if isinstance(text, str) else "(no text)", PREVIEW_LENGTH))
        # One element, so that the phone layout (each cell a label and its value) keeps the two lines together.
        return format_html("<span>{}<br><small>id {}</small></span>", preview, record.message_id)


def _nul_marked(text: str) -> str:
    """`text`, escaped, with each U+2400 "␀" (how a dead letter shows a NUL) as a visible NUL tag:
    few fonts draw U+2400, and an empty box says nothing."""
    return mark_safe(NUL_TAG.join(conditional_escape(part) for part in text.split("\u2400")))


def _username_of(id_field: str) -> Subquery:
    """The username of the user whose id is in `id_field`, if one exists (a plain integer, no
    foreign key: the message may name a user who never existed)."""
    return Subquery(get_user_model().objects.filter(pk=OuterRef(id_field)).values("username")[:1])


def _user_cell(user_id, username):
    """The id as the message gave it, and whose it is when such a user exists."""
    if user_id is None:
        return "—"
    if username is None:
        return format_html("#{} <small>(no such user)</small>", user_id)
    return format_html("#{} {}", user_id, username)


class DeadLetterListView(TableListView):
    permission_required = permissions.VIEW_DEAD_LETTERS
    page_title = "Undeliverable messages"
    header_icon = "circle-xmark"
    template_name = "portal/dead_letters.html"
    table_class = DeadLetterTable
    filterset_class = DeadLetterFilter
    export_filename = "undeliverable-messages"
    export_columns = [
        ("Last seen", "last_seen"),
        ("First seen", "first_seen"),
        ("Times seen", "times_seen"),
        ("Message id", "message_id"),
        ("Reason", "reason"),
        ("Sender id", "sender_id"),
        ("Sender username", "sender_name"),
        ("Receiver id", "receiver_id"),
        ("Receiver username", "receiver_name"),
        ("Conversation id", "conversation_id"),
        ("Text", "payload.text"),
    ]

    def get_queryset(self):
        return DeadLetterMessage.objects.annotate(
            sender_name=_username_of("sender_id"), receiver_name=_username_of("receiver_id")
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if not any(self.request.GET.get(name) for name in self.filterset.filters):  # the table itself is empty
            context["empty_title"] = "No undeliverable messages."
            context["empty_help"] = (
                "A message the messaging service could not store (for example one holding a character the "
                "database refuses, or sent to a user deleted meanwhile) appears here with the reason."
            )
        return context
