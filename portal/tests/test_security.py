"""Sign-in lockouts on the portal's sign-in pages (portal/security.py, django-axes): Wagtail's
/admin/login/ (staff, and hosts on their way to /statement/) and /django-admin/login/."""

import time

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "pass-12345"  # conftest.make_user's password
ATTACKER = "203.0.113.5"
ELSEWHERE = "198.51.100.7"
HOST_LOGIN = "/admin/login/?next=/statement/"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(client, username, password, address=ATTACKER, path=HOST_LOGIN, **headers):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_host_signs_in_on_the_login_page_and_reaches_the_statement(host):
    client = Client()
    response = sign_in(client, host.username, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/statement/"
    assert client.get("/statement/").status_code == 200


def test_ten_failures_lock_a_username_even_with_the_right_password_and_the_page_says_so(host):
    attacker = Client()
    for _ in range(9):
        page = sign_in(attacker, host.username, "wrong")
        assert page.status_code == 200 and "didn&#x27;t match" in page.content.decode()
    tenth = sign_in(attacker, host.username, "wrong")
    assert tenth.status_code == 429

    owner = Client()
    page = sign_in(owner, host.username, PASSWORD, address=ELSEWHERE)

    assert page.status_code == 429
    assert 0 < int(page["Retry-After"]) <= 15 * 60
    html = page.content.decode()
    # The login page itself, its error box saying why: not a bare error page.
    assert 'class="error"' in html and "Too many failed sign-in attempts" in html and "15 minutes" in html
    assert 'name="password"' in html
    assert not signed_in(owner)


def test_ten_failures_from_one_address_lock_it_whatever_the_username(host, finance_user):
    attacker = Client()
    for n in range(10):
        sign_in(attacker, f"nobody{n}", "wrong")

    assert sign_in(Client(), finance_user.username, PASSWORD).status_code == 429
    # Another address, and a username without failures: signs in.
    elsewhere = Client()
    assert sign_in(elsewhere, host.username, PASSWORD, address=ELSEWHERE).status_code == 302
    assert signed_in(elsewhere)


def test_the_django_admin_login_is_locked_too_and_says_so(make_user):
    admin = make_user("admin", superuser=True)
    for _ in range(10):
        sign_in(Client(), admin.username, "wrong", path="/django-admin/login/")

    client = Client()
    page = sign_in(client, admin.username, PASSWORD, address=ELSEWHERE, path="/django-admin/login/")

    assert page.status_code == 429 and "Too many failed sign-in attempts" in page.content.decode()
    assert not signed_in(client)


def test_a_forged_forwarded_for_header_does_not_escape_the_login_lockout(host):
    for n in range(10):
        sign_in(Client(), f"nobody{n}", "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert sign_in(Client(), host.username, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


def test_behind_a_trusted_proxy_each_client_address_is_locked_alone(host, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    proxy = "127.0.0.1"
    for n in range(10):
        sign_in(Client(), f"nobody{n}", "wrong", address=proxy, HTTP_X_FORWARDED_FOR=ATTACKER)

    locked = sign_in(Client(), host.username, PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR=ATTACKER)
    other_client = Client()
    let_in = sign_in(other_client, host.username, PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR=ELSEWHERE)

    assert locked.status_code == 429
    assert let_in.status_code == 302 and signed_in(other_client)


def test_the_login_lockout_lifts_when_the_window_has_passed(host, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_LOCKOUT_MINUTES = 1 / 60  # one second
    for _ in range(3):
        sign_in(Client(), host.username, "wrong")
    assert sign_in(Client(), host.username, PASSWORD).status_code == 429

    time.sleep(1.5)

    client = Client()
    assert sign_in(client, host.username, PASSWORD).status_code == 302
    assert signed_in(client)


# --- SECRET_KEY rotation ------------------------------------------------------------------------


@pytest.mark.parametrize("fallbacks, stays_signed_in", [(["old-key"], True), ([], False)], ids=["listed", "dropped"])
def test_a_host_signed_in_before_secret_key_rotated_stays_signed_in_while_the_old_key_is_a_fallback(
    settings, host, fallbacks, stays_signed_in
):
    settings.SECRET_KEY = "old-key"
    client = Client()
    assert sign_in(client, host.username, PASSWORD).status_code == 302

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key", fallbacks
    statement = client.get("/statement/")

    assert (statement.status_code == 200) is stays_signed_in
    assert signed_in(client) is stays_signed_in
