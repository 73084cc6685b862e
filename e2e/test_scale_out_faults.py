"""Scale-out under faults (issue 13): the production shape with nginx in front of two app
servers and two clustered Erlang nodes (deploy/stack.py), driven through nginx by Chromium,
with servers killed with SIGKILL at fixed points between the steps of one finance and
support story. Nothing a user was told succeeded may be lost or done twice.

1. finance completes a withdrawal, then a bulk of five (a background job);
2. app server A dies; finance completes another withdrawal and opens the wallet page, now
   all through app server B;
3. a host's live WebSocket is pinned to Erlang node B (its own nginx location) while Django
   talks to node A; support broadcasts; the host sees it, carried across the cluster;
4. node A acknowledges a batch of messages and dies before storing any; while it is down
   Django stores a guest's message itself; node A is restarted;
5. every acknowledged message is stored once, no withdrawal is paid twice, every balance is
   what the completed withdrawals imply, and check_ledger passes.
"""

import re
import secrets
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.db.models import Count, Sum
from playwright.sync_api import expect

from deploy.stack import Stack
from finance.models import BankAccount, LedgerEntry, SystemAccount, Withdrawal
from finance.services import TransactionService
from messaging.models import Conversation, Message
from testing import web_server  # its test_database_url() is no test: keep it out of this module
from testing.waiting import wait_until

from .conftest import DESKTOP, TIMEOUT_MS, shot

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pass-12345"  # conftest.make_user's password
# Node A keeps acknowledged messages in its write-ahead log for ten minutes before storing
# them, so at the moment it is killed the batch is acknowledged and not yet stored: only the
# log can bring it back. It is restarted with the usual interval.
SLOW_PERSISTENCE = {"PERSIST_FLUSH_INTERVAL_MS": "600000"}
USUAL_PERSISTENCE = {"PERSIST_FLUSH_INTERVAL_MS": "50"}
BATCH_SIZE = 20
# host.js connects to <ERLANG_MESSAGING_PUBLIC_URL>/ws; this page connects to node B's own
# location instead, on every connect and reconnect.
PIN_WEBSOCKET_TO_NODE_B = """
window.WebSocket = new Proxy(window.WebSocket, {
  construct(target, args) {
    args[0] = String(args[0]).replace("/messaging/ws", "/messaging/node-b/ws");
    return new target(...args);
  },
});
"""


@pytest.fixture
def stack(tmp_path, wagtail_site, roles):
    """The whole shape on loopback against the test database, DEBUG off, private secrets."""
    env = web_server.production_environment(MESSAGING_COOKIE=secrets.token_hex(16), FINANCE_LOG_LEVEL="WARNING")
    run_dir = tmp_path / "stack"
    with Stack(run_dir=run_dir, env=env, django_messaging_node="a", node_env={"a": SLOW_PERSISTENCE}) as running:
        yield running


@pytest.fixture
def browser_context(browser, stack):
    """new_context() -> a fresh browser context on nginx's TLS address (a self-signed certificate)."""
    contexts = []

    def new_context():
        context = browser.new_context(base_url=stack.url, ignore_https_errors=True, viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield new_context
    for context in contexts:
        context.close()


def sign_in(context, user, path):
    """The real sign-in form, through nginx; lands on `path`."""
    page = context.new_page()
    page.goto(path)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return page


def complete_one(page, withdrawal):
    row = page.locator(f"#withdrawal-{withdrawal.pk}")
    row.get_by_role("button", name=f"Mark {withdrawal.reference} as paid").click()
    row.get_by_role("button", name="Yes, mark as paid").click()
    expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_contain_text("Completed")


def complete_in_bulk(page, withdrawals):
    for withdrawal in withdrawals:
        page.get_by_label(f"Select {withdrawal.reference}").check()
    page.get_by_role("button", name="Send selected payouts…").click()
    page.get_by_role("button", name="Yes, send them").click()
    expect(page.locator("#bulk-progress")).to_contain_text(f"Done: {len(withdrawals)} of {len(withdrawals)} completed")
    for withdrawal in withdrawals:
        expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_contain_text("Completed")


class AccessLog:
    """nginx's access log (deploy/nginx's `stayafrica` format), read from a mark onwards."""

    LINE = re.compile(r'"(?P<request>[^"]*)" (?P<status>\d{3}) .* upstream=(?P<upstream>.*?) upstream_status=')

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self) -> list[dict]:
        with open(self.path, errors="replace") as log:
            log.seek(self.offset)
            return [match.groupdict() for match in map(self.LINE.search, log) if match]


def send_through_the_api(stack, user, conversation, text) -> dict:
    """A conversation message sent as an app would: a Bearer token, then the REST API, via nginx."""
    # Verified against the stack's self-signed certificate (per request: requests lets a
    # REQUESTS_CA_BUNDLE in the environment override a session's setting).
    tls = {"verify": str(stack.tls_certificate), "timeout": 10}
    credentials = {"username": user.username, "password": PASSWORD}
    login = requests.post(f"{stack.url}/api/payments/auth/token/", json=credentials, **tls)
    assert login.status_code == 200, login.text
    answer = requests.post(
        f"{stack.url}/api/messaging/conversations/{conversation.pk}/messages/",
        json={"text": text},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        **tls,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def send_batch_to_node_a(stack, sender, receiver) -> list[str]:
    """POST /messages/batch to node A through nginx's internal listener: the ids it acknowledged."""
    messages = [
        {"id": str(uuid.uuid4()), "sender_id": sender.pk, "receiver_id": receiver.pk, "text": f"Batch message {n}"}
        for n in range(BATCH_SIZE)
    ]
    answer = requests.post(
        f"{stack.internal_url}/messaging/node-a/messages/batch",
        json={"messages": messages},
        headers={"X-Messaging-Token": stack.env["MESSAGING_SHARED_SECRET"]},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return [result["id"] for result in answer.json()["results"] if result.get("status") == "accepted"]


@pytest.fixture
def money(make_user, roles):
    """Two hosts' NGN wallets, funded, with seven withdrawals waiting to be completed."""
    hosts = [make_user("host"), make_user("host")]
    wallets, withdrawals = [], []
    for host, funding in zip(hosts, ("50000.00", "30000.00"), strict=True):
        wallet = TransactionService.create_wallet(host, "NGN")
        TransactionService.credit_wallet(wallet, Decimal(funding))
        account = BankAccount.objects.create(
            owner=host, bank_name="GTBank", account_name=host.username, account_number_last4="4321", is_primary=True
        )
        wallets.append((wallet, Decimal(funding), account))
    plan = [
        (0, "1500.00"),
        (0, "1000.00"),
        (0, "2000.00"),
        (1, "1200.00"),
        (1, "1800.00"),
        (1, "3000.00"),
        (1, "2500.00"),
    ]
    for owner, amount in plan:
        wallet, _, account = wallets[owner]
        withdrawals.append(TransactionService.initiate_withdrawal(wallet, account, Decimal(amount)))
    return hosts, wallets, withdrawals


def test_servers_die_mid_story_and_nothing_is_lost_or_done_twice(stack, browser_context, money, make_user):
    hosts, wallets, withdrawals = money
    first, bulk, last = withdrawals[0], withdrawals[1:6], withdrawals[6]
    finance = make_user(groups=["Finance"])
    support = make_user(groups=["Support"])
    guest = make_user("guest")
    public_log = AccessLog(stack.run_dir / "nginx-public-access.log")
    internal_log = AccessLog(stack.run_dir / "nginx-internal-access.log")

    # 1. A withdrawal, then a bulk of five carried out by the background worker.
    page = sign_in(browser_context(), finance, "/admin/operations/withdrawals/")
    complete_one(page, first)
    complete_in_bulk(page, bulk)
    shot(page, "scale-out-1-bulk-done")

    # 2. App server A dies. Everything after goes through nginx to B, and nobody notices.
    stack.kill("app-a")
    public_log.mark()
    page.reload()
    complete_one(page, last)
    wallet_b = wallets[1][0]
    page.goto(f"/admin/operations/wallets/{wallet_b.pk}/")
    expect(page.locator("#wallet-balance")).to_have_text("NGN 21,500.00")
    expect(page.locator("#wallet-held")).to_have_text("NGN 0.00")
    shot(page, "scale-out-2-wallet-via-b")
    served = public_log.since_mark()
    app_b = f"127.0.0.1:{stack.app_ports['b']}"
    assert served and all(int(line["status"]) < 500 for line in served), served
    not_by_b = [line for line in served if line["upstream"].split(", ")[-1] != app_b]
    assert not not_by_b, (app_b, not_by_b)
    # Round robin sent at least one of them to the dead server first: nginx moved it on to B.
    app_a = f"127.0.0.1:{stack.app_ports['a']}"
    assert any(line["upstream"] == f"{app_a}, {app_b}" for line in served), served

    # 3. The host's live connection is on node B; Django sends the broadcast to node A.
    host_context = browser_context()
    host_context.add_init_script(PIN_WEBSOCKET_TO_NODE_B)
    sockets = []
    host_context.on("page", lambda new_page: new_page.on("websocket", lambda ws: sockets.append(ws.url)))
    host_page = sign_in(host_context, hosts[0], "/statement/")
    expect(host_page.locator("#broadcasts")).to_have_attribute("data-connected", "true")
    assert sockets and all("/messaging/node-b/ws?" in url for url in sockets), sockets

    internal_log.mark()
    support_page = sign_in(browser_context(), support, "/admin/operations/broadcasts/")
    support_page.get_by_label("Message").fill("Scheduled maintenance tonight: payouts resume at 06:00.")
    support_page.get_by_role("radio", name="A list of users").check()
    support_page.get_by_label("Users", exact=True).fill(hosts[0].username)
    support_page.get_by_role("button", name=re.compile(hosts[0].username)).click()
    support_page.get_by_role("button", name="Review and send").click()
    support_page.get_by_role("button", name="Yes, send to 1").click()
    expect(host_page.locator(".host-broadcast")).to_contain_text("payouts resume at 06:00")
    shot(host_page, "scale-out-3-broadcast-across-nodes")
    node_a = f"127.0.0.1:{stack.node_ports['a']}"
    sent_to_a = [line for line in internal_log.since_mark() if "POST /messaging/node-a/broadcast" in line["request"]]
    assert [(line["status"], line["upstream"]) for line in sent_to_a] == [("202", node_a)]

    # 4. Node A acknowledges a batch, then dies before storing it, and comes back.
    acknowledged = send_batch_to_node_a(stack, guest, hosts[0])
    assert len(acknowledged) == BATCH_SIZE
    assert Message.objects.filter(id__in=acknowledged).count() == 0  # only in node A's log now
    stack.kill("erlang-a")
    # Meanwhile a guest writes to the host: Django cannot reach node A and stores it itself.
    conversation = Conversation.objects.create(subject="Late check-in")
    conversation.participants.add(guest, hosts[0])
    while_down = send_through_the_api(stack, guest, conversation, "Arriving after midnight, is that fine?")
    assert while_down["via"] == "fallback"
    acknowledged.append(while_down["id"])
    stack.start_service("erlang-a", **USUAL_PERSISTENCE)
    broadcast_text = "Scheduled maintenance tonight: payouts resume at 06:00."
    assert wait_until(lambda: Message.objects.filter(id__in=acknowledged).count() == len(acknowledged), seconds=30)
    assert wait_until(lambda: Message.objects.filter(text=broadcast_text).exists(), seconds=30)

    # 5. Nothing lost, nothing twice.
    stored = Message.objects.filter(id__in=acknowledged).values("id").annotate(copies=Count("id"))
    assert sorted(str(row["id"]) for row in stored) == sorted(acknowledged)
    assert all(row["copies"] == 1 for row in stored)
    assert Message.objects.filter(text=broadcast_text, receiver=hosts[0]).count() == 1

    assert set(Withdrawal.objects.filter(pk__in=[w.pk for w in withdrawals]).values_list("status", flat=True)) == {
        "completed"
    }
    for withdrawal in withdrawals:
        paid = LedgerEntry.objects.filter(
            transaction=withdrawal.transaction, system_account=SystemAccount.PAYOUTS_IN_TRANSIT
        ).aggregate(count=Count("id"), total=Sum("amount"))
        assert paid == {"count": 1, "total": withdrawal.amount}, withdrawal.reference

    for wallet, funding, _ in wallets:
        wallet.refresh_from_db()
        completed = sum(w.amount for w in withdrawals if w.wallet_id == wallet.pk)
        assert (wallet.balance, wallet.held_balance) == (funding - completed, Decimal("0.00"))

    check = subprocess.run(
        [sys.executable, "manage.py", "check_ledger"],
        cwd=Path(__file__).resolve().parent.parent,
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
