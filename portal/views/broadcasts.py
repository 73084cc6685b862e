"""Support pages: compose a broadcast, preview its audience, send it, watch it deliver."""

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views import View

from finance import permissions
from finance.errors import TransactionError
from messaging.models import COUNTRIES, Broadcast, Priority
from messaging.selectors import describe_audience, search_users, with_fan_out_state
from messaging.services import MessagingError, audience_users, create_broadcast

from ..audit_events import record_export
from ..csv_export import column_value, label, person, stream_csv
from .base import OperationsView, PermissionRequiredMixin
from .confirmation import Confirmation, ConfirmationMixin, clean_text

User = get_user_model()
# The user picker searches once this many characters are typed, and reads at most MAX_QUERY.
MIN_QUERY = 2
MAX_QUERY = 100

# The broadcasts' CSV export (GET ?export=csv): one row per broadcast.
BROADCAST_EXPORT_COLUMNS = [
    ("Sent", "created_at"),
    ("By", person("author")),
    ("By username", "author.username"),
    ("Audience", "audience_label"),
    ("Priority", label("priority")),
    ("Message", "text"),
    ("Delivered", "delivered"),
    ("Delivered to a connected session", "delivered_online"),
    ("Total", "total"),
    ("Status", label("status")),
    ("Stored directly", "via_fallback"),
]


class BroadcastForm(forms.Form):
    """The audience and the message. Only the field the audience needs counts: a country for
    "hosts in a country", chosen users for "a list of users" (the other is hidden on the page,
    and whatever it holds is ignored here)."""

    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 4}), max_length=5000)
    audience = forms.ChoiceField(label="Who receives it", choices=Broadcast.Audience.choices, widget=forms.RadioSelect)
    country = forms.ChoiceField(label="Country", choices=[("", "—"), *COUNTRIES], required=False)
    # The user picker posts one hidden input per chosen user (static/portal/broadcasts.js).
    user_ids = forms.Field(label="Users", required=False, widget=forms.MultipleHiddenInput)
    priority = forms.ChoiceField(label="Priority", choices=Priority.choices, initial=Priority.NORMAL)

    def clean(self):
        data = super().clean()
        audience = data.get("audience")
        if audience != Broadcast.Audience.HOSTS_IN_COUNTRY:
            data["country"] = ""
        elif not data.get("country"):
            self.add_error("country", "Choose the country.")
        data["user_ids"] = self._chosen_user_ids() if audience == Broadcast.Audience.USER_IDS else []
        return data

    def _chosen_user_ids(self) -> list[int]:
        """The chosen users' ids, each once, in the order chosen; adds the form error when one is
        not a user's id or none is chosen."""
        raw = [part for value in self.cleaned_data.get("user_ids") or [] for part in value.replace(",", " ").split()]
        if any(not part.isdigit() for part in raw):
            self.add_error("user_ids", "User ids are whole numbers, e.g. 12, 15, 40.")
            return []
        ids = list(dict.fromkeys(int(part) for part in raw))
        if not ids:
            self.add_error("user_ids", "Choose at least one user.")
        unknown = sorted(set(ids) - set(User.objects.filter(pk__in=ids).values_list("pk", flat=True)))
        if unknown:
            listed = ", ".join(str(i) for i in unknown)
            self.add_error("user_ids", f"No user has the id{pluralize(len(unknown))} {listed}.")
        return ids

    def recipient_count(self) -> int:
        data = self.cleaned_data
        return audience_users(
            data["audience"], country=data.get("country", ""), user_ids=data.get("user_ids", ())
        ).count()

    def chosen_users(self) -> list:
        """The users picked so far, to show as chips again when the form comes back."""
        ids = [int(v) for v in self.data.getlist("user_ids") if v.isdigit()] if self.is_bound else []
        found = {user.pk: user for user in User.objects.filter(pk__in=ids)}
        return [found[i] for i in dict.fromkeys(ids) if i in found]


class FormInvalid(TransactionError):
    """Correct the errors below."""


class BroadcastPermissionMixin(PermissionRequiredMixin):
    """Reading broadcasts needs VIEW_BROADCASTS (managers and support hold it); composing,
    reviewing and sending need SEND_BROADCAST, checked again on every POST."""

    @property
    def permission_required(self) -> str:
        sending = self.request.method == "POST" or getattr(self, "confirming", False)
        return permissions.SEND_BROADCAST if sending else permissions.VIEW_BROADCASTS

    def has_permission(self, user) -> bool:
        # Those who may send may also read what was sent.
        return super().has_permission(user) or can_send(user)


def can_send(user) -> bool:
    return permissions.allows(user, permissions.SEND_BROADCAST)


class BroadcastPageView(BroadcastPermissionMixin, ConfirmationMixin, OperationsView):
    """Compose, preview the recipient count, confirm, send; the history below."""

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
        context["can_send"] = can_send(self.request.user)
        if context["can_send"]:
            form = context.setdefault("form", BroadcastForm(initial={"audience": Broadcast.Audience.ALL_HOSTS}))
            context["chosen_users"] = form.chosen_users()
            context["audience"] = form["audience"].value()
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
            "country": data["country"],
            "user_ids": data["user_ids"],
            "priority": data["priority"],
            "recipients": count,
        }

    def get_confirmation_target(self):
        return "new"

    def describe_confirmation(self, params):
        count = params["recipients"]
        recipients = f"{count} recipient{pluralize(count)}"
        audience = describe_audience(params["audience"], country=params["country"], user_ids=params["user_ids"])
        return Confirmation(
            label="Confirm broadcast",
            question=f"Send this {params['priority']}-priority message to {recipients}?",
            effects=[
                f"Who receives it: {audience} ({recipients}).",
                "A background job sends it within moments; anyone online sees it as it is delivered, "
                "everyone else next time they open the app. Its page shows the progress.",
            ],
            quote=params["text"],
            quote_label="Message",
            yes=f"Yes, send to {recipients}",
            url=reverse("ops_broadcasts:index"),
            fields=[
                ("text", params["text"]),
                ("audience", params["audience"]),
                ("country", params["country"]),
                *(("user_ids", user_id) for user_id in params["user_ids"]),
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
        total = broadcast.total
        messages.success(
            self.request, f"Broadcast to {broadcast.audience_label} is queued ({total} recipient{pluralize(total)})."
        )
        return redirect(reverse("ops_broadcasts:detail", args=[broadcast.pk]))


class RecipientPreviewView(PermissionRequiredMixin, View):
    """htmx: how many people the audience chosen so far reaches."""

    permission_required = permissions.SEND_BROADCAST

    def get(self, request):
        # Only the audience matters here: the message and priority may not be filled in yet.
        data = request.GET.copy()
        data.update({"text": "-", "priority": Priority.NORMAL})
        form = BroadcastForm(data)
        count, error = None, ""
        if form.is_valid():
            try:
                count = form.recipient_count()
            except MessagingError as problem:
                error = problem.message
        else:
            error = " ".join(e for errors in form.errors.values() for e in errors)
        return render(request, "portal/includes/recipient_count.html", {"count": count, "error": error})


class UserSearchView(PermissionRequiredMixin, View):
    """htmx: the user picker's matches for what has been typed (name, username or e-mail)."""

    permission_required = permissions.SEND_BROADCAST

    def get(self, request):
        query = request.GET.get("q", "").strip()[:MAX_QUERY]
        users = search_users(query) if len(query) >= MIN_QUERY else []
        return render(
            request, "portal/includes/user_matches.html", {"users": users, "query": query, "min_query": MIN_QUERY}
        )


class BroadcastDetailView(BroadcastPermissionMixin, OperationsView):
    header_icon = "mail"
    template_name = "portal/broadcast_detail.html"

    def get_page_title(self):
        return "Broadcast"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        broadcast = get_object_or_404(Broadcast.objects.select_related("author"), pk=kwargs["pk"])
        context["broadcast"] = with_fan_out_state([broadcast])[0]
        context["can_send"] = can_send(self.request.user)
        return context


class BroadcastProgressView(BroadcastPermissionMixin, View):
    """htmx-polled progress bar; stops polling once the broadcast is delivered or failed."""

    def get(self, request, pk):
        broadcast = with_fan_out_state([get_object_or_404(Broadcast, pk=pk)])[0]
        return render(
            request,
            "portal/includes/broadcast_progress.html",
            {"broadcast": broadcast, "can_send": can_send(request.user)},
        )
