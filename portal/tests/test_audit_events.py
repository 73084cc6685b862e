"""What the audit log records besides the staff actions (portal/audit_events.py, finance.audit.log_denied):
sign-ins, failed sign-ins (bounded under a flood), lockouts, sign-outs and refusals."""

import json
from decimal import Decimal

import pytest
from django.test import Client
from wagtail.models import ModelLogEntry

from finance.services import TransactionService
from portal.models import AuditTarget

pytestmark = pytest.mark.django_db

PASSWORD = "pass-12345"  # conftest.make_user's password
ADDRESS = "203.0.113.5"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(client, username, password, address=ADDRESS):
    return client.post("/admin/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def entries(action):
    return list(ModelLogEntry.objects.filter(action=action).order_by("id"))


def test_a_sign_in_is_recorded_with_the_address(finance_user):
    sign_in(Client(), finance_user.username, PASSWORD)
    [entry] = entries("stayafrica.auth.login")
    assert entry.user == finance_user and entry.object_id == str(finance_user.pk)
    assert entry.data["ip"] == ADDRESS and entry.data["username"] == finance_user.username


def test_a_failed_sign_in_records_the_username_tried_never_the_password(finance_user):
    sign_in(Client(), finance_user.username, "wrong-secret-1")
    sign_in(Client(), "nobody-by-this-name", "wrong-secret-2")
    known, unknown = entries("stayafrica.auth.login_failed")
    assert known.user is None and known.object_id == str(finance_user.pk)  # the account tried
    assert unknown.object_id == str(AuditTarget.objects.get(name="Sign-in").pk)
    assert unknown.label == "Sign-in as “nobody-by-this-name”"
    assert unknown.data["username"] == "nobody-by-this-name" and unknown.data["ip"] == ADDRESS
    stored = json.dumps([known.data, unknown.data, known.label, unknown.label])
    assert "wrong-secret" not in stored


def test_a_lockout_is_one_row_and_the_attempts_it_refuses_add_none(settings, host):
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(10):
        sign_in(client, host.username, "wrong")
    failed = entries("stayafrica.auth.login_failed")
    assert 2 <= len(failed) <= 3  # the failures axes counted (the third is the lockout's own)
    [lockout] = entries("stayafrica.auth.lockout")
    assert lockout.data["username"] == host.username and lockout.data["ip"] == ADDRESS


def test_failed_sign_ins_from_everywhere_are_capped_per_hour(settings):
    settings.LOGIN_FAILURES_RECORDED_PER_HOUR = 3
    for n in range(8):  # each from its own address, under a new name: no lockout applies
        sign_in(Client(), f"guess{n}", "wrong", address=f"198.51.100.{n + 1}")
    failed = entries("stayafrica.auth.login_failed")
    assert len(failed) == 4
    assert "not recorded" in failed[-1].data["note"]


def test_a_sign_out_is_recorded(finance_user):
    client = Client()
    client.force_login(finance_user)
    client.post("/admin/logout/")
    [entry] = entries("stayafrica.auth.logout")
    assert entry.user == finance_user


def test_a_staff_member_refused_a_page_is_recorded(support_user):
    client = Client()
    client.force_login(support_user)
    refused = client.get("/admin/operations/withdrawals/")
    assert (refused.status_code, refused["Location"]) == (302, "/admin/")  # Wagtail's "no permission" redirect
    [entry] = entries("stayafrica.access.denied")
    assert entry.user == support_user
    assert entry.data["path"] == "/admin/operations/withdrawals/" and entry.data["method"] == "GET"
    assert entry.data["permission"] == "finance.view_withdrawal"


def test_a_staff_action_refused_through_the_api_is_recorded(support_user, funded_wallet, bank_account):
    from finance.api.tokens import issue_api_token

    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2000.00"))
    response = Client().post(
        f"/api/payments/withdrawals/{withdrawal.pk}/complete/",
        HTTP_AUTHORIZATION=f"Bearer {issue_api_token(support_user)}",
    )
    assert response.status_code == 403
    [entry] = entries("stayafrica.access.denied")
    assert entry.user == support_user and entry.data["permission"] == "finance.complete_withdrawal"
    assert entry.data["path"] == f"/api/payments/withdrawals/{withdrawal.pk}/complete/"


def test_anonymous_visitors_and_not_found_pages_are_not_recorded(support_user):
    Client().get("/admin/operations/withdrawals/")
    client = Client()
    client.force_login(support_user)
    client.get("/admin/operations/no-such-page/")
    Client().get("/health/")
    assert not ModelLogEntry.objects.filter(action="stayafrica.access.denied").exists()
