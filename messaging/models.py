"""Conversations, messages and broadcasts.

A message's UUID is chosen by the sender side (Django or the Erlang service) before the
row exists, so the Erlang persistence callback can insert idempotently: a replay after a
crash finds the same primary key and stores nothing twice.
"""

import uuid

from django.conf import settings
from django.db import models


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
    """A message from support to many users, fanned out by the Erlang service."""

    class Audience(models.TextChoices):
        ALL_HOSTS = "all_hosts", "All hosts"
        ALL_GUESTS = "all_guests", "All guests"
        HOSTS_IN_COUNTRY = "hosts_in_country", "Hosts in a country"
        USER_IDS = "user_ids", "A list of users"

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        DONE = "done", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="broadcasts_sent")
    audience = models.CharField(max_length=20, choices=Audience.choices)
    country = models.CharField(max_length=2, blank=True, help_text="For hosts in a country.")
    user_ids = models.JSONField(default=list, blank=True, help_text="For a list of users.")
    text = models.TextField()
    priority = models.CharField(max_length=6, choices=Priority.choices, default=Priority.NORMAL)
    total = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
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
            return f"hosts in {self.country}"
        if self.audience == self.Audience.USER_IDS:
            return f"{len(self.user_ids)} chosen users"
        return self.get_audience_display().lower()

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
