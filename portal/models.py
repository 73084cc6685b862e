from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who signs in: a host, a guest, or a member of staff.

    Staff roles (Finance, Support, Manager...) are Django groups; `role` only tells the
    marketplace side apart, which broadcasts and statements need.
    """

    class Role(models.TextChoices):
        HOST = "host", "Host"
        GUEST = "guest", "Guest"
        STAFF = "staff", "Staff"

    role = models.CharField(max_length=10, choices=Role.choices, default=Role.GUEST, db_index=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 code")

    def __str__(self):
        return self.get_full_name() or self.username


class ApprovalRequest(models.Model):
    """A money action that needs a second finance approver (four-eyes).

    The requester can never approve their own request: the service refuses it and a check
    constraint makes the database refuse it too. The Meta also carries the portal's own
    permissions (the roles in portal/roles.py grant them).
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
    requested_by = models.ForeignKey("portal.User", on_delete=models.PROTECT, related_name="approval_requests_made")
    approved_by = models.ForeignKey(
        "portal.User", null=True, blank=True, on_delete=models.PROTECT, related_name="approval_requests_decided"
    )
    amount = models.DecimalField(max_digits=20, decimal_places=4)
    currency = models.CharField(max_length=3)
    reason = models.TextField(blank=True)
    decision_note = models.TextField(blank=True)
    transaction = models.ForeignKey(
        "finance.WalletTransaction", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    withdrawal = models.ForeignKey(
        "finance.Withdrawal", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    booking = models.ForeignKey("finance.Booking", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=64, unique=True)
    result_reference = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [
            ("approve_request", "Can approve money actions that need a second person"),
            ("view_finance_dashboard", "Can open the finance dashboard"),
            ("view_audit_log", "Can read the staff audit log"),
            ("send_broadcast", "Can send broadcasts"),
            ("view_messaging_stats", "Can read the messaging stats"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(approved_by__isnull=True) | ~models.Q(approved_by=models.F("requested_by")),
                name="approval_not_by_requester",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"
