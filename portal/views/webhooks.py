"""The webhook inbox: every provider event, filtered (the flagged and rejected ones first),
what each one did in plain words, the forged posts refused, and replaying an event."""

from django.contrib import messages
from django.core.paginator import InvalidPage
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_tables2.paginators import LazyPaginator

from finance import payments, permissions, staff_actions
from finance.errors import TransactionError
from finance.models import WebhookEvent
from finance.money import format_money, round_money

from ..csv_export import stream_csv
from ..filters import ALL_EVENTS, NEEDS_ATTENTION, WebhookEventFilter
from ..links import transaction_link
from ..tables import provider_name
from .base import HtmxPartialMixin, OperationsView
from .confirmation import Confirmation, ConfirmationMixin

Outcome = WebhookEvent.Outcome


def describe_event(event: WebhookEvent, *, user) -> str:
    """What the event was and what it did, in words that match it: a guest's payment coming in
    is "received" and "applied to booking #12", never "paid out" (that is a withdrawal)."""
    if event.withdrawal is not None:
        return describe_payout_event(event)
    if event.refund is not None:
        return describe_refund_event(event)
    payment = event.payment
    if payment is None:
        if event.outcome == Outcome.IGNORED:
            return format_html("{}: not an event we act on. Nothing changed.", event.event_type or "This event")
        if event.outcome == Outcome.REJECTED:
            return "Could not be read, so it matched no payment. Nothing changed."
        if event.outcome == Outcome.RECEIVED:
            return "Received, not processed yet."
        return "Matches no payment we know. Held for staff; nothing changed."
    amount = format_money(payment.amount, payment.currency)
    booking = f"booking #{payment.booking_id}"
    if event.outcome == Outcome.APPLIED:
        txn = payment.ledger_transaction
        ledger = format_html(" (ledger {})", transaction_link(txn.reference, user=user)) if txn else ""
        return format_html("Guest payment received, {}, applied to {}{}.", amount, booking, ledger)
    if event.outcome == Outcome.PAYMENT_FAILED:
        return format_html("Guest payment failed, {}, for {}. No money moved.", amount, booking)
    if event.outcome == Outcome.IGNORED:
        return format_html("{}: not an event we act on (payment {}). Nothing changed.", event.event_type, amount)
    return format_html("Guest payment event, {}, for {}: held for staff, not applied.", amount, booking)


def describe_payout_event(event: WebhookEvent) -> str:
    """A provider's answer about a host payout (a transfer): money leaving, never a guest's payment."""
    withdrawal = event.withdrawal
    amount = format_money(withdrawal.amount, withdrawal.currency)
    if event.outcome == Outcome.APPLIED:
        return format_html("Host payout {}, {}: the provider reports it paid.", withdrawal.reference, amount)
    if event.outcome == Outcome.PAYOUT_FAILED:
        return format_html(
            "Host payout {}, {}, failed at the provider: the held amount went back to the host.",
            withdrawal.reference,
            amount,
        )
    return format_html("Host payout {}, {}: held for staff, nothing changed.", withdrawal.reference, amount)


def describe_refund_event(event: WebhookEvent) -> str:
    """A provider's answer about a refund: the refund it settled, money going back to a guest."""
    refund = event.refund
    what = f"Refund of {format_money(refund.amount, refund.currency)} for booking #{refund.payment.booking_id}"
    who = provider_name(event.provider)
    if event.outcome == Outcome.APPLIED:
        return format_html("{} refunded by {} ({}).", what, who, refund.refund_reference)
    if event.outcome == Outcome.REFUND_FAILED:
        reason = refund.failure_reason or event.reason or "no reason given"
        return format_html(
            "{} failed at {}: {}. The guest is still owed it: retry it or mark it refunded on the Refunds page.",
            what,
            who,
            reason,
        )
    return format_html("{} ({}): held for staff, nothing changed.", what, refund.refund_reference)


def _iso(value) -> str:
    """A timestamp in the current time zone, ISO 8601 to the second."""
    return timezone.localtime(value).replace(microsecond=0).isoformat() if value else ""


class WebhookInboxView(HtmxPartialMixin, OperationsView):
    permission_required = permissions.VIEW_WEBHOOKS
    page_title = "Webhook inbox"
    header_icon = "warning"
    template_name = "portal/webhooks.html"
    partial_template_name = "portal/includes/webhook_results.html"
    per_page = 50

    @cached_property
    def filterset(self):
        data = self.request.GET.copy()
        data.setdefault("show", NEEDS_ATTENTION)  # the landing view: what needs attention
        events = WebhookEvent.objects.select_related("payment__ledger_transaction", "withdrawal", "refund__payment")
        return WebhookEventFilter(data, queryset=events, request=self.request)

    def events(self):
        if not self.filterset.is_valid():
            return WebhookEvent.objects.none()
        return self.filterset.qs.order_by("-received_at", "-id")

    def get(self, request, *args, **kwargs):
        if request.GET.get("export") == "csv":
            return self.export()
        return super().get(request, *args, **kwargs)

    def export(self):
        return stream_csv(
            "webhook-events.csv",
            [
                "Received",
                "Provider",
                "Event type",
                "Event id",
                "Payment",
                "Payment amount",
                "Currency",
                "Outcome",
                "Reason",
                "Replays",
                "Raw body",
            ],
            (
                [
                    _iso(e.received_at),
                    e.provider,
                    e.event_type,
                    e.event_id,
                    e.payment.reference if e.payment else "",
                    round_money(e.payment.amount, e.payment.currency) if e.payment else "",
                    e.payment.currency if e.payment else "",
                    e.get_outcome_display(),
                    e.reason,
                    e.replay_count,
                    e.raw_body,
                ]
                for e in self.events().iterator(chunk_size=1000)
            ),
        )

    def get_page(self):
        number = self.request.GET.get("page", "1")
        try:
            return LazyPaginator(self.events(), self.per_page).page(int(number) if number.isdigit() else 1)
        except InvalidPage:
            raise Http404("No such page of the inbox.") from None

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = self.get_page()
        user = self.request.user
        events = list(page.object_list)
        first = (page.number - 1) * self.per_page + 1
        for event in events:
            event.summary = describe_event(event, user=user)
        form = self.filterset.form
        show = form.cleaned_data.get("show", NEEDS_ATTENTION) if form.is_valid() else NEEDS_ATTENTION
        narrowed = any(form.data.get(name) for name in ("q", "provider", "received_from", "received_to"))
        context.update(
            filterset=self.filterset,
            results_url=reverse("ops_webhooks:index"),
            page=page,
            events=events,
            first_index=first,
            last_index=first + len(events) - 1,
            show=show,
            filtered=narrowed or show not in (NEEDS_ATTENTION, ALL_EVENTS),
            query=self.request.GET.urlencode(),
            can_replay=permissions.allows(user, permissions.REPLAY_WEBHOOK),
            refused=payments.refused_post_counts(),
        )
        return context


class WebhookReplayView(ConfirmationMixin, WebhookInboxView):
    """Replay a flagged or rejected event, after a confirmation naming its payment and who is paid."""

    permission_required = permissions.REPLAY_WEBHOOK
    confirmation_action = "webhook.replay"

    @cached_property
    def event(self):
        related = ("payment__booking__rental_property__host", "payment__booking__guest", "payment__ledger_transaction")
        return get_object_or_404(WebhookEvent.objects.select_related(*related), pk=self.kwargs["pk"])

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # The event being confirmed is shown even when the filters or the page leave it out.
        if kwargs.get("confirming") and all(e.pk != self.event.pk for e in context["events"]):
            self.event.summary = describe_event(self.event, user=self.request.user)
            context["events"] = [self.event, *context["events"]]
        return context

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
                f"It is checked again against guest payment {payment.reference} of "
                f"{format_money(payment.amount, payment.currency)} for booking #{booking.pk}.",
                f"If it matches, the payment is applied: {booking.guest}'s booking is confirmed and the host "
                f"{booking.rental_property.host}'s share is credited to their wallet. If not, it stays here "
                "with the new reason.",
            ]
        else:
            effects = [
                "No payment is linked to it yet: the replay looks the payment up by the event's reference.",
                "If one matches, it is applied: the booking is confirmed and the host's share credited to "
                "their wallet. If not, it stays here with the new reason.",
            ]
        query = self.request.GET.urlencode()
        return Confirmation(
            label=f"Confirm replay of {event.provider} event {event.event_id}",
            question=f"Replay {event.provider} event {event.event_id} now?",
            effects=effects,
            yes="Yes, replay",
            url=reverse("ops_webhooks:replay", args=[event.pk]),
            cancel_url=f"{reverse('ops_webhooks:index')}{'?' + query if query else ''}#event-{event.pk}",
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
