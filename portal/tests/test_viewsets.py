"""The Operations menu (portal/viewsets.py): each section shown only to those who may open it."""

import pytest

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


def test_menu_shows_operations_only_to_permitted_sections(client, support_user):
    login(client, support_user)
    html = client.get("/admin/", follow=True).content.decode()
    assert "Messaging stats" in html
    assert "Withdrawals" not in html
