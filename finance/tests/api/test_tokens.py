"""API tokens (finance/api/tokens.py, authentication.py, throttling.py and the auth views):
failed sign-ins lock the token endpoint, tokens expire, are stored hashed and can be revoked."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token

pytestmark = pytest.mark.django_db

PASSWORD = "pass-12345"  # conftest.make_user's password
ATTACKER = "203.0.113.5"
ELSEWHERE = "198.51.100.7"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def stored_tokens(user):
    """The user's rows in the token store (imported here, so this file also runs on the old store)."""
    from knox.models import AuthToken

    return AuthToken.objects.filter(user=user)


def sign_in(username, password, address=ATTACKER, **headers):
    body = {"username": username, "password": password}
    return APIClient().post(reverse("api-token"), body, format="json", REMOTE_ADDR=address, **headers)


def wallets(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(reverse("wallet-my-wallet"))


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body
    if code:
        assert body["error"]["code"] == code, body


# --- failed sign-ins ---------------------------------------------------------------------------


def test_ten_failures_for_a_username_lock_it_even_with_the_right_password(host):
    for _ in range(10):
        assert_error(sign_in(host.username, "wrong"), 400)

    refused = sign_in(host.username, PASSWORD, address=ELSEWHERE)

    assert_error(refused, 429, "throttled")
    assert 0 < int(refused["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts" in refused.json()["error"]["message"]
    assert not stored_tokens(host).exists()


def test_ten_failures_from_one_address_lock_it_whatever_the_username(host, other_host):
    for n in range(10):
        assert_error(sign_in(f"nobody{n}", "wrong"), 400)

    assert_error(sign_in(host.username, PASSWORD), 429, "throttled")
    # The same user from another address, with no failures of its own, is let in.
    assert sign_in(host.username, PASSWORD, address=ELSEWHERE).status_code == 200


def test_nine_failures_do_not_lock_and_successes_are_not_counted(host):
    for _ in range(9):
        assert_error(sign_in(host.username, "wrong"), 400)
    for _ in range(15):
        assert sign_in(host.username, PASSWORD).status_code == 200


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(host):
    """Without TRUSTED_PROXIES, X-Forwarded-For is the client's own say: it is not the address."""
    for n in range(10):
        assert_error(sign_in(f"nobody{n}", "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"), 400)

    assert_error(sign_in(host.username, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99"), 429, "throttled")


def test_the_token_lockout_lifts_when_the_window_has_passed(host, monkeypatch):
    for _ in range(10):
        sign_in(host.username, "wrong")
    assert sign_in(host.username, PASSWORD).status_code == 429

    from finance.api import throttling

    later = throttling.FailedLoginThrottle.timer() + 15 * 60 + 1
    monkeypatch.setattr(throttling.FailedLoginThrottle, "timer", staticmethod(lambda: later))

    assert sign_in(host.username, PASSWORD).status_code == 200


def test_the_token_lockout_follows_the_configured_limit(host, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    for _ in range(3):
        assert_error(sign_in(host.username, "wrong"), 400)
    assert_error(sign_in(host.username, PASSWORD), 429, "throttled")


# --- tokens ----------------------------------------------------------------------------------


def test_token_endpoint_says_when_the_token_expires_thirty_days_ahead(host):
    response = sign_in(host.username, PASSWORD)

    assert response.status_code == 200
    expires = parse_datetime(response.json()["expires"])
    assert abs(expires - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert wallets(response.json()["token"]).status_code == 200


def test_an_expired_token_is_401_with_the_error_shape(host):
    token = issue_api_token(host)
    assert wallets(token).status_code == 200
    stored_tokens(host).update(expiry=timezone.now() - timedelta(seconds=1))

    response = wallets(token)

    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Bearer"
    assert "expired" in response.json()["error"]["message"]


def test_an_expired_token_is_deleted_when_it_is_used(host):
    expired, live = issue_api_token(host), issue_api_token(host)
    stored_tokens(host).filter(token_key=expired[:15]).update(expiry=timezone.now() - timedelta(seconds=1))

    assert_error(wallets(expired), 401, "authentication_failed")

    assert [t.token_key for t in stored_tokens(host)] == [live[:15]]
    assert wallets(live).status_code == 200


def test_issuing_a_token_deletes_the_users_expired_ones_and_no_live_one(host, other_host):
    expired, live, others_expired = issue_api_token(host), issue_api_token(host), issue_api_token(other_host)
    stored_tokens(host).filter(token_key=expired[:15]).update(expiry=timezone.now() - timedelta(seconds=1))
    stored_tokens(other_host).update(expiry=timezone.now() - timedelta(seconds=1))

    new = issue_api_token(host)

    assert sorted(t.token_key for t in stored_tokens(host)) == sorted([live[:15], new[:15]])
    assert stored_tokens(other_host).count() == 1  # someone else's: swept when they are issued one
    assert wallets(live).status_code == 200 and wallets(new).status_code == 200
    assert_error(wallets(others_expired), 401, "authentication_failed")


def test_a_bearer_token_is_checked_with_one_query(host, django_assert_num_queries):
    token = issue_api_token(host)
    issue_api_token(host)  # another client of the same user: not read to authenticate this one
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    with django_assert_num_queries(2):  # the token with its user, then the caller's wallets
        response = client.get(reverse("wallet-my-wallet"))

    assert response.status_code == 200


def test_tokens_are_stored_only_as_digests(host):
    token = issue_api_token(host)

    stored = stored_tokens(host).values()
    assert len(stored) == 1
    assert not any(token in str(value) for value in stored[0].values())
    assert wallets(token).status_code == 200


def test_revoking_a_token_signs_that_client_out_and_no_other(host):
    phone, laptop = issue_api_token(host), issue_api_token(host)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {phone}")

    response = client.post(reverse("api-token-revoke"))

    assert response.status_code == 200 and response.json() == {"revoked": 1}
    assert_error(wallets(phone), 401, "authentication_failed")
    assert wallets(laptop).status_code == 200


def test_revoke_all_signs_every_client_out(host, other_host):
    phone, laptop, someone_else = issue_api_token(host), issue_api_token(host), issue_api_token(other_host)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {phone}")

    response = client.post(reverse("api-token-revoke-all"))

    assert response.status_code == 200 and response.json() == {"revoked": 2}
    assert_error(wallets(phone), 401)
    assert_error(wallets(laptop), 401)
    assert wallets(someone_else).status_code == 200


@pytest.mark.parametrize("token", ["abc\x00def", "caf\xe9", "a" * 500, "../../etc"])
def test_a_malformed_token_is_401_not_a_server_error(host, token):
    assert_error(wallets(token), 401, "authentication_failed")
