"""Finance pages: the webhook inbox's flagged and rejected events, and replaying one."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.functional import cached_property

from finance import payments, permissions, staff_actions
from finance.errors import TransactionError
from finance.models import WebhookEvent
from finance.money import format_money

from ..csv_export import stream_csv
from .base import OperationsView
from .confirmation import Confirmation, ConfirmationMixin


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
            can_replay=permissions.allows(self.request.user, permissions.REPLAY_WEBHOOK),
        )
        return context


class WebhookReplayView(ConfirmationMixin, WebhookInboxView):
    """Replay a flagged or rejected event, after a confirmation naming its payment and who is paid."""

    permission_required = permissions.REPLAY_WEBHOOK
    confirmation_action = "webhook.replay"

    @cached_property
    def event(self):
        related = "payment__booking__rental_property__host"
        return get_object_or_404(WebhookEvent.objects.select_related(related), pk=self.kwargs["pk"])

    def get_confirmation_params(self):
        event, payment = self.event, self.event.payment
        payments.check_replayable(event)
        return {
            "payment": payment.reference if payment else "",
            "amount": str(payment.amount) if payment else "",
            "currency": payment.currency if payment else "",
        }

    def get_confirmation_target(self):
        return self.event.pk

    def describe_confirmation(self, params):
        event, payment = self.event, self.event.payment
        if payment:
            booking = payment.booking
            effects = [
                f"It is checked again against payment {payment.reference} of "
                f"{format_money(payment.amount, payment.currency)} for booking #{booking.pk}.",
                f"If it matches, the payment is applied: the host {booking.rental_property.host} is paid their "
                f"share and {booking.guest}'s booking is confirmed. If not, it stays here with the new reason.",
            ]
        else:
            effects = [
                "No payment is linked to it yet: the replay looks the payment up by the event's reference.",
                "If one matches, it is applied: the host is paid their share and the booking confirmed. "
                "If not, it stays here with the new reason.",
            ]
        show = self.request.GET.get("show", "attention")
        return Confirmation(
            label=f"Confirm replay of {event.provider} event {event.event_id}",
            question=f"Replay {event.provider} event {event.event_id} now?",
            effects=effects,
            yes="Yes, replay",
            url=reverse("ops_webhooks:replay", args=[event.pk]),
            cancel_url=f"{reverse('ops_webhooks:index')}?show={show}#event-{event.pk}",
            small=True,
        )

    def render_confirmation(self, confirmation, status):
        context = self.get_context_data(confirmation=confirmation, confirming=self.event.pk)
        return self.render_to_response(context, status=status)

    def render_invalid(self, error):
        messages.error(self.request, f"{self.event.provider} event {self.event.event_id}: {error.message}")
        return self.render_to_response(self.get_context_data(), status=error.status)

    def perform(self, params, key):
        request, event = self.request, self.event
        try:
            replayed = staff_actions.replay_webhook(event=event, actor=request.user)
        except TransactionError as error:
            messages.error(request, f"{event.provider} event {event.event_id} was not replayed: {error.message}")
        else:
            outcome = replayed.get_outcome_display().lower()
            text = f"Replayed {replayed.provider} event {replayed.event_id}: {outcome}. {replayed.reason}"
            (messages.success if replayed.outcome == WebhookEvent.Outcome.APPLIED else messages.warning)(request, text)
        return redirect(reverse("ops_webhooks:index"))
