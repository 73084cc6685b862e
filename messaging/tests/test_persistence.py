"""The persistence callback (messaging/services.py persist_messages) against poison messages.

One message PostgreSQL cannot store must never fail its batch: the Erlang side would retry
that batch forever and no later message would ever be stored. Every message gets exactly one
outcome (stored, duplicate, or rejected with a reason) and each rejected one is kept in the
dead-letter table. These tests commit (transaction=True), as the real callback does, so a
foreign key checked only at COMMIT would be seen.
"""

import json
import uuid

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from messaging import services
from messaging.models import DeadLetterMessage, Message
from testing.log_capture import captured_logs

pytestmark = pytest.mark.django_db(transaction=True)


def persist(messages, *, token=None, **headers):
    """POST a batch as the Erlang service does: JSON with non-ASCII escaped, so a lone surrogate
    travels as the six characters \\ud800 (the test client's own encoder could not send it)."""
    client = APIClient(raise_request_exception=False)  # a crash must show as the 500 Erlang would get
    return client.generic(
        "POST",
        "/api/messaging/erlang/persist/",
        json.dumps({"messages": messages}),
        content_type="application/json",
        HTTP_X_MESSAGING_TOKEN=django_settings.MESSAGING_SHARED_SECRET if token is None else token,
        **headers,
    )


def item(sender, receiver, conversation=None, **extra):
    return {
        "id": str(uuid.uuid4()),
        "conversation_id": conversation.pk if conversation else None,
        "sender_id": sender if isinstance(sender, int) else sender.pk,
        "receiver_id": receiver if isinstance(receiver, int) else receiver.pk,
        "text": "hello",
        "priority": "normal",
        "created_at": "2026-11-25T10:00:00.000Z",
        **extra,
    }


def rejected_ids(answer) -> set[str]:
    return {entry["id"] for entry in answer["rejected"]}


def test_poison_messages_are_rejected_one_by_one_and_the_rest_of_the_batch_is_stored(host, guest, conversation):
    good = [item(host, guest, conversation, text="first"), item(guest, host, conversation, text="last")]
    poison = [
        item(host, guest, conversation, text="a NUL \x00 inside"),
        item(host, guest, conversation, text="a lone surrogate \ud800 inside"),
        item(2**70, guest, conversation),
        item(host, 987654321, conversation),
        item(host, guest, conversation, id="not-a-uuid"),
    ]
    batch = [good[0], *poison, good[1]]

    first = persist(batch)

    assert first.status_code == 200, first.content[:300]
    answer = first.json()
    assert sorted(answer["stored"]) == sorted(m["id"] for m in good)
    assert answer["duplicates"] == []
    assert rejected_ids(answer) == {m["id"] for m in poison}
    assert all(entry["error"] for entry in answer["rejected"])
    assert set(Message.objects.values_list("text", flat=True)) == {"first", "last"}
    dead = {d.message_id: d for d in DeadLetterMessage.objects.all()}
    assert set(dead) == {m["id"] for m in poison}
    assert {d.times_seen for d in dead.values()} == {1}
    reasons = {entry["id"]: entry["error"] for entry in answer["rejected"]}
    assert all(dead[key].reason == reason for key, reason in reasons.items())

    again = persist(batch)

    assert again.status_code == 200
    answer = again.json()
    assert answer["stored"] == []
    assert sorted(answer["duplicates"]) == sorted(m["id"] for m in good)
    assert rejected_ids(answer) == {m["id"] for m in poison}
    assert Message.objects.count() == 2
    assert DeadLetterMessage.objects.count() == len(poison)
    assert set(DeadLetterMessage.objects.values_list("times_seen", flat=True)) == {2}
    for entry in DeadLetterMessage.objects.all():
        assert entry.last_seen > entry.first_seen


def test_the_dead_letter_keeps_a_readable_copy_of_what_postgresql_cannot_store(host, guest):
    nul = item(host, guest, text="before\x00after")
    surrogate = item(host, guest, text="odd \ud800 half")
    huge_sender = item(2**70, guest)

    answer = persist([nul, surrogate, huge_sender]).json()

    assert len(answer["rejected"]) == 3
    assert DeadLetterMessage.objects.get(message_id=nul["id"]).payload["text"] == "before\u2400after"
    assert DeadLetterMessage.objects.get(message_id=surrogate["id"]).payload["text"] == "odd \\ud800 half"
    kept = DeadLetterMessage.objects.get(message_id=huge_sender["id"])
    assert (kept.sender_id, kept.receiver_id) == (None, guest.pk)  # beyond bigint: only in the payload copy
    assert kept.payload["sender_id"] == 2**70


def test_a_message_without_an_id_is_one_dead_letter_however_often_it_is_replayed(host, guest):
    no_id = {key: value for key, value in item(host, guest, text="\x00").items() if key != "id"}

    persist([no_id])
    persist([no_id])

    assert DeadLetterMessage.objects.get().times_seen == 2


def test_the_answer_names_an_unreadable_id_exactly_as_it_was_given(host, guest):
    odd = item(host, guest, id="\ud800 not a uuid")

    response = persist([odd])

    assert response.status_code == 200
    assert b'"\\ud800 not a uuid"' in response.content  # escaped in the JSON, as it came
    assert rejected_ids(response.json()) == {odd["id"]}


def test_a_broadcast_id_that_is_not_a_uuid_means_no_broadcast(host, guest):
    message = item(host, guest, broadcast_id="not-a-uuid")

    answer = persist([message]).json()

    assert answer["stored"] == [message["id"]]
    assert Message.objects.get().broadcast_id is None


def test_what_the_database_still_refuses_is_rejected_alone(host, guest, conversation, monkeypatch):
    """A receiver deleted between the Python checks and the insert: the foreign key refuses the
    row at INSERT (not at COMMIT, where it would fail the whole batch), and only that row."""
    monkeypatch.setattr(services, "_reject_unknown_references", lambda pending: None)
    good = [item(host, guest, conversation), item(guest, host, conversation)]
    orphan = item(host, 987654321, conversation)

    response = persist([good[0], orphan, good[1]])

    assert response.status_code == 200, response.content[:300]
    answer = response.json()
    assert sorted(answer["stored"]) == sorted(m["id"] for m in good)
    assert answer["rejected"] == [{"id": orphan["id"], "error": "Refused by the database (IntegrityError)."}]
    assert set(Message.objects.values_list("pk", flat=True)) == {uuid.UUID(m["id"]) for m in good}
    assert DeadLetterMessage.objects.get().message_id == orphan["id"]


def test_a_failing_dead_letter_write_does_not_fail_the_batch(host, guest, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the dead-letter table is unavailable")

    monkeypatch.setattr(services, "_record_dead_letter", broken)
    good, poison = item(host, guest), item(host, guest, text="\x00")

    answer = persist([good, poison]).json()

    assert answer["stored"] == [good["id"]]
    assert rejected_ids(answer) == {poison["id"]}


# --- the shared secret's rotation, and the log line that ties a stored message to its request -------


def test_the_callback_accepts_the_previous_secret_while_it_rotates_and_no_other(settings, host, guest):
    settings.MESSAGING_SHARED_SECRET, settings.MESSAGING_SHARED_SECRET_PREVIOUS = "secret-new", "secret-old"
    batches = {token: [item(host, guest)] for token in ("secret-new", "secret-old", "a-guess")}

    answers = {token: persist(batch, token=token) for token, batch in batches.items()}

    assert {token: answer.status_code for token, answer in answers.items()} == {
        "secret-new": 200,
        "secret-old": 200,  # a node not restarted with the new secret yet
        "a-guess": 401,
    }
    assert answers["a-guess"].json()["error"]["code"] == "authentication_failed"
    stored = set(Message.objects.values_list("id", flat=True))
    assert stored == {uuid.UUID(batches[token][0]["id"]) for token in ("secret-new", "secret-old")}


def test_each_callback_logs_one_line_pairing_each_stored_message_with_the_request_that_sent_it(host, guest):
    stored_before = item(host, guest)
    persist([stored_before])
    sent = [
        item(host, guest, request_id="portal-req-1"),
        item(guest, host, request_id="job:3f1c:1"),
        item(host, guest, request_id="not\nan id"),  # never written as given: it could forge a line
        item(host, guest),  # from before the messaging service passed request ids on
    ]
    batch = [*sent, stored_before, item(host, 987654321, request_id="portal-req-3")]

    with captured_logs("json") as logs:
        response = persist(batch, HTTP_X_REQUEST_ID="erlang-batch-42")

    assert response.status_code == 200
    [line] = logs.from_logger("messaging")
    assert line["message"] == "persistence callback: 4 stored, 1 duplicates, 1 rejected"
    assert line["request_id"] == "erlang-batch-42"  # the callback's own id
    assert line["stored"] == {
        sent[0]["id"]: "portal-req-1",
        sent[1]["id"]: "job:3f1c:1",
        sent[2]["id"]: None,
        sent[3]["id"]: None,
    }
    assert (line["duplicates"], line["rejected"]) == (1, 1)
