"""Operations (issue 14) on the production shape (deploy/stack.py: nginx, two app servers, two
clustered Erlang nodes from the release, a job worker; DEBUG off, JSON logs), as an operator
meets it:

1. nginx says the portal is ready, and each Erlang node says how it is, in detail only to
   whoever holds the shared secret;
2. one guest message is followed by its request id from nginx through the app server and the
   Erlang node to the persistence callback that stored it, in every service's JSON log;
3. Prometheus' view: each app server's and each node's /metrics parses with promtool and has
   every series the alert rules (deploy/prometheus/alerts.yml) read;
4. MESSAGING_SHARED_SECRET is rotated, one process at a time, while a guest keeps writing:
   no message falls back, fails or goes missing;
5. no configured secret, token or password appears in any log of the whole run.
"""

import json
import secrets
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests

from deploy.stack import RELEASE, Stack
from messaging.models import Conversation, Message
from testing import web_server  # its test_database_url() is no test: keep it out of this module
from testing.alert_rules import exported_metric_names
from testing.production_secrets import PRODUCTION_SECRETS
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pass-12345"  # conftest.make_user's password
ROTATION_ORDER = ("erlang-a", "erlang-b", "app-a", "app-b", "worker-1")


@pytest.fixture
def stack(tmp_path, wagtail_site, roles):
    env = web_server.production_environment(
        MESSAGING_COOKIE=secrets.token_hex(16), METRICS_TOKEN=secrets.token_urlsafe(32), LOG_FORMAT="json"
    )
    with Stack(run_dir=tmp_path / "stack", env=env) as running:
        yield running


class Guest:
    """A guest writing to a host through the REST API, as an app does: via nginx, Bearer token."""

    def __init__(self, stack, user, conversation):
        self.stack, self.conversation = stack, conversation
        self.tls = {"verify": str(stack.tls_certificate), "timeout": 15}
        login = requests.post(
            f"{stack.url}/api/payments/auth/token/",
            json={"username": user.username, "password": PASSWORD},
            **self.tls,
        )
        assert login.status_code == 200, login.text
        self.token = login.json()["token"]

    def send(self, text, request_id=None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if request_id:
            headers["X-Request-Id"] = request_id
        return requests.post(
            f"{self.stack.url}/api/messaging/conversations/{self.conversation.pk}/messages/",
            json={"text": text},
            headers=headers,
            **self.tls,
        )


@pytest.fixture
def guest(stack, make_user):
    guest, host = make_user("guest"), make_user("host")
    conversation = Conversation.objects.create(subject="Airport pickup")
    conversation.participants.add(guest, host)
    return Guest(stack, guest, conversation)


def launcher_line(line: str) -> bool:
    """The three lines the release's start script (relx) prints before the VM boots: what it
    runs and from where. Not the service's log, and no setting turns them off."""
    return line.startswith(("Exec: ", "Root: ")) or line == str(RELEASE)


def json_lines(path: Path) -> list[dict]:
    """A service's log: every line must be one JSON object (LOG_FORMAT=json)."""
    text = path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip() and not launcher_line(line)]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name} has a line that is not JSON: {line[:300]}")
    return parsed


def logs_of(stack, prefix: str) -> list[dict]:
    return [entry for path in sorted(stack.run_dir.glob(f"{prefix}-*.log")) for entry in json_lines(path)]


def mentions(entry: dict, text: str) -> bool:
    return text in json.dumps(entry)


def scrape(url: str, token: str) -> str:
    answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("text/plain"), answer.headers["Content-Type"]
    return answer.text


def promtool_problems(exposition: str) -> str:
    checked = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    return "" if checked.returncode == 0 and not checked.stdout.strip() else checked.stdout + checked.stderr


def series_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            names.add(name)
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                if name.endswith(suffix):
                    names.add(name.removesuffix(suffix))
    return names


def check_readiness_and_node_health(stack):
    def readiness():
        return requests.get(f"{stack.url}/health/ready/", verify=str(stack.tls_certificate), timeout=10)

    # The job worker has no port: it counts once its first heartbeat is in, seconds after start.
    assert wait_until(lambda: readiness().json()["status"] == "ready", seconds=30), readiness().text
    ready = readiness()
    assert ready.status_code == 200, ready.text
    body = ready.json()
    states = {name: check["state"] for name, check in body["checks"].items()}
    assert states == dict.fromkeys(("database", "cache", "migrations", "messaging", "job_worker"), "ok")
    for leak in ("127.0.0.1", stack.env["SECRET_KEY"], stack.env["MESSAGING_SHARED_SECRET"], "postgres"):
        assert leak not in ready.text

    node = f"http://127.0.0.1:{stack.node_ports['a']}/health"
    anonymous = requests.get(node, timeout=10)
    assert anonymous.status_code == 200 and set(anonymous.json()) == {"status"}
    detailed = requests.get(node, headers={"X-Messaging-Token": stack.env["MESSAGING_SHARED_SECRET"]}, timeout=10)
    details = detailed.json()
    assert details["status"] == "ok"
    assert len(details["cluster"]["members"]) == 2, details


def check_one_request_id_traces_a_message(stack, guest):
    request_id = f"trace-{uuid.uuid4().hex}"
    sent = guest.send("Is the airport pickup still on?", request_id=request_id)
    assert sent.status_code == 201, sent.text
    assert sent.headers["X-Request-Id"] == request_id
    message_id = sent.json()["id"]
    assert sent.json()["via"] == "erlang"
    assert wait_until(lambda: Message.objects.filter(pk=message_id).exists(), seconds=30)

    def traced(prefix):
        return [entry for entry in logs_of(stack, prefix) if mentions(entry, request_id)]

    # The app server that took the request, the node that accepted the message, and the app
    # server whose persistence callback stored it.
    assert wait_until(lambda: any(mentions(entry, message_id) for entry in traced("app")), seconds=15)
    assert any(entry.get("request_id") == request_id for entry in traced("app"))
    accepted_by_node = traced("erlang")
    assert accepted_by_node and any(mentions(entry, message_id) for entry in accepted_by_node), accepted_by_node
    public_log = (stack.run_dir / "nginx-public-access.log").read_text()
    assert f"request_id={request_id}" in public_log


def check_prometheus_finds_every_series_the_alerts_read(stack, guest):
    assert guest.send("Warming the counters up").status_code == 201
    expositions = {}
    for name, port in stack.app_ports.items():
        expositions[f"app-{name}"] = scrape(f"http://127.0.0.1:{port}/metrics", stack.env["METRICS_TOKEN"])
    for name, port in stack.node_ports.items():
        expositions[f"erlang-{name}"] = scrape(f"http://127.0.0.1:{port}/metrics", stack.env["MESSAGING_SHARED_SECRET"])
    for service, exposition in expositions.items():
        assert promtool_problems(exposition) == "", service

    # Every server of a job must expose what its alerts read: Prometheus evaluates each target.
    needed = exported_metric_names()
    for service, exposition in expositions.items():
        job = "portal" if service.startswith("app-") else "messaging"
        missing = needed[job] - series_names(exposition)
        assert not missing, f"{service} lacks series the alert rules read: {sorted(missing)}"

    refused = requests.get(f"http://127.0.0.1:{stack.app_ports['a']}/metrics", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]
    # Not served to the public at all: Prometheus scrapes each server directly.
    public = requests.get(f"{stack.url}/metrics", verify=str(stack.tls_certificate), timeout=10)
    assert public.status_code == 404


class SteadyWriter(threading.Thread):
    """The guest keeps writing, one message at a time, until told to stop."""

    def __init__(self, guest):
        super().__init__(daemon=True)
        self.guest, self.stopping, self.answers = guest, threading.Event(), []

    def run(self):
        number = 0
        while not self.stopping.is_set() and number < 2000:
            number += 1
            answer = self.guest.send(f"Message {number} during the rotation")
            self.answers.append((answer.status_code, answer.json() if answer.ok else answer.text))
            self.stopping.wait(0.05)

    def stop(self):
        self.stopping.set()
        self.join(30)


def check_the_messaging_secret_rotates_without_a_failed_call(stack, guest):
    old, new = stack.env["MESSAGING_SHARED_SECRET"], secrets.token_urlsafe(50)
    writer = SteadyWriter(guest)
    writer.start()
    try:
        # Every process learns the new secret and keeps accepting the old one; each sends the
        # new one and, refused by a process not restarted yet, the old one.
        for service in ROTATION_ORDER:
            stack.restart(service, MESSAGING_SHARED_SECRET=new, MESSAGING_SHARED_SECRET_PREVIOUS=old)
        # Then the old one is forgotten everywhere.
        for service in ROTATION_ORDER:
            stack.restart(service, MESSAGING_SHARED_SECRET_PREVIOUS="")
        assert wait_until(lambda: len(writer.answers) >= 20, seconds=30)
    finally:
        writer.stop()

    failed = [answer for answer in writer.answers if answer[0] != 201 or answer[1]["via"] != "erlang"]
    assert not failed, (failed, app_servers_messaging_warnings(stack))
    sent = [body["id"] for _, body in writer.answers]
    assert wait_until(lambda: Message.objects.filter(pk__in=sent).count() == len(sent), seconds=30)

    for old_secret_refused in (
        requests.get(f"http://127.0.0.1:{port}/metrics", headers={"X-Messaging-Token": old}, timeout=10)
        for port in stack.node_ports.values()
    ):
        assert old_secret_refused.status_code == 401
    return new


def app_servers_messaging_warnings(stack) -> list[str]:
    """Why a call to the messaging service failed, as the app servers logged it."""
    lines = (line for path in sorted(stack.run_dir.glob("app-*.log")) for line in path.read_text().splitlines())
    reasons = ("messaging service unreachable", "messaging service answered", "Erlang unavailable")
    return [line for line in lines if any(reason in line for reason in reasons)]


def check_no_log_holds_a_secret(stack, guest, rotated_to):
    """Every log of the run: nginx's, the app servers', the worker's, the nodes'."""
    configured = [*PRODUCTION_SECRETS, "METRICS_TOKEN", "MESSAGING_COOKIE"]
    secret_values = {stack.env[name] for name in configured} | {rotated_to, guest.token, PASSWORD}
    for path in stack.run_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        assert not [value for value in secret_values if value in text], f"{path.name} holds a secret"


def test_an_operator_checks_traces_scrapes_and_rotates_a_secret_on_the_production_shape(stack, guest):
    check_readiness_and_node_health(stack)
    check_one_request_id_traces_a_message(stack, guest)
    check_prometheus_finds_every_series_the_alerts_read(stack, guest)
    rotated_to = check_the_messaging_secret_rotates_without_a_failed_call(stack, guest)
    check_no_log_holds_a_secret(stack, guest, rotated_to)
