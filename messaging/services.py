"""Sending messages and broadcasts, and storing what the Erlang service persists.

Messages go through Erlang (durable write-ahead log, priority routing, WebSocket push,
then batch persistence back here by UUID). When Erlang cannot be reached, the row is
written here directly and the sender sees the same success: the fallback.
"""

import logging
import uuid
from datetime import UTC

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from wagtail.log_actions import log

from finance import permissions
from finance.errors import TransactionError

from .erlang import ErlangUnavailable, erlang_client
from .models import Broadcast, Conversation, Message, Priority

logger = logging.getLogger("messaging")
User = get_user_model()
MAX_TEXT = 5000


class MessagingError(TransactionError):
    code = "invalid_message"


def _clean_text(text) -> str:
    text = (text or "").strip() if isinstance(text, str) else ""
    if not text:
        raise MessagingError("Write a message first.", field="text")
    if len(text) > MAX_TEXT:
        raise MessagingError(f"Messages are at most {MAX_TEXT} characters.", field="text")
    return text


def _clean_priority(priority) -> str:
    if priority not in Priority.values:
        raise MessagingError("Priority is high, normal or low.", field="priority")
    return priority


# --- conversations ----------------------------------------------------------------------------


def send_message(conversation: Conversation, sender, text, priority="normal", receiver=None) -> dict:
    """Send `text` to the other participant(s); returns what the caller shows.

    Through Erlang the row appears once the persistence batch arrives; without Erlang it is
    written now. Either way the caller gets the message id and sees success.
    """
    text, priority = _clean_text(text), _clean_priority(priority)
    receivers = [receiver] if receiver else list(conversation.participants.exclude(pk=sender.pk))
    if not receivers:
        raise MessagingError("This conversation has nobody else in it.")
    sent = [_send_one(conversation, sender, to, text, priority) for to in receivers]
    return sent[0] if len(sent) == 1 else {"messages": sent}


def _send_one(conversation, sender, receiver, text, priority) -> dict:
    message_id = uuid.uuid4()
    try:
        answer = erlang_client.send_message(
            conversation.pk, sender.pk, receiver.pk, text, priority, message_id=message_id
        )
        return {
            "id": str(message_id),
            "status": "accepted",
            "via": Message.Via.ERLANG,
            "receiver": receiver.pk,
            "dropped": answer.get("dropped", 0),
        }
    except ErlangUnavailable as error:
        logger.warning("Erlang unavailable, storing message %s directly: %s", message_id, error)
        Message.objects.create(
            id=message_id,
            conversation=conversation,
            sender=sender,
            receiver=receiver,
            text=text,
            priority=priority,
            created_at=timezone.now(),
            via=Message.Via.FALLBACK,
        )
        return {"id": str(message_id), "status": "stored", "via": Message.Via.FALLBACK, "receiver": receiver.pk}


# --- broadcasts -------------------------------------------------------------------------------


def audience_users(audience: str, *, country: str = "", user_ids=()):
    """The active, non-staff users a broadcast would reach."""
    users = User.objects.filter(is_active=True)
    if audience == Broadcast.Audience.ALL_HOSTS:
        return users.filter(role="host")
    if audience == Broadcast.Audience.ALL_GUESTS:
        return users.filter(role="guest")
    if audience == Broadcast.Audience.HOSTS_IN_COUNTRY:
        if not country:
            raise MessagingError("Choose the country.", field="country")
        return users.filter(role="host", country=country.upper())
    if audience == Broadcast.Audience.USER_IDS:
        ids = [int(i) for i in user_ids if str(i).isdigit()]
        if not ids:
            raise MessagingError("Give at least one user id.", field="user_ids")
        return users.filter(pk__in=ids)
    raise MessagingError("Choose who receives the broadcast.", field="audience")


def create_broadcast(
    author, *, audience, text, priority="normal", country="", user_ids=(), broadcast_id=None
) -> Broadcast:
    """Record the broadcast and hand its fan-out to Erlang (or write the rows here if it is down).

    With `broadcast_id` (an idempotency key) a second call with the same id returns the first
    call's broadcast and sends nothing again."""
    permissions.require(author, permissions.SEND_BROADCAST)
    if broadcast_id is not None:
        sent = Broadcast.objects.filter(pk=broadcast_id, author=author).first()
        if sent is not None:
            return sent
    text, priority = _clean_text(text), _clean_priority(priority)
    recipients = list(audience_users(audience, country=country, user_ids=user_ids).values_list("pk", flat=True))
    if not recipients:
        raise MessagingError("Nobody is in this audience.", field="audience")
    try:
        broadcast = _record_broadcast(
            author,
            audience=audience,
            text=text,
            priority=priority,
            country=country,
            user_ids=user_ids,
            recipients=len(recipients),
            broadcast_id=broadcast_id,
        )
    except IntegrityError:  # the same id, sent at the same moment: that call sends it
        if broadcast_id is None:
            raise
        return Broadcast.objects.get(pk=broadcast_id, author=author)
    try:
        erlang_client.broadcast_message(
            author.pk, recipients, text, priority, broadcast_id=broadcast.pk, audience=broadcast.audience_label
        )
    except ErlangUnavailable as error:
        logger.warning("Erlang unavailable, writing broadcast %s directly: %s", broadcast.pk, error)
        _fan_out_here(broadcast, recipients)
    return broadcast


def _record_broadcast(author, *, audience, text, priority, country, user_ids, recipients, broadcast_id) -> Broadcast:
    with transaction.atomic():
        broadcast = Broadcast.objects.create(
            **({"id": broadcast_id} if broadcast_id is not None else {}),
            author=author,
            audience=audience,
            country=country.upper() if country else "",
            user_ids=[int(i) for i in user_ids],
            text=text,
            priority=priority,
            total=recipients,
        )
        log(
            broadcast,
            "stayafrica.broadcast.send",
            user=author,
            data={"audience": broadcast.audience_label, "recipients": recipients, "text": text[:200]},
        )
    return broadcast


def _fan_out_here(broadcast: Broadcast, recipients: list[int]) -> None:
    now = timezone.now()
    with transaction.atomic():
        Message.objects.bulk_create(
            [
                Message(
                    broadcast=broadcast,
                    sender_id=broadcast.author_id,
                    receiver_id=receiver,
                    text=broadcast.text,
                    priority=broadcast.priority,
                    created_at=now,
                    via=Message.Via.FALLBACK,
                )
                for receiver in recipients
            ],
            batch_size=1000,
        )
        Broadcast.objects.filter(pk=broadcast.pk).update(
            delivered=len(recipients), status=Broadcast.Status.DONE, via_fallback=True, completed_at=now
        )
    broadcast.refresh_from_db()


def record_broadcast_progress(broadcast_id, *, delivered: int, total: int, status: str) -> Broadcast | None:
    """Erlang's progress report. Counts only move forward: a late report never undoes a newer one."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().filter(pk=broadcast_id).first()
        if broadcast is None:
            return None
        broadcast.delivered = max(broadcast.delivered, min(int(delivered), int(total)))
        broadcast.total = max(broadcast.total, int(total))
        if status == "done" and broadcast.status != Broadcast.Status.DONE:
            broadcast.status = Broadcast.Status.DONE
            broadcast.completed_at = timezone.now()
        broadcast.save(update_fields=["delivered", "total", "status", "completed_at"])
    return broadcast


# --- the persistence callback -------------------------------------------------------------------


def persist_messages(items: list) -> dict:
    """Store a batch from Erlang, idempotently by UUID: {"stored", "duplicates", "rejected"}."""
    valid, rejected = [], []
    for index, item in enumerate(items):
        try:
            valid.append(_message_from(item))
        except (MessagingError, ValueError, TypeError, KeyError) as error:
            rejected.append({"id": _id_of(item, index), "error": str(error)})
    _drop_unknown_references(valid, rejected)
    ids = [m.pk for m in valid]
    existing = set(Message.objects.filter(pk__in=ids).values_list("pk", flat=True))
    new = [m for m in valid if m.pk not in existing]
    Message.objects.bulk_create(new, ignore_conflicts=True, batch_size=1000)
    return {
        "stored": [str(m.pk) for m in new],
        "duplicates": [str(pk) for pk in existing],
        "rejected": rejected,
    }


def _id_of(item, index) -> str:
    return str(item.get("id", f"#{index}")) if isinstance(item, dict) else f"#{index}"


def _message_from(item: dict) -> Message:
    if not isinstance(item, dict):
        raise MessagingError("Each message must be an object.")
    created = item.get("created_at")
    created_at = parse_datetime(created) if isinstance(created, str) else None
    if created_at is None:
        created_at = timezone.now()
    elif timezone.is_naive(created_at):
        created_at = created_at.replace(tzinfo=UTC)
    for name in ("sender_id", "receiver_id"):
        if isinstance(item.get(name), bool) or not isinstance(item.get(name), int):
            raise MessagingError(f"{name} must be an integer.")
    conversation_id = item.get("conversation_id")
    if conversation_id is not None and (isinstance(conversation_id, bool) or not isinstance(conversation_id, int)):
        raise MessagingError("conversation_id must be an integer or null.")
    return Message(
        id=uuid.UUID(str(item["id"])),
        conversation_id=conversation_id,
        broadcast_id=uuid.UUID(str(item["broadcast_id"])) if item.get("broadcast_id") else None,
        sender_id=item["sender_id"],
        receiver_id=item["receiver_id"],
        text=_clean_text(item.get("text")),
        priority=_clean_priority(item.get("priority", "normal")),
        created_at=created_at,
        via=Message.Via.ERLANG,
    )


def _drop_unknown_references(valid: list, rejected: list) -> None:
    """Reject messages whose users, conversation or broadcast do not exist (a FK error would fail the batch)."""
    user_ids = {m.sender_id for m in valid} | {m.receiver_id for m in valid}
    known_users = set(User.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    conversation_ids = {m.conversation_id for m in valid if m.conversation_id}
    known_conversations = set(Conversation.objects.filter(pk__in=conversation_ids).values_list("pk", flat=True))
    broadcast_ids = {m.broadcast_id for m in valid if m.broadcast_id}
    known_broadcasts = set(Broadcast.objects.filter(pk__in=broadcast_ids).values_list("pk", flat=True))
    for message in list(valid):
        problem = ""
        if message.sender_id not in known_users or message.receiver_id not in known_users:
            problem = "Unknown sender or receiver."
        elif message.conversation_id and message.conversation_id not in known_conversations:
            problem = "Unknown conversation."
        elif message.broadcast_id and message.broadcast_id not in known_broadcasts:
            message.broadcast_id = None  # a broadcast sent around Django: keep the message anyway
        if problem:
            valid.remove(message)
            rejected.append({"id": str(message.pk), "error": problem})
