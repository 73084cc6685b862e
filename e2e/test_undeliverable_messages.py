"""Support finds out why a message never arrived: Operations > Undeliverable messages."""

import json
import uuid

import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import expect

from messaging.models import DeadLetterMessage, Message

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def persist_as_erlang(messages):
    """The Erlang service's persistence callback, as it sends it (non-ASCII escaped)."""
    return Client().generic(
        "POST",
        "/api/messaging/erlang/persist/",
        json.dumps({"messages": messages}),
        content_type="application/json",
        HTTP_X_MESSAGING_TOKEN=django_settings.MESSAGING_SHARED_SECRET,
    )


@pytest.mark.parametrize("viewport", [None, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_support_reads_why_a_message_was_not_stored(open_as, support_user, host, guest, viewport):
    def message(text):
        return {"id": str(uuid.uuid4()), "sender_id": host.pk, "receiver_id": guest.pk, "text": text}

    good, poison = message("See you at six"), message("The door code is 4\x0021")
    assert persist_as_erlang([poison, good]).status_code == 200
    assert Message.objects.filter(text="See you at six").exists()
    dead = DeadLetterMessage.objects.get()

    page = open_as(support_user, "/admin/", viewport=viewport or {"width": 1280, "height": 900})
    if viewport:  # the phone's menu is behind a toggle; the menu item itself is tested on desktop
        page.goto("/admin/operations/undeliverable/")
    else:
        page.get_by_role("button", name="Operations").click()
        page.get_by_role("link", name="Undeliverable messages").click()
    row = page.locator(f"#dead-letter-{dead.pk}")
    expect(row).to_contain_text("Messages cannot contain the NUL character.")
    expect(row).to_contain_text("The door code is 4NUL21")  # the NUL shown as a tag
    expect(row).to_contain_text(f"#{guest.pk} {guest.username}")
    shot(page, f"undeliverable-messages-{'phone' if viewport else 'desktop'}")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways"
