"""Fail closed: with DEBUG off (the default) the portal starts only with private secrets,
and never with the sandbox provider. Each check runs `manage.py` in a fresh process, as
an operator starting the portal would; the matrix of every secret calls the check directly."""

import os
import subprocess
import sys

import pytest

from portal.secrets_check import (
    ALWAYS_REQUIRED,
    DEVELOPMENT_SECRETS,
    PROVIDER_SECRETS,
    ROTATED_SECRETS,
    required_secrets,
    settings_problems,
)
from testing.web_server import PRODUCTION_SECRETS, ROOT

CONFIGURATION = {
    *DEVELOPMENT_SECRETS,
    *(f"{name}_PREVIOUS" for name in ROTATED_SECRETS),
    "SECRET_KEY_FALLBACKS",
    "DEBUG",
    "PAYMENT_PROVIDERS",
    "SANDBOX_PAYMENTS_ENABLED",
}


def manage(*args, **env) -> subprocess.CompletedProcess:
    """`python manage.py ...` with only `env` configured (nothing inherited from the test run)."""
    clean = {key: value for key, value in os.environ.items() if key not in CONFIGURATION}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def print_setting(name: str, **env) -> subprocess.CompletedProcess:
    return manage("shell", "-c", f"from django.conf import settings; print('=', settings.{name})", **env)


def printed(result: subprocess.CompletedProcess) -> str:
    return result.stdout.split("= ", 1)[1].strip()


def test_debug_is_off_unless_the_environment_turns_it_on():
    result = print_setting("DEBUG", **PRODUCTION_SECRETS)

    assert result.returncode == 0, result.stderr
    assert printed(result) == "False"


def test_without_configuration_the_portal_refuses_to_start_and_lists_every_secret():
    result = manage("check")

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    for name in required_secrets(PROVIDER_SECRETS):
        assert f"{name} is not set" in result.stderr
    # It says how to make one, and how to run the demo instead.
    assert "secrets.token_urlsafe(50)" in result.stderr
    assert "DEBUG=true" in result.stderr


def test_debug_off_refuses_the_published_development_secrets():
    result = manage("check", DEBUG="false", **DEVELOPMENT_SECRETS)

    assert result.returncode != 0
    for name in required_secrets(PROVIDER_SECRETS):
        assert f"{name} is the development default" in result.stderr


@pytest.mark.parametrize("name", required_secrets(PROVIDER_SECRETS))
@pytest.mark.parametrize("state", ["missing", "empty", "blank", "development default"])
def test_each_secret_is_refused_when_missing_empty_or_the_development_default(name, state):
    values = dict(PRODUCTION_SECRETS)
    if state == "missing":
        del values[name]
    else:
        values[name] = {"empty": "", "blank": "  ", "development default": DEVELOPMENT_SECRETS[name]}[state]

    problems = settings_problems(values, enabled_providers=PROVIDER_SECRETS)

    assert len(problems) == 1 and problems[0].startswith(f"{name} "), problems


def test_with_every_secret_private_debug_off_starts():
    result = manage("check", DEBUG="false", **PRODUCTION_SECRETS)

    assert result.returncode == 0, result.stderr


def test_a_provider_switched_off_needs_no_secrets():
    only_paystack = {name: PRODUCTION_SECRETS[name] for name in ALWAYS_REQUIRED}
    only_paystack["PAYSTACK_SECRET_KEY"] = PRODUCTION_SECRETS["PAYSTACK_SECRET_KEY"]

    switched_off = manage("check", DEBUG="false", PAYMENT_PROVIDERS="paystack=NG GH", **only_paystack)
    all_on = manage("check", DEBUG="false", **only_paystack)

    assert switched_off.returncode == 0, switched_off.stderr
    # With the default table every provider is on, and each one's secrets are named.
    assert all_on.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET is not set" in all_on.stderr
    assert "PAYMENT_PROVIDERS" in all_on.stderr


def test_payment_providers_none_switches_every_provider_off():
    core = {name: PRODUCTION_SECRETS[name] for name in ALWAYS_REQUIRED}

    result = print_setting("PAYMENT_PROVIDERS", DEBUG="false", PAYMENT_PROVIDERS="none", **core)

    assert result.returncode == 0, result.stderr
    assert printed(result) == "{}"


def test_a_misspelt_provider_is_a_startup_error_not_a_silent_switch_off():
    result = manage("check", DEBUG="false", PAYMENT_PROVIDERS="paystak=NG,stripe=*", **PRODUCTION_SECRETS)

    assert result.returncode != 0
    assert "PAYMENT_PROVIDERS names 'paystak'" in result.stderr


def test_the_sandbox_provider_with_debug_off_is_a_startup_error():
    result = manage("check", DEBUG="false", SANDBOX_PAYMENTS_ENABLED="true", **PRODUCTION_SECRETS)

    assert result.returncode != 0
    assert "SANDBOX_PAYMENTS_ENABLED is on" in result.stderr


def test_the_sandbox_webhook_secret_is_not_derived_from_the_secret_key():
    secret_key = "k" * 60

    result = print_setting("SANDBOX_WEBHOOK_SECRET", DEBUG="true", SECRET_KEY=secret_key)

    assert result.returncode == 0, result.stderr
    assert secret_key[:8] not in printed(result)


# --- rotation: previous values still accepted must be private too ---------------------------------------


@pytest.mark.parametrize("name", [name for name in required_secrets(PROVIDER_SECRETS) if name in ROTATED_SECRETS])
def test_a_previous_secret_that_is_a_published_development_value_is_refused(name):
    values = {**PRODUCTION_SECRETS, f"{name}_PREVIOUS": DEVELOPMENT_SECRETS[name]}

    problems = settings_problems(values, enabled_providers=PROVIDER_SECRETS)

    assert len(problems) == 1 and problems[0].startswith(f"{name}_PREVIOUS is a development value"), problems


def test_previous_secrets_that_are_private_or_empty_are_accepted():
    values = {
        **PRODUCTION_SECRETS,
        "MESSAGING_SHARED_SECRET_PREVIOUS": "a-private-value-from-before-the-rotation",
        "PAYSTACK_SECRET_KEY_PREVIOUS": "",
        "SECRET_KEY_FALLBACKS": ["an-old-private-key"],
    }

    assert settings_problems(values, enabled_providers=PROVIDER_SECRETS) == []


def test_debug_off_refuses_a_published_key_among_the_secret_key_fallbacks():
    fallbacks = f"an-old-private-key,{DEVELOPMENT_SECRETS['SECRET_KEY']}"

    result = manage("check", DEBUG="false", SECRET_KEY_FALLBACKS=fallbacks, **PRODUCTION_SECRETS)

    assert result.returncode != 0
    assert "SECRET_KEY_FALLBACKS holds a development value" in result.stderr


def test_debug_off_refuses_a_published_previous_value_at_start():
    result = manage(
        "check", DEBUG="false", MESSAGING_SHARED_SECRET_PREVIOUS="dev-messaging-secret", **PRODUCTION_SECRETS
    )

    assert result.returncode != 0
    assert "MESSAGING_SHARED_SECRET_PREVIOUS is a development value" in result.stderr


def test_secret_key_fallbacks_come_from_the_environment_comma_separated():
    result = print_setting(
        "SECRET_KEY_FALLBACKS", DEBUG="false", SECRET_KEY_FALLBACKS="old-1, old-2", **PRODUCTION_SECRETS
    )

    assert result.returncode == 0, result.stderr
    assert printed(result) == "['old-1', 'old-2']"


@pytest.mark.parametrize(
    ("value", "said"), [(None, "is not set"), ("dev-bank-details-key", "is the development default")]
)
def test_debug_off_without_a_private_bank_details_key_refuses_to_start(value, said):
    # Hosts' account numbers would be encrypted with a key anyone can read in the source.
    env = {name: secret for name, secret in PRODUCTION_SECRETS.items() if name != "BANK_DETAILS_KEY"}
    if value is not None:
        env["BANK_DETAILS_KEY"] = value

    result = manage("check", DEBUG="false", **env)

    assert result.returncode != 0
    assert f"BANK_DETAILS_KEY {said}" in result.stderr
    assert "account numbers" in result.stderr  # what the key is for, so the operator keeps it
