"""Payouts in the withdrawal queue (issue 17): the Processing tab, the row actions' wording by
payout route, a payout in flight that no staff action can settle, the bulk confirmation's
count by provider, and the dashboard's "Payouts processing" card.

Processing withdrawals are made by setting the fields the payout engine sets
(finance.payouts.send_payout): status, payout_method, transfer_reference, payout_sent_at."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from finance.models import BankAccount, Withdrawal
from finance.services import TransactionService

pytestmark = pytest.mark.django_db

QUEUE = "/admin/operations/withdrawals/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _providers(settings):
    """Paystack pays Nigerian banks; the sandbox is off, so routes are the real ones."""
    settings.PAYMENT_PROVIDERS = ["paystack", "flutterwave", "mpesa"]
    settings.SANDBOX_PAYMENTS_ENABLED = False


@pytest.fixture
def paystack_account(host):
    return BankAccount.objects.create(
        owner=host,
        bank_name="GTBank",
        bank_code="058",
        account_name="Ada Obi",
        account_number_last4="1234",
        account_number_encrypted="encrypted-number",
        country="NG",
        currency="NGN",
        is_primary=True,
    )


def withdraw(wallet, account, amount):
    return TransactionService.initiate_withdrawal(wallet, account, Decimal(amount))


def in_flight(w, *, provider="paystack", sent_ago=timedelta(hours=3, minutes=12), **fields):
    """`w` as the payout engine leaves it once sent: processing, with the provider's references."""
    Withdrawal.objects.filter(pk=w.pk).update(
        status=Withdrawal.Status.PROCESSING,
        payout_method=provider,
        transfer_reference=w.stable_transfer_reference(),
        payout_sent_at=timezone.now() - sent_ago,
        **fields,
    )
    w.refresh_from_db()
    return w


def page(client, url, **extra):
    response = client.get(url, **extra)
    assert response.status_code == 200, url
    return response.content.decode()


def row_of(body, w):
    """The queue's table row for `w` (the page around it also explains both actions by name)."""
    start = body.index(f'<tr id="withdrawal-{w.pk}"')
    return body[start : body.index("</tr>", start)]


def test_processing_tab_lists_payouts_in_flight_oldest_first_with_provider_references_and_age(
    client, finance_user, funded_wallet, paystack_account
):
    newer = in_flight(withdraw(funded_wallet, paystack_account, "1000"), sent_ago=timedelta(minutes=20))
    older = in_flight(
        withdraw(funded_wallet, paystack_account, "2000"),
        provider_transfer_id="TRF_1ptvuv321ahaa7q",
        payout_error="Timed out talking to Paystack; retrying",
        payout_checked_at=timezone.now() - timedelta(minutes=5),
    )
    pending = withdraw(funded_wallet, paystack_account, "1500")
    client.force_login(finance_user)

    body = page(client, QUEUE + "processing/")

    assert body.index(older.reference) < body.index(newer.reference)  # who has waited longest first
    assert pending.reference not in body
    assert "Paystack transfer" in body
    assert older.transfer_reference in body and "TRF_1ptvuv321ahaa7q" in body
    assert ">3 h 12 min<" in body and ">20 min<" in body
    assert 'title="Sent ' in body  # the exact time, in the tooltip
    assert "Timed out talking to Paystack; retrying" in body
    # In flight: no staff action, only the provider's answer settles it.
    assert "Waiting for Paystack" in body
    assert f"Fail {older.reference}" not in body and "as paid" not in body and "Send payout" not in body
    assert 'name="ids"' not in body and "Send selected payouts" not in body

    pending_tab = page(client, QUEUE)
    assert pending.reference in pending_tab and older.reference not in pending_tab


def test_processing_tab_says_when_nothing_waits_for_a_provider(client, finance_user, funded_wallet, bank_account):
    withdraw(funded_wallet, bank_account, "1000")  # pending: not on this tab
    client.force_login(finance_user)
    body = page(client, QUEUE + "processing/")
    assert "No payouts are waiting for a provider." in body
    assert 'aria-current="page">Processing<' in body


def test_processing_tab_filters_by_provider_and_exports_the_references(
    client, finance_user, funded_wallet, paystack_account
):
    paystack = in_flight(withdraw(funded_wallet, paystack_account, "1000"))
    flutterwave = in_flight(withdraw(funded_wallet, paystack_account, "2000"), provider="flutterwave")
    client.force_login(finance_user)

    only = page(client, QUEUE + "processing/?provider=flutterwave")
    assert flutterwave.reference in only and paystack.reference not in only
    assert page(client, QUEUE + "processing/?provider=nope").count("withdrawal-") == 0
    assert 'name="provider"' not in page(client, QUEUE)  # the provider filter is the Processing tab's

    export = client.get(QUEUE + "processing/?export=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert [r["Reference"] for r in rows] == [paystack.reference, flutterwave.reference]
    assert rows[0]["Payout method"] == "Paystack transfer"
    assert rows[0]["Transfer reference"] == paystack.transfer_reference
    assert rows[1]["Payout method"] == "Flutterwave transfer"


def test_send_payout_names_the_provider_and_that_the_money_stays_held(
    client, finance_user, funded_wallet, paystack_account
):
    w = withdraw(funded_wallet, paystack_account, "5000")
    client.force_login(finance_user)

    row = row_of(page(client, QUEUE), w)
    assert f'aria-label="Send payout {w.reference}"' in row and ">Send payout<" in row and "as paid" not in row

    body = page(client, f"{QUEUE}{w.pk}/complete/confirm/", **HTMX)
    assert f"Send payout {w.reference}?" in body
    assert (
        f"Send NGN 5,000.00 to {funded_wallet.user}&#x27;s GTBank •••• 1234 by Paystack transfer. "
        "The money stays held until Paystack confirms it."
    ) in body
    assert ">Yes, send payout</button>" in body


def test_mark_as_paid_when_no_provider_reaches_the_account(client, finance_user, funded_wallet, bank_account):
    w = withdraw(funded_wallet, bank_account, "2500")  # only the last four digits: no transfer possible
    client.force_login(finance_user)

    row = row_of(page(client, QUEUE), w)
    assert f'aria-label="Mark {w.reference} as paid"' in row and ">Mark as paid<" in row and "Send payout" not in row

    body = page(client, f"{QUEUE}{w.pk}/complete/confirm/", **HTMX)
    assert f"Record that NGN 2,500.00 was paid to {funded_wallet.user}&#x27;s GTBank •••• 4321 by other means" in body
    assert ">Yes, mark as paid</button>" in body


def test_the_row_of_a_payout_just_sent_says_it_waits_for_the_provider(
    client, finance_user, funded_wallet, paystack_account
):
    w = in_flight(withdraw(funded_wallet, paystack_account, "1000"), sent_ago=timedelta(seconds=5))
    client.force_login(finance_user)
    row = page(client, f"{QUEUE}{w.pk}/row/", **HTMX)
    assert "Sent to Paystack — waiting for its confirmation (" in row and w.transfer_reference in row
    assert 'name="ids"' not in row and ">Fail…<" not in row


@pytest.mark.parametrize("action", ["complete", "fail"])
def test_no_staff_action_settles_a_payout_in_flight(client, finance_user, funded_wallet, paystack_account, action):
    w = in_flight(withdraw(funded_wallet, paystack_account, "1000"))
    client.force_login(finance_user)

    asked = client.get(f"{QUEUE}{w.pk}/{action}/confirm/", **HTMX)
    posted = client.post(f"{QUEUE}{w.pk}/{action}/", {"reason": "Bank said no"}, **HTMX)

    for response in (asked, posted):
        assert response.status_code == 409
        assert "only Paystack&#x27;s answer can settle it now" in response.content.decode()
    w.refresh_from_db()
    assert w.status == Withdrawal.Status.PROCESSING
    funded_wallet.refresh_from_db()
    assert funded_wallet.held_balance == Decimal("1000.00")  # still held


def test_bulk_confirmation_counts_the_payouts_by_provider_and_the_manual_ones(
    client, finance_user, funded_wallet, paystack_account
):
    # The host's second account: only its last four digits are known, so no provider pays it.
    last4_only = BankAccount.objects.create(
        owner=funded_wallet.user, bank_name="Access Bank", account_name="Ada Obi", account_number_last4="4321"
    )
    by_paystack = [withdraw(funded_wallet, paystack_account, a) for a in ("1000", "2000")]
    by_hand = withdraw(funded_wallet, last4_only, "1500")
    sent = in_flight(withdraw(funded_wallet, paystack_account, "1200"))  # already with Paystack: left out
    client.force_login(finance_user)

    ids = [w.pk for w in (*by_paystack, by_hand, sent)]
    body = client.post(f"{QUEUE}bulk/confirm/", {"ids": ids}, **HTMX).content.decode()

    assert "Send 3 payouts?" in body
    assert "2 by Paystack transfer (held until Paystack confirms); 1 marked as paid (manual" in body
    assert "Yes, send them" in body
    assert "Total NGN 4,500.00" in body


def test_dashboard_card_counts_payouts_processing_and_turns_red_once_one_is_stuck(
    client, finance_user, funded_wallet, paystack_account, settings
):
    settings.PAYOUT_STUCK_AFTER_MINUTES = 240
    client.force_login(finance_user)
    quiet = page(client, "/admin/operations/dashboard/")
    assert "Payouts processing" in quiet and "No payout is waiting for a provider." in quiet
    assert f'href="{QUEUE}processing/"' in quiet

    in_flight(withdraw(funded_wallet, paystack_account, "1000"), sent_ago=timedelta(hours=1, minutes=5))
    busy = page(client, "/admin/operations/dashboard/")
    card = busy[busy.index('id="payouts-card"') - 40 : busy.index("Open Processing")]
    assert "ops-card-alert" not in card and "1 h 5 min" in card
    assert '<p class="ops-big">1</p>' in card and "payout waits for the provider's confirmation" in card

    in_flight(withdraw(funded_wallet, paystack_account, "2000"), sent_ago=timedelta(hours=5))
    stuck = page(client, "/admin/operations/dashboard/")
    card = stuck[stuck.index('id="payouts-card"') - 40 : stuck.index("Open Processing")]
    assert "ops-card-alert" in card and "5 h 0 min" in card
    assert '<p class="ops-big">2</p>' in card and "payouts wait for the provider's confirmation" in card
    assert "Stuck: the oldest has waited longer than 4 h 0 min" in card
