"""Reads for the broadcast pages (messaging/selectors.py): the audience in words, the user picker."""

import pytest

from messaging.selectors import NAMED_USERS, describe_audience, search_users

pytestmark = pytest.mark.django_db


def test_the_audience_in_words():
    assert describe_audience("all_hosts") == "All hosts"
    assert describe_audience("all_guests") == "All guests"
    assert describe_audience("hosts_in_country", country="KE") == "All hosts in Kenya"


def test_chosen_users_are_named_and_counted(make_user):
    amara = make_user("host", first_name="Amara", last_name="Okafor")
    assert describe_audience("user_ids", user_ids=[amara.pk]) == "1 chosen user: Amara Okafor"
    many = [make_user("guest").pk for _ in range(NAMED_USERS + 2)]
    assert describe_audience("user_ids", user_ids=many).endswith(" and 2 more")
    assert describe_audience("user_ids", user_ids=many).startswith(f"{NAMED_USERS + 2} chosen users: ")


def test_search_matches_every_word_and_leaves_inactive_users_out(make_user):
    amara = make_user("host", first_name="Amara", last_name="Okafor")
    make_user("host", first_name="Amara", last_name="Diallo")
    make_user("host", first_name="Amara", last_name="Okafor", is_active=False)
    assert search_users("amara okafor") == [amara]
