"""GET /health/ready/: each dependency and its state; 503 while a required one is down.

The checks run in threads with connections of their own, so the rows they must see are
committed (`transactional_db`), as another process's would be."""

from datetime import timedelta

import pytest
import requests
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from jobs.models import WorkerHeartbeat
from testing.erlang_node import ErlangNode
from testing.processes import free_port
from testing.production_secrets import PRODUCTION_SECRETS
from testing.web_server import BEHIND_TLS, Gunicorn

READY = "/health/ready/"


def states(response) -> dict:
    return {name: check["state"] for name, check in response.json()["checks"].items()}


@pytest.fixture
def live_worker(transactional_db):
    now = timezone.now()
    return WorkerHeartbeat.objects.create(worker_id="w-1", hostname="jobs-1", pid=4242, started_at=now, last_beat=now)


@pytest.fixture
def messaging_up(settings, tmp_path):
    with ErlangNode(django_url="http://127.0.0.1:9", secret=settings.MESSAGING_SHARED_SECRET) as node:
        settings.ERLANG_MESSAGING_URL = node.url
        yield node


@pytest.mark.erlang
def test_ready_with_every_dependency_up_names_each_one_ok(client, live_worker, messaging_up):
    response = client.get(READY)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": {"state": "ok", "required": True},
            "cache": {"state": "ok", "required": True},
            "migrations": {"state": "ok", "required": True},
            "messaging": {"state": "ok", "required": False},
            "job_worker": {"state": "ok", "required": False},
        },
    }
    assert "no-cache" in response["Cache-Control"]


def test_messaging_and_the_job_worker_down_are_reported_but_the_server_stays_ready(client, transactional_db, settings):
    settings.ERLANG_MESSAGING_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    now = timezone.now()
    # A worker that stopped beating a lease ago is not alive.
    WorkerHeartbeat.objects.create(
        worker_id="gone",
        hostname="jobs-1",
        pid=1,
        started_at=now - timedelta(hours=1),
        last_beat=now - timedelta(seconds=settings.JOB_LEASE_SECONDS + 5),
    )

    response = client.get(READY)

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert states(response) == {
        "database": "ok",
        "cache": "ok",
        "migrations": "ok",
        "messaging": "down",
        "job_worker": "no live worker",
    }


def test_a_pending_migration_makes_the_server_not_ready(client, live_worker):
    # The schema one migration behind the code, as when new code starts before `migrate` ran.
    recorder = MigrationRecorder.Migration.objects
    latest = recorder.filter(app="jobs").order_by("-applied").first()
    latest.delete()
    try:
        response = client.get(READY)
    finally:
        recorder.create(app=latest.app, name=latest.name)

    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["checks"]["migrations"] == {"state": "pending: 1 migration", "required": True}
    assert states(response)["database"] == "ok"


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_other_methods_get_a_json_refusal(client, method):
    response = getattr(client, method)(READY)

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_an_unreachable_database_is_503_and_the_answer_gives_nothing_away(django_db_setup, django_db_blocker):
    """A real app server (gunicorn, DEBUG off) whose DATABASE_URL points where nothing listens."""
    port, password, name = free_port(), "pg-pass-Zq81", "metrics_ready_missing_db"
    database_url = f"postgres://portal_user:{password}@127.0.0.1:{port}/{name}"
    with django_db_blocker.unblock(), Gunicorn(ready_path="/health/live/", DATABASE_URL=database_url) as server:
        plain_http = requests.get(server.url + READY, allow_redirects=False, timeout=30)
        response = requests.get(server.url + READY, headers=BEHIND_TLS, timeout=30)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] == {"state": "down", "required": True}
    assert body["checks"]["cache"]["state"] == "ok"  # Redis is up: only what is down says so
    for secret in (str(port), password, name, "portal_user", *PRODUCTION_SECRETS.values()):
        assert secret not in response.text
    assert "Traceback" not in response.text and "Error" not in response.text
    # Asked directly over plain HTTP (a load balancer's probe), it answers instead of redirecting.
    assert plain_http.status_code == 503
