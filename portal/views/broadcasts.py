"""Support pages: compose a broadcast, preview its audience, send it, watch it deliver."""

import uuid

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views import View

from finance import permissions
from finance.errors import TransactionError
from messaging.models import Broadcast, Priority
from messaging.selectors import with_fan_out_state
from messaging.services import MessagingError, audience_users, create_broadcast

from ..audit_events import record_export
from ..csv_export import column_value, label, person, stream_csv
from .base import OperationsView, PermissionRequiredMixin
from .confirmation import Confirmation, ConfirmationMixin, clean_text

COUNTRIES = [
    ("NG", "Nigeria"),
    ("KE", "Kenya"),
    ("ZA", "South Africa"),
    ("GH", "Ghana"),
    ("UG", "Uganda"),
    ("RW", "Rwanda"),
    ("TZ", "Tanzania"),
    ("TN", "Tunisia"),
]


# The broadcasts' CSV export (GET ?export=csv): one row per broadcast.
BROADCAST_EXPORT_COLUMNS = [
    ("Sent", "created_at"),
    ("By", person("author")),
    ("By username", "author.username"),
    ("Audience", "audience_label"),
    ("Priority", label("priority")),
    ("Message", "text"),
    ("Delivered", "delivered"),
    ("Total", "total"),
    ("Status", label("status")),
    ("Stored directly", "via_fallback"),
]


class BroadcastForm(forms.Form):
    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 4}), max_length=5000)
    audience = forms.ChoiceField(label="Who receives it", choices=Broadcast.Audience.choices, widget=forms.RadioSelect)
    country = forms.ChoiceField(
        label="Country (for hosts in a country)", choices=[("", "—"), *COUNTRIES], required=False
    )
    user_ids = forms.CharField(
        label="User ids (for a list of users), separated by commas or spaces", required=False, max_length=20000
    )
    priority = forms.ChoiceField(label="Priority", choices=Priority.choices, initial=Priority.NORMAL)

    def clean_user_ids(self):
        raw = self.cleaned_data["user_ids"].replace(",", " ").split()
        if any(not part.isdigit() for part in raw):
            raise forms.ValidationError("User ids are whole numbers, e.g. 12, 15, 40.")
        return [int(part) for part in raw]

    def clean(self):
        data = super().clean()
        audience = data.get("audience")
        if audience == Broadcast.Audience.HOSTS_IN_COUNTRY and not data.get("country"):
            self.add_error("country", "Choose the country.")
        if audience == Broadcast.Audience.USER_IDS and not data.get("user_ids"):
            self.add_error("user_ids", "Give at least one user id.")
        return data

    def recipient_count(self) -> int:
        data = self.cleaned_data
        return audience_users(
            data["audience"], country=data.get("country", ""), user_ids=data.get("user_ids", ())
        ).count()


class FormInvalid(TransactionError):
    """Correct the errors below."""


class BroadcastPageView(ConfirmationMixin, OperationsView):
    """Compose, preview the recipient count, confirm, send; the history below."""

    permission_required = permissions.SEND_BROADCAST
    page_title = "Broadcasts"
    header_icon = "mail"
    template_name = "portal/broadcasts.html"
    confirmation_action = "broadcast.send"

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv" and not self.confirming:
            return stream_csv(
                "broadcasts",
                [h for h, _ in BROADCAST_EXPORT_COLUMNS],
                (
                    [column_value(b, spec) for _, spec in BROADCAST_EXPORT_COLUMNS]
                    for b in Broadcast.objects.select_related("author").iterator(chunk_size=1000)
                ),
                on_finish=lambda rows, complete: record_export(
                    request, list_name="Broadcasts", rows=rows, complete=complete
                ),
            )
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.setdefault("form", BroadcastForm(initial={"audience": Broadcast.Audience.ALL_HOSTS}))
        context["history"] = with_fan_out_state(Broadcast.objects.select_related("author")[:50])
        return context

    def get_confirmation_params(self):
        self.form = form = BroadcastForm(self.request.POST)
        if not form.is_valid():
            raise FormInvalid
        count = form.recipient_count()
        if count == 0:
            form.add_error("audience", "Nobody is in this audience: choose another.")
            raise FormInvalid
        data = form.cleaned_data
        return {
            "text": clean_text(data["text"]),
            "audience": data["audience"],
            "country": data.get("country", ""),
            "user_ids": list(data.get("user_ids", [])),
            "priority": data["priority"],
            "recipients": count,
        }

    def get_confirmation_target(self):
        return "new"

    def describe_confirmation(self, params):
        count = params["recipients"]
        audience = Broadcast(audience=params["audience"], country=params["country"], user_ids=params["user_ids"])
        return Confirmation(
            label="Confirm broadcast",
            question=f"Send this {params['priority']}-priority message to {count} recipient{pluralize(count)}?",
            effects=[
                f"Who receives it: {audience.audience_label}.",
                "A background job sends it within moments; anyone online sees it as it is delivered, "
                "everyone else next time they open the app. Its page shows the progress.",
            ],
            quote=params["text"],
            quote_label="Message",
            yes=f"Yes, send to {count}",
            url=reverse("ops_broadcasts:index"),
            fields=[
                ("text", params["text"]),
                ("audience", params["audience"]),
                ("country", params["country"]),
                ("user_ids", " ".join(str(i) for i in params["user_ids"])),
                ("priority", params["priority"]),
            ],
            cancel_url=reverse("ops_broadcasts:index"),
        )

    def render_confirmation(self, confirmation, status):
        return self.render_to_response(self.get_context_data(form=self.form, confirmation=confirmation), status=status)

    def render_invalid(self, error):
        if not self.form.errors:
            self.form.add_error(None, error.message)
        return self.render_to_response(self.get_context_data(form=self.form), status=400)

    def perform(self, params, key):
        try:
            broadcast = create_broadcast(
                self.request.user,
                audience=params["audience"],
                text=params["text"],
                priority=params["priority"],
                country=params["country"],
                user_ids=params["user_ids"],
                broadcast_id=uuid.UUID(key),
            )
        except TransactionError as error:
            return self.render_invalid(error)
        messages.success(
            self.request, f"Broadcast to {broadcast.audience_label} is queued ({broadcast.total} recipients)."
        )
        return redirect(reverse("ops_broadcasts:detail", args=[broadcast.pk]))


class RecipientPreviewView(PermissionRequiredMixin, View):
    """htmx: how many people the audience chosen so far reaches."""

    permission_required = permissions.SEND_BROADCAST

    def get(self, request):
        # Only the audience matters here: the message and priority may not be filled in yet.
        form = BroadcastForm({**request.GET.dict(), "text": "-", "priority": Priority.NORMAL})
        count, error = None, ""
        if form.is_valid():
            try:
                count = form.recipient_count()
            except MessagingError as problem:
                error = problem.message
        else:
            error = " ".join(e for errors in form.errors.values() for e in errors)
        return render(request, "portal/includes/recipient_count.html", {"count": count, "error": error})


class BroadcastDetailView(OperationsView):
    permission_required = permissions.SEND_BROADCAST
    header_icon = "mail"
    template_name = "portal/broadcast_detail.html"

    def get_page_title(self):
        return "Broadcast"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        broadcast = get_object_or_404(Broadcast.objects.select_related("author"), pk=kwargs["pk"])
        context["broadcast"] = with_fan_out_state([broadcast])[0]
        return context


class BroadcastProgressView(PermissionRequiredMixin, View):
    """htmx-polled progress bar; stops polling once the broadcast is delivered or failed."""

    permission_required = permissions.SEND_BROADCAST

    def get(self, request, pk):
        broadcast = with_fan_out_state([get_object_or_404(Broadcast, pk=pk)])[0]
        return render(request, "portal/includes/broadcast_progress.html", {"broadcast": broadcast})
