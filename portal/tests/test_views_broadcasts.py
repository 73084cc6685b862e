"""Broadcasts (portal/views/broadcasts.py): confirm, send, audit, preview, errors, who may send."""

import pytest
from django.test import Client
from wagtail.models import ModelLogEntry

from messaging.models import Broadcast, Message
from messaging.services import create_broadcast
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


# --- issue 16: fields by audience, the user picker, the review, who may read -------------------

BROADCASTS = "/admin/operations/broadcasts/"


def test_the_user_picker_finds_users_by_name_username_or_email(support_user, make_user):
    amara = make_user("host", first_name="Amara", last_name="Okafor")
    make_user("host", first_name="Kwame", last_name="Mensah")
    client = signed_in(support_user)

    for typed in ("okafor", "Amara O", amara.username, amara.email.upper()):
        page = client.get(f"{BROADCASTS}users/", {"q": typed}).content.decode()
        assert f'data-pick-user="{amara.pk}"' in page, typed
        assert "Kwame" not in page
    assert "No user matches “zzz”." in client.get(f"{BROADCASTS}users/", {"q": "zzz"}).content.decode()
    assert "data-pick-user" not in client.get(f"{BROADCASTS}users/", {"q": "a"}).content.decode()  # too short


def test_the_review_names_the_chosen_users_and_counts_with_plurals(support_user, make_user):
    amara = make_user("host", first_name="Amara", last_name="Okafor")
    kwame = make_user("host", first_name="Kwame", last_name="Mensah")
    client = signed_in(support_user)
    form = {"text": "Hello", "audience": "user_ids", "user_ids": [amara.pk, kwame.pk], "priority": "normal"}

    page = client.post(f"{BROADCASTS}confirm/", form).content.decode()
    assert "Who receives it: 2 chosen users: Amara Okafor, Kwame Mensah (2 recipients)." in page
    assert "Yes, send to 2 recipients" in page
    assert page.count('name="user_ids"') == 2  # the confirmed ids, posted again as they were chosen

    one = client.post(f"{BROADCASTS}confirm/", {**form, "user_ids": [amara.pk]}).content.decode()
    assert "Yes, send to 1 recipient<" in one and "1 chosen user: Amara Okafor" in one


def test_the_review_says_all_hosts_in_the_country_by_name(support_user, make_user):
    make_user("host", country="KE")
    form = {"text": "Hello", "audience": "hosts_in_country", "country": "KE", "priority": "normal"}
    page = signed_in(support_user).post(f"{BROADCASTS}confirm/", form).content.decode()
    assert "Who receives it: All hosts in Kenya (1 recipient)." in page


def test_an_unknown_user_id_is_a_form_error(support_user, make_user):
    known = make_user("host")
    form = {"text": "Hello", "audience": "user_ids", "user_ids": [known.pk, 999999], "priority": "normal"}
    response = signed_in(support_user).post(f"{BROADCASTS}confirm/", form)
    assert response.status_code == 400
    assert "No user has the id 999999." in response.content.decode()


def test_the_field_the_audience_does_not_need_is_ignored(support_user, make_user):
    """Hidden on the page, it still posts: what it holds neither blocks nor changes the broadcast."""
    make_user("host", country="GH")
    form = {"text": "Hi", "audience": "all_hosts", "country": "KE", "user_ids": ["abc"], "priority": "normal"}
    page = signed_in(support_user).post(f"{BROADCASTS}confirm/", form).content.decode()
    assert "Who receives it: All hosts (1 recipient)." in page
    assert 'name="country" value=""' in page


def test_the_compose_form_shows_only_the_field_the_audience_needs(support_user):
    page = signed_in(support_user).get(BROADCASTS).content.decode()
    assert 'data-audience-only="hosts_in_country" hidden' in page  # "All hosts" is the default
    assert 'data-audience-only="user_ids" hidden' in page


def test_a_manager_reads_broadcasts_but_cannot_compose_or_send(manager, support_user, make_user):
    make_user("host", country="KE")
    broadcast = create_broadcast(support_user, audience="hosts_in_country", country="KE", text="Closed Monday")
    client = signed_in(manager)

    page = client.get(BROADCASTS).content.decode()
    assert "hosts in Kenya" in page and "New broadcast" not in page and "Review and send" not in page
    assert client.get(f"{BROADCASTS}{broadcast.pk}/").status_code == 200
    progress = client.get(f"{BROADCASTS}{broadcast.pk}/progress/").content.decode()
    assert "Delivered 0 of 1" in progress and "Background jobs" not in progress

    form = {"text": "x", "audience": "all_hosts", "priority": "normal"}
    assert client.post(f"{BROADCASTS}confirm/", form).status_code in (302, 403)
    assert client.post(BROADCASTS, form).status_code in (302, 403)
    assert client.get(f"{BROADCASTS}confirm/").status_code in (302, 403)
    assert client.get(f"{BROADCASTS}users/", {"q": "host"}).status_code in (302, 403)
    assert Broadcast.objects.count() == 1


def test_the_broadcasts_menu_item_shows_to_readers(manager, finance_user, rf):
    from portal.viewsets import BroadcastSection

    item = BroadcastSection().get_menu_item()
    for user, shown in ((manager, True), (finance_user, False)):
        request = rf.get("/admin/")
        request.user = user
        assert item.is_shown(request) is shown
