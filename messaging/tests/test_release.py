"""The messaging service's OTP release (`make erlang-release`): the tarball, unpacked into an
empty directory, runs as a node that joins a running cluster and carries messages."""

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from websockets.sync.client import connect

from messaging.erlang import websocket_token
from messaging.models import Message
from testing.erlang_node import ROOT, ErlangNode
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE_DIR = ROOT / "erlang_messaging" / "_build" / "prod" / "rel" / "messaging_service"


def release_tarball() -> Path:
    """Build the tarball when missing or older than its sources (make decides), then return it.

    pytest-xdist workers take turns (a lock file), so two never run rebar3 on one build dir."""
    RELEASE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(RELEASE_DIR.parent / ".release-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build = subprocess.run(
            ["make", "--no-print-directory", "erlang-release"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
    assert build.returncode == 0, f"`make erlang-release` failed:\n{build.stdout}\n{build.stderr}"
    tarballs = sorted(RELEASE_DIR.glob("messaging_service-*.tar.gz"), key=lambda path: path.stat().st_mtime)
    assert tarballs, f"`make erlang-release` left no messaging_service-*.tar.gz in {RELEASE_DIR}"
    return tarballs[-1]


class ReleaseNode(ErlangNode):
    """A node run from the release tarball, unpacked into its own empty temporary directory."""

    def __init__(self, tarball: Path, **kwargs):
        super().__init__(**kwargs)
        self.tarball = tarball
        self.install_dir = Path(tempfile.mkdtemp(prefix="messaging-release-"))

    def command(self) -> list[str]:
        assert not any(self.install_dir.iterdir()), "the release must be unpacked into an empty directory"
        with tarfile.open(self.tarball) as archive:
            archive.extractall(self.install_dir, filter="tar")
        return [str(self.install_dir / "bin" / "messaging_service"), "foreground"]

    def cleanup(self) -> None:
        super().cleanup()
        shutil.rmtree(self.install_dir, ignore_errors=True)


def next_text(ws, timeout: float) -> str | None:
    """The next text message the service pushes, or None when none arrives within `timeout` s."""
    try:
        return ws.recv(timeout=timeout)
    except TimeoutError:
        return None


def test_the_release_unpacked_elsewhere_joins_the_cluster_and_carries_messages(live_server, conversation, host, guest):
    tarball = release_tarball()
    secret = django_settings.MESSAGING_SHARED_SECRET
    cookie = secrets.token_hex(16)
    tag = uuid.uuid4().hex[:10]  # parallel workers never share a node name
    common = {"django_url": live_server.url, "secret": secret, "MESSAGING_COOKIE": cookie}
    with_token = {"X-Messaging-Token": secret}  # /health names the node to holders of the secret only

    # Node A: the source tree (bin/messaging-start), distributed with the cluster's cookie.
    source_node = ErlangNode(**common, MESSAGING_NODE_NAME=f"src_{tag}", MESSAGING_CLUSTER_NODES="")
    release_node = None
    closing = contextlib.ExitStack()
    try:
        source_node.start()
        source_name = requests.get(f"{source_node.url}/health", headers=with_token, timeout=5).json()["node"]
        assert source_name.startswith(f"src_{tag}@")

        # Node B: the tarball, unpacked into an empty directory, told about node A.
        release_node = ReleaseNode(
            tarball, **common, MESSAGING_NODE_NAME=f"rel_{tag}", MESSAGING_CLUSTER_NODES=source_name
        ).start(timeout=60)
        health = requests.get(f"{release_node.url}/health", headers=with_token, timeout=5).json()
        assert health["node"] == f"rel_{tag}@{source_name.split('@', 1)[1]}"
        # The VM that answers is the release's own runtime, not the system's Erlang.
        runtime = Path(os.readlink(f"/proc/{release_node.process.pid}/exe"))
        assert runtime.is_relative_to(release_node.install_dir), runtime

        # A session of the host on node A; a message POSTed to node B reaches it through the
        # cluster (pg groups span the nodes). Node B connects to A within a few seconds, so
        # the first messages may only reach B's queue: send until one arrives, bounded.
        url = f"ws://127.0.0.1:{source_node.port}/ws?token={websocket_token(host.pk)}"
        ws = closing.enter_context(connect(url, open_timeout=10))
        sent, received = [], None

        def one_arrives():
            nonlocal received
            message_id = str(uuid.uuid4())
            response = requests.post(
                f"{release_node.url}/messages",
                json={
                    "id": message_id,
                    "conversation_id": conversation.pk,
                    "sender_id": guest.pk,
                    "receiver_id": host.pk,
                    "text": f"Can we check in at noon? ({len(sent) + 1})",
                    "priority": "high",
                },
                headers={"X-Messaging-Token": secret},
                timeout=5,
            )
            assert response.status_code == 202, response.text
            sent.append(message_id)
            frame = next_text(ws, timeout=1.0)
            while frame is not None:
                pushed = json.loads(frame)
                if pushed.get("type") == "message" and pushed["message"]["id"] in sent:
                    received = pushed["message"]
                    return True
                frame = next_text(ws, timeout=1.0)
            return False

        assert wait_until(one_arrives, seconds=30, interval=0), (
            f"no message POSTed to the release node reached the WebSocket on the source node; "
            f"release log:\n{release_node.log_path.read_text()[-3000:]}"
        )
        assert (received["sender_id"], received["receiver_id"], received["priority"]) == (guest.pk, host.pk, "high")

        # The release node persists what it accepted into Django, each message once.
        assert wait_until(lambda: Message.objects.filter(pk__in=sent).count() == len(sent), seconds=20)
        stored = Message.objects.get(pk=received["id"])
        assert (stored.sender, stored.receiver, stored.via) == (guest, host, "erlang")
    finally:
        closing.close()
        if release_node:
            release_node.cleanup()
        source_node.cleanup()


def test_the_release_refuses_to_start_without_a_cookie():
    tarball = release_tarball()
    node = ReleaseNode(tarball, django_url="http://127.0.0.1:9", secret="unused", MESSAGING_COOKIE="")
    try:
        result = subprocess.run(node.command(), env=node.env, capture_output=True, text=True, timeout=60)
    finally:
        node.cleanup()
    assert result.returncode != 0
    assert "MESSAGING_COOKIE is not set" in result.stderr


@pytest.mark.parametrize("debug", [None, "false", "0"], ids=["DEBUG unset", "DEBUG=false", "DEBUG=0"])
@pytest.mark.parametrize("secret", ["", "dev-messaging-secret"], ids=["empty secret", "development secret"])
def test_outside_development_both_start_scripts_refuse_the_development_or_an_empty_secret(tmp_path, debug, secret):
    tarball = release_tarball()
    release = ReleaseNode(tarball, django_url="http://127.0.0.1:9", secret=secret, MESSAGING_COOKIE="a-cookie")
    env = {key: value for key, value in release.env.items() if key != "DEBUG"}
    if debug is not None:
        env["DEBUG"] = debug
    try:
        results = {
            "bin/messaging-start": subprocess.run(
                ErlangNode.command(release), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            ),
            "the release": subprocess.run(
                release.command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            ),
        }
    finally:
        release.cleanup()

    for script, result in results.items():
        assert result.returncode != 0, f"{script} started"
        assert "MESSAGING_SHARED_SECRET is empty or the development default, and DEBUG is off" in result.stderr, script
        # It stopped before the VM booted: no node, so no crash dump.
        assert "listening on port" not in result.stdout + result.stderr, script
    assert not list(tmp_path.glob("erl_crash.dump"))
