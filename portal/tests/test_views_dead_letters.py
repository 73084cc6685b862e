"""Undeliverable messages (portal/views/dead_letters.py): who may read them, and what they show."""

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from messaging.models import DeadLetterMessage
from portal.views.dead_letters import NUL_TAG

pytestmark = pytest.mark.django_db

URL = "/admin/operations/undeliverable/"


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def dead_letter(*, reason, text="hello", sender_id=None, receiver_id=None, age=timedelta(0), times_seen=1):
    seen = timezone.now() - age
    return DeadLetterMessage.objects.create(
        message_id=str(uuid.uuid4()),
        reason=reason,
        sender_id=sender_id,
        receiver_id=receiver_id,
        payload={"text": text, "sender_id": sender_id, "receiver_id": receiver_id},
        times_seen=times_seen,
        first_seen=seen - timedelta(minutes=5),
        last_seen=seen,
    )


@pytest.fixture
def nul_message(host, guest):
    return dead_letter(
        reason="Messages cannot contain the NUL character.",
        text="Your key is in the \u2400 box",
        sender_id=host.pk,
        receiver_id=guest.pk,
        times_seen=2,
    )


@pytest.mark.parametrize("role", ["support_user", "manager"])
def test_support_and_managers_see_the_section_with_each_entry_and_its_reason(request, role, nul_message, host, guest):
    client = signed_in(request.getfixturevalue(role))

    menu = client.get("/admin/", follow=True).content.decode()
    page = client.get(URL)

    assert "Undeliverable messages" in menu and URL in menu
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="dead-letter-{nul_message.pk}"' in html
    assert "Messages cannot contain the NUL character." in html
    assert "Your key is in the " + NUL_TAG + " box" in html  # the stored \u2400, shown as a tag any font draws
    assert f"#{host.pk} {host.username}" in html and f"#{guest.pk} {guest.username}" in html
    assert nul_message.message_id in html


def test_finance_gets_no_menu_item_and_cannot_open_the_page(finance_user, nul_message):
    client = signed_in(finance_user)

    assert "Undeliverable messages" not in client.get("/admin/", follow=True).content.decode()
    assert client.get(URL).status_code in (302, 403)
    assert client.get(f"{URL}?export=csv").status_code in (302, 403)


def test_an_empty_table_says_so_and_what_would_appear(support_user):
    html = signed_in(support_user).get(URL).content.decode()

    assert "No undeliverable messages." in html
    assert "appears here with the reason" in html


def test_newest_first_and_a_user_who_does_not_exist_is_named_as_such(support_user, host):
    old = dead_letter(reason="Unknown sender or receiver.", text="old one", sender_id=host.pk, receiver_id=424242)
    new = dead_letter(reason="Unknown conversation.", text="new one", age=timedelta(0))
    DeadLetterMessage.objects.filter(pk=old.pk).update(last_seen=timezone.now() - timedelta(days=1))

    html = signed_in(support_user).get(URL).content.decode()

    assert html.index(f"dead-letter-{new.pk}") < html.index(f"dead-letter-{old.pk}")
    assert "#424242 <small>(no such user)</small>" in html


def test_the_reason_filter_shows_only_that_reason(support_user):
    nul = dead_letter(reason="Messages cannot contain the NUL character.")
    unknown = dead_letter(reason="Unknown sender or receiver.")

    html = signed_in(support_user).get(URL, {"reason": "Unknown sender or receiver."}).content.decode()

    assert f"dead-letter-{unknown.pk}" in html and f"dead-letter-{nul.pk}" not in html
    assert '<option value="Messages cannot contain the NUL character.">' in html  # every reason on record


def test_a_long_list_is_paginated(support_user):
    for n in range(30):
        dead_letter(reason="Unknown conversation.", text=f"message {n}", age=timedelta(seconds=n))

    first = signed_in(support_user).get(URL).content.decode()
    second = signed_in(support_user).get(URL, {"page": 2}).content.decode()

    assert "message 0<" in first and "message 29<" not in first and "Next →" in first
    assert "message 29<" in second and "message 0<" not in second


def test_the_export_lists_every_entry_with_its_text(support_user, nul_message):
    response = signed_in(support_user).get(URL, {"export": "csv"})

    body = b"".join(response.streaming_content).decode("utf-8-sig")  # the export starts with a byte-order mark
    assert body.splitlines()[0].startswith("Last seen,First seen,Times seen,Message id,Reason")
    assert nul_message.message_id in body and "Your key is in the \u2400 box" in body
