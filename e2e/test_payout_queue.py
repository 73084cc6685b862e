"""Payouts in the withdrawal queue (issue 17, §3), in the browser: finance reads the payouts a
provider is moving on the Processing tab, reads what "Send payout" will do before doing it,
and sees the dashboard's "Payouts processing" card turn red once a payout is stuck.

Payouts in flight are made by setting the fields the payout engine sets (status processing,
payout_method, transfer_reference, provider_transfer_id, payout_sent_at); no provider is called."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "/admin/operations/withdrawals/"


@pytest.fixture(autouse=True)
def _real_routes(settings):
    """The sandbox is off: an account with a full number is paid by the provider PAYOUT_ROUTES
    names for it (Paystack for Nigerian banks, M-Pesa for Kenyan mobile money)."""
    settings.SANDBOX_PAYMENTS_ENABLED = False
    settings.PAYMENT_PROVIDERS = ["paystack", "flutterwave", "mpesa"]
    settings.PAYOUT_ROUTES = {("bank", "NG"): "paystack", ("mobile_money", "KE"): "mpesa"}
    settings.PAYOUT_STUCK_AFTER_MINUTES = 240


@pytest.fixture
def paystack_account(host):
    from finance.models import BankAccount

    # No finance.crypto on main yet: any stored number makes the account payable by transfer.
    return BankAccount.objects.create(
        owner=host,
        bank_name="GTBank",
        bank_code="058",
        account_name="Ada Obi",
        account_number_last4="1234",
        account_number_encrypted="x",
        country="NG",
        currency="NGN",
        is_primary=True,
    )


@pytest.fixture
def mpesa_wallet(other_host):
    """Another host's KES wallet, paid out to an M-Pesa number."""
    from finance.models import BankAccount
    from finance.services import TransactionService

    wallet = TransactionService.create_wallet(other_host, "KES")
    TransactionService.credit_wallet(wallet, Decimal("20000.00"))
    account = BankAccount.objects.create(
        owner=other_host,
        account_type=BankAccount.AccountType.MOBILE_MONEY,
        bank_name="M-Pesa",
        account_name="Wanjiru Kamau",
        account_number_last4="5678",
        account_number_encrypted="x",
        country="KE",
        currency="KES",
        is_primary=True,
    )
    return wallet, account


def withdraw(wallet, account, amount):
    from finance.services import TransactionService

    return TransactionService.initiate_withdrawal(wallet, account, Decimal(amount))


def in_flight(w, *, provider, sent_ago, **fields):
    """`w` as the payout engine leaves it once the provider accepted the transfer."""
    from finance.models import Withdrawal

    Withdrawal.objects.filter(pk=w.pk).update(
        status=Withdrawal.Status.PROCESSING,
        payout_method=provider,
        transfer_reference=w.stable_transfer_reference(),
        payout_sent_at=timezone.now() - sent_ago,
        **fields,
    )
    w.refresh_from_db()
    return w


def test_the_processing_tab_shows_each_payout_in_flight_with_its_provider_references_and_age(
    open_as, finance_user, funded_wallet, paystack_account, mpesa_wallet
):
    kes_wallet, mpesa_account = mpesa_wallet
    slow = in_flight(
        withdraw(funded_wallet, paystack_account, "2500"),
        provider="paystack",
        sent_ago=timedelta(hours=3, minutes=12),
        provider_transfer_id="TRF_1ptvuv321ahaa7q",
        payout_error="Timed out talking to Paystack; retrying",
        payout_checked_at=timezone.now() - timedelta(minutes=5),
    )
    fresh = in_flight(
        withdraw(kes_wallet, mpesa_account, "1500"),
        provider="mpesa",
        sent_ago=timedelta(minutes=20),
        provider_transfer_id="AG_20261130_00004c2f1b9a",
    )
    waiting = withdraw(funded_wallet, paystack_account, "1000")  # pending: still on the Pending tab

    page = open_as(finance_user, QUEUE)
    tabs = page.get_by_role("navigation", name="Withdrawals by status")
    expect(page.locator(f"#withdrawal-{waiting.pk}")).to_be_visible()
    expect(page.locator(f"#withdrawal-{slow.pk}")).to_have_count(0)
    tabs.get_by_role("link", name="Processing").click()
    expect(tabs.get_by_role("link", name="Processing")).to_have_attribute("aria-current", "page")

    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_id(f"withdrawal-{slow.pk}")  # who has waited longest comes first
    expect(rows.nth(1)).to_have_id(f"withdrawal-{fresh.pk}")

    row = page.locator(f"#withdrawal-{slow.pk}")
    for text in (
        "Paystack transfer",
        slow.transfer_reference,
        "TRF_1ptvuv321ahaa7q",
        "3 h 12 min",
        "Timed out talking to Paystack; retrying",
        "NGN 2,500.00",
    ):
        expect(row).to_contain_text(text)
    expect(row.get_by_title(re.compile(r"^Sent \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))).to_have_text("3 h 12 min")
    expect(row.get_by_text("Waiting for Paystack")).to_be_visible()

    row = page.locator(f"#withdrawal-{fresh.pk}")
    for text in ("M-Pesa B2C", fresh.transfer_reference, "AG_20261130_00004c2f1b9a", "20 min", "KES 1,500.00"):
        expect(row).to_contain_text(text)
    expect(row.get_by_text("Waiting for M-Pesa")).to_be_visible()

    # In flight: only the provider's answer settles it, so no row offers a staff action.
    main = page.locator("main")
    expect(main.get_by_role("button", name=re.compile(r"^(Send payout|Mark .* as paid|Fail)"))).to_have_count(0)
    expect(main.locator("input[name=ids]")).to_have_count(0)
    shots(page, "payouts-processing-tab")

    page.get_by_label("Provider").select_option(label="M-Pesa B2C")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator(f"#withdrawal-{fresh.pk}")).to_be_visible()
    expect(page).to_have_url(re.compile(r"provider=mpesa"))


def test_send_payout_says_where_the_money_goes_and_that_it_stays_held(
    open_as, finance_user, funded_wallet, paystack_account, host
):
    from finance.models import Withdrawal

    w = withdraw(funded_wallet, paystack_account, "5000")
    page = open_as(finance_user, QUEUE)
    row = page.locator(f"#withdrawal-{w.pk}")
    expect(row.get_by_role("button", name=f"Mark {w.reference} as paid")).to_have_count(0)

    row.get_by_role("button", name=f"Send payout {w.reference}").click()

    confirmation = page.get_by_role("group", name=f"Confirm send payout {w.reference}")
    expect(confirmation).to_contain_text(f"Send payout {w.reference}?")
    expect(confirmation).to_contain_text(
        f"Send NGN 5,000.00 to {host}'s GTBank •••• 1234 by Paystack transfer. "
        "The money stays held until Paystack confirms it."
    )
    expect(confirmation).to_contain_text("if the transfer fails, the hold is released back to the host")
    expect(confirmation.get_by_role("button", name="Yes, send payout")).to_be_visible()
    shots(page, "payouts-send-confirmation")

    # Not confirmed: nothing was sent, the withdrawal still waits for staff.
    confirmation.get_by_role("button", name="Cancel").click()
    expect(page.locator(f"#withdrawal-{w.pk}").get_by_role("button", name=f"Send payout {w.reference}")).to_be_visible()
    w.refresh_from_db()
    assert (w.status, w.payout_sent_at, w.transfer_reference) == (Withdrawal.Status.PENDING, None, "")


def test_the_dashboard_card_turns_red_once_a_payout_waits_past_the_stuck_threshold(
    open_as, finance_user, funded_wallet, paystack_account
):
    in_flight(withdraw(funded_wallet, paystack_account, "1000"), provider="paystack", sent_ago=timedelta(minutes=40))
    page = open_as(finance_user, "/admin/operations/dashboard/")
    card = page.get_by_role("region", name="Payouts processing")
    expect(card.locator(".ops-big")).to_have_text("1")
    expect(card).to_contain_text("payout waits for the provider's confirmation; the oldest was sent 40 min ago.")
    expect(card).not_to_have_class(re.compile(r"ops-card-alert"))
    expect(card.get_by_role("alert")).to_have_count(0)
    quiet_border = card.evaluate("e => getComputedStyle(e).borderTopColor")

    in_flight(withdraw(funded_wallet, paystack_account, "2000"), provider="paystack", sent_ago=timedelta(hours=5))
    page.reload()
    card = page.get_by_role("region", name="Payouts processing")
    expect(card).to_have_class(re.compile(r"\bops-card-alert\b"))
    expect(card.locator(".ops-big")).to_have_text("2")
    expect(card).to_contain_text("payouts wait for the provider's confirmation; the oldest was sent 5 h 0 min ago.")
    expect(card.get_by_role("alert")).to_have_text(
        "Stuck: the oldest has waited longer than 4 h 0 min. Check it with the provider."
    )
    red = card.evaluate("e => getComputedStyle(e).borderTopColor")
    r, g, b = (int(n) for n in re.findall(r"\d+", red)[:3])
    assert red != quiet_border and r > g + 80 and r > b + 80  # the critical red, not the quiet grey
    shots(page, "payouts-dashboard-stuck")

    card.get_by_role("link", name="Open Processing").click()
    expect(page).to_have_url(re.compile(r"/admin/operations/withdrawals/processing/$"))
    expect(page.locator("#results tbody tr")).to_have_count(2)
