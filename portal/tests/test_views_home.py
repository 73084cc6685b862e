"""portal/views/home.py and HostsToStatementMiddleware: where /admin/ and signing in send people."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("who", "lands_on"),
    [
        ("finance_user", "/admin/operations/dashboard/"),
        ("approver", "/admin/operations/dashboard/"),
        ("manager", "/admin/operations/dashboard/"),
        ("support_user", "/admin/operations/broadcasts/"),
        ("host", "/statement/"),
    ],
)
def test_admin_home_sends_each_role_to_its_first_page(client, request, who, lands_on):
    client.force_login(request.getfixturevalue(who))
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"] == lands_on


@pytest.mark.parametrize(
    ("who", "lands_on"), [("finance_user", "/admin/operations/dashboard/"), ("host", "/statement/")]
)
def test_signing_in_on_the_admin_form_ends_on_that_page(client, request, who, lands_on):
    user = request.getfixturevalue(who)
    response = client.post("/admin/login/", {"username": user.username, "password": "pass-12345"}, follow=True)
    assert response.redirect_chain[-1][0] == lands_on


def test_a_host_anywhere_under_admin_goes_to_the_statement(client, host):
    client.force_login(host)
    assert client.get("/admin/operations/withdrawals/")["Location"] == "/statement/"
    assert client.get("/admin/login/")["Location"] == "/statement/"
    assert client.get("/admin/logout/")["Location"] != "/statement/"  # signing out is left to Wagtail


def test_staff_without_an_operations_role_keep_wagtails_home(client, make_user):
    from django.contrib.auth.models import Permission

    editor = make_user("staff")
    editor.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(editor)
    assert client.get("/admin/").status_code == 200


def test_signed_out_visitors_are_asked_to_sign_in(client):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
