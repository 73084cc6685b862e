"""portal/htmx.py and the htmx refusals of portal/views/base.py: an expired session sends the
browser to sign in and back; an action the user may not take answers a sentence in place."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from finance.services import TransactionService

pytestmark = pytest.mark.django_db

QUEUE = "/admin/operations/withdrawals/?host=abc"


def htmx_headers(current="http://testserver" + QUEUE):
    return {"HX-Request": "true", "HX-Current-URL": current}


@pytest.fixture
def withdrawal(funded_wallet, bank_account):
    return TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))


def test_an_htmx_action_after_the_session_expired_sends_the_browser_to_sign_in_and_back(client, withdrawal):
    response = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/complete/confirm/", headers=htmx_headers())
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/admin/login/?next=%2Fadmin%2Foperations%2Fwithdrawals%2F%3Fhost%3Dabc"
    assert b"<form" not in response.content


def test_the_way_back_is_only_to_this_site(client, withdrawal):
    headers = htmx_headers(current="https://elsewhere.example" + QUEUE)
    response = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/row/", headers=headers)
    assert response["HX-Redirect"] == "/admin/login/"


def test_a_request_without_htmx_keeps_the_ordinary_redirect(client, withdrawal):
    response = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/row/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=")


def test_an_htmx_action_refused_answers_a_sentence_in_the_row(client, finance_user, withdrawal):
    finance_user.groups.remove(Group.objects.get(name="Finance"))
    finance_user.groups.add(Group.objects.get(name="Manager"))
    client.force_login(finance_user)
    response = client.get(f"/admin/operations/withdrawals/{withdrawal.pk}/complete/confirm/", headers=htmx_headers())
    html = response.content.decode()
    assert response.status_code == 403 and response["X-Refusal"] == "permission"
    assert html.lstrip().startswith(f'<tr id="withdrawal-{withdrawal.pk}"')
    assert "You don&#x27;t have permission to complete withdrawals." in html
    assert "Wagtail" not in html and "Dashboard" not in html


def test_other_htmx_refusals_name_the_permission_and_keep_the_target(client, support_user):
    client.force_login(support_user)
    response = client.get("/admin/operations/transactions/?page=2", headers={**htmx_headers(), "HX-Target": "results"})
    assert response.status_code == 403 and response["HX-Reswap"] == "innerHTML"
    assert "You don&#x27;t have permission to view wallet transaction." in response.content.decode()


def test_a_refusal_without_htmx_is_still_wagtails_redirect(client, support_user):
    client.force_login(support_user)
    response = client.get("/admin/operations/transactions/")
    assert response.status_code == 302 and response["Location"] == "/admin/"
