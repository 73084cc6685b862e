"""The project as a whole: configuration, migrations, the read-only ledger views."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from finance.services import TransactionService
from testing.web_server import PRODUCTION_SECRETS


def _django_setup(**env):
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
    )


def test_refuses_to_start_with_debug_off_and_the_default_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "false"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_starts_with_debug_off_and_private_secrets():
    assert _django_setup(DEBUG="false", SANDBOX_PAYMENTS_ENABLED="false", **PRODUCTION_SECRETS).returncode == 0


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(groups=["Finance"]))
    return client


@pytest.mark.django_db
def test_finance_staff_can_list_and_inspect_wallets_but_not_change_them(staff_client, funded_wallet):
    listing = staff_client.get("/admin/wallet/")
    assert listing.status_code == 200
    assert funded_wallet.user.username in listing.content.decode()
    assert staff_client.get(f"/admin/wallet/inspect/{funded_wallet.pk}/").status_code == 200
    assert staff_client.get("/admin/wallet/new/").status_code in (302, 403)
    assert staff_client.get(f"/admin/wallet/edit/{funded_wallet.pk}/").status_code in (302, 403)


@pytest.mark.django_db
def test_hosts_never_reach_the_admin(client, host):
    TransactionService.create_wallet(host, "NGN")
    client.force_login(host)
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"] == "/statement/"
