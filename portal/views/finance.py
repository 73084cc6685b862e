"""Finance staff pages: dashboard, wallets, transactions, withdrawals, refunds, reversals."""

import json
import uuid
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from finance import approvals, permissions, staff_actions
from finance.errors import TransactionError
from finance.models import Booking, Payment, Wallet, WalletTransaction, Withdrawal
from finance.money import format_money

from .. import selectors
from ..filters import TransactionFilter, WalletFilter
from ..tables import TransactionTable, WalletTable, WithdrawalTable
from .base import KeysFirstPaginator, OperationsView, PermissionRequiredMixin, TableListView, new_idempotency_key

# --- dashboard -------------------------------------------------------------------------------


class DashboardView(OperationsView):
    permission_required = permissions.VIEW_FINANCE_DASHBOARD
    page_title = "Finance dashboard"
    header_icon = "table"
    template_name = "portal/dashboard.html"

    def get_breadcrumbs_items(self):
        return [self.breadcrumbs_items[0], {"url": "", "label": "Operations"}]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(selectors.dashboard_totals())
        context["webhook_events"] = selectors.flagged_webhook_events()
        context["can_see_stats"] = permissions.allows(self.request.user, permissions.VIEW_MESSAGING_STATS)
        return context


class LedgerHealthView(PermissionRequiredMixin, View):
    """The check_ledger result, computed on demand (an htmx button on the dashboard)."""

    permission_required = permissions.VIEW_FINANCE_DASHBOARD

    def get(self, request):
        from finance.ledger_checks import run_ledger_checks

        results = run_ledger_checks()
        return render(
            request,
            "portal/includes/ledger_health.html",
            {"results": results, "all_ok": all(r.ok for r in results), "checked": True},
        )


# --- wallets and transactions ---------------------------------------------------------------


class WalletListView(TableListView):
    permission_required = permissions.VIEW_WALLETS
    page_title = "Wallets"
    header_icon = "list-ul"
    table_class = WalletTable
    filterset_class = WalletFilter
    export_filename = "wallets.csv"
    export_columns = [
        ("Owner", "user.username"),
        ("Email", "user.email"),
        ("Currency", "currency"),
        ("Status", "status"),
        ("Balance", "balance"),
        ("Held", "held_balance"),
        ("Available", "available_balance"),
    ]

    def get_queryset(self):
        return Wallet.objects.select_related("user").order_by("-id")  # newest wallets first


class WalletTransactionsMixin:
    table_class = TransactionTable
    filterset_class = TransactionFilter
    # Deep pages of a million-row ledger: skip keys in an index (txn_created_id, txn_wallet_newest).
    paginator_class = KeysFirstPaginator
    export_columns = [
        ("Date", "created_at"),
        ("Reference", "reference"),
        ("Type", "type"),
        ("Status", "status"),
        ("Direction", "direction"),
        ("Amount", "amount"),
        ("Currency", "currency"),
        ("Balance after", "balance_after"),
        ("Description", "description"),
    ]


class WalletDetailView(WalletTransactionsMixin, TableListView):
    permission_required = permissions.VIEW_WALLETS
    header_icon = "list-ul"
    template_name = "portal/wallet_detail.html"

    def dispatch(self, request, pk, *args, **kwargs):
        self.wallet = get_object_or_404(Wallet.objects.select_related("user"), pk=pk)
        self.export_filename = f"wallet-{pk}-transactions.csv"
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return f"Wallet: {self.wallet.user} · {self.wallet.currency}"

    def get_breadcrumbs_items(self):
        return [
            *self.breadcrumbs_items,
            {"url": reverse("ops_wallets:index"), "label": "Wallets"},
            {"url": "", "label": self.get_page_title()},
        ]

    def get_queryset(self):
        return self.wallet.transactions.all()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["wallet"] = self.wallet
        context["open_withdrawals"] = self.wallet.withdrawals.filter(status__in=Withdrawal.OPEN_STATUSES)
        return context


class TransactionListView(WalletTransactionsMixin, TableListView):
    permission_required = permissions.VIEW_TRANSACTIONS
    page_title = "Transactions"
    header_icon = "list-ol"
    export_filename = "transactions.csv"

    def get_queryset(self):
        return WalletTransaction.objects.all()


# --- reversals -------------------------------------------------------------------------------


class ReversalView(OperationsView):
    """Request the reversal of a transaction: always a four-eyes request."""

    permission_required = permissions.REVERSE_TRANSACTION
    header_icon = "undo"
    template_name = "portal/reversal.html"

    def dispatch(self, request, reference, *args, **kwargs):
        self.txn = get_object_or_404(WalletTransaction.objects.select_related("wallet__user"), reference=reference)
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return f"Reverse {self.txn.reference}"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        wallet = self.txn.wallet
        effect = -self.txn.signed_amount
        context.update(
            txn=self.txn,
            wallet=wallet,
            effect=effect,
            balance_after=wallet.balance + effect,
            idempotency_key=kwargs.get("idempotency_key") or new_idempotency_key(),
            reason=kwargs.get("reason", ""),
            error=kwargs.get("error"),
        )
        return context

    def post(self, request):
        reason = request.POST.get("reason", "")
        key = request.POST.get("idempotency_key") or new_idempotency_key()
        try:
            outcome = staff_actions.request_reversal(
                txn=self.txn, reason=reason, actor=request.user, idempotency_key=key
            )
        except TransactionError as error:
            return self.render_to_response(
                self.get_context_data(idempotency_key=key, reason=reason, error=error.message), status=400
            )
        messages.success(
            request,
            f"Reversal of {self.txn.reference} requested. A second finance approver must approve it "
            f"(request #{outcome.approval.pk}).",
        )
        return redirect("ops_approvals:index")


# --- withdrawals -----------------------------------------------------------------------------

# What each action on a withdrawal row needs.
WITHDRAWAL_ACTIONS = {"complete": permissions.COMPLETE_WITHDRAWAL, "fail": permissions.FAIL_WITHDRAWAL}


class WithdrawalQueueView(TableListView):
    permission_required = permissions.VIEW_WITHDRAWALS
    page_title = "Withdrawal queue"
    header_icon = "upload"
    template_name = "portal/withdrawals.html"
    partial_template_name = "portal/includes/withdrawal_results.html"
    table_class = WithdrawalTable
    export_filename = "withdrawals.csv"
    export_columns = [
        ("Reference", "reference"),
        ("Requested", "created_at"),
        ("Host", "wallet.user.username"),
        ("Bank account", "bank_account"),
        ("Amount", "amount"),
        ("Currency", "currency"),
        ("Status", "status"),
    ]

    class filterset_class:  # noqa: N801 - a tiny stand-in: the queue has no filters
        def __init__(self, data, queryset, request):
            self.queryset = self.qs = queryset
            self.is_bound = False
            self.form = None

    def get_queryset(self):
        return Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES).select_related(
            "wallet__user", "bank_account"
        )


class WithdrawalMixin(PermissionRequiredMixin):
    def get_withdrawal(self, pk):
        return get_object_or_404(Withdrawal.objects.select_related("wallet__user", "bank_account"), pk=pk)

    def row(self, request, withdrawal, *, message=None, level="success", status=200, extra=None):
        """The withdrawal's row, re-rendered in place, and a Wagtail message (its own w-messages:add event)."""
        response = render(
            request,
            "portal/includes/withdrawal_row.html",
            {"w": withdrawal, **(extra or {})},
            status=status,
        )
        if message:
            response["HX-Trigger"] = json.dumps({"w-messages:add": {"text": message, "type": level, "clear": True}})
        return response


class WithdrawalConfirmView(WithdrawalMixin, View):
    """GET: the confirmation (with the effect) shown inside the row, before money moves."""

    permission_required = permissions.VIEW_WITHDRAWALS

    def get(self, request, pk, action):
        withdrawal = self.get_withdrawal(pk)
        needed = {"complete": permissions.COMPLETE_WITHDRAWAL, "fail": permissions.FAIL_WITHDRAWAL}.get(action)
        if needed is None:
            raise Http404
        if not request.user.has_perm(needed):
            raise PermissionDenied
        wallet = withdrawal.wallet
        return self.row(
            request,
            withdrawal,
            extra={
                "confirm": action,
                "idempotency_key": new_idempotency_key(),
                "needs_approval": action == "complete"
                and approvals.needs_approval(withdrawal.amount, withdrawal.currency),
                "balance_after": wallet.balance - withdrawal.amount,
                "available_after": wallet.available_balance + withdrawal.amount,
            },
        )


class WithdrawalRowView(WithdrawalMixin, View):
    permission_required = permissions.VIEW_WITHDRAWALS

    def get(self, request, pk):
        return self.row(request, self.get_withdrawal(pk))


class WithdrawalActionView(WithdrawalMixin, View):
    """POST: complete or fail one withdrawal, then answer with the updated row."""

    def has_permission(self, user):
        action = self.kwargs.get("action")
        return user.has_perm(
            {"complete": permissions.COMPLETE_WITHDRAWAL, "fail": permissions.FAIL_WITHDRAWAL}.get(action, "-")
        )

    def post(self, request, pk, action):
        withdrawal = self.get_withdrawal(pk)
        key = request.POST.get("idempotency_key") or new_idempotency_key()
        try:
            if action == "complete":
                outcome = staff_actions.complete_withdrawal(
                    withdrawal=withdrawal, actor=request.user, idempotency_key=key
                )
            else:
                outcome = staff_actions.fail_withdrawal(
                    withdrawal=withdrawal,
                    actor=request.user,
                    reason=request.POST.get("reason", ""),
                    idempotency_key=key,
                )
        except TransactionError as error:
            return self.row(
                request,
                self.get_withdrawal(pk),
                message=f"{withdrawal.reference}: {error.message}",
                level="error",
                extra={"confirm": action, "idempotency_key": key, "error": error.message},
            )
        if outcome.needs_approval:
            message = (
                f"{withdrawal.reference} is above the approval threshold: a second approver must approve it "
                f"(request #{outcome.approval.pk})."
            )
            return self.row(request, self.get_withdrawal(pk), message=message, level="warning")
        done = outcome.result
        verb = "completed" if action == "complete" else "failed"
        return self.row(
            request,
            self.get_withdrawal(pk),
            message=f"Withdrawal {done.reference} {verb}: {format_money(done.amount, done.currency)}.",
        )


class BulkCompleteView(WithdrawalMixin, View):
    """Bulk completion: confirm, then one withdrawal per htmx request so progress shows as it goes.

    The job (ids and one idempotency key each) lives in the session; every step completes the
    next withdrawal and answers with the progress bar, which triggers the next step until done.
    """

    permission_required = permissions.COMPLETE_WITHDRAWAL

    def post(self, request, step=None):
        jobs = request.session.setdefault("bulk_jobs", {})
        if step is None:
            ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
            selected = list(
                Withdrawal.objects.filter(pk__in=ids, status__in=Withdrawal.OPEN_STATUSES).order_by("created_at", "id")
            )
            if not selected:
                return render(request, "portal/includes/bulk_progress.html", {"empty": True})
            if request.POST.get("confirmed") != "yes":
                totals = {}
                for w in selected:
                    totals[w.currency] = totals.get(w.currency, Decimal(0)) + w.amount
                return render(
                    request,
                    "portal/includes/bulk_progress.html",
                    {
                        "confirm": True,
                        "selected": selected,
                        "totals": [format_money(v, k) for k, v in sorted(totals.items())],
                        "job_key": new_idempotency_key(),
                    },
                )
            job_id = request.POST.get("job_key") or uuid.uuid4().hex
            if job_id not in jobs:
                jobs[job_id] = {"ids": [w.pk for w in selected], "done": 0, "results": []}
                request.session.modified = True
            return self.progress(request, job_id, jobs[job_id])
        job = jobs.get(step)
        if job is None:
            raise Http404
        if job["done"] < len(job["ids"]):
            pk = job["ids"][job["done"]]
            withdrawal = self.get_withdrawal(pk)
            try:
                outcome = staff_actions.complete_withdrawal(
                    withdrawal=withdrawal, actor=request.user, idempotency_key=f"bulk-{step}-{pk}"
                )
                result = "needs approval" if outcome.needs_approval else "completed"
            except TransactionError as error:
                result = error.message
            job["results"].append({"reference": withdrawal.reference, "result": result, "pk": pk})
            job["done"] += 1
            request.session.modified = True
            updated = self.get_withdrawal(pk)
        else:
            updated = None
        return self.progress(request, step, job, updated=updated)

    def progress(self, request, job_id, job, updated=None):
        total = len(job["ids"])
        return render(
            request,
            "portal/includes/bulk_progress.html",
            {
                "job_id": job_id,
                "done": job["done"],
                "total": total,
                "percent": int(100 * job["done"] / total) if total else 100,
                "finished": job["done"] >= total,
                "results": job["results"],
                "completed": sum(1 for r in job["results"] if r["result"] == "completed"),
                "updated": updated,
            },
        )


# --- refunds ---------------------------------------------------------------------------------


class RefundView(OperationsView):
    """Find a booking, see what was paid and refunded, refund part or all with a reason."""

    permission_required = permissions.REFUND_BOOKING
    page_title = "Refunds"
    header_icon = "redirect"
    template_name = "portal/refunds.html"

    def find_bookings(self, query):
        query = query.strip().lstrip("#")
        if not query:
            return Booking.objects.none()
        condition = Q(payments__reference__iexact=query) | Q(guest__username__iexact=query)
        if query.isdigit():
            condition |= Q(pk=int(query))
        return (
            Booking.objects.filter(condition)
            .select_related("guest", "rental_property__host")
            .distinct()
            .order_by("-pk")[:20]
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        query = self.request.GET.get("q", "")
        context["query"] = query
        context["results"] = self.find_bookings(query) if query else None
        booking_id = self.request.GET.get("booking") or kwargs.get("booking_id")
        if booking_id and str(booking_id).isdigit():
            booking = get_object_or_404(Booking.objects.select_related("guest", "rental_property__host"), pk=booking_id)
            payment = Payment.objects.filter(booking=booking, ledger_transaction__isnull=False).order_by("pk").first()
            context["booking"] = booking
            context["payment"] = payment
            if payment:
                context["refundable"] = payment.amount - payment.refunded_amount
        context.setdefault("idempotency_key", kwargs.get("idempotency_key") or new_idempotency_key())
        for name in ("amount", "reason", "error", "review"):
            if name in kwargs:
                context[name] = kwargs[name]
        return context

    def post(self, request):
        booking_id = request.POST.get("booking", "")
        amount = request.POST.get("amount", "").strip()
        reason = request.POST.get("reason", "").strip()
        key = request.POST.get("idempotency_key") or new_idempotency_key()
        state = {"booking_id": booking_id, "amount": amount, "reason": reason, "idempotency_key": key}
        booking = get_object_or_404(Booking, pk=booking_id) if booking_id.isdigit() else None
        if booking is None:
            raise Http404
        try:
            value = Decimal(amount)
        except InvalidOperation:
            return self.render_to_response(
                self.get_context_data(**state, error="Enter the amount as a number, e.g. 2500.00."), status=400
            )
        if not reason:
            return self.render_to_response(
                self.get_context_data(**state, error="Give a reason for the refund; it goes in the audit log."),
                status=400,
            )
        if request.POST.get("confirmed") != "yes":
            payment = Payment.objects.filter(booking=booking, ledger_transaction__isnull=False).first()
            review = {
                "amount": format_money(value, booking.currency),
                "host": booking.rental_property.host,
                "needs_approval": approvals.needs_approval(value, booking.currency),
                "full": payment is not None and value == payment.amount - payment.refunded_amount,
            }
            return self.render_to_response(self.get_context_data(**state, review=review))
        try:
            outcome = staff_actions.refund_booking(
                booking=booking, amount=value, reason=reason, actor=request.user, idempotency_key=key
            )
        except TransactionError as error:
            return self.render_to_response(self.get_context_data(**state, error=error.message), status=400)
        if outcome.needs_approval:
            messages.warning(
                request,
                f"The refund of {format_money(value, booking.currency)} is above the approval threshold: "
                f"request #{outcome.approval.pk} waits for a second approver.",
            )
        else:
            messages.success(
                request,
                f"Refunded {format_money(value, booking.currency)} for booking #{booking.pk} "
                f"({outcome.result.reference}).",
            )
        return redirect(f"{reverse('ops_refunds:index')}?booking={booking.pk}")
