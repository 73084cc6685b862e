"""Conversations, messages and broadcasts.

A message's UUID is chosen by the sender side (Django or the Erlang service) before the
row exists, so the Erlang persistence callback can insert idempotently: a replay after a
crash finds the same primary key and stores nothing twice. A message that callback cannot
store is kept as a DeadLetterMessage instead, with the reason.
"""

import uuid

from django.conf import settings
from django.db import models
from django.template.defaultfilters import pluralize

# The countries the marketplace serves: what "hosts in a country" offers, and how it is named.
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
COUNTRY_NAMES = dict(COUNTRIES)


class Priority(models.TextChoices):
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


class Conversation(models.Model):
    participants = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="conversations")
    subject = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.subject or f"Conversation #{self.pk}"


class Broadcast(models.Model):
    """A message from support to many users, fanned out by the Erlang service.

    Recording it enqueues the fan-out job (messaging.tasks.fan_out_broadcast): queued until a
    worker hands it to Erlang (sending, then delivered as Erlang reports progress); retrying
    while Erlang cannot be reached; on the job's last attempt the rows are written here
    directly (delivered, via_fallback). Failed only when even that is impossible.
    """

    class Audience(models.TextChoices):
        ALL_HOSTS = "all_hosts", "All hosts"
        ALL_GUESTS = "all_guests", "All guests"
        HOSTS_IN_COUNTRY = "hosts_in_country", "Hosts in a country"
        USER_IDS = "user_ids", "A list of users"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Retrying"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="broadcasts_sent")
    audience = models.CharField(max_length=20, choices=Audience.choices)
    country = models.CharField(max_length=2, blank=True, help_text="For hosts in a country.")
    user_ids = models.JSONField(default=list, blank=True, help_text="For a list of users.")
    text = models.TextField()
    priority = models.CharField(max_length=6, choices=Priority.choices, default=Priority.NORMAL)
    total = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0, help_text="Recipients whose message is in their queue.")
    delivered_online = models.PositiveIntegerField(
        default=0, help_text="Of those, how many had a connected session and got it pushed live."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    job_id = models.UUIDField(null=True, blank=True, help_text="The fan-out job (a background job's id).")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Fan-out attempts so far.")
    last_error = models.CharField(max_length=300, blank=True, help_text="Why the last attempt failed.")
    via_fallback = models.BooleanField(default=False, help_text="Written by Django because Erlang was unreachable.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("send_broadcast", "Can send broadcasts"),
            ("view_messaging_stats", "Can read the messaging stats"),
        ]

    def __str__(self):
        return f"Broadcast to {self.audience_label} ({self.created_at:%d %b %Y %H:%M})"

    @property
    def audience_label(self) -> str:
        if self.audience == self.Audience.HOSTS_IN_COUNTRY:
            return f"hosts in {COUNTRY_NAMES.get(self.country, self.country)}"
        if self.audience == self.Audience.USER_IDS:
            count = len(self.user_ids)
            return f"{count} chosen user{pluralize(count)}"
        return self.get_audience_display().lower()

    @property
    def handed_over(self) -> bool:
        """Erlang accepted it, or its rows are written: the fan-out job has nothing left to do."""
        return self.status in (self.Status.SENDING, self.Status.DELIVERED)

    @property
    def in_progress(self) -> bool:
        """Still moving: the progress panel keeps polling."""
        return self.status in (self.Status.QUEUED, self.Status.SENDING, self.Status.RETRYING)

    @property
    def queued_offline(self) -> int:
        """Delivered to users who were offline: it waits for them until they next open the app."""
        return max(0, self.delivered - self.delivered_online)

    @property
    def progress_percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.delivered / self.total))


class Message(models.Model):
    class Via(models.TextChoices):
        ERLANG = "erlang", "Erlang service"
        FALLBACK = "fallback", "Direct (Erlang unreachable)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="messages"
    )
    broadcast = models.ForeignKey(Broadcast, null=True, blank=True, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages_sent")
    receiver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages_received")
    text = models.TextField()
    priority = models.CharField(max_length=6, choices=Priority.choices, default=Priority.NORMAL)
    created_at = models.DateTimeField(db_index=True)
    stored_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    via = models.CharField(max_length=10, choices=Via.choices, default=Via.ERLANG)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["receiver", "created_at"])]

    def __str__(self):
        return f"{self.sender} → {self.receiver}: {self.text[:40]}"


class DeadLetterMessage(models.Model):
    """A message the Erlang service handed over for storage that could not be stored.

    It counts as settled (the Erlang side drops it from its write-ahead log), so it blocks
    nothing; this row is what is left of it, for support to read. Replays of the same message
    (after a crash, before the WAL learnt it was settled) update the one row: `times_seen`.

    Nothing here may be refused by the database, or recording the refusal would fail too:
    - the ids are copied as given, as plain integers (not foreign keys: the user or the
      conversation may not exist) and null when not an integer a bigint column holds;
    - `payload` is a safe copy of what was received: jsonb holds neither NUL nor lone UTF-16
      surrogates, so NUL is shown as U+2400 "␀" and a lone surrogate as its escape text
      ("\\ud800"), and very long strings are cut (messaging.services.safe_copy).
    """

    message_id = models.CharField(
        max_length=100,
        unique=True,
        help_text="The message's id as given, or a digest of the payload when it had none.",
    )
    reason = models.CharField(max_length=200)
    sender_id = models.BigIntegerField(null=True, blank=True)
    receiver_id = models.BigIntegerField(null=True, blank=True)
    conversation_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(help_text="A safe copy of the message as received.")
    times_seen = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen", "-id"]
        indexes = [models.Index(fields=["-last_seen", "-id"], name="deadletter_newest")]
        verbose_name = "undeliverable message"

    def __str__(self):
        return f"Undeliverable message {self.message_id}: {self.reason}"
