"""The broadcast fan-out job (messaging/tasks.py): through Erlang, retries, the fallback, repeats."""

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from jobs.models import JobRecord
from messaging.erlang import erlang_client
from messaging.models import Broadcast, Message
from messaging.services import broadcast_message_id, create_broadcast
from messaging.tasks import fan_out_broadcast
from testing.jobs import run_ready_jobs
from testing.processes import free_port
from testing.waiting import wait_until


def rows_per_receiver(broadcast) -> Counter:
    return Counter(Message.objects.filter(broadcast=broadcast).values_list("receiver", flat=True))


def page(user, url) -> str:
    client = Client()
    client.force_login(user)
    return client.get(url).content.decode()


def progress_page(user, broadcast) -> str:
    return page(user, f"/admin/operations/broadcasts/{broadcast.pk}/progress/")


@pytest.mark.django_db(transaction=True)
def test_the_job_hands_the_broadcast_to_erlang_which_delivers_it(messaging_settings, support_user, make_user):
    hosts = [make_user("host", country="KE") for _ in range(4)]
    broadcast = create_broadcast(support_user, audience="hosts_in_country", country="KE", text="Payouts run late")

    # Recorded and queued; nothing is sent before a worker runs the job.
    assert broadcast.status == Broadcast.Status.QUEUED
    assert 'data-status="queued"' in progress_page(support_user, broadcast)
    assert erlang_client.get_user_messages(hosts[0].pk) == []

    assert run_ready_jobs() == 1
    assert wait_until(lambda: Broadcast.objects.get(pk=broadcast.pk).status == Broadcast.Status.DELIVERED)
    assert wait_until(lambda: Message.objects.filter(broadcast=broadcast).count() == 4)
    broadcast.refresh_from_db()
    assert (broadcast.delivered, broadcast.total, broadcast.via_fallback) == (4, 4, False)
    stored = Message.objects.filter(broadcast=broadcast)
    assert {m.via for m in stored} == {"erlang"}
    # Erlang's message ids are the ones the fallback would write: the two paths agree.
    assert {m.pk for m in stored} == {broadcast_message_id(broadcast.pk, h.pk) for h in hosts}
    assert erlang_client.get_user_messages(hosts[0].pk)[0]["text"] == "Payouts run late"
    assert "Delivered 4 of 4" in progress_page(support_user, broadcast)


@pytest.mark.django_db
def test_while_erlang_is_down_the_broadcast_retries_then_its_last_attempt_stores_the_rows(
    settings, support_user, make_user
):
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    guests = [make_user("guest") for _ in range(3)]
    broadcast = create_broadcast(support_user, audience="user_ids", user_ids=[g.pk for g in guests], text="Hello")

    assert run_ready_jobs() == 1
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.attempts) == (Broadcast.Status.RETRYING, 1)
    assert "could not be reached" in broadcast.last_error
    job = DBTaskResult.objects.get(pk=broadcast.job_id)
    assert job.status == "READY" and job.run_after > timezone.now()
    progress = progress_page(support_user, broadcast)
    assert "Attempt 1 of 4 could not reach the messaging service" in progress
    assert f"Next attempt at {timezone.localtime(job.run_after):%H:%M:%S}" in progress
    history = page(support_user, "/admin/operations/broadcasts/")
    assert 'data-status="retrying"' in history and "Attempt 1 of 4: The messaging service could not" in history
    assert Message.objects.count() == 0

    for attempt in (2, 3, 4):
        DBTaskResult.objects.filter(pk=job.pk).update(run_after=timezone.now() - timedelta(seconds=1))
        assert run_ready_jobs() == 1
        broadcast.refresh_from_db()
        expected = Broadcast.Status.RETRYING if attempt < 4 else Broadcast.Status.DELIVERED
        assert (broadcast.status, broadcast.attempts) == (expected, attempt)

    assert (broadcast.delivered, broadcast.via_fallback) == (3, True)
    assert rows_per_receiver(broadcast) == {g.pk: 1 for g in guests}
    assert set(Message.objects.values_list("via", flat=True)) == {"fallback"}
    assert DBTaskResult.objects.get(pk=job.pk).status == "SUCCESSFUL"
    assert JobRecord.objects.get(pk=job.pk).attempts == 4
    assert "the messages were stored directly" in progress_page(support_user, broadcast)


@pytest.mark.django_db(transaction=True)
def test_running_the_job_again_after_erlang_accepted_delivers_nothing_twice(
    messaging_settings, settings, support_user, make_user
):
    hosts = [make_user("host", country="GH") for _ in range(3)]
    broadcast = create_broadcast(support_user, audience="hosts_in_country", country="GH", text="Welcome")
    run_ready_jobs()
    assert wait_until(lambda: sum(rows_per_receiver(broadcast).values()) == 3)

    # Erlang accepted, but suppose its answer was lost (a timeout): the job runs again.
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Broadcast.Status.QUEUED)
    fan_out_broadcast.enqueue(str(broadcast.pk))
    assert run_ready_jobs() == 1
    # And once more on its last attempt with Erlang out of reach: the fallback writes the rows.
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Broadcast.Status.QUEUED)
    erlang_url, settings.ERLANG_MESSAGING_URL = settings.ERLANG_MESSAGING_URL, f"http://127.0.0.1:{free_port()}"
    assert fan_out_broadcast.call(str(broadcast.pk)) == Broadcast.Status.DELIVERED
    time.sleep(1.5)  # time for any second fan-out in Erlang to reach its queues and Django

    assert rows_per_receiver(broadcast) == {h.pk: 1 for h in hosts}
    settings.ERLANG_MESSAGING_URL = erlang_url
    for host in hosts:
        assert len(erlang_client.get_user_messages(host.pk)) == 1
