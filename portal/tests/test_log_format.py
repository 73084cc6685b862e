"""Log lines as an operator reads them (portal/log_format.py, settings.LOGGING): one JSON object per
line, each with the request id the answer carried (portal.middleware.RequestIdMiddleware) and the
signed-in user, server errors with their traceback; plain text for a terminal; and which one a
deployment gets."""

import logging
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client
from django.urls import path
from rest_framework.test import APIClient

from finance.api.tokens import issue_api_token
from testing.log_capture import captured_logs
from testing.web_server import PRODUCTION_SECRETS, ROOT

NEW_ID = re.compile(r"[0-9a-f]{32}")
WEBHOOK = "/api/payments/webhooks/paystack/"


def crash(request):
    raise RuntimeError("the ledger exploded")


# This module is the URLconf of the server-error test.
urlpatterns = [path("crash/", crash)]


def forged_webhook(**headers):
    return APIClient().post(
        WEBHOOK,
        b'{"event": "charge.success"}',
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE="0" * 128,
        **headers,
    )


def test_a_json_line_has_time_level_logger_message_and_the_callers_fields():
    with captured_logs("json") as logs:
        logging.getLogger("finance.services").info(
            "credit_wallet succeeded: %s",
            "TXN-1",
            extra={
                "reference": "TXN-1",
                "amount": Decimal("1234567.10"),
                "operation": "credit_wallet",
                "outcome": "ok",
            },
        )

    [line] = logs.lines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "finance.services",
        "message": "credit_wallet succeeded: TXN-1",
        "request_id": None,  # logged outside any request or job
        "reference": "TXN-1",
        "amount": "1234567.10",  # the Decimal's exact text, never a float
        "operation": "credit_wallet",
        "outcome": "ok",
    }


def test_an_exception_and_its_traceback_stay_on_the_one_line():
    with captured_logs("json") as logs:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logging.getLogger("jobs").exception("job failed")

    text = logs.text()
    assert text.count("\n") == 1  # one line, ended
    [line] = logs.lines()
    assert line["message"] == "job failed"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("ValueError: bad\nvalue")


@pytest.mark.django_db
def test_the_request_id_nginx_sent_is_answered_and_on_every_line_the_request_logged():
    with captured_logs("json") as logs:
        response = forged_webhook(HTTP_X_REQUEST_ID="nginx-7f3b942a")

    assert response.status_code == 401
    assert response["X-Request-Id"] == "nginx-7f3b942a"
    lines = logs.lines()
    # The refusal (finance.payments) and Django's own 4xx line, logged after every middleware
    # returned, both carry it.
    assert {line["logger"] for line in lines} >= {"finance.payments", "django.request"}
    assert {line["request_id"] for line in lines} == {"nginx-7f3b942a"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "given",
    ["", "has space", "x" * 65, "semi;colon", "naïve"],
    ids=["empty", "space", "too-long", "punctuation", "non-ascii"],
)
def test_an_unacceptable_request_id_is_replaced_by_a_new_one(given):
    with captured_logs("json") as logs:
        response = forged_webhook(HTTP_X_REQUEST_ID=given)

    assert NEW_ID.fullmatch(response["X-Request-Id"])
    assert {line["request_id"] for line in logs.lines()} == {response["X-Request-Id"]}


@pytest.mark.django_db
def test_without_a_request_id_each_request_gets_its_own():
    first, second = forged_webhook(), forged_webhook()

    assert NEW_ID.fullmatch(first["X-Request-Id"]) and NEW_ID.fullmatch(second["X-Request-Id"])
    assert first["X-Request-Id"] != second["X-Request-Id"]


@pytest.mark.django_db
def test_lines_logged_deep_in_the_money_services_carry_the_request_and_the_signed_in_user(
    host, funded_wallet, bank_account
):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_api_token(host)}")
    with captured_logs("json") as logs:
        response = client.post(
            "/api/payments/withdrawals/",
            {"wallet": funded_wallet.pk, "bank_account": bank_account.pk, "amount": "2000.00"},
            format="json",
            HTTP_X_REQUEST_ID="req-withdrawal-1",
        )

    assert response.status_code == 201, response.content
    money_lines = [line for line in logs.lines() if line["logger"].split(".")[0] == "finance"]
    assert money_lines, logs.text()
    assert {(line["request_id"], line.get("user_id")) for line in money_lines} == {("req-withdrawal-1", host.pk)}


@pytest.mark.django_db
def test_a_server_error_is_logged_with_its_traceback_and_never_only_mailed(settings):
    settings.ROOT_URLCONF = __name__
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with captured_logs("json") as logs:
        response = Client(raise_request_exception=False).get("/crash/?token=not-for-the-log")

    assert response.status_code == 500
    [error] = [line for line in logs.lines() if line["level"] == "ERROR"]
    assert error["logger"] == "django.request"
    assert error["message"] == "Internal Server Error: /crash/"
    assert error["request_id"] == response["X-Request-Id"]
    assert error["status_code"] == 500
    assert "RuntimeError: the ledger exploded" in error["exc_info"]
    assert 'in crash\n    raise RuntimeError("the ledger exploded")' in error["exc_info"]
    # The request object (its text is the full URL) is not written, so neither is its query string.
    assert "not-for-the-log" not in logs.text()
    # Nothing is e-mailed: Django's AdminEmailHandler is not configured at all.
    assert mail.outbox == []
    assert not [h for h in logging._handlers.values() if type(h).__name__ == "AdminEmailHandler"]


@pytest.mark.django_db
def test_plain_lines_show_the_request_id_and_the_callers_fields():
    with captured_logs("plain") as logs:
        response = forged_webhook(HTTP_X_REQUEST_ID="req-plain-1")
        logging.getLogger("finance").warning("refund refused", extra={"amount": Decimal("5.00"), "outcome": "x"})

    assert response.status_code == 401
    text = logs.text()
    assert re.search(r"WARNING finance\.payments \[req-plain-1\] webhook paystack from \S+ failed verification", text)
    assert re.search(r'WARNING finance refund refused amount="5\.00" outcome=x$', text, re.MULTILINE)


def logged_by_a_fresh_process(**env) -> subprocess.CompletedProcess:
    """What a process started with `env` writes when the finance logger says something."""
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('finance').warning('payout late', extra={'reference': 'WDR-1'})"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**PRODUCTION_SECRETS, "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "env, json_lines",
    [
        ({"DEBUG": "false"}, True),
        ({"DEBUG": "true"}, False),
        ({"DEBUG": "false", "LOG_FORMAT": "plain"}, False),
        ({"DEBUG": "true", "LOG_FORMAT": "json"}, True),
    ],
    ids=["production-profile", "development", "production-plain", "development-json"],
)
def test_json_with_debug_off_plain_with_it_on_unless_log_format_says(env, json_lines):
    result = logged_by_a_fresh_process(**env)

    assert result.returncode == 0, result.stderr
    line = result.stderr.strip()
    if json_lines:
        assert line.startswith("{") and '"message": "payout late"' in line and '"reference": "WDR-1"' in line
    else:
        assert re.fullmatch(r"\S+ \S+ WARNING finance payout late reference=WDR-1", line), line


def test_an_unknown_log_format_refuses_to_start_and_says_which_exist():
    result = logged_by_a_fresh_process(DEBUG="false", LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT='xml': set it to json or plain" in result.stderr
