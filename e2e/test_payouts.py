"""Host payouts that really leave (issue 17): finance sends a payout, a real background worker
sends the transfer through the sandbox provider, and the provider's signed callback, posted to
the live server, settles it. Nothing here is faked: the worker, the webhook endpoint, the inbox
and the ledger are the ones production runs; only the provider is the offline sandbox."""

import time
from decimal import Decimal

import pytest
from django.conf import settings
from playwright.sync_api import expect

from finance import crypto
from finance.models import BankAccount, WebhookEvent, Withdrawal
from finance.services import TransactionService
from testing.ledger import failing_ledger_checks

from .conftest import shots

pytestmark = pytest.mark.django_db(transaction=True)

# The worker polls every second and the sandbox's callback is a job of its own: a payout
# settles within a few seconds; this bounds the wait.
SETTLE_SECONDS = 45


def payout_account(host, number: str, *, bank: str = "GTBank", code: str = "058", primary: bool = True):
    """A Nigerian bank account with its full number (stored encrypted): one a transfer can pay."""
    account = BankAccount(
        owner=host,
        bank_name=bank,
        bank_code=code,
        account_name="Adaeze Okafor",
        currency="NGN",
        country="NG",
        is_primary=primary,
    )
    crypto.set_account_number(account, number)
    account.save()
    return account


def wait_until_settled(*withdrawals: Withdrawal) -> None:
    """Wait (bounded) until every withdrawal has its provider's outcome, then return."""
    deadline = time.monotonic() + SETTLE_SECONDS
    pks = [w.pk for w in withdrawals]
    while time.monotonic() < deadline:
        if not Withdrawal.objects.filter(pk__in=pks, status__in=Withdrawal.OPEN_STATUSES).exists():
            return
        time.sleep(0.25)
    states = dict(Withdrawal.objects.filter(pk__in=pks).values_list("reference", "status"))
    raise AssertionError(f"payouts still open after {SETTLE_SECONDS} s: {states}")


def send_payout(page, withdrawal: Withdrawal) -> None:
    row = page.locator(f"#withdrawal-{withdrawal.pk}")
    row.get_by_role("button", name=f"Send payout {withdrawal.reference}").click()
    expect(row).to_contain_text("Sandbox transfer")
    row.get_by_role("button", name="Yes, send payout").click()
    expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_contain_text("waiting for its confirmation")


def test_a_payout_goes_out_and_settles_by_the_providers_callback(
    open_as, finance_user, host, funded_wallet, start_job_worker
):
    assert settings.SANDBOX_PAYMENTS_ENABLED
    account = payout_account(host, "0123456789")
    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, account, Decimal("2500.00"))
    start_job_worker()

    page = open_as(finance_user, "/admin/operations/withdrawals/")
    row = page.locator(f"#withdrawal-{withdrawal.pk}")
    row.get_by_role("button", name=f"Send payout {withdrawal.reference}").click()
    # The confirmation says where the money goes, by which route, and that it stays held.
    expect(row).to_contain_text("•••• 6789")
    expect(row).to_contain_text("Sandbox transfer")
    shots(page, "payout-1-confirm")
    row.get_by_role("button", name="Yes, send payout").click()
    expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_contain_text("waiting for its confirmation")
    expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_contain_text(withdrawal.stable_transfer_reference())

    wait_until_settled(withdrawal)
    page.goto("/admin/operations/withdrawals/completed/")
    completed = page.locator(f"#withdrawal-{withdrawal.pk}")
    expect(completed).to_contain_text("2,500.00")
    shots(page, "payout-1-completed")

    # The held money left the wallet: 10,000 − 2,500, nothing held any more.
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("7500.00"), Decimal("0.00"))
    # The provider's callback is in the inbox, applied once, naming the withdrawal.
    [callback] = WebhookEvent.objects.filter(withdrawal=withdrawal)
    assert (callback.provider, callback.outcome) == ("sandbox", WebhookEvent.Outcome.APPLIED)
    page.goto("/admin/operations/webhooks/?show=all")
    expect(page.locator("#results")).to_contain_text("transfer.succeeded")
    expect(page.locator("#results")).to_contain_text(f"Host payout {withdrawal.reference}, NGN 2,500.00")
    shots(page, "payout-1-inbox")
    assert failing_ledger_checks() == []


def test_a_payout_the_provider_refuses_fails_and_releases_the_hold(
    open_as, finance_user, host, funded_wallet, start_job_worker
):
    closed = payout_account(host, "0987650000", bank="Access Bank", code="044")
    withdrawal = TransactionService.initiate_withdrawal(funded_wallet, closed, Decimal("4000.00"))
    funded_wallet.refresh_from_db()
    assert funded_wallet.available_balance == Decimal("6000.00")
    start_job_worker()

    page = open_as(finance_user, "/admin/operations/withdrawals/")
    send_payout(page, withdrawal)
    wait_until_settled(withdrawal)

    page.goto("/admin/operations/withdrawals/failed/")
    failed = page.locator(f"#withdrawal-{withdrawal.pk}")
    expect(failed).to_contain_text("ending 0000 is closed")
    shots(page, "payout-2-failed")
    # The hold is released: the host can withdraw all 10,000.00 again.
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("10000.00"), Decimal("0.00"))
    assert WebhookEvent.objects.get(withdrawal=withdrawal).outcome == WebhookEvent.Outcome.PAYOUT_FAILED
    assert failing_ledger_checks() == []


def test_a_bulk_of_five_payouts_goes_through_the_sandbox(open_as, finance_user, host, funded_wallet, start_job_worker):
    account = payout_account(host, "0123451111")
    withdrawals = [
        TransactionService.initiate_withdrawal(funded_wallet, account, Decimal(amount))
        for amount in ("1000.00", "1100.00", "1200.00", "1300.00", "1400.00")
    ]
    start_job_worker()

    page = open_as(finance_user, "/admin/operations/withdrawals/")
    for withdrawal in withdrawals:
        page.locator(f"#withdrawal-{withdrawal.pk}").get_by_role("checkbox").check()
    page.get_by_role("button", name="Send selected payouts…").click()
    confirmation = page.locator("#bulk-progress")
    expect(confirmation).to_contain_text("Sandbox transfer")
    shots(page, "payout-3-bulk-confirm")
    page.get_by_role("button", name="Yes, send them").click()
    expect(page.locator("#bulk-progress")).to_contain_text("Done: 5 of 5", timeout=SETTLE_SECONDS * 1000)

    wait_until_settled(*withdrawals)
    page.goto("/admin/operations/withdrawals/completed/")
    for withdrawal in withdrawals:
        expect(page.locator(f"#withdrawal-{withdrawal.pk}")).to_be_visible()
    shots(page, "payout-3-bulk-completed")
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("4000.00"), Decimal("0.00"))
    assert WebhookEvent.objects.filter(withdrawal__in=withdrawals, outcome=WebhookEvent.Outcome.APPLIED).count() == 5
    assert failing_ledger_checks() == []
