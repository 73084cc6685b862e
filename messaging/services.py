"""Sending messages and broadcasts, and storing what the Erlang service persists.

Messages go through Erlang (durable write-ahead log, priority routing, WebSocket push,
then batch persistence back here by UUID). When Erlang cannot be reached, the row is
written here directly and the sender sees the same success: the fallback. A broadcast is
recorded here and fanned out by a background job (messaging.tasks), which retries while
Erlang is unreachable and falls back on its last attempt.
"""

import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from wagtail.log_actions import log

import request_context
from finance import permissions
from finance.errors import TransactionError

from .erlang import ErlangUnavailable, erlang_client
from .models import Broadcast, Conversation, DeadLetterMessage, Message, Priority

logger = logging.getLogger("messaging")
User = get_user_model()
MAX_TEXT = 5000
# What PostgreSQL's text and jsonb cannot hold: NUL, and the UTF-16 surrogate halves (a JSON
# "\ud800" without its partner becomes one, and UTF-8 cannot encode it).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class MessagingError(TransactionError):
    code = "invalid_message"


def _clean_text(text) -> str:
    text = (text or "").strip() if isinstance(text, str) else ""
    if not text:
        raise MessagingError("Write a message first.", field="text")
    if len(text) > MAX_TEXT:
        raise MessagingError(f"Messages are at most {MAX_TEXT} characters.", field="text")
    if "\x00" in text:
        raise MessagingError("Messages cannot contain the NUL character.", field="text")
    if UNSTORABLE.search(text):
        raise MessagingError("Messages cannot contain a lone UTF-16 surrogate (a broken character).", field="text")
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
    """Record the broadcast and enqueue its fan-out job (messaging.tasks.fan_out_broadcast) in
    the same transaction: the job exists exactly when the broadcast does.

    With `broadcast_id` (an idempotency key) a second call with the same id returns the first
    call's broadcast and sends nothing again."""
    permissions.require(author, permissions.SEND_BROADCAST)
    if broadcast_id is not None:
        sent = Broadcast.objects.filter(pk=broadcast_id, author=author).first()
        if sent is not None:
            return sent
    text, priority = _clean_text(text), _clean_priority(priority)
    recipients = audience_users(audience, country=country, user_ids=user_ids).count()
    if not recipients:
        raise MessagingError("Nobody is in this audience.", field="audience")
    try:
        return _record_broadcast(
            author,
            audience=audience,
            text=text,
            priority=priority,
            country=country,
            user_ids=user_ids,
            recipients=recipients,
            broadcast_id=broadcast_id,
        )
    except IntegrityError:  # the same id, sent at the same moment: that call sends it
        if broadcast_id is None:
            raise
        return Broadcast.objects.get(pk=broadcast_id, author=author)


def _record_broadcast(author, *, audience, text, priority, country, user_ids, recipients, broadcast_id) -> Broadcast:
    from .tasks import fan_out_broadcast  # tasks imports this module: import at call time

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
        broadcast.job_id = fan_out_broadcast.enqueue(str(broadcast.pk)).id
        broadcast.save(update_fields=["job_id"])
    return broadcast


# --- the fan-out job's steps (messaging.tasks.fan_out_broadcast) ------------------------------

# Statuses an attempt may leave: once Erlang has the broadcast (sending) or its rows exist
# (delivered), a late attempt or a retry must not move it back.
NOT_HANDED_OVER = (Broadcast.Status.QUEUED, Broadcast.Status.RETRYING, Broadcast.Status.FAILED)
ERROR_LENGTH = Broadcast._meta.get_field("last_error").max_length


def broadcast_recipients(broadcast: Broadcast) -> list[int]:
    """Who receives it, as of now (the audience is resolved when the job runs)."""
    users = audience_users(broadcast.audience, country=broadcast.country, user_ids=broadcast.user_ids)
    return list(users.order_by("pk").values_list("pk", flat=True))


def broadcast_message_id(broadcast_id, receiver_id: int) -> uuid.UUID:
    """The id of the broadcast's message to one receiver, the same as Erlang's
    (message_ids:derived_uuid): the first 16 bytes of sha256("<broadcast id>:<receiver id>")
    laid out as a version-8 UUID. The fallback writes the same ids, so a message that both
    Erlang and the fallback hand over is stored once (the persistence callback dedupes by id)."""
    digest = bytearray(hashlib.sha256(f"{broadcast_id}:{receiver_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return uuid.UUID(bytes=bytes(digest))


def hand_broadcast_to_erlang(broadcast: Broadcast, recipients: list[int], *, attempt: int) -> None:
    """Erlang makes it durable and fans it out; raises ErlangUnavailable or ErlangRejected.

    Safe to repeat: Erlang ignores a broadcast id it has accepted already, and its message ids
    are derived from the broadcast id and receiver, so nothing is delivered twice."""
    erlang_client.broadcast_message(
        broadcast.author_id,
        recipients,
        broadcast.text,
        broadcast.priority,
        broadcast_id=broadcast.pk,
        audience=broadcast.audience_label,
    )
    Broadcast.objects.filter(pk=broadcast.pk, status__in=NOT_HANDED_OVER).update(
        status=Broadcast.Status.SENDING, total=len(recipients), attempts=attempt, last_error=""
    )


def note_broadcast_retry(broadcast: Broadcast, error: Exception, *, attempt: int) -> None:
    """Erlang could not take it this time: staff see 'retrying' with the reason."""
    Broadcast.objects.filter(pk=broadcast.pk, status__in=NOT_HANDED_OVER).update(
        status=Broadcast.Status.RETRYING, attempts=attempt, last_error=str(error)[:ERROR_LENGTH]
    )


def note_broadcast_failed(broadcast: Broadcast, reason: str, *, attempt: int) -> None:
    Broadcast.objects.filter(pk=broadcast.pk, status__in=NOT_HANDED_OVER).update(
        status=Broadcast.Status.FAILED, attempts=attempt, last_error=reason[:ERROR_LENGTH]
    )


def fan_out_here(broadcast: Broadcast, recipients: list[int], *, attempt: int) -> None:
    """The fallback: write every recipient's row here, with Erlang's message ids, so rows Erlang
    stored already (or stores later) are not stored twice."""
    now = timezone.now()
    with transaction.atomic():
        Message.objects.bulk_create(
            [
                Message(
                    id=broadcast_message_id(broadcast.pk, receiver),
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
            ignore_conflicts=True,
        )
        Broadcast.objects.filter(pk=broadcast.pk).update(
            total=len(recipients),
            delivered=len(recipients),
            status=Broadcast.Status.DELIVERED,
            via_fallback=True,
            attempts=attempt,
            completed_at=now,
        )
    broadcast.refresh_from_db()


def record_broadcast_progress(
    broadcast_id, *, delivered: int, total: int, status: str, online: int = 0
) -> Broadcast | None:
    """Erlang's progress report: `delivered` recipients have it in their queue, `online` of them
    had a connected session and got it pushed live. Counts only move forward: a late report never
    undoes a newer one."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().filter(pk=broadcast_id).first()
        if broadcast is None:
            return None
        broadcast.delivered = max(broadcast.delivered, min(int(delivered), int(total)))
        broadcast.total = max(broadcast.total, int(total))
        broadcast.delivered_online = max(broadcast.delivered_online, min(int(online), broadcast.delivered))
        if status == "done" and broadcast.status != Broadcast.Status.DELIVERED:
            broadcast.status = Broadcast.Status.DELIVERED
            broadcast.completed_at = timezone.now()
        elif broadcast.status in NOT_HANDED_OVER:  # a report can arrive before the job notes the hand-over
            broadcast.status = Broadcast.Status.SENDING
        broadcast.save(update_fields=["delivered", "delivered_online", "total", "status", "completed_at"])
    return broadcast


# --- the persistence callback ---------------------------------------------------------------

# Every id column is a bigint (DEFAULT_AUTO_FIELD is BigAutoField): a larger id cannot exist,
# and PostgreSQL would answer "out of range" instead of finding no row.
MAX_ID = 2**63 - 1
STORED, DUPLICATE, REJECTED = "stored", "duplicate", "rejected"
# What the database may still refuse after the checks below: an error from the server, or one
# psycopg2 raises before sending (ValueError for NUL, UnicodeEncodeError for a surrogate).
DATABASE_REFUSALS = (DatabaseError, ValueError)


@dataclass
class Received:
    """One message of a batch as the Erlang service sent it, and what became of it."""

    item: object  # the JSON value as received (an object, when the sender behaves)
    id: str  # its id as given: the key the Erlang side settles it by ("#3" when it had none)
    message: Message | None = None  # the row to insert, while it passes every check
    outcome: str = ""  # STORED, DUPLICATE or REJECTED, once decided
    error: str = ""  # why it was rejected

    def reject(self, reason: str) -> None:
        self.outcome, self.error, self.message = REJECTED, reason, None


def persist_messages(items: list) -> dict:
    """Store a batch from Erlang, idempotently by UUID: {"stored", "duplicates", "rejected"}.

    Every message gets exactly one outcome, and no message can fail the others: one that cannot
    be stored is rejected with a reason and kept as a DeadLetterMessage. Any answer but 200
    makes the Erlang side send the whole batch again, so a single message answering 500 would
    block every later message for ever.
    """
    batch = [_receive(item, index) for index, item in enumerate(items)]
    _reject_unknown_references(_undecided(batch))
    _mark_duplicates(_undecided(batch))
    _insert(_undecided(batch))
    rejected = [received for received in batch if received.outcome == REJECTED]
    _keep_dead_letters(rejected)
    _log_batch(batch)
    return {
        "stored": [received.id for received in batch if received.outcome == STORED],
        "duplicates": [received.id for received in batch if received.outcome == DUPLICATE],
        "rejected": [{"id": received.id, "error": received.error} for received in rejected],
    }


def _log_batch(batch: list[Received]) -> None:
    """One line per batch, the callback's own request id on it (the log filter adds it), and each
    stored message's id paired with the id of the request that sent it (the item's "request_id",
    from the X-Request-Id the messaging service received): grepping a portal request's id finds
    the line that stored its message."""
    stored = {received.id: _origin_request_id(received.item) for received in batch if received.outcome == STORED}
    duplicates = sum(received.outcome == DUPLICATE for received in batch)
    rejected = sum(received.outcome == REJECTED for received in batch)
    logger.info(
        "persistence callback: %s stored, %s duplicates, %s rejected",
        len(stored),
        duplicates,
        rejected,
        extra={"stored": stored, "duplicates": duplicates, "rejected": rejected},
    )


def _origin_request_id(item) -> str | None:
    return request_context.valid_request_id(item.get("request_id")) if isinstance(item, dict) else None


def _undecided(batch: list[Received]) -> list[Received]:
    return [received for received in batch if not received.outcome]


def _receive(item, index: int) -> Received:
    received = Received(item=item, id=_id_of(item, index))
    try:
        received.message = _message_from(item)
    except (MessagingError, ValueError) as error:
        received.reject(str(error))
    return received


def _id_of(item, index) -> str:
    return str(item.get("id", f"#{index}")) if isinstance(item, dict) else f"#{index}"


def _message_from(item) -> Message:
    """The row for one received message. Refuses (MessagingError) what the product or PostgreSQL
    would refuse, so that the insert below is expected to succeed."""
    if not isinstance(item, dict):
        raise MessagingError("Each message must be an object.")
    return Message(
        id=_uuid_from(item.get("id")),
        conversation_id=_id_from(item, "conversation_id", nullable=True),
        broadcast_id=_broadcast_id_from(item.get("broadcast_id")),
        sender_id=_id_from(item, "sender_id"),
        receiver_id=_id_from(item, "receiver_id"),
        text=_clean_text(item.get("text")),
        priority=_clean_priority(item.get("priority", "normal")),
        created_at=_created_at_from(item.get("created_at")),
        via=Message.Via.ERLANG,
    )


def _uuid_from(value) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise MessagingError("id must be a UUID.")


def _id_from(item: dict, name: str, *, nullable: bool = False) -> int | None:
    value = item.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessagingError(f"{name} must be an integer{' or null' if nullable else ''}.")
    if not 1 <= value <= MAX_ID:
        raise MessagingError(f"{name} is not an id that can exist.")
    return value


def _broadcast_id_from(value) -> uuid.UUID | None:
    """The broadcast's UUID; anything else means no broadcast (the message is kept anyway)."""
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _created_at_from(value) -> datetime:
    created_at = parse_datetime(value) if isinstance(value, str) else None
    if created_at is None:
        return timezone.now()
    return created_at.replace(tzinfo=UTC) if timezone.is_naive(created_at) else created_at


def _reject_unknown_references(pending: list[Received]) -> None:
    """Reject messages whose users or conversation do not exist; forget unknown broadcasts.

    Checked here for a clear reason; a row deleted between this check and the insert is still
    refused there, for that message alone (see _insert)."""
    messages = [received.message for received in pending]
    user_ids = {m.sender_id for m in messages} | {m.receiver_id for m in messages}
    known_users = set(User.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    conversation_ids = {m.conversation_id for m in messages if m.conversation_id}
    known_conversations = set(Conversation.objects.filter(pk__in=conversation_ids).values_list("pk", flat=True))
    broadcast_ids = {m.broadcast_id for m in messages if m.broadcast_id}
    known_broadcasts = set(Broadcast.objects.filter(pk__in=broadcast_ids).values_list("pk", flat=True))
    for received in pending:
        message = received.message
        if message.sender_id not in known_users or message.receiver_id not in known_users:
            received.reject("Unknown sender or receiver.")
        elif message.conversation_id and message.conversation_id not in known_conversations:
            received.reject("Unknown conversation.")
        elif message.broadcast_id and message.broadcast_id not in known_broadcasts:
            message.broadcast_id = None  # a broadcast sent around Django: keep the message anyway


def _mark_duplicates(pending: list[Received]) -> None:
    """A message stored already (a batch replayed after a crash), or a second time in this batch."""
    seen = set(Message.objects.filter(pk__in=[r.message.pk for r in pending]).values_list("pk", flat=True))
    for received in pending:
        if received.message.pk in seen:
            received.outcome = DUPLICATE
        seen.add(received.message.pk)


def _insert(pending: list[Received]) -> None:
    """Insert the new messages in one statement; if the database refuses that, insert them one
    by one, so that only the messages it refuses are rejected."""
    if not pending:
        return
    with transaction.atomic():  # one commit for the batch; each attempt is a savepoint inside it
        try:
            _insert_checked([received.message for received in pending])
        except DATABASE_REFUSALS:
            for received in pending:
                _insert_one(received)
        else:
            for received in pending:
                received.outcome = STORED


def _insert_one(received: Received) -> None:
    try:
        _insert_checked([received.message])
    except DATABASE_REFUSALS as error:
        # The error's class, not its text: short, stable, and no SQL or values in the answer.
        received.reject(f"Refused by the database ({type(error).__name__}).")
    else:
        received.outcome = STORED


def _insert_checked(messages: list[Message]) -> None:
    """Insert in a savepoint whose foreign keys are checked before it ends.

    Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: a receiver deleted since the checks
    above would be refused only at COMMIT, failing the whole batch. check_constraints() checks
    them now (SET CONSTRAINTS ALL IMMEDIATE on PostgreSQL), inside the savepoint that can undo
    just these rows."""
    with transaction.atomic():
        Message.objects.bulk_create(messages, ignore_conflicts=True, batch_size=1000)
        connection.check_constraints(table_names=[Message._meta.db_table])


# --- dead letters: the messages that could not be stored ------------------------------------------

# A dead letter's copy of a string is cut to this length: enough to read any message in full.
DEAD_LETTER_STRING_LIMIT = 2 * MAX_TEXT
DEAD_LETTER_ID_LENGTH = DeadLetterMessage._meta.get_field("message_id").max_length
REASON_LENGTH = DeadLetterMessage._meta.get_field("reason").max_length


def _keep_dead_letters(rejected: list[Received]) -> None:
    """Keep each rejected message as a dead letter, for support to read. Best effort: the batch's
    answer must not depend on it, or a failure here would block the batch as a 500 did."""
    now = timezone.now()
    for received in rejected:
        try:
            _record_dead_letter(received, now)
        except Exception:  # anything at all: the message stays rejected, the batch answers 200
            logger.exception("Could not keep the rejected message %r as a dead letter", received.id)


def _record_dead_letter(received: Received, now) -> None:
    """One row per message, however often it is replayed: a replay bumps times_seen. Django's
    update_or_create locks the row, and retries as an update when another request created it."""
    reason = received.error[:REASON_LENGTH]
    DeadLetterMessage.objects.update_or_create(
        message_id=_dead_letter_key(received),
        defaults={"times_seen": F("times_seen") + 1, "last_seen": now, "reason": reason},
        create_defaults={"reason": reason, "first_seen": now, "last_seen": now, **_dead_letter_fields(received.item)},
    )


def _dead_letter_key(received: Received) -> str:
    """The message's id as given; without a usable one, a digest of the message, so that a
    replay of the same message still finds its row."""
    given = received.item.get("id") if isinstance(received.item, dict) else None
    if isinstance(given, str | int) and not isinstance(given, bool):
        key = safe_text(str(given))
        if 0 < len(key) <= DEAD_LETTER_ID_LENGTH:
            return key
    canonical = json.dumps(safe_copy(received.item), sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _dead_letter_fields(item) -> dict:
    item = item if isinstance(item, dict) else {}
    return {
        "sender_id": _plain_id(item.get("sender_id")),
        "receiver_id": _plain_id(item.get("receiver_id")),
        "conversation_id": _plain_id(item.get("conversation_id")),
        "payload": safe_copy(item),
    }


def _plain_id(value) -> int | None:
    """An id as given, if a bigint column holds it (the payload copy keeps it either way)."""
    fits = isinstance(value, int) and not isinstance(value, bool) and -MAX_ID - 1 <= value <= MAX_ID
    return value if fits else None


def safe_copy(value):
    """Parsed JSON as jsonb can store it: strings through safe_text, non-finite numbers as text."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(key)): safe_copy(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [safe_copy(inner) for inner in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def safe_text(text: str) -> str:
    """`text` readable and storable: NUL shown as U+2400 "␀", a lone surrogate as its escape
    ("\\ud800" as six characters), and cut after DEAD_LETTER_STRING_LIMIT characters."""
    if len(text) > DEAD_LETTER_STRING_LIMIT:
        text = f"{text[:DEAD_LETTER_STRING_LIMIT]}… ({len(text) - DEAD_LETTER_STRING_LIMIT} more characters)"
    return UNSTORABLE.sub(_visible, text)


def _visible(match: re.Match) -> str:
    char = match.group()
    return "\u2400" if char == "\x00" else f"\\u{ord(char):04x}"


def replay_dead_letter(dead_letter: DeadLetterMessage) -> str:
    """Try to store a dead letter's message again, once its cause is fixed (a user created since,
    a bug deployed away): STORED, DUPLICATE or REJECTED.

    The kept payload goes through the same path as Erlang's batches, so the same checks apply;
    a message that is stored now (or was, by another route) leaves the dead letters. One still
    refused stays, with its reason and times_seen brought up to date. The payload is the safe
    copy: a NUL the database could not hold comes back as the visible U+2400 "␀"."""
    outcome = persist_messages([dead_letter.payload])
    if outcome["stored"] or outcome["duplicates"]:
        DeadLetterMessage.objects.filter(pk=dead_letter.pk).delete()
        logger.info("Dead letter %s replayed: %s", dead_letter.message_id, STORED if outcome["stored"] else DUPLICATE)
        return STORED if outcome["stored"] else DUPLICATE
    logger.warning("Dead letter %s replayed and refused again: %s", dead_letter.message_id, outcome["rejected"])
    return REJECTED
