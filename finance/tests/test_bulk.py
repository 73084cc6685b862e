"""finance/bulk.py in-process: starting a batch (atomic, idempotent, permission-checked) and its job,
run by `testing.jobs.run_ready_jobs` as a worker would."""

import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django_tasks.exceptions import InvalidTaskError
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from wagtail.models import ModelLogEntry

from finance import bulk, staff_actions
from finance.errors import InvalidStateError, PermissionDeniedError
from finance.models import (
    ApprovalRequest,
    LedgerEntry,
    SystemAccount,
    Wallet,
    Withdrawal,
    WithdrawalBatch,
    WithdrawalBatchItem,
)
from finance.services import TransactionService
from testing.jobs import run_ready_jobs

pytestmark = pytest.mark.django_db

Outcome = WithdrawalBatchItem.Outcome


@pytest.fixture
def withdrawals(funded_wallet, bank_account):
    """Three open withdrawals of 1,000.00 from the host's 10,000.00."""
    return [TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1000.00")) for _ in range(3)]


def start(withdrawals, actor, key=None):
    return bulk.start_batch(
        withdrawal_ids=[w.pk for w in withdrawals], actor=actor, idempotency_key=key or uuid.uuid4().hex
    )


def payouts(withdrawal) -> int:
    """How many times the ledger paid `withdrawal` out (its entries to payouts in transit)."""
    return LedgerEntry.objects.filter(
        transaction_id=withdrawal.transaction_id, system_account=SystemAccount.PAYOUTS_IN_TRANSIT
    ).count()


def outcomes(batch) -> list[str]:
    return list(batch.items.order_by("position").values_list("outcome", flat=True))


def test_starting_a_batch_records_it_and_enqueues_its_job_without_moving_money(finance_user, withdrawals):
    key = uuid.uuid4().hex
    batch = start(withdrawals, finance_user, key)

    assert batch.pk == uuid.UUID(key) and batch.total == 3 and batch.status == WithdrawalBatch.Status.QUEUED
    assert [i.withdrawal_id for i in batch.items.order_by("position")] == [w.pk for w in withdrawals]
    assert DBTaskResult.objects.get(pk=batch.job_id).status == TaskResultStatus.READY
    assert Withdrawal.objects.filter(status="pending").count() == 3  # the job moves the money, not the start
    entry = ModelLogEntry.objects.get(action="stayafrica.withdrawal.bulk_complete")
    assert entry.user_id == finance_user.pk
    assert entry.data["references"] == [w.reference for w in withdrawals]


def test_a_double_submit_starts_one_batch(finance_user, withdrawals):
    key = uuid.uuid4().hex
    first, second = start(withdrawals, finance_user, key), start(withdrawals, finance_user, key)

    assert first.pk == second.pk
    assert WithdrawalBatch.objects.count() == 1 and DBTaskResult.objects.count() == 1
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.bulk_complete").count() == 1


def test_someone_elses_key_never_hands_back_their_batch(finance_user, make_user, withdrawals):
    key = uuid.uuid4().hex
    start(withdrawals, finance_user, key)
    with pytest.raises(InvalidStateError):
        start(withdrawals, make_user(groups=["Finance"]), key)
    assert WithdrawalBatch.objects.count() == 1


def test_a_role_without_the_permission_starts_nothing(manager, withdrawals):
    with pytest.raises(PermissionDeniedError):
        start(withdrawals, manager)
    assert not WithdrawalBatch.objects.exists() and not DBTaskResult.objects.exists()
    assert not ModelLogEntry.objects.filter(action="stayafrica.withdrawal.bulk_complete").exists()


def test_only_open_withdrawals_are_taken_and_none_is_refused(finance_user, withdrawals):
    staff_actions.fail_withdrawal(withdrawal=withdrawals[0], actor=finance_user, reason="Closed", idempotency_key="f")
    batch = start(withdrawals, finance_user)
    assert batch.total == 2
    with pytest.raises(InvalidStateError, match="Select at least one pending withdrawal"):
        start(withdrawals[:1], finance_user)
    assert WithdrawalBatch.objects.count() == 1


def test_a_start_that_fails_half_way_leaves_nothing_behind(settings, finance_user, withdrawals):
    """Batch, items, job and audit commit together: a queue that refuses the job undoes them all."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["elsewhere"]}}
    with pytest.raises(InvalidTaskError):
        start(withdrawals, finance_user)
    assert not WithdrawalBatch.objects.exists() and not WithdrawalBatchItem.objects.exists()
    assert not ModelLogEntry.objects.filter(action="stayafrica.withdrawal.bulk_complete").exists()


def test_the_job_completes_every_withdrawal_once(finance_user, withdrawals, funded_wallet):
    batch = start(withdrawals, finance_user)
    assert run_ready_jobs() == 1

    batch = bulk.get_batch(batch.pk)
    assert batch.status == WithdrawalBatch.Status.DONE and batch.finished_at is not None
    assert (batch.done, batch.completed) == (3, 3)
    assert outcomes(batch) == [Outcome.COMPLETED] * 3
    assert all(payouts(w) == 1 for w in withdrawals)
    wallet = Wallet.objects.get(pk=funded_wallet.pk)
    assert (wallet.balance, wallet.held_balance) == (Decimal("7000.00"), Decimal("0.00"))
    # Each completion is audited as the person who started the batch.
    entries = ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete")
    assert entries.count() == 3 and {e.user_id for e in entries} == {finance_user.pk}
    assert DBTaskResult.objects.get(pk=batch.job_id).status == TaskResultStatus.SUCCESSFUL
    call_command("check_ledger", stdout=open("/dev/null", "w"))


def test_a_withdrawal_completed_by_someone_else_meanwhile_is_reported_not_paid_twice(
    finance_user, make_user, withdrawals, funded_wallet
):
    batch = start(withdrawals, finance_user)
    colleague = make_user(groups=["Finance"])
    staff_actions.complete_withdrawal(withdrawal=withdrawals[1], actor=colleague, idempotency_key="by-hand")
    run_ready_jobs()

    batch = bulk.get_batch(batch.pk)
    assert outcomes(batch) == [Outcome.COMPLETED, Outcome.ERROR, Outcome.COMPLETED]
    [reported] = bulk.unsuccessful_items(batch)
    assert reported.withdrawal_id == withdrawals[1].pk and "already completed" in reported.message
    assert (batch.done, batch.completed) == (3, 2)
    assert payouts(withdrawals[1]) == 1
    assert Wallet.objects.get(pk=funded_wallet.pk).balance == Decimal("7000.00")


def test_withdrawals_above_the_threshold_become_approval_requests(settings, finance_user, withdrawals):
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("2000.00")}  # two of 1,000.00 fit, the third does not
    batch = start(withdrawals, finance_user)
    run_ready_jobs()

    batch = bulk.get_batch(batch.pk)
    assert outcomes(batch) == [Outcome.COMPLETED, Outcome.COMPLETED, Outcome.NEEDS_APPROVAL]
    request = ApprovalRequest.objects.get()
    assert request.withdrawal_id == withdrawals[2].pk and request.requested_by == finance_user
    assert f"request #{request.pk}" in batch.items.get(position=3).message
    assert Withdrawal.objects.get(pk=withdrawals[2].pk).status == "pending"  # nothing moved for it


def test_a_rerun_of_a_finished_batch_pays_nothing_again(finance_user, withdrawals, funded_wallet):
    batch = start(withdrawals, finance_user)
    run_ready_jobs()
    finished_at = WithdrawalBatch.objects.get(pk=batch.pk).finished_at
    bulk.complete_withdrawal_batch.enqueue(str(batch.pk))  # the same job again, as after a lost lease
    run_ready_jobs()

    assert all(payouts(w) == 1 for w in withdrawals)
    assert Wallet.objects.get(pk=funded_wallet.pk).balance == Decimal("7000.00")
    assert ModelLogEntry.objects.filter(action="stayafrica.withdrawal.complete").count() == 3
    again = bulk.get_batch(batch.pk)
    assert again.status == WithdrawalBatch.Status.DONE and again.finished_at == finished_at


def test_a_rerun_after_a_crash_between_payment_and_record_replays_the_payment(finance_user, withdrawals, funded_wallet):
    """The item in hand when a worker died: its money may have moved in a transaction the item
    never recorded (a crash cannot split one transaction, but a key's replay is what guarantees it)."""
    batch = start(withdrawals, finance_user)
    first = withdrawals[0]
    staff_actions.complete_withdrawal(
        withdrawal=first, actor=finance_user, idempotency_key=f"bulk-{batch.pk}-{first.pk}"
    )
    run_ready_jobs()

    batch = bulk.get_batch(batch.pk)
    assert outcomes(batch) == [Outcome.COMPLETED] * 3  # replayed as completed, not "already completed"
    assert payouts(first) == 1
    assert Wallet.objects.get(pk=funded_wallet.pk).balance == Decimal("7000.00")


def test_a_bulk_of_five_through_the_sandbox_is_sent_then_settled_by_the_callbacks(
    settings, finance_user, funded_wallet, host
):
    """Items paid by a provider are "sent" (done for the batch's progress); the summary counts
    them apart from those completed at once (a manual account's)."""
    from finance.models import BankAccount
    from finance.payments import receive_webhook
    from finance.providers import sandbox

    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.SANDBOX_WEBHOOK_SECRET = "bulk-secret"
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("1000000")}
    payable = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="Host", account_number_last4="4321", account_number_encrypted="x"
    )
    manual = BankAccount.objects.create(owner=host, bank_name="Other", account_name="Host", account_number_last4="9")
    batch_of = [TransactionService.initiate_withdrawal(funded_wallet, payable, Decimal("1000.00")) for _ in range(4)]
    batch_of.append(TransactionService.initiate_withdrawal(funded_wallet, manual, Decimal("1000.00")))

    batch = start(batch_of, finance_user)
    run_ready_jobs()  # the batch's job; it enqueues the four sends, which this round runs too

    batch = bulk.get_batch(batch.pk)
    assert outcomes(batch) == [Outcome.SENT] * 4 + [Outcome.COMPLETED]
    assert (batch.done, batch.sent, batch.completed) == (5, 4, 1)
    assert DBTaskResult.objects.get(task_path="finance.bulk.complete_withdrawal_batch").return_value == {
        "total": 5,
        "completed": 1,
        "sent": 4,
    }
    assert bulk.unsuccessful_items(batch) == []
    assert "Sandbox transfer payout-" in batch.items.get(position=1).message
    for withdrawal in batch_of[:4]:
        withdrawal.refresh_from_db()
        assert withdrawal.status == Withdrawal.Status.PROCESSING
        raw = sandbox.transfer_event_body(withdrawal)
        assert receive_webhook("sandbox", raw, {sandbox.SIGNATURE_HEADER: sandbox.sign(raw)}).status == 200
    assert set(Withdrawal.objects.values_list("status", flat=True)) == {Withdrawal.Status.COMPLETED}
    funded_wallet.refresh_from_db()
    assert (funded_wallet.balance, funded_wallet.held_balance) == (Decimal("5000.00"), Decimal("0.00"))
    call_command("check_ledger")
