"""The production profile through the real servers: gunicorn with several workers sharing
Redis, the client's address behind a proxy, WhiteNoise's static files, and `deploy/serve`
(what `make serve` runs) starting and stopping every process it owns."""

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django_tasks_db.models import DBTaskResult

from jobs.models import WorkerHeartbeat
from testing import jobs as test_jobs
from testing.processes import free_port, stop_process
from testing.wagtail_site import ensure_wagtail_site
from testing.waiting import wait_until
from testing.web_server import (
    BEHIND_TLS,
    PRODUCTION_SECRETS,
    ROOT,
    SERVE_SCRIPT,
    Gunicorn,
    access_lines,
    collect_static,
    production_environment,
    workers_that_served,
)

WEBHOOK = "/api/payments/webhooks/paystack/"


def forge_webhook(server, forwarded_for=None) -> int:
    """A webhook with a wrong signature, on a connection of its own (as a forger would send)."""
    headers = {
        **BEHIND_TLS,
        "X-Paystack-Signature": "0" * 128,
        "Content-Type": "application/json",
        "Connection": "close",
    }
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    with requests.Session() as session:
        return session.post(server.url + WEBHOOK, data=b'{"event": "charge.success"}', headers=headers).status_code


@pytest.fixture(scope="module")
def static_root(tmp_path_factory, django_db_setup, django_db_blocker):
    root = tmp_path_factory.mktemp("static")
    with django_db_blocker.unblock():
        collect_static(root)
    return root


@pytest.fixture
def database(django_db_setup, django_db_blocker):
    """The servers use the test database (migrated, committed); this test writes nothing to it."""
    with django_db_blocker.unblock():
        yield


@contextlib.contextmanager
def two_app_servers(**env):
    """Two gunicorn app servers sharing one Redis key prefix, as two machines behind nginx do.

    Attempts alternate between them, so every count below is shared by two processes for
    certain (the workers of one server take connections as the kernel hands them out, which
    may well be the same worker every time)."""
    shared = {"CACHE_KEY_PREFIX": f"test-shared-{secrets.token_hex(8)}", **env}
    with Gunicorn(**shared) as first, Gunicorn(**shared) as second:
        yield first, second


def alternating(servers, count: int):
    return [servers[n % len(servers)] for n in range(count)]


def test_every_app_server_shares_the_webhook_verification_limit(database, static_root):
    with two_app_servers(STATIC_ROOT=static_root, WEBHOOK_FAILED_VERIFICATION_LIMIT=10) as servers:
        statuses = [forge_webhook(server) for server in alternating(servers, 25)]
        served = [len(workers_that_served(server, "POST", WEBHOOK)) for server in servers]

    assert statuses == [401] * 10 + [429] * 15
    # The limit held although the forgeries landed on two servers.
    assert served == [1, 1]


def test_behind_a_trusted_proxy_each_client_is_limited_alone(database, static_root):
    with Gunicorn(STATIC_ROOT=static_root, WEBHOOK_FAILED_VERIFICATION_LIMIT=3, TRUSTED_PROXIES="127.0.0.1") as proxy:
        forger = [forge_webhook(proxy, "203.0.113.5") for _ in range(4)]
        # Prepending an address does not help: nginx appends the one it saw, and that counts.
        disguised = forge_webhook(proxy, "198.51.100.77, 203.0.113.5")
        other_client = forge_webhook(proxy, "203.0.113.6")

    assert forger == [401, 401, 401, 429]
    assert disguised == 429
    assert other_client == 401


def test_nobody_picks_their_own_address_without_a_trusted_proxy(database, static_root):
    with Gunicorn(STATIC_ROOT=static_root, WEBHOOK_FAILED_VERIFICATION_LIMIT=3) as server:
        statuses = [forge_webhook(server, f"203.0.113.{n}") for n in range(1, 6)]

    assert statuses == [401, 401, 401, 429, 429]


def test_gunicorn_and_django_write_json_lines_traced_by_the_request_id_with_no_secret(database, static_root):
    mpesa_token = PRODUCTION_SECRETS["MPESA_CALLBACK_TOKEN"]
    mpesa = "/api/payments/webhooks/mpesa/"
    with Gunicorn(STATIC_ROOT=static_root) as server:
        traced = requests.post(
            server.url + WEBHOOK,
            data=b'{"event": "charge.success"}',
            headers={**BEHIND_TLS, "X-Paystack-Signature": "0" * 128, "X-Request-Id": "lb-4f1c9e"},
        )
        untraced = requests.get(server.url + "/admin/login/?next=/admin/", headers=BEHIND_TLS)
        # The right token with an unreadable body (400), then a wrong one (401): the token is in the URL.
        callbacks = [
            requests.post(f"{server.url}{mpesa}?token={token}", data=b"{}", headers=BEHIND_TLS).status_code
            for token in (mpesa_token, "guessed")
        ]
        # gunicorn writes an access line after the answer has gone: wait for the last one.
        assert wait_until(lambda: [line["path"] for line in access_lines(server)].count(mpesa) == 2, seconds=30), (
            server.log()[-3000:]
        )
        log = server.log()

    assert (traced.status_code, untraced.status_code, callbacks) == (401, 200, [400, 401])
    lines = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert {"gunicorn.error", "gunicorn.access", "finance.payments", "django.request"} <= {
        line["logger"] for line in lines
    }
    # The id the load balancer gave, answered, on Django's lines and on the access line.
    assert traced.headers["X-Request-Id"] == "lb-4f1c9e"
    traced_lines = [line for line in lines if line["request_id"] == "lb-4f1c9e"]
    assert [line["logger"] for line in traced_lines] == ["finance.payments", "django.request", "gunicorn.access"]
    access = traced_lines[-1]
    assert (access["method"], access["path"], access["status"], access["remote_addr"]) == (
        "POST",
        WEBHOOK,
        401,
        "127.0.0.1",
    )
    assert access["worker_pid"] > 0 and access["duration_ms"] > 0
    # A request without an id gets one, answered and logged.
    [page] = [line for line in lines if line.get("query") == "next=/admin/"]
    assert page["path"] == "/admin/login/"
    assert page["request_id"] == untraced.headers["X-Request-Id"]
    assert page["query"] == "next=/admin/"
    # The M-Pesa token is redacted from the access log; no secret appears anywhere.
    assert [line["query"] for line in lines if line.get("path") == mpesa] == ["token=[redacted]"] * 2
    leaked = [name for name, value in PRODUCTION_SECRETS.items() if value in log]
    assert leaked == []


def test_the_plain_access_log_carries_the_request_id_and_redacts_the_callback_token(database, static_root):
    mpesa_token = PRODUCTION_SECRETS["MPESA_CALLBACK_TOKEN"]
    with Gunicorn(STATIC_ROOT=static_root, LOG_FORMAT="plain") as server:
        requests.post(
            f"{server.url}/api/payments/webhooks/mpesa/?token={mpesa_token}&x=1",
            data=b"{}",
            headers={**BEHIND_TLS, "X-Request-Id": "lb-plain-1"},
        )
        assert wait_until(lambda: "request_id=lb-plain-1" in server.log(), seconds=30), server.log()[-3000:]
        log = server.log()

    assert '"POST /api/payments/webhooks/mpesa/?token=[redacted]&x=1 HTTP/1.1" 400' in log
    assert mpesa_token not in log


TOKEN = "/api/payments/auth/token/"
LOGIN = "/admin/login/"


def wrong_token_request(server) -> int:
    with requests.Session() as session:
        body = {"username": "nobody", "password": "wrong"}
        headers = {**BEHIND_TLS, "Connection": "close"}
        return session.post(server.url + TOKEN, json=body, headers=headers).status_code


def wrong_sign_in(server) -> int:
    """The sign-in form as a browser behind the TLS load balancer fills it (CSRF cookie and
    field, an https Referer), on a connection of its own. The CSRF cookie is Secure, so it is
    sent back by hand: the test speaks plain HTTP to gunicorn where the balancer would."""
    page = requests.get(server.url + LOGIN, headers={**BEHIND_TLS, "Connection": "close"})
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    form = {"csrfmiddlewaretoken": csrf, "username": "nobody", "password": "wrong"}
    https_origin = server.url.replace("http://", "https://")
    headers = {
        **BEHIND_TLS,
        "Connection": "close",
        "Referer": https_origin + LOGIN,
        "Cookie": f"csrftoken={page.cookies['csrftoken']}",
    }
    return requests.post(server.url + LOGIN, data=form, headers=headers, allow_redirects=False).status_code


def test_every_app_server_shares_the_sign_in_lockouts(database, static_root):
    with two_app_servers(STATIC_ROOT=static_root, LOGIN_FAILURE_LIMIT=4) as servers:
        api = [wrong_token_request(server) for server in alternating(servers, 8)]
        pages = [wrong_sign_in(server) for server in alternating(servers, 8)]
        served = [
            (workers_that_served(server, "POST", TOKEN), workers_that_served(server, "POST", LOGIN))
            for server in servers
        ]

    assert api == [400] * 4 + [429] * 4
    assert pages == [200] * 3 + [429] * 5  # the fourth failure already answers "locked"
    # The counts held although the attempts alternated between the two servers.
    assert all(api_workers and page_workers for api_workers, page_workers in served), served


def test_static_files_are_hashed_compressed_and_cached_for_ever(database, static_root):
    manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
    chart = manifest["vendor/chart.js/chart.umd.js"]

    with Gunicorn(STATIC_ROOT=static_root) as server:
        login_page = requests.get(server.url + "/admin/login/", headers=BEHIND_TLS).text
        compressed = requests.get(f"{server.url}/static/{chart}", headers={**BEHIND_TLS, "Accept-Encoding": "br, gzip"})
        plain_name = requests.get(server.url + "/static/vendor/chart.js/chart.umd.js", headers=BEHIND_TLS)
        missing = requests.get(server.url + "/no-such-page/", headers=BEHIND_TLS)

    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', login_page)
    assert stylesheets and all(re.search(r"\.[0-9a-f]{12}\.css$", href) for href in stylesheets)
    assert compressed.status_code == 200
    assert compressed.headers["Content-Encoding"] == "br"
    assert "immutable" in compressed.headers["Cache-Control"]
    assert "Chart" in compressed.text
    # Only the collected, hashed copies are served: nothing from node_modules or the source tree.
    assert plain_name.status_code == 404
    # DEBUG is off: no debug page.
    assert missing.status_code == 404 and "URLconf" not in missing.text


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _as_from_a_terminal():
    """Ctrl-C reaches a script started from a terminal. A shell without job control starts its
    background commands with SIGINT ignored, a bash script cannot trap a signal ignored on
    entry, and the test runner may itself run in such a background command (`make test &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_runs_the_whole_profile_and_a_signal_stops_every_process(database, tmp_path, stop_signal):
    web_port, messaging_port = free_port(), free_port()
    env = production_environment(
        WEB_BIND=f"127.0.0.1:{web_port}",
        WEB_CONCURRENCY=2,
        WORKER_CONCURRENCY=2,
        HTTP_PORT=messaging_port,
        MESSAGING_NODE_NAME=f"serve_test_{messaging_port}",
        MESSAGING_COOKIE=secrets.token_hex(16),
        MESSAGING_DATA_DIR=tmp_path / "messaging",
        STATIC_ROOT=tmp_path / "static",
        PYTHON=sys.executable,
        GUNICORN=Path(sys.executable).parent / "gunicorn",
        TMPDIR=tmp_path,  # where serve makes its run's directories (the Prometheus counters')
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(
            [str(SERVE_SCRIPT)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_as_from_a_terminal,
        )
    started = set()
    try:

        def both_answer():
            if serve.poll() is not None:
                raise AssertionError(f"deploy/serve exited:\n{log_path.read_text()[-3000:]}")
            try:
                portal = requests.get(f"http://127.0.0.1:{web_port}/admin/login/", headers=BEHIND_TLS, timeout=1)
                messaging = requests.get(f"http://127.0.0.1:{messaging_port}/health", timeout=1)
            except requests.RequestException:
                return False
            return portal.status_code == 200 and messaging.status_code == 200

        assert wait_until(both_answer, seconds=120, interval=0.5), log_path.read_text()[-3000:]
        # Two background-job workers take jobs: each holds a lease, and a job enqueued now runs.
        assert wait_until(lambda: WorkerHeartbeat.objects.count() == 2, seconds=30), log_path.read_text()[-3000:]
        job = test_jobs.tick.enqueue()
        assert wait_until(lambda: DBTaskResult.objects.get(pk=job.id).status == "SUCCESSFUL", seconds=30)
        started = _descendants(serve.pid)
        # gunicorn's master and two workers, two job workers, and the Erlang VM at least.
        assert len(started) >= 6, started
        # Prometheus reads the portal with its token, over plain HTTP; the counts are in a
        # directory of this run.
        scrape = requests.get(
            f"http://127.0.0.1:{web_port}/metrics", headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"}
        )
        assert scrape.status_code == 200 and "\nportal_ready 1.0\n" in scrape.text, scrape.text[-2000:]
        (metrics_dir,) = tmp_path.glob("stayafrica-prometheus.*")
        assert list(metrics_dir.glob("counter_*.db"))

        serve.send_signal(stop_signal)
        serve.wait(60)
        assert wait_until(lambda: not any(_alive(pid) for pid in started), seconds=30), [
            pid for pid in started if _alive(pid)
        ]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{web_port}/admin/login/", timeout=1)
        assert WorkerHeartbeat.objects.count() == 0  # the job workers stopped cleanly, leases handed back
        assert not metrics_dir.exists()  # the next start counts from nothing
    finally:
        DBTaskResult.objects.filter(task_path="testing.jobs.tick").delete()
        stop_process(serve, signal.SIGKILL)
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "MESSAGING_COOKIE"])
def test_serve_refuses_to_start_without_its_secrets(database, tmp_path, missing):
    env = production_environment(MESSAGING_COOKIE="a-cookie", STATIC_ROOT=tmp_path / "static")
    del env[missing]
    result = subprocess.run([str(SERVE_SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert f"{missing} is not set" in result.stderr
    # It stopped before touching anything: no static files were collected.
    assert not (tmp_path / "static").exists()


# --- HTTPS behind a TLS-terminating load balancer --------------------------------------------------------------

# The production environment as documented (README, "Configuration"): DEBUG off, private secrets,
# the host names, and the one opt-in the deployment check asks for.
DOCUMENTED_PRODUCTION = {"ALLOWED_HOSTS": "portal.example.com", "SECURE_HSTS_PRELOAD": "true"}


def test_the_deployment_check_reports_nothing_with_the_documented_production_environment(database):
    env = production_environment(**DOCUMENTED_PRODUCTION)
    env.pop("SILENCED_SYSTEM_CHECKS", None)

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.fixture
def staff_login(database):
    from django.contrib.auth import get_user_model

    ensure_wagtail_site()  # the admin's home page needs it; an earlier transactional test may have flushed it

    user = get_user_model().objects.create_user(
        username=f"tls-{secrets.token_hex(4)}", password="a-long-pass-phrase", role="staff", is_staff=True
    )
    user.is_superuser = True
    user.save()
    yield user.username, "a-long-pass-phrase"
    user.delete()


def _cookie(response, name: str) -> str:
    """The Set-Cookie header of `name` as the browser receives it."""
    return next(c for c in response.raw.headers.getlist("Set-Cookie") if c.startswith(f"{name}="))


def test_a_browser_signs_in_behind_the_tls_load_balancer_with_secure_cookies_and_hsts(static_root, staff_login):
    username, password = staff_login
    with Gunicorn(STATIC_ROOT=static_root) as server:
        plain = requests.get(server.url + "/admin/login/", allow_redirects=False)
        form = requests.get(server.url + "/admin/login/", headers=BEHIND_TLS)
        csrf = form.cookies["csrftoken"]
        origin = "https://" + server.url.removeprefix("http://")
        signed_in = requests.post(
            server.url + "/admin/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={
                **BEHIND_TLS,
                "Origin": origin,
                "Referer": origin + "/admin/login/",
                "Cookie": f"csrftoken={csrf}",
            },
            allow_redirects=False,
        )
        session = signed_in.cookies["sessionid"]
        home = requests.get(
            server.url + "/admin/", headers={**BEHIND_TLS, "Cookie": f"sessionid={session}"}, allow_redirects=False
        )
        # /admin/ sends staff on to the Operations dashboard (portal/views/home.py).
        dashboard = requests.get(
            server.url + home.headers.get("Location", "/admin/"),
            headers={**BEHIND_TLS, "Cookie": f"sessionid={session}"},
            allow_redirects=False,
        )
        server_log = server.log()

    # Plain HTTP is sent to HTTPS; over HTTPS, browsers are told to stay on it.
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    assert "max-age=31536000" in form.headers["Strict-Transport-Security"]
    assert "; secure" in _cookie(form, "csrftoken").lower()
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert "; secure" in _cookie(signed_in, "sessionid").lower()
    assert home.status_code == 302 and home.headers["Location"] == "/admin/operations/dashboard/"
    assert dashboard.status_code == 200, server_log[-3000:]
