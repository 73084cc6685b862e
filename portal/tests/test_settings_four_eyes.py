"""The four-eyes block of portal/settings.py: thresholds and the window come from the environment."""

import os
import subprocess
import sys

PRINT = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.APPROVAL_THRESHOLDS['XOF'], s.APPROVAL_THRESHOLDS['NGN'], s.APPROVAL_THRESHOLDS['USD'], "
    "s.APPROVAL_WINDOW_HOURS)"
)


def _settings(**env):
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
    )


def test_thresholds_and_the_window_are_configured_from_the_environment():
    result = _settings(APPROVAL_THRESHOLDS="xof=650000, NGN=2000.50", APPROVAL_WINDOW_HOURS="6")
    assert result.returncode == 0, result.stderr
    # XOF added, NGN overridden, USD kept from the defaults, a 6-hour window.
    assert result.stdout.split() == ["650000", "2000.50", "1000.00", "6"]


def test_the_window_is_24_hours_unless_configured():
    env = {k: v for k, v in os.environ.items() if k not in ("APPROVAL_WINDOW_HOURS", "APPROVAL_THRESHOLDS")}
    result = subprocess.run(
        [sys.executable, "-c", PRINT.replace("s.APPROVAL_THRESHOLDS['XOF'], ", "")],
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "24"


def test_a_malformed_threshold_or_window_refuses_to_start():
    for env in ({"APPROVAL_THRESHOLDS": "NGN=lots"}, {"APPROVAL_WINDOW_HOURS": "0"}, {"APPROVAL_WINDOW_HOURS": "1.5"}):
        result = _settings(**env)
        assert result.returncode != 0, env
        assert next(iter(env)) in result.stderr
