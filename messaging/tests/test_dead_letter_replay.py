"""Replaying dead letters (messaging/services.py replay_dead_letter and `manage.py
replay_dead_letters`): once the cause of a refusal is fixed, the operator stores the message;
one that is still refused stays on the page with its reason, and nothing is stored twice."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from messaging import services
from messaging.models import DeadLetterMessage, Message

from .test_persistence import item, persist

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN_USER_ID = 7_654_321


def dead_letter_for(message: dict) -> DeadLetterMessage:
    assert persist([message]).json()["rejected"], "the message should have been refused"
    return DeadLetterMessage.objects.get(message_id=message["id"])


def test_a_dead_letter_whose_receiver_now_exists_is_stored_and_leaves_the_page(host):
    message = item(host, UNKNOWN_USER_ID, text="Your keys are in the lockbox")
    dead = dead_letter_for(message)
    get_user_model().objects.create_user(pk=UNKNOWN_USER_ID, username="late-guest", password="pass-12345")

    assert services.replay_dead_letter(dead) == services.STORED

    stored = Message.objects.get(pk=uuid.UUID(message["id"]))
    assert (stored.receiver_id, stored.text) == (UNKNOWN_USER_ID, "Your keys are in the lockbox")
    assert not DeadLetterMessage.objects.exists()


def test_a_dead_letter_still_refused_stays_with_its_reason_and_one_more_sighting(host):
    dead = dead_letter_for(item(host, UNKNOWN_USER_ID))

    assert services.replay_dead_letter(dead) == services.REJECTED

    dead.refresh_from_db()
    assert (dead.reason, dead.times_seen) == ("Unknown sender or receiver.", 2)
    assert not Message.objects.exists()


def test_two_operators_replaying_the_same_dead_letter_store_it_once(host):
    message = item(host, UNKNOWN_USER_ID)
    dead = dead_letter_for(message)
    same_row_seen_by_the_other_operator = DeadLetterMessage.objects.get(pk=dead.pk)
    get_user_model().objects.create_user(pk=UNKNOWN_USER_ID, username="late-guest", password="pass-12345")

    assert services.replay_dead_letter(dead) == services.STORED
    assert services.replay_dead_letter(same_row_seen_by_the_other_operator) == services.DUPLICATE
    assert Message.objects.count() == 1 and not DeadLetterMessage.objects.exists()


def test_the_command_replays_by_reason_and_says_what_stays(host, capsys):
    fixable = dead_letter_for(item(host, UNKNOWN_USER_ID))
    hopeless = dead_letter_for(item(host, UNKNOWN_USER_ID + 1))
    get_user_model().objects.create_user(pk=UNKNOWN_USER_ID, username="late-guest", password="pass-12345")

    with pytest.raises(CommandError, match="1 still refused"):
        call_command("replay_dead_letters", reason="Unknown sender or receiver.")

    printed = capsys.readouterr().out
    assert f"{fixable.pk} {fixable.message_id}: stored" in printed
    assert f"{hopeless.pk} {hopeless.message_id}: rejected" in printed
    assert "Replayed: 1 rejected, 1 stored." in printed
    assert list(DeadLetterMessage.objects.values_list("pk", flat=True)) == [hopeless.pk]


def test_the_command_needs_a_choice_and_names_unknown_ids():
    with pytest.raises(CommandError, match="Name the dead letters"):
        call_command("replay_dead_letters")
    with pytest.raises(CommandError, match="No dead letter has the id 999"):
        call_command("replay_dead_letters", "999")
