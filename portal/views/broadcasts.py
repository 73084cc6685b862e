"""Support pages: compose a broadcast, preview its audience, send it, watch it deliver."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from finance import permissions
from finance.errors import TransactionError
from messaging.models import Broadcast, Priority
from messaging.services import MessagingError, audience_users, create_broadcast

from ..csv_export import stream_csv
from .base import OperationsView, PermissionRequiredMixin

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


class BroadcastPageView(OperationsView):
    """Compose, preview the recipient count, confirm, send; the history below."""

    permission_required = permissions.SEND_BROADCAST
    page_title = "Broadcasts"
    header_icon = "mail"
    template_name = "portal/broadcasts.html"

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv":
            return stream_csv(
                "broadcasts.csv",
                ["Sent", "By", "Audience", "Priority", "Message", "Delivered", "Total", "Status", "Stored directly"],
                (
                    [
                        b.created_at.isoformat(),
                        b.author.username,
                        b.audience_label,
                        b.priority,
                        b.text,
                        b.delivered,
                        b.total,
                        b.status,
                        "yes" if b.via_fallback else "no",
                    ]
                    for b in Broadcast.objects.select_related("author").iterator(chunk_size=1000)
                ),
            )
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.setdefault("form", BroadcastForm(initial={"audience": Broadcast.Audience.ALL_HOSTS}))
        context["history"] = Broadcast.objects.select_related("author")[:50]
        return context

    def post(self, request):
        form = BroadcastForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        count = form.recipient_count()
        if count == 0:
            form.add_error("audience", "Nobody is in this audience: choose another.")
            return self.render_to_response(self.get_context_data(form=form), status=400)
        if request.POST.get("confirmed") != "yes":
            return self.render_to_response(self.get_context_data(form=form, confirm_count=count))
        data = form.cleaned_data
        try:
            broadcast = create_broadcast(
                request.user,
                audience=data["audience"],
                text=data["text"],
                priority=data["priority"],
                country=data.get("country", ""),
                user_ids=data.get("user_ids", ()),
            )
        except TransactionError as error:
            form.add_error(None, error.message)
            return self.render_to_response(self.get_context_data(form=form), status=400)
        messages.success(
            request, f"Broadcast to {broadcast.audience_label} is on its way ({broadcast.total} recipients)."
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
        context["broadcast"] = get_object_or_404(Broadcast.objects.select_related("author"), pk=kwargs["pk"])
        return context


class BroadcastProgressView(PermissionRequiredMixin, View):
    """htmx-polled progress bar; stops polling once the broadcast is done."""

    permission_required = permissions.SEND_BROADCAST

    def get(self, request, pk):
        broadcast = get_object_or_404(Broadcast, pk=pk)
        return render(request, "portal/includes/broadcast_progress.html", {"broadcast": broadcast})
