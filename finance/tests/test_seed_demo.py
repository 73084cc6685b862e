"""seed_demo: the demo data and its logins (published password) exist only in development."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command


@pytest.mark.django_db
def test_seed_demo_refuses_to_create_demo_logins_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG=true"):
        call_command("seed_demo")

    assert not get_user_model().objects.filter(username__in=["admin", "finance", "guest"]).exists()
