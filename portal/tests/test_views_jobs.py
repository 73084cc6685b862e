"""Background jobs page (portal/views/jobs.py): who sees it, what a failed job shows, retrying one."""

import pytest
from django.test import Client
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from testing import jobs as test_jobs
from testing.jobs import run_ready_jobs

from .confirming import confirmed_url, post_confirmation

pytestmark = pytest.mark.django_db

URL = "/admin/operations/jobs/"


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def failed_job():
    result = test_jobs.fail_permanently.enqueue()
    run_ready_jobs()
    return result


@pytest.mark.parametrize("role", ["finance_user", "support_user", "manager"])
def test_staff_see_a_failed_job_with_its_reason_and_attempts(request, role, failed_job):
    client = signed_in(request.getfixturevalue(role))

    menu = client.get("/admin/", follow=True).content.decode()
    page = client.get(URL, {"status": "failed"})

    assert "Background jobs" in menu and URL in menu
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="job-{failed_job.id}"' in html
    assert "Test: permanent failure" in html
    assert "PermanentJobError: the booking is gone" in html
    assert "1 of 5" in html
    assert "1 failed job" in html
    # Only people who may retry are offered Retry (and a manager has no Action column at all).
    assert ("Retry…" in html) == (role != "manager")
    assert ('data-label="Action"' in html) == (role != "manager")


def test_people_without_the_permission_are_refused(make_user, host, failed_job):
    approver_only = make_user(groups=["Finance approver"])
    for person in (approver_only, host):
        refused = signed_in(person).get(URL)
        assert refused.status_code in (302, 403)  # Wagtail sends a signed-in staff member back home
        assert str(failed_job.id) not in refused.content.decode()


def test_a_job_waiting_to_retry_says_when_it_tries_again(finance_user):
    result = test_jobs.succeed_on_attempt.enqueue(3)
    run_ready_jobs()
    html = signed_in(finance_user).get(URL, {"status": "retrying"}).content.decode()
    assert f'id="job-{result.id}"' in html
    assert "Waiting to retry" in html and "next try" in html
    assert "ConnectionError: attempt 1 refused" in html
    assert 'hx-trigger="every 3s"' in html  # the list refreshes itself while a job shown is unfinished


def test_a_list_of_finished_jobs_does_not_refresh_itself(finance_user, failed_job):
    html = signed_in(finance_user).get(URL, {"status": "failed"}).content.decode()
    assert f'id="job-{failed_job.id}"' in html
    assert "every 3s" not in html


def test_retry_asks_first_then_puts_the_job_back_in_the_queue(finance_user, failed_job):
    client = signed_in(finance_user)

    confirm = client.get(f"{URL}{failed_job.id}/retry/confirm/")
    assert confirm.status_code == 200
    assert "Retry the job “Test: permanent failure”?" in confirm.content.decode()
    assert DBTaskResult.objects.get(pk=failed_job.id).status == TaskResultStatus.FAILED  # asking changes nothing

    assert confirmed_url(confirm) == f"{URL}{failed_job.id}/retry/"
    done = post_confirmation(client, confirm, follow=True)

    assert "is back in the queue" in done.content.decode()
    assert DBTaskResult.objects.get(pk=failed_job.id).status == TaskResultStatus.READY


def test_a_retry_without_confirmation_or_by_a_manager_changes_nothing(finance_user, manager, failed_job):
    assert signed_in(finance_user).post(f"{URL}{failed_job.id}/retry/").status_code == 400
    assert signed_in(manager).get(f"{URL}{failed_job.id}/retry/confirm/").status_code in (302, 403)
    assert DBTaskResult.objects.get(pk=failed_job.id).status == TaskResultStatus.FAILED


def test_an_empty_page_says_what_will_appear(finance_user):
    html = signed_in(finance_user).get(URL).content.decode()
    assert "No background jobs yet." in html
