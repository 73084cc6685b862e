"""The periodic ledger check (finance.tasks.check_ledger): scheduled like every periodic job, it runs
what `manage.py check_ledger` runs and leaves its result where every process reads it."""

import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from finance.models import Wallet
from jobs import selectors
from jobs.models import CheckResult
from jobs.scheduler import enqueue_due_periodic_jobs, reschedule_now
from testing.jobs import run_ready_jobs
from testing.web_server import ROOT

pytestmark = pytest.mark.django_db


def run_the_periodic_ledger_check() -> None:
    """What a worker does when the check's period comes: enqueue it once, run it."""
    assert "finance.tasks.check_ledger" in enqueue_due_periodic_jobs(
        {"finance.tasks.check_ledger": settings.LEDGER_CHECK_EVERY_SECONDS}
    )
    assert run_ready_jobs() == 1


def test_a_healthy_ledger_is_recorded_as_ok_and_leaves_no_job_row(funded_wallet):
    before = timezone.now()

    run_the_periodic_ledger_check()

    result = selectors.last_check("ledger")
    assert result.ok and result.failures == []
    assert before <= result.ran_at <= timezone.now()
    assert not DBTaskResult.objects.filter(task_path="finance.tasks.check_ledger").exists()


def test_a_broken_ledger_is_recorded_with_the_failing_checks_and_logged_as_errors(funded_wallet, caplog):
    # A balance changed behind the ledger's back: it no longer equals its journal entries.
    Wallet.objects.filter(pk=funded_wallet.pk).update(balance=funded_wallet.balance + Decimal("5.00"))

    with caplog.at_level(logging.ERROR, logger="finance"):
        run_the_periodic_ledger_check()

    result = CheckResult.objects.get(name="ledger")
    assert not result.ok
    assert result.failures == ["wallet_balance"]
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "ledger check failed: wallet_balance" in errors[0], errors
    # The job itself did its work: the ledger's state is the finding, not a job failure.
    assert selectors.count_failed() == 0


def test_a_later_healthy_run_replaces_the_failed_result(funded_wallet):
    Wallet.objects.filter(pk=funded_wallet.pk).update(balance=funded_wallet.balance + Decimal("5.00"))
    run_the_periodic_ledger_check()
    Wallet.objects.filter(pk=funded_wallet.pk).update(balance=funded_wallet.balance)
    reschedule_now("finance.tasks.check_ledger")
    run_the_periodic_ledger_check()

    assert CheckResult.objects.get(name="ledger").ok
    assert CheckResult.objects.count() == 1


def test_it_runs_every_15_minutes_unless_ledger_check_every_seconds_says_otherwise():
    assert settings.PERIODIC_JOBS["finance.tasks.check_ledger"] == 900
    env = {**os.environ, "DEBUG": "true", "LEDGER_CHECK_EVERY_SECONDS": "60"}
    script = "from django.conf import settings; print(settings.PERIODIC_JOBS['finance.tasks.check_ledger'])"

    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "60"
