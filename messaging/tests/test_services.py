"""Broadcast progress as Erlang reports it (messaging/services.py record_broadcast_progress)."""

import pytest
from django.test import Client

from messaging.models import Broadcast
from messaging.services import create_broadcast, record_broadcast_progress

pytestmark = pytest.mark.django_db


@pytest.fixture
def broadcast(support_user, make_user):
    for _ in range(3):
        make_user("host")
    return create_broadcast(support_user, audience=Broadcast.Audience.ALL_HOSTS, text="Hello")


def test_progress_keeps_how_many_were_delivered_live_and_how_many_wait_offline(broadcast):
    record_broadcast_progress(broadcast.pk, delivered=2, total=3, status="sending", online=1)
    record_broadcast_progress(broadcast.pk, delivered=3, total=3, status="done", online=1)
    broadcast.refresh_from_db()
    assert (broadcast.delivered, broadcast.delivered_online, broadcast.queued_offline) == (3, 1, 2)
    assert broadcast.status == Broadcast.Status.DELIVERED


def test_a_late_or_older_report_never_lowers_the_online_count(broadcast):
    record_broadcast_progress(broadcast.pk, delivered=3, total=3, status="done", online=2)
    record_broadcast_progress(broadcast.pk, delivered=1, total=3, status="sending")  # an older service: no online
    broadcast.refresh_from_db()
    assert broadcast.delivered_online == 2
    record_broadcast_progress(broadcast.pk, delivered=3, total=3, status="done", online=9)  # never above delivered
    broadcast.refresh_from_db()
    assert broadcast.delivered_online == 3


def test_the_progress_panel_says_delivered_live_and_queued_offline(broadcast, support_user):
    record_broadcast_progress(broadcast.pk, delivered=3, total=3, status="done", online=1)
    client = Client()
    client.force_login(support_user)
    page = client.get(f"/admin/operations/broadcasts/{broadcast.pk}/progress/").content.decode()
    assert 'data-delivered-online="1"' in page and 'data-queued-offline="2"' in page
    assert "1 recipient<" in page and "2 recipients<" in page
