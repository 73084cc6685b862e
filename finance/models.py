"""The ledger and the commercial records that feed it.

Money moves only through `finance.services`. Underneath every movement is a journal:
`LedgerEntry` rows whose amounts sum to zero per currency, split between user wallets and
system accounts. `WalletTransaction` is the header of one movement, the line a wallet
owner sees on their statement.

System accounts (platform revenue, provider clearing...) have no balance column: their
balance is the sum of their entries. Nothing ever needs to lock them, so a booking
payment that credits platform revenue never waits for another one.
"""

import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .money import COLUMN_DECIMALS, COLUMN_DIGITS

# Every money column; finance.money.parse_amount refuses what would not fit.
MONEY = {"max_digits": COLUMN_DIGITS, "decimal_places": COLUMN_DECIMALS}


def new_reference(prefix: str) -> str:
    """A unique, unguessable, human-readable reference such as TXN-3F9A1C7B2D4E6F80."""
    return f"{prefix}-{secrets.token_hex(8).upper()}"


def new_transaction_reference() -> str:
    return new_reference("TXN")


def new_withdrawal_reference() -> str:
    return new_reference("WD")


def new_payment_reference() -> str:
    return new_reference("PAY")


class Wallet(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FROZEN = "frozen", "Frozen"
        CLOSED = "closed", "Closed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallets")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    balance = models.DecimalField(**MONEY, default=Decimal("0"))
    held_balance = models.DecimalField(**MONEY, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "currency"], name="wallet_one_per_user_currency"),
            models.CheckConstraint(condition=Q(held_balance__gte=0), name="wallet_held_not_negative"),
            # Available (balance − held) may be negative: a refund after the host withdrew
            # (finance.ledger), by exactly the wallet's open HostReceivables (check_ledger).
        ]
        # No index on balance or held_balance: every posting changes them, and without an
        # index on a changed column PostgreSQL updates the row in place (a HOT update)
        # instead of rewriting every index of the table.
        indexes = [models.Index(fields=["currency", "status"])]

    def __str__(self):
        return f"{self.user} · {self.currency}"

    @property
    def available_balance(self) -> Decimal:
        return self.balance - self.held_balance

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class SystemAccount(models.TextChoices):
    """The platform's side of the journal. An account is a code plus a currency; its
    balance is the sum of its entries, so no row is locked or updated per movement."""

    PROVIDER_CLEARING = "provider_clearing", "Provider clearing"
    PLATFORM_REVENUE = "platform_revenue", "Platform revenue"
    PAYOUTS_IN_TRANSIT = "payouts_in_transit", "Payouts in transit"
    REFUNDS_PAYABLE = "refunds_payable", "Refunds payable"
    ADJUSTMENTS = "adjustments", "Manual adjustments"


class WalletTransaction(models.Model):
    """One movement of money as its wallet's owner sees it."""

    class Type(models.TextChoices):
        CREDIT = "credit", "Credit"
        DEBIT = "debit", "Debit"
        BOOKING_PAYMENT = "booking_payment", "Booking payout"
        REFUND = "refund", "Refund"
        WITHDRAWAL = "withdrawal", "Withdrawal"
        REVERSAL = "reversal", "Reversal"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        REVERSED = "reversed", "Reversed"

    class Direction(models.TextChoices):
        IN = "in", "Money in"
        OUT = "out", "Money out"

    # Unique by a named constraint rather than `unique=True`: on PostgreSQL the latter also
    # builds a varchar_pattern_ops copy of the index for LIKE 'prefix%' queries, which
    # nothing here runs, and every posting would pay for writing it.
    reference = models.CharField(max_length=32, default=new_transaction_reference)
    # Indexed by txn_wallet_newest below, which also serves every lookup by wallet.
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="transactions", db_index=False)
    type = models.CharField(max_length=20, choices=Type.choices)
    status = models.CharField(max_length=10, choices=Status.choices)
    direction = models.CharField(max_length=3, choices=Direction.choices)
    amount = models.DecimalField(**MONEY, help_text="Always positive; `direction` says which way.")
    currency = models.CharField(max_length=3)
    balance_after = models.DecimalField(**MONEY)
    reverses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals", db_index=False
    )
    booking = models.ForeignKey("Booking", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("reverse_transaction", "Can reverse a transaction")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="transaction_amount_not_negative"),
            models.UniqueConstraint(fields=["reference"], name="transaction_reference_unique"),
            # At most one reversal per transaction; partial, so ordinary rows add nothing to it.
            models.UniqueConstraint(
                fields=["reverses"], condition=Q(reverses__isnull=False), name="transaction_reversed_once"
            ),
        ]
        indexes = [
            models.Index(fields=["wallet", "-created_at", "-id"], name="txn_wallet_newest"),
            # The portal's transactions list: newest first with deep pages, and "largest first"
            # within each currency (amounts in different currencies are never compared).
            models.Index(fields=["created_at", "id"], name="txn_created_id"),
            models.Index(fields=["currency", "amount", "id"], name="txn_currency_amount"),
            # Also, on PostgreSQL only, txn_reference_trgm: a pg_trgm GIN index on UPPER(reference) for
            # the list's search by part of a reference (migration 0013, which says why it is not here).
        ]

    def __str__(self):
        return self.reference

    @property
    def signed_amount(self) -> Decimal:
        return self.amount if self.direction == self.Direction.IN else -self.amount


class LedgerEntry(models.Model):
    """One leg of a journal transaction. Legs of a transaction sum to zero per currency."""

    transaction = models.ForeignKey(WalletTransaction, on_delete=models.PROTECT, related_name="entries")
    wallet = models.ForeignKey(
        Wallet, null=True, blank=True, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    system_account = models.CharField(max_length=32, choices=SystemAccount.choices, blank=True)
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**MONEY, help_text="Signed: positive adds to the account.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(wallet__isnull=False, system_account=""))
                | (Q(wallet__isnull=True) & ~Q(system_account="")),
                name="entry_exactly_one_account",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_not_zero"),
        ]
        # Partial indexes: each leg is either a wallet's or a system account's, so each
        # index holds only the rows it can find (and every posting updates one less).
        indexes = [
            models.Index(fields=["wallet"], name="entry_wallet", condition=Q(wallet__isnull=False)),
            models.Index(
                fields=["system_account", "currency"], name="entry_system_account", condition=~Q(system_account="")
            ),
        ]

    def __str__(self):
        account = self.system_account or f"wallet {self.wallet_id}"
        return f"{account} {self.amount:+} {self.currency}"


class BankAccount(models.Model):
    """Where a host's payouts go: a bank account or a mobile-money wallet.

    The full account number is kept only encrypted (`account_number_encrypted`, finance.crypto,
    with the BANK_DETAILS_KEY from the environment) or, once a provider has exchanged it for
    its own recipient code, not at all; pages and the API show the last four digits."""

    class AccountType(models.TextChoices):
        BANK = "bank", "Bank account"
        MOBILE_MONEY = "mobile_money", "Mobile money"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bank_accounts")
    account_type = models.CharField(max_length=12, choices=AccountType.choices, default=AccountType.BANK)
    bank_name = models.CharField(max_length=100)
    # The provider's code for the bank (Paystack's and Flutterwave's bank lists, e.g. "058" for
    # GTBank in Nigeria) or the mobile-money network ("MPESA"). Empty: a manual payout only.
    bank_code = models.CharField(max_length=20, blank=True)
    account_name = models.CharField(max_length=100)
    account_number_last4 = models.CharField(max_length=4, help_text="Only the last four digits are shown.")
    account_number_encrypted = models.TextField(
        blank=True, help_text="The full number, encrypted with BANK_DETAILS_KEY (finance.crypto). Never shown."
    )
    # A provider's own handle for this account (Paystack's RCP_…), kept after the first transfer.
    recipient_code = models.CharField(max_length=100, blank=True)
    recipient_provider = models.CharField(max_length=20, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    country = models.CharField(max_length=2, blank=True)
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(is_primary=True), name="bank_account_one_primary_per_owner"
            ),
            # The shape of the codes; the API checks membership (ISO 3166-1, the ledger's currencies).
            models.CheckConstraint(
                condition=Q(country="") | Q(country__regex=r"^[A-Z]{2}$"), name="bank_account_country_code"
            ),
            models.CheckConstraint(
                condition=Q(currency="") | Q(currency__regex=r"^[A-Z]{3}$"), name="bank_account_currency_code"
            ),
        ]

    def __str__(self):
        return f"{self.bank_name} {self.masked_account_number}"

    def takes(self, currency: str) -> bool:
        """Whether a payout in `currency` can go to this account (one without a currency takes any)."""
        return not self.currency or self.currency == currency

    @property
    def masked_account_number(self) -> str:
        return f"•••• {self.account_number_last4}"

    @property
    def can_receive_transfers(self) -> bool:
        """Whether a provider can pay this account: it needs the full number (or a recipient code)."""
        return bool(self.account_number_encrypted or self.recipient_code)


class Withdrawal(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    OPEN_STATUSES = (Status.PENDING, Status.PROCESSING)

    reference = models.CharField(max_length=32, unique=True, default=new_withdrawal_reference)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="withdrawals")
    bank_account = models.ForeignKey(BankAccount, on_delete=models.PROTECT, related_name="withdrawals")
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.TextField(blank=True)
    transaction = models.OneToOneField(WalletTransaction, on_delete=models.PROTECT, related_name="withdrawal")
    # How the money leaves (finance.payouts): "" until staff send it, then "manual" (paid by other
    # means, completed at once) or the provider's name (the withdrawal is "processing" until
    # the provider's callback, or a query, settles it).
    payout_method = models.CharField(max_length=20, blank=True)
    # Our reference for the transfer, sent with every call about it: the provider's idempotency
    # key, so a retry after a timeout never pays twice. Set once, never changed.
    transfer_reference = models.CharField(max_length=64, blank=True)
    # The provider's own id for the transfer (Paystack's TRF_…, Flutterwave's id, M-Pesa's ConversationID).
    provider_transfer_id = models.CharField(max_length=100, blank=True)
    payout_sent_at = models.DateTimeField(null=True, blank=True, help_text="When staff sent the payout.")
    payout_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the provider was last asked about the transfer."
    )
    payout_error = models.TextField(blank=True, help_text="The last provider error while sending (retried).")
    processed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [
            ("complete_withdrawal", "Can complete a withdrawal"),
            ("fail_withdrawal", "Can fail a withdrawal"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="withdrawal_amount_positive"),
            models.UniqueConstraint(
                fields=["transfer_reference"],
                condition=~Q(transfer_reference=""),
                name="withdrawal_transfer_reference_once",
            ),
        ]
        # (status, processed_at): the queue's Completed and Failed tabs, newest first.
        # (status, payout_sent_at): the Processing tab, oldest first, and the stuck-transfer query.
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["status", "processed_at"], name="withdrawal_status_processed"),
            models.Index(fields=["status", "payout_sent_at"], name="withdrawal_status_sent"),
        ]

    def __str__(self):
        return self.reference

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def transfer_in_flight(self) -> bool:
        """A provider is moving this money: only its callback (or a query) may settle it now."""
        return self.status == self.Status.PROCESSING and self.payout_method not in ("", "manual")

    def stable_transfer_reference(self) -> str:
        """The transfer reference every provider call about this payout carries (lowercase
        letters, digits and dashes: what Paystack accepts), the same on every retry."""
        return f"payout-{self.reference.lower()}"


class Property(models.Model):
    host = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="properties")
    title = models.CharField(max_length=200)
    country = models.CharField(max_length=2)
    city = models.CharField(max_length=100, blank=True)
    currency = models.CharField(max_length=3)
    nightly_rate = models.DecimalField(**MONEY, default=Decimal("0"))

    class Meta:
        verbose_name_plural = "properties"

    def __str__(self):
        return self.title


class Booking(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending payment"
        CONFIRMED = "confirmed", "Confirmed"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"
        REFUNDED = "refunded", "Refunded"

    guest = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings")
    rental_property = models.ForeignKey(Property, on_delete=models.PROTECT, related_name="bookings")
    check_in = models.DateField()
    check_out = models.DateField()
    grand_total = models.DecimalField(**MONEY)
    commission_fee = models.DecimalField(**MONEY, default=Decimal("0"))
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("refund_booking", "Can refund a booking")]
        constraints = [
            models.CheckConstraint(condition=Q(check_out__gt=F("check_in")), name="booking_dates_ordered"),
            models.CheckConstraint(
                condition=Q(commission_fee__gte=0, commission_fee__lte=F("grand_total")),
                name="booking_commission_within_total",
            ),
        ]

    def __str__(self):
        return f"Booking #{self.pk} · {self.rental_property}"

    @property
    def host_payout(self) -> Decimal:
        return self.grand_total - self.commission_fee


class PaymentQuerySet(models.QuerySet):
    def refundable_for(self, booking) -> "PaymentQuerySet":
        """The booking's payments the ledger applied, oldest first: a refund draws on the first."""
        return self.filter(booking_id=booking.pk, ledger_transaction__isnull=False).order_by("pk")


class Payment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCESS = "success", "Successful"
        FAILED = "failed", "Failed"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        REFUNDED = "refunded", "Refunded"

    class CheckoutStatus(models.TextChoices):
        # Reserved: the row exists but no provider has opened a checkout for it yet (the call is
        # in flight, or it failed and the guest's next checkout call tries again).
        RESERVED = "reserved", "Being prepared"
        OPEN = "open", "Open at the provider"

    class ReceiptStatus(models.TextChoices):
        NONE = "none", "Not sent"
        QUEUED = "queued", "Queued"
        RETRYING = "retrying", "Retrying"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    OPEN_STATUSES = (Status.PENDING,)

    # Unique by named constraints, without LIKE indexes (see WalletTransaction.reference).
    reference = models.CharField(max_length=32, default=new_payment_reference)
    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(max_length=20)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # NULL, not "", until the provider names the payment: unique, yet many may lack one.
    provider_reference = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    refunded_amount = models.DecimalField(**MONEY, default=Decimal("0"))
    commission_refunded = models.DecimalField(**MONEY, default=Decimal("0"))
    ledger_transaction = models.OneToOneField(
        WalletTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="payment"
    )
    checkout = models.JSONField(default=dict, blank=True, help_text="What the provider's checkout needs.")
    failure_reason = models.TextField(blank=True)
    checkout_status = models.CharField(max_length=10, choices=CheckoutStatus.choices, default=CheckoutStatus.OPEN)
    # Set while a checkout call to the provider is in flight (outside any transaction); a call
    # older than the provider's timeout is abandoned and the next checkout may take it over.
    checkout_started_at = models.DateTimeField(null=True, blank=True)
    checkout_error = models.TextField(blank=True, help_text="Why the last checkout call failed (for staff).")
    receipt_status = models.CharField(max_length=10, choices=ReceiptStatus.choices, default=ReceiptStatus.NONE)
    receipt_error = models.TextField(blank=True)
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PaymentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(refunded_amount__lte=F("amount")), name="payment_refunds_within_amount"),
            models.UniqueConstraint(fields=["reference"], name="payment_reference_unique"),
            models.UniqueConstraint(fields=["provider_reference"], name="payment_provider_reference_unique"),
            # At most one open (pending) payment per booking: never a second charge.
            models.UniqueConstraint(
                fields=["booking"], condition=Q(status="pending"), name="payment_one_open_per_booking"
            ),
        ]

    def __str__(self):
        return self.reference

    @property
    def refundable_amount(self) -> Decimal:
        """What can still be refunded of this payment."""
        return self.amount - self.refunded_amount


class IdempotencyRecord(models.Model):
    """Remembers the first result of a money operation called with an idempotency key."""

    key = models.CharField(max_length=255)
    operation = models.CharField(max_length=50)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the operation's parameters.")
    transaction = models.ForeignKey(WalletTransaction, null=True, on_delete=models.CASCADE, related_name="+")
    withdrawal = models.ForeignKey(Withdrawal, null=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "operation"], name="idempotency_key_unique")]

    def __str__(self):
        return f"{self.operation}:{self.key}"


class LedgerAudit(models.Model):
    """What a money operation did, written in the same database transaction as the money."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Written on every posting, read rarely: only the lookups the portal makes are indexed.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    action = models.CharField(max_length=50)
    wallet = models.ForeignKey(Wallet, null=True, blank=True, on_delete=models.PROTECT, related_name="audit")
    transaction = models.ForeignKey(
        WalletTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="audit", db_index=False
    )
    amount = models.DecimalField(**MONEY, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    reason = models.TextField(blank=True)
    balance_before = models.DecimalField(**MONEY, null=True, blank=True)
    balance_after = models.DecimalField(**MONEY, null=True, blank=True)
    held_before = models.DecimalField(**MONEY, null=True, blank=True)
    held_after = models.DecimalField(**MONEY, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The transaction page reads a transaction's audit rows (portal.selectors.transaction_trail).
        indexes = [
            models.Index(
                fields=["transaction"], name="ledger_audit_transaction", condition=Q(transaction__isnull=False)
            )
        ]

    def __str__(self):
        return f"{self.action} by {self.actor or 'system'}"


class WebhookEvent(models.Model):
    """The webhook inbox: every verified provider event, once, with what became of it."""

    class Outcome(models.TextChoices):
        RECEIVED = "received", "Received"
        APPLIED = "applied", "Applied"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        PAYOUT_FAILED = "payout_failed", "Payout failed"
        REFUND_FAILED = "refund_failed", "Refund failed"
        IGNORED = "ignored", "Ignored (event type not handled)"
        FLAGGED = "flagged", "Flagged for staff"
        REJECTED = "rejected", "Rejected (malformed)"

    # The outcomes staff must look at: the inbox's "needs attention" tab, the dashboard's
    # card, and the only ones that may be replayed.
    NEEDS_ATTENTION = (Outcome.FLAGGED, Outcome.REJECTED)

    provider = models.CharField(max_length=20)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100, blank=True)
    raw_body = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RECEIVED, db_index=True)
    reason = models.TextField(blank=True)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="webhook_events")
    # Set instead of `payment` for a payout transfer's callback.
    withdrawal = models.ForeignKey(
        "Withdrawal", null=True, blank=True, on_delete=models.PROTECT, related_name="webhook_events"
    )
    # Set instead of `payment` for a refund's callback.
    refund = models.ForeignKey(
        "ProviderRefund", null=True, blank=True, on_delete=models.PROTECT, related_name="webhook_events"
    )
    replay_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-received_at", "-id"]
        permissions = [("replay_webhookevent", "Can replay a webhook event")]
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_once_per_provider")]
        # The inbox's search by event id, whichever the provider (the unique index leads with the provider).
        indexes = [models.Index(fields=["event_id"], name="webhook_event_id")]

    def __str__(self):
        return f"{self.provider} {self.event_id}"


class WebhookRejectionCount(models.Model):
    """How many webhook posts failed signature verification, per provider and day (the current
    time zone's). Such a post is never stored: only this number grows, by one atomic upsert per
    post (finance.payments.count_refused_post), so every app server adds to the same row and a
    forged flood updates one row instead of writing one per post."""

    provider = models.CharField(max_length=20)
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "day"], name="webhook_rejection_count_per_provider_day")
        ]

    def __str__(self):
        return f"{self.provider} {self.day}: {self.count}"


class ApiIdempotencyRecord(models.Model):
    """An `Idempotency-Key` seen by the API: the first response, replayed for the same request."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method_path = models.CharField(max_length=300)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="api_idempotency_key_per_user")]

    def __str__(self):
        return f"{self.user_id}:{self.key}"


class ApprovalRequest(models.Model):
    """A money action that needs a second finance approver (four-eyes).

    The requester can never approve their own request: `finance.approvals` refuses it and
    a check constraint makes the database refuse it too. The Meta also carries the
    finance dashboard's permission (the roles in portal/roles.py grant it).
    """

    class Kind(models.TextChoices):
        REVERSAL = "reversal", "Reversal"
        WITHDRAWAL = "withdrawal", "Withdrawal completion"
        REFUND = "refund", "Refund"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed on execution"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_requests_made"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approval_requests_decided",
    )
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    reason = models.TextField(blank=True)
    # Why it needed a second person (finance.approvals.approval_reason), shown in the queue.
    approval_reason = models.TextField(blank=True)
    decision_note = models.TextField(blank=True)
    transaction = models.ForeignKey(
        WalletTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    withdrawal = models.ForeignKey(Withdrawal, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    booking = models.ForeignKey(Booking, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=64, unique=True)
    result_reference = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [
            ("approve_request", "Can approve money actions that need a second person"),
            ("view_finance_dashboard", "Can open the finance dashboard"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | ~Q(approved_by=F("requested_by")),
                name="approval_not_by_requester",
            ),
            # At most one pending request per thing to be decided, held by the database: two
            # people filing the same reversal at the same instant cannot both get one queued
            # (the second waits on the index, then is refused as "already waiting").
            *(
                models.UniqueConstraint(
                    fields=[target],
                    condition=Q(status="pending", kind=kind),
                    name=f"approval_one_pending_{kind}",
                )
                for kind, target in (("reversal", "transaction"), ("withdrawal", "withdrawal"), ("refund", "booking"))
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="approval_status_created")]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"


class WithdrawalBatchQuerySet(models.QuerySet):
    def with_counts(self) -> "WithdrawalBatchQuerySet":
        """Each batch with its progress, counted from its items: `done` (finished, whatever the
        outcome), `completed` (paid out at once: the manual route) and `sent` (a provider's
        transfer on its way). Progress comes from the database, so everyone who looks sees
        the same numbers."""
        Outcome = WithdrawalBatchItem.Outcome
        return self.annotate(
            done=models.Count("items", filter=~Q(items__outcome=Outcome.PENDING)),
            completed=models.Count("items", filter=Q(items__outcome=Outcome.COMPLETED)),
            sent=models.Count("items", filter=Q(items__outcome=Outcome.SENT)),
        )

    def recent(self, *, since) -> "WithdrawalBatchQuerySet":
        """Batches still to finish, and those finished since `since`, newest first."""
        active = Q(status__in=WithdrawalBatch.ACTIVE_STATUSES)
        return self.filter(active | Q(finished_at__gte=since)).order_by("-created_at")


class WithdrawalBatch(models.Model):
    """A bulk completion of withdrawals, carried out by a background job (finance.bulk).

    Its id is the idempotency key of the confirmation that started it, so a double submit
    finds the batch it already started."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField()
    finished_at = models.DateTimeField(null=True, blank=True)
    job_id = models.UUIDField(null=True, blank=True, help_text="The job's row (django_tasks_db DBTaskResult).")

    objects = WithdrawalBatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Bulk completion of {self.total} withdrawals by {self.created_by}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES


class WithdrawalBatchItem(models.Model):
    """One withdrawal of a batch, and what became of it."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        SENT = "sent", "Sent to the provider"
        NEEDS_APPROVAL = "needs_approval", "Needs a second approver"
        ERROR = "error", "Not completed"

    batch = models.ForeignKey(WithdrawalBatch, on_delete=models.CASCADE, related_name="items")
    withdrawal = models.ForeignKey(Withdrawal, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    message = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "position"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "position"], name="withdrawal_batch_item_position"),
            models.UniqueConstraint(fields=["batch", "withdrawal"], name="withdrawal_batch_item_once"),
        ]

    def __str__(self):
        return f"{self.withdrawal_id} in {self.batch_id}: {self.outcome}"


# --- refunds at the provider (finance.refunds) ---------------------------------------------


class ProviderRefund(models.Model):
    """A refund's journey at the provider that took the payment (finance.refunds).

    `process_refund` posts the refund to "refunds payable" and creates this row, queued, in the
    same transaction; a job then creates the refund at the provider (Paystack, Flutterwave,
    Stripe refunds; M-Pesa reversal) and the provider's signed callback, or a query, settles
    it: succeeded moves the amount out of "refunds payable" (the guest has the money), failed
    keeps it there and shows the provider's reason to staff, who may retry. A provider that
    cannot refund through an API ("manual") is paid by hand and marked refunded by staff.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing at the provider"
        SUCCEEDED = "succeeded", "Refunded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled (refund reversed)"

    OPEN_STATUSES = (Status.QUEUED, Status.PROCESSING, Status.FAILED)

    transaction = models.OneToOneField(WalletTransaction, on_delete=models.PROTECT, related_name="provider_refund")
    payment = models.ForeignKey("Payment", on_delete=models.PROTECT, related_name="provider_refunds")
    # The payment's provider, or "manual" when no provider refunds through an API.
    provider = models.CharField(max_length=20)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    # Our reference for the refund at the provider (its idempotency key where it takes one):
    # `refund-<transaction reference>`, with `-<attempt>` from the second attempt on, since a
    # provider keeps a failed refund under its key.
    refund_reference = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField(default=1)
    provider_refund_id = models.CharField(max_length=100, blank=True)
    failure_reason = models.TextField(blank=True, help_text="Why the provider refused or failed the refund.")
    last_error = models.TextField(blank=True, help_text="The last error while sending (retried).")
    sent_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("retry_refund", "Can retry a failed refund or mark it refunded by hand")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="provider_refund_amount_positive"),
            models.UniqueConstraint(fields=["refund_reference"], name="provider_refund_reference_unique"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="provider_refund_status"),
            models.Index(fields=["provider", "provider_refund_id"], name="provider_refund_provider_id"),
        ]

    def __str__(self):
        return self.refund_reference

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    def stable_refund_reference(self) -> str:
        """This attempt's reference: lowercase letters, digits and dashes (what every provider accepts)."""
        base = f"refund-{self.transaction.reference.lower()}"
        return base if self.attempt == 1 else f"{base}-{self.attempt}"


# --- negative host balances (receivables) --------------------------------------------------


class HostReceivable(models.Model):
    """What a host owes the platform: the part of a refund their wallet could not give back.

    A refund after the host withdrew the payout takes their wallet below zero (the guest is
    paid by the platform); the negative part is recorded here, on the refund's transaction.
    The host's next movements that add to their available balance (booking payouts first of
    all) recover it, oldest receivable first (ReceivableRecovery). The ledger check holds a
    wallet negative only by its outstanding receivables: max(0, held − balance) equals the
    sum of `amount − recovered` over them.
    """

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="receivables")
    transaction = models.OneToOneField(WalletTransaction, on_delete=models.PROTECT, related_name="receivable")
    currency = models.CharField(max_length=3)
    amount = models.DecimalField(**MONEY)
    recovered = models.DecimalField(**MONEY, default=Decimal("0"))
    created_at = models.DateTimeField()
    recovered_at = models.DateTimeField(null=True, blank=True, help_text="When the last of it was recovered.")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="receivable_amount_positive"),
            models.CheckConstraint(
                condition=Q(recovered__gte=0) & Q(recovered__lte=F("amount")), name="receivable_recovered_within"
            ),
        ]
        # The open receivables of a wallet, oldest first (recovery order).
        indexes = [
            models.Index(fields=["wallet", "id"], name="receivable_open", condition=Q(recovered__lt=F("amount")))
        ]

    def __str__(self):
        return f"{self.currency} {self.amount} owed by wallet {self.wallet_id}"

    @property
    def outstanding(self) -> Decimal:
        return self.amount - self.recovered


class ReceivableRecovery(models.Model):
    """One movement that recovered (part of) a receivable: a booking payout, a credit, a failed
    withdrawal's released hold, or the refund's reversal."""

    receivable = models.ForeignKey(HostReceivable, on_delete=models.PROTECT, related_name="recoveries")
    transaction = models.ForeignKey(WalletTransaction, on_delete=models.PROTECT, related_name="recoveries")
    amount = models.DecimalField(**MONEY)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="recovery_amount_positive")]

    def __str__(self):
        return f"{self.amount} of receivable {self.receivable_id} by {self.transaction_id}"


# --- reconciliation against the providers' reports (finance.reconciliation) ----------------


class ReconciliationReport(models.Model):
    """One provider report read for reconciliation: a CSV staff uploaded, or what the periodic
    job fetched through the provider's API. Its lines are matched against the ledger."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded CSV"
        API = "api", "Fetched from the provider's API"

    provider = models.CharField(max_length=20)
    source = models.CharField(max_length=10, choices=Source.choices)
    file_name = models.CharField(max_length=255, blank=True)
    # The days the report covers (provider's dates, in UTC); a day counts as reconciled once a
    # report covering it has been matched.
    first_day = models.DateField()
    last_day = models.DateField()
    line_count = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # SHA-256 of the file's bytes: the same file uploaded twice is read once.
    checksum = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("reconcile", "Can upload provider reports and resolve reconciliation differences")]
        indexes = [models.Index(fields=["provider", "last_day"], name="recon_report_provider_day")]

    def __str__(self):
        return f"{self.provider} {self.first_day}–{self.last_day}"


class ReconciliationLine(models.Model):
    """One line of a provider's report, or one ledger record the report lacks, and how it matched."""

    class State(models.TextChoices):
        MATCHED = "matched", "Matched"
        DIFFERS = "differs", "Amount or currency differs"
        MISSING_IN_LEDGER = "missing_in_ledger", "Missing in the ledger"
        MISSING_AT_PROVIDER = "missing_at_provider", "Missing at the provider"

    class Kind(models.TextChoices):
        PAYMENT = "payment", "Payment"
        REFUND = "refund", "Refund"
        PAYOUT = "payout", "Payout"

    UNRESOLVED_STATES = (State.DIFFERS, State.MISSING_IN_LEDGER, State.MISSING_AT_PROVIDER)

    report = models.ForeignKey(ReconciliationReport, on_delete=models.CASCADE, related_name="lines")
    provider = models.CharField(max_length=20)
    day = models.DateField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=20, choices=State.choices)
    # The reference the line was matched by (ours or the provider's), as the report gives it.
    provider_reference = models.CharField(max_length=100)
    # What the provider's report says (empty for "missing at the provider").
    amount = models.DecimalField(**MONEY, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    provider_status = models.CharField(max_length=40, blank=True)
    # What the ledger says (empty for "missing in the ledger").
    ledger_amount = models.DecimalField(**MONEY, null=True, blank=True)
    ledger_currency = models.CharField(max_length=3, blank=True)
    payment = models.ForeignKey("Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    withdrawal = models.ForeignKey(Withdrawal, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    refund = models.ForeignKey(ProviderRefund, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    raw = models.JSONField(default=dict, blank=True, help_text="The report's row as read.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_note = models.TextField(blank=True)

    class Meta:
        ordering = ["day", "id"]
        indexes = [
            models.Index(fields=["provider", "day", "state"], name="recon_line_provider_day"),
            models.Index(fields=["state", "resolved_at"], name="recon_line_unresolved"),
        ]

    def __str__(self):
        return f"{self.provider} {self.day} {self.provider_reference}: {self.state}"

    @property
    def needs_resolving(self) -> bool:
        return self.state in self.UNRESOLVED_STATES and self.resolved_at is None
