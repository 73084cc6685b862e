"""The payments API. Every view reads through the caller's own objects and moves money only
through the domain: `finance.services` / `finance.payments` for the owner's actions and
`finance.staff_actions` for staff actions (the same four-eyes rules and audit log as the portal).

Ownership: another user's object is simply not in the caller's queryset, so it answers 404
and never reveals that it exists. A staff action asks `finance.permissions` first, so a
caller without the permission gets 403 before any lookup.
"""

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from finance import bank_details, payments, permissions, staff_actions
from finance.errors import NotFoundError
from finance.models import BankAccount, Booking, Wallet, WalletTransaction, Withdrawal
from finance.services import TransactionService

from . import serializers as api
from . import tokens
from .authentication import BearerTokenAuthentication
from .filters import TransactionFilter
from .idempotency import idempotent, idempotent_outside_transaction, service_key
from .throttling import FailedLoginThrottle

ERRORS = {
    400: OpenApiResponse(api.ErrorSerializer, description="Invalid input; nothing changed."),
    401: OpenApiResponse(api.ErrorSerializer, description="Not authenticated."),
    403: OpenApiResponse(api.ErrorSerializer, description="Missing permission."),
    404: OpenApiResponse(api.ErrorSerializer, description="Not found (or not yours)."),
    409: OpenApiResponse(api.ErrorSerializer, description="Refused in the object's current state; nothing changed."),
    415: OpenApiResponse(
        api.ErrorSerializer, description="The body is not one the operation reads (send JSON); nothing changed."
    ),
}


def _approval_pending(outcome) -> Response:
    approval = outcome.approval
    return Response(
        {
            "status": "pending_approval",
            "approval_request": approval.pk,
            "message": f"{approval.get_kind_display()} needs a second finance approver before money moves.",
            "approval_reason": approval.approval_reason,
        },
        status=status.HTTP_202_ACCEPTED,
    )


def _transactions(queryset):
    return queryset.select_related("reverses").prefetch_related("reversals").order_by("-created_at", "-id")


# --- wallets --------------------------------------------------------------------------------


@extend_schema(tags=["wallets"], responses={200: api.WalletSerializer, **ERRORS})
class WalletViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = api.WalletSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Wallet.objects.none()
        return Wallet.objects.filter(user=self.request.user).order_by("currency")

    @extend_schema(responses={200: api.WalletSerializer(many=True), 401: ERRORS[401]})
    @action(detail=False, pagination_class=None)
    def my_wallet(self, request):
        """The caller's wallets, one per currency."""
        return Response(self.get_serializer(self.get_queryset(), many=True).data)

    @action(detail=True)
    def balance(self, request, pk=None):
        """Balance, held and available of one of the caller's wallets."""
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={200: api.TransactionSerializer(many=True), **ERRORS})
    @action(detail=True, serializer_class=api.TransactionSerializer)
    def transactions(self, request, pk=None):
        """The wallet's transactions, newest first; filter by type, status and created_after/before."""
        wallet = self.get_object()
        filters = TransactionFilter(request.query_params, _transactions(wallet.transactions.all()))
        if not filters.is_valid():
            raise serializers.ValidationError(filters.errors)
        queryset = filters.qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(api.TransactionSerializer(page, many=True).data)


# --- bank accounts ----------------------------------------------------------------------------


@extend_schema(tags=["bank accounts"], responses={200: api.BankAccountSerializer, **ERRORS})
class BankAccountViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    serializer_class = api.BankAccountSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return BankAccount.objects.none()
        return BankAccount.objects.filter(owner=self.request.user).order_by("-is_primary", "id")

    @extend_schema(responses={201: api.BankAccountSerializer, **ERRORS})
    def create(self, request, *args, **kwargs):
        """Add a bank account or M-Pesa wallet; the first one becomes primary. The full number is
        stored encrypted and shown again only as its last four digits.

        400 `invalid_bank_details` (the field named) for what depends on the country and kind:
        a number of the wrong length (NG: 10 digits), a mobile-money number that is not an M-Pesa
        phone number in KE or TZ, or no bank code where a provider pays the country's banks."""
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer):
        # The number is checked for the account's kind and country and stored encrypted there.
        serializer.instance = bank_details.add_bank_account(owner=self.request.user, **serializer.validated_data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def set_primary(self, request, pk=None):
        """Make this account the primary one (the previous primary stops being primary)."""
        account = self.get_object()
        with transaction.atomic():
            # Lock the owner's accounts so two concurrent calls cannot both leave a primary.
            list(BankAccount.objects.select_for_update().filter(owner=request.user))
            BankAccount.objects.filter(owner=request.user, is_primary=True).exclude(pk=account.pk).update(
                is_primary=False
            )
            BankAccount.objects.filter(pk=account.pk).update(is_primary=True)
        account.refresh_from_db()
        return Response(self.get_serializer(account).data)


# --- withdrawals ------------------------------------------------------------------------------


@extend_schema(tags=["withdrawals"], responses={200: api.WithdrawalSerializer, **ERRORS})
class WithdrawalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = api.WithdrawalSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Withdrawal.objects.none()
        withdrawals = Withdrawal.objects.select_related("bank_account", "transaction").order_by("-created_at", "-id")
        if self.action in ("complete", "fail") and permissions.allows(self.request.user, permissions.VIEW_WITHDRAWALS):
            return withdrawals  # finance staff act on any host's withdrawal
        return withdrawals.filter(wallet__user=self.request.user)

    @extend_schema(request=api.WithdrawalRequestSerializer, responses={201: api.WithdrawalSerializer, **ERRORS})
    @idempotent
    def create(self, request):
        """Withdraw from one of the caller's wallets to one of their bank accounts: the amount is held."""
        body = api.WithdrawalRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wallet = Wallet.objects.filter(pk=body.validated_data["wallet"], user=request.user).first()
        account = BankAccount.objects.filter(pk=body.validated_data["bank_account"], owner=request.user).first()
        if wallet is None:
            raise NotFoundError("Wallet not found.", field="wallet")
        if account is None:
            raise NotFoundError("Bank account not found.", field="bank_account")
        withdrawal = TransactionService.initiate_withdrawal(
            wallet,
            account,
            body.validated_data["amount"],
            idempotency_key=service_key(request, "withdraw"),
            actor=request.user,
        )
        return Response(self.get_serializer(withdrawal).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None, responses={200: api.WithdrawalSerializer, 202: api.ApprovalPendingSerializer, **ERRORS}
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def complete(self, request, pk=None):
        """Finance staff: send the payout. To an account a provider pays, the transfer goes out and the
        withdrawal is `processing` until the provider's callback settles it (`completed` or `failed`);
        to one no provider reaches, staff paid it by other means and it is `completed` at once.
        Sending again while it is processing returns it and sends nothing. Above the approval
        threshold it waits for a second approver."""
        permissions.require(request.user, permissions.COMPLETE_WITHDRAWAL)
        outcome = staff_actions.complete_withdrawal(
            withdrawal=self.get_object(), actor=request.user, idempotency_key=service_key(request, "complete")
        )
        if outcome.needs_approval:
            return _approval_pending(outcome)
        return Response(self.get_serializer(outcome.result).data)

    @extend_schema(request=api.ReasonSerializer, responses={200: api.WithdrawalSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    @idempotent
    def fail(self, request, pk=None):
        """Finance staff: the payout failed; the held amount returns to the host's available balance.
        Refused (409 transfer_in_flight) while a provider's transfer is processing: its callback settles it."""
        permissions.require(request.user, permissions.FAIL_WITHDRAWAL)
        withdrawal = self.get_object()
        body = api.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = staff_actions.fail_withdrawal(
            withdrawal=withdrawal,
            actor=request.user,
            reason=body.validated_data["reason"],
            idempotency_key=service_key(request, "fail"),
        )
        return Response(self.get_serializer(outcome.result).data)


# --- transactions -----------------------------------------------------------------------------


@extend_schema(tags=["transactions"], responses={200: api.TransactionSerializer, **ERRORS})
class TransactionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = api.TransactionSerializer
    lookup_field = "reference"
    filterset_class = TransactionFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return WalletTransaction.objects.none()
        if self.action == "reverse" and permissions.allows(self.request.user, permissions.VIEW_TRANSACTIONS):
            return _transactions(WalletTransaction.objects.all())
        return _transactions(WalletTransaction.objects.filter(wallet__user=self.request.user))

    @extend_schema(request=api.ReasonSerializer, responses={202: api.ApprovalPendingSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    @idempotent
    def reverse(self, request, reference=None):
        """Finance staff: ask for a reversal. It always needs a second finance approver (four-eyes)."""
        permissions.require(request.user, permissions.REVERSE_TRANSACTION)
        txn = self.get_object()
        body = api.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = staff_actions.request_reversal(
            txn=txn,
            reason=body.validated_data["reason"],
            actor=request.user,
            idempotency_key=service_key(request, "rev"),
        )
        return _approval_pending(outcome)


# --- bookings: paying and refunding -----------------------------------------------------------


@extend_schema(tags=["bookings"])
class BookingViewSet(viewsets.GenericViewSet):
    queryset = Booking.objects.none()
    serializer_class = api.PaymentSerializer

    @extend_schema(
        request=api.PayRequestSerializer,
        responses={
            200: api.PaymentSerializer,
            201: api.PaymentSerializer,
            **ERRORS,
            409: OpenApiResponse(
                api.ErrorSerializer,
                description="Refused in the booking's state (invalid_state), or its checkout is being opened "
                "by another request right now (checkout_in_progress: ask again after Retry-After seconds).",
            ),
            503: OpenApiResponse(
                api.ErrorSerializer,
                description="The payment provider is unreachable; nothing charged. The payment stays reserved: "
                "the next call tries the provider again for the same payment.",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    @idempotent_outside_transaction
    def pay(self, request, pk=None):
        """The booking's guest starts paying. A second call returns the open payment, never a second charge.

        The provider is called outside any transaction: while one call waits for it, another on the
        same booking answers 409 checkout_in_progress (with Retry-After) at once."""
        body = api.PayRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payment, created = payments.initiate_payment(
            _booking_id(pk),
            guest=request.user,
            provider_name=body.validated_data.get("provider", ""),
            phone=body.validated_data.get("phone", ""),
        )
        return Response(
            api.PaymentSerializer(payment).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        request=api.RefundRequestSerializer,
        responses={
            200: inline_serializer("Refund", {"reference": serializers.CharField(), "amount": serializers.CharField()}),
            202: api.ApprovalPendingSerializer,
            **ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def refund(self, request, pk=None):
        """Finance staff: refund part or all of what the guest paid, with a reason."""
        permissions.require(request.user, permissions.REFUND_BOOKING)
        booking = Booking.objects.filter(pk=_booking_id(pk)).first()
        if booking is None:
            raise NotFoundError("Booking not found.", field="booking")
        body = api.RefundRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = staff_actions.refund_booking(
            booking=booking,
            amount=body.validated_data["amount"],
            reason=body.validated_data["reason"],
            actor=request.user,
            idempotency_key=service_key(request, "refund"),
        )
        if outcome.needs_approval:
            return _approval_pending(outcome)
        return Response(api.TransactionSerializer(outcome.result).data)


def _booking_id(pk) -> int:
    if not str(pk).isdigit() or int(pk) > 2**62:
        raise NotFoundError("Booking not found.")
    return int(pk)


# --- webhooks ---------------------------------------------------------------------------------


class WebhookView(APIView):
    """Provider → us. No session or token: the provider's signature is the authentication."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []

    @extend_schema(
        tags=["webhooks"],
        request={"application/json": dict},
        responses={
            200: inline_serializer(
                "WebhookAccepted", {"status": serializers.CharField(), "event_id": serializers.CharField()}
            ),
            400: ERRORS[400],
            401: OpenApiResponse(api.ErrorSerializer, description="Signature missing, wrong or stale."),
            404: ERRORS[404],
            429: OpenApiResponse(api.ErrorSerializer, description="Too many failed verifications from this address."),
            503: OpenApiResponse(
                api.ErrorSerializer,
                description="The provider's verify endpoint could not confirm the payment (provider_unavailable); "
                "nothing stored: deliver the event again after Retry-After seconds.",
            ),
        },
    )
    def post(self, request, provider):
        result = payments.receive_webhook(
            provider,
            request.body,
            request.headers,
            query=request.query_params,
            source=request.META.get("REMOTE_ADDR", ""),
        )
        headers = {"Retry-After": str(result.retry_after)} if result.retry_after else None
        return Response(result.body, status=result.status, headers=headers)


AUTH_ERRORS = {
    401: OpenApiResponse(api.ErrorSerializer, description="No token, or one unknown, expired or revoked."),
}
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    location=OpenApiParameter.HEADER,
    type=int,
    response=[429],
    description="Seconds until the lockout lifts.",
)


class TokenView(APIView):
    """Exchange a username and password for a new API token (send it as `Authorization: Bearer <token>`).

    Each call makes a new token (one per client), valid until `expires`. After too many failed
    attempts for the username, or from the client's address, every attempt is refused for a
    while (429 with Retry-After), even with the right password (finance/api/throttling.py).
    """

    authentication_classes = []
    permission_classes = []
    throttle_classes = [FailedLoginThrottle]

    @extend_schema(
        tags=["auth"],
        auth=[],
        request=AuthTokenSerializer,
        parameters=[RETRY_AFTER],
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField(), "expires": serializers.DateTimeField()}),
            400: OpenApiResponse(api.ErrorSerializer, description="Wrong username or password."),
            429: OpenApiResponse(
                api.ErrorSerializer,
                description="Too many failed attempts for this username or address; wait Retry-After seconds.",
            ),
        },
    )
    def post(self, request, *args, **kwargs):
        login = AuthTokenSerializer(data=request.data, context={"request": request})
        if not login.is_valid():
            if "non_field_errors" in login.errors:  # the fields were there, the credentials wrong
                FailedLoginThrottle().record_failure(request)
            raise serializers.ValidationError(login.errors)
        token = tokens.issue_token(login.validated_data["user"])
        return Response({"token": token.plain, "expires": serializers.DateTimeField().to_representation(token.expiry)})

    def throttled(self, request, wait):
        raise exceptions.Throttled(
            wait, detail="Too many failed sign-in attempts for this username or from your address."
        )


REVOKED = inline_serializer("TokensRevoked", {"revoked": serializers.IntegerField()})


class RevokeTokenView(APIView):
    """Revoke the token this request is sent with (sign this client out); other tokens keep working."""

    authentication_classes = [BearerTokenAuthentication]

    @extend_schema(tags=["auth"], request=None, responses={200: REVOKED, **AUTH_ERRORS})
    def post(self, request):
        return Response({"revoked": tokens.revoke_token(request.auth)})


class RevokeAllTokensView(APIView):
    """Revoke every API token of the caller (sign every client out)."""

    @extend_schema(tags=["auth"], request=None, responses={200: REVOKED, **AUTH_ERRORS})
    def post(self, request):
        return Response({"revoked": tokens.revoke_all_tokens(request.user)})
