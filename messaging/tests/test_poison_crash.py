"""A poison message between good ones, and the node killed with SIGKILL mid-stream.

What a user would notice: every message the service acknowledged (202) is in the database
exactly once after the crash and restart; the message Django cannot store is in the
dead-letter table with its reason, where support sees it; and nothing stays pinned in the
write-ahead log, so later messages keep flowing.
"""

import threading
import uuid

import pytest
import requests
from django.conf import settings as django_settings

from messaging.models import DeadLetterMessage, Message
from testing.erlang_node import ErlangNode
from testing.processes import free_port
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# A receiver no user has: the Erlang edge cannot know that, Django refuses it.
MISSING_USER_ID = 987654321
MESSAGES_BEFORE_POISON = 15
ACKS_BEFORE_KILL = 40


class Sender(threading.Thread):
    """Posts messages one after another until the node stops answering (or a bound)."""

    def __init__(self, node, guest, host, poison_id):
        super().__init__(daemon=True)
        self.node, self.guest, self.host, self.poison_id = node, guest, host, poison_id
        self.attempted: list[str] = []
        self.acknowledged: list[str] = []
        self.enough = threading.Event()

    def run(self):
        session = requests.Session()
        session.headers["X-Messaging-Token"] = django_settings.MESSAGING_SHARED_SECRET
        for number in range(1000):
            if number == MESSAGES_BEFORE_POISON:
                body = self.message(self.poison_id, receiver=MISSING_USER_ID, text="to nobody")
            else:
                body = self.message(str(uuid.uuid4()), receiver=self.host.pk, text=f"good {number}")
            self.attempted.append(body["id"])
            try:
                answer = session.post(f"{self.node.url}/messages", json=body, timeout=5)
            except requests.RequestException:
                break  # the node is gone: whatever was in flight was never acknowledged
            if answer.status_code == 202 and body["receiver_id"] == self.host.pk:
                self.acknowledged.append(body["id"])
            if len(self.acknowledged) >= ACKS_BEFORE_KILL:
                self.enough.set()
        self.enough.set()

    def message(self, message_id, *, receiver, text):
        return {"id": message_id, "sender_id": self.guest.pk, "receiver_id": receiver, "text": text}


def stats(node) -> dict:
    headers = {"X-Messaging-Token": django_settings.MESSAGING_SHARED_SECRET}
    return requests.get(f"{node.url}/stats", headers=headers, timeout=2).json()


@pytest.mark.parametrize(
    "django_up_before_kill",
    [
        pytest.param(True, id="persistence-running"),
        # Django unreachable until the kill: every acknowledged message, the poison one
        # included, exists only in the write-ahead log when the node dies.
        pytest.param(False, id="all-in-the-wal"),
    ],
)
def test_acknowledged_messages_survive_a_kill_and_the_poison_one_is_dead_lettered(
    live_server, host, guest, django_up_before_kill
):
    django_url = live_server.url if django_up_before_kill else f"http://127.0.0.1:{free_port()}"
    node = ErlangNode(
        django_url=django_url,
        secret=django_settings.MESSAGING_SHARED_SECRET,
        PERSIST_FLUSH_INTERVAL_MS=20,
        PERSIST_BATCH_SIZE=7,
    ).start()
    try:
        poison_id = str(uuid.uuid4())
        sender = Sender(node, guest, host, poison_id)
        sender.start()
        assert sender.enough.wait(timeout=30), "the node stopped acknowledging before the kill point"
        node.kill()
        sender.join(timeout=10)
        acknowledged = list(sender.acknowledged)
        assert len(acknowledged) >= ACKS_BEFORE_KILL

        if not django_up_before_kill:
            assert not Message.objects.filter(pk__in=acknowledged).exists()
        node.env["DJANGO_API_URL"] = live_server.url
        node.start()

        assert wait_until(lambda: Message.objects.filter(pk__in=acknowledged).count() == len(acknowledged), seconds=30)
        assert wait_until(lambda: DeadLetterMessage.objects.filter(message_id=poison_id).exists(), seconds=30)
        assert wait_until(lambda: stats(node)["wal_unconfirmed"] == 0, seconds=30), stats(node)
    finally:
        node.cleanup()

    stored = set(Message.objects.filter(sender=guest).values_list("pk", flat=True))
    assert {uuid.UUID(i) for i in acknowledged} <= stored
    # Nothing but what was sent (a message in flight at the kill may or may not be stored).
    assert stored <= {uuid.UUID(i) for i in sender.attempted} - {uuid.UUID(poison_id)}
    dead = DeadLetterMessage.objects.get(message_id=poison_id)
    assert "receiver" in dead.reason.lower()
