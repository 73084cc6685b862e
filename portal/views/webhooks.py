"""Finance pages: the webhook inbox's flagged and rejected events, and replaying one."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from finance import permissions, staff_actions
from finance.errors import TransactionError
from finance.models import WebhookEvent

from ..csv_export import stream_csv
from .base import OperationsView


class WebhookInboxView(OperationsView):
    permission_required = permissions.VIEW_WEBHOOKS
    page_title = "Webhook inbox"
    header_icon = "warning"
    template_name = "portal/webhooks.html"

    def events(self, show: str):
        events = WebhookEvent.objects.select_related("payment").order_by("-received_at", "-id")
        return events.filter(outcome__in=WebhookEvent.NEEDS_ATTENTION) if show == "attention" else events

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv":
            events = self.events(request.GET.get("show", "attention"))
            return stream_csv(
                "webhook-events.csv",
                [
                    "Received",
                    "Provider",
                    "Event type",
                    "Event id",
                    "Payment",
                    "Outcome",
                    "Reason",
                    "Replays",
                    "Raw body",
                ],
                (
                    [
                        e.received_at.isoformat(),
                        e.provider,
                        e.event_type,
                        e.event_id,
                        e.payment.reference if e.payment else "",
                        e.outcome,
                        e.reason,
                        e.replay_count,
                        e.raw_body,
                    ]
                    for e in events.iterator(chunk_size=1000)
                ),
            )
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        show = self.request.GET.get("show", "attention")
        context.update(
            events=self.events(show)[:100],
            show=show,
            confirm=self.request.GET.get("confirm", ""),
            can_replay=permissions.allows(self.request.user, permissions.REPLAY_WEBHOOK),
        )
        return context


class WebhookReplayView(OperationsView):
    permission_required = permissions.REPLAY_WEBHOOK

    def post(self, request, pk):
        event = get_object_or_404(WebhookEvent, pk=pk)
        try:
            replayed = staff_actions.replay_webhook(event=event, actor=request.user)
        except TransactionError as error:
            messages.error(request, f"{event.provider} event {event.event_id} was not replayed: {error.message}")
        else:
            outcome = replayed.get_outcome_display().lower()
            text = f"Replayed {replayed.provider} event {replayed.event_id}: {outcome}. {replayed.reason}"
            (messages.success if replayed.outcome == WebhookEvent.Outcome.APPLIED else messages.warning)(request, text)
        return redirect(reverse("ops_webhooks:index"))
