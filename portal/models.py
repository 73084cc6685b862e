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

    class Meta(AbstractUser.Meta):
        # The audit log page is the portal's own (portal/views/audit.py), so its permission is too.
        permissions = [("view_audit_log", "Can read the staff audit log")]

    def __str__(self):
        return self.get_full_name() or self.username


class AuditTarget(models.Model):
    """What an audit entry is about when no row of the database is: "Sign-in", for a failed
    sign-in under a username no account has. Wagtail's ModelLogEntry points to an instance
    (content type and id), so such entries point to one of these few fixed rows."""

    name = models.CharField(max_length=100, unique=True)

    def __str__(self):
        return self.name
