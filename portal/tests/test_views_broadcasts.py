"""Broadcasts (portal/views/broadcasts.py): confirm, send, audit, preview, errors, who may send."""

import pytest
from django.test import Client
from wagtail.models import ModelLogEntry

from messaging.models import Broadcast, Message
from portal.tests.confirming import post_confirmation
from testing.jobs import run_jobs_with_retries
from testing.processes import free_port

pytestmark = pytest.mark.django_db


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_broadcast_needs_confirmation_then_sends_and_is_audited(settings, support_user, make_user):
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # the fallback path: rows written here
    hosts = [make_user("host", country="GH") for _ in range(2)]
    client = signed_in(support_user)
    form = {"text": "Hello Accra", "audience": "hosts_in_country", "country": "GH", "priority": "normal"}

    review = client.post("/admin/operations/broadcasts/confirm/", form)
    assert "Yes, send to 2" in review.content.decode()
    assert Broadcast.objects.count() == 0

    sent = post_confirmation(client, review, follow=True)
    broadcast = Broadcast.objects.get()
    assert 'data-status="queued"' in sent.content.decode()
    run_jobs_with_retries()  # the fan-out job: Erlang unreachable on every attempt, then the fallback
    progress = client.get(f"/admin/operations/broadcasts/{broadcast.pk}/progress/").content.decode()
    assert "Delivered 2 of 2" in progress
    assert set(Message.objects.values_list("receiver", flat=True)) == {h.pk for h in hosts}
    assert ModelLogEntry.objects.filter(action="stayafrica.broadcast.send", user=support_user).exists()
    csv_body = b"".join(client.get("/admin/operations/broadcasts/?export=csv").streaming_content).decode()
    assert "Hello Accra" in csv_body and str(broadcast.total) in csv_body


def test_recipient_preview_counts_the_audience(support_user, make_user):
    make_user("guest")
    make_user("guest")
    response = signed_in(support_user).get("/admin/operations/broadcasts/preview/?audience=all_guests")
    assert 'data-recipients="2"' in response.content.decode()


@pytest.mark.parametrize("url", ["/admin/operations/broadcasts/confirm/", "/admin/operations/broadcasts/"])
def test_broadcast_form_errors_are_shown_and_nothing_is_sent(support_user, url):
    response = signed_in(support_user).post(
        url, {"text": "", "audience": "user_ids", "user_ids": "12, abc", "priority": "x"}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "User ids are whole numbers" in page
    assert Broadcast.objects.count() == 0


def test_finance_cannot_send_broadcasts(finance_user):
    response = signed_in(finance_user).post("/admin/operations/broadcasts/", {"text": "x", "audience": "all_hosts"})
    assert response.status_code in (302, 403)
    assert Broadcast.objects.count() == 0
