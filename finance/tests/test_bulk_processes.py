"""A bulk completion survives its worker's death: real worker processes (`manage.py run_worker`).

The story: finance starts completing 150 withdrawals of three hosts; the worker running the job
is killed (SIGKILL) half-way; a second worker takes the job back once the first one's lease has
expired and finishes it. Every withdrawal is paid out exactly once, and the ledger holds.
"""

import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult
from wagtail.models import ModelLogEntry

from finance import bulk
from finance.models import BankAccount, LedgerEntry, SystemAccount, Wallet, Withdrawal, WithdrawalBatch
from finance.services import TransactionService
from testing.job_worker import JobWorkerProcess
from testing.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HOSTS = 3
PER_HOST = 50
FUNDS = Decimal("100000.00")


def open_withdrawals(make_user) -> list[Withdrawal]:
    """PER_HOST withdrawals for each of HOSTS funded hosts, of slightly different amounts."""
    withdrawals = []
    for _ in range(HOSTS):
        host = make_user("host")
        wallet = TransactionService.create_wallet(host, "NGN")
        TransactionService.credit_wallet(wallet, FUNDS)
        account = BankAccount.objects.create(
            owner=host, bank_name="GTBank", account_name=host.username, account_number_last4="4321", is_primary=True
        )
        withdrawals += [
            TransactionService.initiate_withdrawal(wallet, account, Decimal("1000.00") + n) for n in range(PER_HOST)
        ]
    return withdrawals


def done_count(batch) -> int:
    return bulk.get_batch(batch.pk).done


def test_a_batch_whose_worker_is_killed_half_way_is_finished_by_another_paying_each_once(make_user):
    finance_user = make_user(groups=["Finance"])
    withdrawals = open_withdrawals(make_user)
    batch = bulk.start_batch(
        withdrawal_ids=[w.pk for w in withdrawals], actor=finance_user, idempotency_key=uuid.uuid4().hex
    )
    assert batch.total == len(withdrawals) == HOSTS * PER_HOST

    with JobWorkerProcess(lease=3) as first:
        assert wait_until(lambda: done_count(batch) >= 10, seconds=30, interval=0.01), first.log()
        first.kill()
    at_kill = done_count(batch)
    assert 10 <= at_kill < batch.total  # the kill landed mid-job
    assert WithdrawalBatch.objects.get(pk=batch.pk).status == WithdrawalBatch.Status.RUNNING
    assert Withdrawal.objects.filter(status="pending").count() == batch.total - at_kill

    with JobWorkerProcess(lease=3) as second:
        finished = wait_until(
            lambda: WithdrawalBatch.objects.get(pk=batch.pk).status == WithdrawalBatch.Status.DONE, seconds=60
        )
        assert finished, second.log()

    # Every withdrawal completed, each paid out by exactly one completion.
    assert Withdrawal.objects.filter(status="completed").count() == batch.total
    payouts = LedgerEntry.objects.filter(system_account=SystemAccount.PAYOUTS_IN_TRANSIT)
    assert sorted(payouts.values_list("transaction_id", flat=True)) == sorted(w.transaction_id for w in withdrawals)
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == batch.total
    # Each wallet holds what its completions imply: the funds less what was paid out, nothing held.
    paid = defaultdict(Decimal)
    for w in withdrawals:
        paid[w.wallet_id] += w.amount
    for wallet in Wallet.objects.filter(pk__in=paid):
        assert (wallet.balance, wallet.held_balance) == (FUNDS - paid[wallet.pk], Decimal("0.00"))
    # The batch's own record: all done, all completed, by two workers.
    done = bulk.get_batch(batch.pk)
    assert (done.done, done.completed, done.total) == (batch.total, batch.total, batch.total)
    assert len(DBTaskResult.objects.get(pk=batch.job_id).worker_ids) == 2
    call_command("check_ledger", stdout=open("/dev/null", "w"))
