"""Django ↔ a real Erlang node: send, broadcast, queue fetch, persistence callback, fallback.

The broadcast fan-out job's retries and fallback: test_tasks.py."""

import re
import time
import uuid
from contextlib import contextmanager

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from messaging.erlang import ErlangMessagingClient, ErlangRejected, ErlangUnavailable, erlang_client
from messaging.models import Broadcast, Message
from messaging.services import create_broadcast
from testing.erlang_node import ErlangNode
from testing.jobs import run_ready_jobs
from testing.log_capture import captured_logs
from testing.processes import free_port
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def as_user(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_health_check_reaches_the_node(messaging_settings):
    assert erlang_client.health_check() is True
    body = APIClient().get("/api/messaging/erlang/health/").json()
    assert body["status"] == "ok"
    assert body["erlang"]["reachable"] is True


def test_a_message_goes_through_erlang_and_is_persisted_once(messaging_settings, conversation, host, guest):
    response = as_user(guest).post(
        f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "Arriving at 3pm", "priority": "high"}
    )
    assert response.status_code == 201, response.content
    assert response.json()["via"] == "erlang"
    message_id = response.json()["id"]

    queued = erlang_client.get_user_messages(host.pk)
    assert [m["id"] for m in queued] == [message_id]
    assert queued[0]["text"] == "Arriving at 3pm"

    assert wait_until(lambda: Message.objects.filter(pk=message_id).exists())
    stored = Message.objects.get(pk=message_id)
    assert (stored.sender, stored.receiver, stored.priority, stored.via) == (guest, host, "high", "erlang")
    assert erlang_client.ack_messages(host.pk, [message_id]) == 1
    assert erlang_client.get_user_messages(host.pk) == []


def test_broadcast_fans_out_in_erlang_and_reports_progress(messaging_settings, support_user, make_user):
    hosts = [make_user("host", country="KE") for _ in range(5)]
    broadcast = create_broadcast(
        support_user, audience="hosts_in_country", country="KE", text="Payouts run late on Friday"
    )
    assert broadcast.total == 5
    run_ready_jobs()  # the fan-out job, as a worker would run it
    assert wait_until(lambda: Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.DELIVERED)
    broadcast.refresh_from_db()
    assert (broadcast.delivered, broadcast.via_fallback) == (5, False)
    assert wait_until(lambda: Message.objects.filter(broadcast=broadcast).count() == 5)
    assert set(Message.objects.filter(broadcast=broadcast).values_list("receiver", flat=True)) == {h.pk for h in hosts}
    assert erlang_client.get_user_messages(hosts[0].pk)[0]["text"] == "Payouts run late on Friday"


def test_when_erlang_is_stopped_the_message_is_stored_directly_and_the_user_sees_success(
    settings, live_server, conversation, host, guest
):
    with ErlangNode(django_url=live_server.url, secret=django_settings.MESSAGING_SHARED_SECRET) as node:
        settings.ERLANG_MESSAGING_URL = node.url
        assert erlang_client.health_check()
        node.stop()
        started = time.monotonic()
        response = as_user(guest).post(f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "Hi"})
        assert time.monotonic() - started < 3  # short timeouts: never a hang
    assert response.status_code == 201
    assert response.json()["via"] == "fallback"
    stored = Message.objects.get(pk=response.json()["id"])
    assert (stored.via, stored.receiver) == ("fallback", host)


def test_client_errors_are_clear_exceptions_not_hangs():
    dead = ErlangMessagingClient(base_url=f"http://127.0.0.1:{free_port()}", secret="x")
    with pytest.raises(ErlangUnavailable):
        dead.send_message(1, 1, 2, "hi")
    assert dead.health_check() is False


# --- what each call carries: the request id, and the secret while it rotates --------------------


@contextmanager
def request_ids_sent(client):
    """The X-Request-Id of every call `client` makes in this thread, in order."""
    sent = []

    def note(response, **kwargs):
        sent.append(response.request.headers.get("X-Request-Id"))

    client.session.hooks["response"].append(note)
    try:
        yield sent
    finally:
        client.session.hooks["response"].remove(note)


def test_a_message_sent_in_a_portal_request_carries_that_requests_id_to_the_messaging_service(
    messaging_settings, conversation, guest
):
    with request_ids_sent(erlang_client) as sent:
        response = as_user(guest).post(
            f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "Hi"}, HTTP_X_REQUEST_ID="req-msg-1"
        )
        erlang_client.stats()  # outside any request: an id of its own
        erlang_client.stats()

    assert response.status_code == 201 and response.json()["via"] == "erlang"
    assert response["X-Request-Id"] == "req-msg-1"
    assert sent[0] == "req-msg-1"
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in sent[1:])
    assert len(set(sent)) == 3


def test_a_node_still_on_the_previous_secret_is_called_again_with_it_and_the_message_is_stored(
    settings, live_server, conversation, host, guest
):
    settings.MESSAGING_SHARED_SECRET, settings.MESSAGING_SHARED_SECRET_PREVIOUS = "secret-new", ""
    # The node has not been restarted with the new secret yet.
    with ErlangNode(django_url=live_server.url, secret="secret-old") as node:
        settings.ERLANG_MESSAGING_URL = node.url
        with pytest.raises(ErlangRejected) as refused:
            erlang_client.stats()
        settings.MESSAGING_SHARED_SECRET_PREVIOUS = "secret-old"
        with captured_logs("json") as logs:
            response = as_user(guest).post(
                f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "Key under the mat"}
            )
        # The node's persistence callback, made with the old secret, is accepted too.
        assert wait_until(lambda: Message.objects.filter(pk=response.json().get("id")).exists(), seconds=30)

    assert refused.value.status == 401  # without the previous secret: refused, no retry
    assert response.status_code == 201 and response.json()["via"] == "erlang"
    assert Message.objects.get(pk=response.json()["id"]).via == "erlang"
    [retry] = logs.from_logger("messaging.erlang")
    assert retry["level"] == "WARNING"
    assert "retrying POST /messages with MESSAGING_SHARED_SECRET_PREVIOUS" in retry["message"]
    assert "secret-old" not in logs.text() and "secret-new" not in logs.text()


def test_non_participants_cannot_see_or_post_to_a_conversation(messaging_settings, conversation, other_host):
    client = as_user(other_host)
    assert client.get(f"/api/messaging/conversations/{conversation.pk}/messages/").status_code == 404
    assert client.post(f"/api/messaging/conversations/{conversation.pk}/messages/", {"text": "x"}).status_code == 404


# --- the persistence callback ----------------------------------------------------------------


def persist(body, token=None):
    client = APIClient()
    headers = {"HTTP_X_MESSAGING_TOKEN": token} if token is not None else {}
    return client.post("/api/messaging/erlang/persist/", body, format="json", **headers)


def item(sender, receiver, conversation=None, **extra):
    return {
        "id": str(uuid.uuid4()),
        "conversation_id": conversation.pk if conversation else None,
        "sender_id": sender.pk,
        "receiver_id": receiver.pk,
        "text": "hello",
        "priority": "normal",
        "created_at": "2026-11-25T10:00:00.000Z",
        **extra,
    }


def test_persist_requires_the_shared_secret(host, guest):
    body = {"messages": [item(host, guest)]}
    assert persist(body).status_code == 401
    assert persist(body, token="wrong").status_code == 401
    assert persist(body).json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert Message.objects.count() == 0


def test_persist_is_idempotent_by_uuid_and_rejects_bad_items(host, guest, conversation):
    secret = django_settings.MESSAGING_SHARED_SECRET
    good = [item(guest, host, conversation), item(host, guest, conversation)]
    bad = [
        item(host, guest, priority="urgent"),
        {**item(host, guest), "sender_id": 999999},
        {"id": "not-a-uuid", "sender_id": host.pk, "receiver_id": guest.pk, "text": "x"},
    ]
    first = persist({"messages": good + bad}, token=secret).json()
    assert sorted(first["stored"]) == sorted(m["id"] for m in good)
    assert len(first["rejected"]) == 3
    again = persist({"messages": good}, token=secret).json()
    assert (again["stored"], sorted(again["duplicates"])) == ([], sorted(m["id"] for m in good))
    assert Message.objects.count() == 2


def test_persist_with_a_malformed_body_is_400(host):
    response = persist({"messages": "nope"}, token=django_settings.MESSAGING_SHARED_SECRET)
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["messages"]


def test_the_public_health_view_reveals_no_internal_url_node_or_error_text(settings, erlang_node):
    closed_port = free_port()
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{closed_port}"
    down = APIClient().get("/api/messaging/erlang/health/")
    settings.ERLANG_MESSAGING_URL = erlang_node.url
    up = APIClient().get("/api/messaging/erlang/health/")

    assert down.status_code == 200
    assert down.json() == {"status": "degraded", "erlang": {"reachable": False}}
    assert up.json() == {"status": "ok", "erlang": {"reachable": True}}
    for response in (down, up):
        assert str(closed_port) not in response.content.decode()
        assert "127.0.0.1" not in response.content.decode() and "@" not in response.content.decode()
