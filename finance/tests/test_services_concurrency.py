"""Many threads, one small set of wallets: no deadlock, no lost update, every invariant kept.

Eight threads run a random mix of every TransactionService operation against four host
wallets; every booking payment also credits the one platform-revenue account. Each
thread records what its successful calls imply; afterwards every wallet's balance and
held amount must equal the sum of those implications, and check_ledger must pass.
test_pgbouncer.py runs the same scenario (`run_scenario`) with the threads' connections
going through PgBouncer.
"""

import random
import threading
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from finance.models import BankAccount, Booking, LedgerEntry, Property, SystemAccount, Wallet
from finance.services import TransactionError, TransactionService
from testing.ledger import failing_ledger_checks

THREADS = 8
OPERATIONS_PER_THREAD = 300


class SharedWork:
    """Objects the threads hand each other, so they race on the same rows."""

    def __init__(self):
        self.lock = threading.Lock()
        self.references = []  # completed transactions that may be reversed
        self.open_withdrawals = []
        self.paid_bookings = []

    def add(self, bucket, item):
        with self.lock:
            getattr(self, bucket).append(item)

    def pick(self, bucket, rng):
        with self.lock:
            items = getattr(self, bucket)
            return rng.choice(items) if items else None


class Worker:
    def __init__(self, seed, wallets, accounts, properties, guest, shared, finance, connect=None):
        self.rng = random.Random(seed)
        self.wallets = wallets
        self.accounts = accounts
        self.properties = properties
        self.guest = guest
        self.shared = shared
        self.finance = finance
        self.balance_delta = defaultdict(Decimal)  # wallet id -> implied change
        self.revenue_delta = Decimal(0)
        self.succeeded = defaultdict(int)
        self.refused = defaultdict(int)
        self.unexpected = []
        self.connect = connect  # called first in the thread, e.g. to route its connection elsewhere

    def amount(self, low=1, high=3000):
        return Decimal(self.rng.randint(low * 100, high * 100)) / 100

    def run(self):
        operations = [
            self.credit,
            self.debit,
            self.withdraw,
            self.complete,
            self.fail,
            self.reverse,
            self.pay_booking,
            self.refund,
        ]
        try:
            if self.connect is not None:
                self.connect()
            for _ in range(OPERATIONS_PER_THREAD):
                operation = self.rng.choice(operations)
                try:
                    if operation() is not False:
                        self.succeeded[operation.__name__] += 1
                except TransactionError as refused:
                    self.refused[type(refused).__name__] += 1
                except Exception as error:  # a deadlock or lost update would land here
                    self.unexpected.append(repr(error))
        finally:
            connection.close()

    def credit(self):
        wallet = self.rng.choice(self.wallets)
        txn = TransactionService.credit_wallet(wallet, self.amount())
        self.balance_delta[wallet.pk] += txn.amount
        self.shared.add("references", txn.reference)

    def debit(self):
        wallet = self.rng.choice(self.wallets)
        txn = TransactionService.debit_wallet(wallet, self.amount(1, 1500))
        self.balance_delta[wallet.pk] -= txn.amount
        self.shared.add("references", txn.reference)

    def withdraw(self):
        index = self.rng.randrange(len(self.wallets))
        withdrawal = TransactionService.initiate_withdrawal(
            wallet=self.wallets[index], bank_account=self.accounts[index], amount=self.amount(1000, 2500)
        )
        self.shared.add("open_withdrawals", withdrawal)

    def complete(self):
        withdrawal = self.shared.pick("open_withdrawals", self.rng)
        if withdrawal is None:
            return False
        TransactionService.complete_withdrawal(withdrawal, actor=self.finance)
        self.balance_delta[withdrawal.wallet_id] -= withdrawal.amount
        self.shared.add("references", withdrawal.transaction.reference)

    def fail(self):
        withdrawal = self.shared.pick("open_withdrawals", self.rng)
        if withdrawal is None:
            return False
        TransactionService.fail_withdrawal(withdrawal, "Bank rejected the account", actor=self.finance)

    def reverse(self):
        reference = self.shared.pick("references", self.rng)
        if reference is None:
            return False
        reversal = TransactionService.reverse_transaction(reference, "Concurrency test", actor=self.finance)
        self.balance_delta[reversal.wallet_id] += reversal.signed_amount
        self.revenue_delta += sum(
            (e.amount for e in reversal.entries.all() if e.system_account == SystemAccount.PLATFORM_REVENUE),
            Decimal(0),
        )

    def pay_booking(self):
        prop = self.rng.choice(self.properties)
        total = self.amount(50, 800)
        booking = Booking.objects.create(
            guest=self.guest,
            rental_property=prop,
            check_in=date.today(),
            check_out=date.today() + timedelta(days=2),
            grand_total=total,
            commission_fee=(total * Decimal("0.12")).quantize(Decimal("0.01")),
            currency="NGN",
        )
        payment = booking.payments.create(provider="sandbox", amount=total, currency="NGN")
        txn = TransactionService.process_booking_payment(booking, payment)
        self.balance_delta[txn.wallet_id] += txn.amount
        self.revenue_delta += booking.commission_fee
        self.shared.add("paid_bookings", booking)
        self.shared.add("references", txn.reference)

    def refund(self):
        booking = self.shared.pick("paid_bookings", self.rng)
        if booking is None:
            return False
        txn = TransactionService.process_refund(booking, self.amount(1, 200), "Concurrency test", actor=self.finance)
        self.balance_delta[txn.wallet_id] -= txn.amount
        self.revenue_delta -= Decimal(txn.metadata["commission_clawback"])
        self.shared.add("references", txn.reference)


@pytest.mark.django_db(transaction=True)
def test_concurrent_random_operations_keep_every_invariant(make_user):
    run_scenario(make_user)


def run_scenario(make_user, connect=None) -> int:
    """The scenario and its checks; `connect` runs first in each thread. Returns how many
    operations succeeded."""
    finance = make_user(groups=["Finance"])
    guest = make_user("guest")
    hosts = [make_user("host") for _ in range(4)]
    wallets, accounts, properties = [], [], []
    for host in hosts:
        wallet = TransactionService.create_wallet(host, "NGN")
        TransactionService.credit_wallet(wallet, Decimal("20000.00"))
        wallets.append(wallet)
        accounts.append(
            BankAccount.objects.create(owner=host, bank_name="GTBank", account_name="h", account_number_last4="0001")
        )
        properties.append(Property.objects.create(host=host, title="Villa", country="NG", currency="NGN"))
    start = {w.pk: Decimal("20000.00") for w in wallets}

    shared = SharedWork()
    workers = [Worker(seed, wallets, accounts, properties, guest, shared, finance, connect) for seed in range(THREADS)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"

    unexpected = [error for w in workers for error in w.unexpected]
    assert unexpected == [], unexpected[:5]
    per_operation = defaultdict(int)
    for worker in workers:
        for name, count in worker.succeeded.items():
            per_operation[name] += count
    print("succeeded:", dict(per_operation), "refused:", sum(sum(w.refused.values()) for w in workers))
    assert len(per_operation) == 8, f"some operations never succeeded: {dict(per_operation)}"
    assert sum(per_operation.values()) >= 1000, f"only {sum(per_operation.values())} operations succeeded"

    call_command("check_ledger", stdout=open("/dev/null", "w"))
    for wallet in Wallet.objects.filter(pk__in=start):
        implied = start[wallet.pk] + sum(w.balance_delta[wallet.pk] for w in workers)
        assert wallet.balance == implied, f"wallet {wallet.pk}: {wallet.balance} != {implied}"
        open_total = sum(
            wd.amount for wd in wallet.withdrawals.all() if wd.status in ("pending", "processing")
        ) or Decimal(0)
        assert wallet.held_balance == open_total
    revenue = sum(
        LedgerEntry.objects.filter(system_account=SystemAccount.PLATFORM_REVENUE).values_list("amount", flat=True),
        Decimal(0),
    )
    assert revenue == sum(w.revenue_delta for w in workers)
    return sum(per_operation.values())


RACE_ROUNDS = 20


@pytest.mark.django_db(transaction=True)
def test_refund_racing_reversal_of_the_same_payment_moves_the_money_once(
    host, guest, finance_user, make_booking, make_payment
):
    """A full refund and the reversal of the booking's payout, started at the same instant from
    two threads: in every round exactly one succeeds, the other is refused with a
    TransactionError, the host's wallet gives the payout back once, and the ledger checks pass."""
    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, Decimal("100000.00"))  # enough for both, were both let through
    outcomes = []
    for _ in range(RACE_ROUNDS):
        booking = make_booking(host, guest, total="1000.00", commission="150.00")
        payout = TransactionService.process_booking_payment(booking, make_payment(booking))
        wallet.refresh_from_db()
        before = wallet.balance
        barrier = threading.Barrier(2)
        results = {}

        def refund(booking=booking):
            return TransactionService.process_refund(booking, "1000.00", "Guest cancelled", actor=finance_user)

        def reverse(reference=payout.reference):
            return TransactionService.reverse_transaction(reference, "Chargeback", actor=finance_user)

        def run(name, operation, results=results, barrier=barrier):
            try:
                barrier.wait(timeout=30)
                operation()
                results[name] = "ok"
            except TransactionError as refused:
                results[name] = refused.code
            except Exception as error:  # an IntegrityError or deadlock would be a 500 for the user
                results[name] = repr(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=item) for item in (("refund", refund), ("reverse", reverse))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        outcomes.append(results)
        assert sorted(results.values()).count("ok") == 1, f"round {len(outcomes)}: {results}"
        loser = next(code for code in results.values() if code != "ok")
        assert loser in ("invalid_state", "already_reversed", "refund_exceeds_payment"), results
        wallet.refresh_from_db()
        assert wallet.balance == before - payout.amount, f"round {len(outcomes)}: the payout left twice {results}"
    call_command("check_ledger", stdout=open("/dev/null", "w"))
    print("winners:", [next(k for k, v in r.items() if v == "ok") for r in outcomes])


# --- payouts in flight (finance.payouts) ----------------------------------------------------------

PAYOUT_ROUNDS = 6


def _transfer_body(withdrawal, event_id: str, succeeded: bool) -> bytes:
    import json

    return json.dumps(
        {
            "id": event_id,
            "type": "transfer.succeeded" if succeeded else "transfer.failed",
            "data": {
                "transfer_reference": withdrawal.transfer_reference,
                "transfer_id": "sbx_trf_race",
                "amount": str(withdrawal.amount),
                "currency": withdrawal.currency,
                "reason": "" if succeeded else "Sandbox: the account ending 4321 is closed",
            },
        }
    ).encode()


@pytest.mark.django_db(transaction=True)
def test_payouts_in_flight_settle_once_whatever_races_them(settings, host, finance_user):
    """A payout in flight, raced from several threads at the same instant by: the same success
    callback twice and a second success event; a success and a failure; the stuck-transfer query
    and a callback; a staff member's fail and a callback. Meanwhile another thread credits and
    debits the same wallet. Each payout's money moves exactly once, by the first final outcome,
    the wallet's balance and hold are what the successful operations imply, and check_ledger passes."""
    from django.utils import timezone

    from finance import payouts, staff_actions
    from finance.errors import TransactionError as RefusedError
    from finance.models import Withdrawal
    from finance.payments import receive_webhook
    from finance.providers import sandbox

    settings.SANDBOX_PAYMENTS_ENABLED = True
    settings.SANDBOX_AUTOCOMPLETE = False
    settings.SANDBOX_WEBHOOK_SECRET = "race-secret"
    settings.APPROVAL_THRESHOLDS = {"NGN": Decimal("100000000")}
    settings.PAYOUT_QUERY_AFTER_MINUTES = 1
    wallet = TransactionService.create_wallet(host, "NGN")
    TransactionService.credit_wallet(wallet, Decimal("100000.00"))
    account = BankAccount.objects.create(
        owner=host, bank_name="GTBank", account_name="h", account_number_last4="4321", account_number_encrypted="x"
    )
    expected_balance = Decimal("100000.00")

    def callback(withdrawal, event_id, succeeded=True):
        raw = _transfer_body(withdrawal, f"{withdrawal.reference}-{event_id}", succeeded)
        return lambda: receive_webhook("sandbox", raw, {sandbox.SIGNATURE_HEADER: sandbox.sign(raw)}).status

    def staff_fail(withdrawal):
        return lambda: staff_actions.fail_withdrawal(
            withdrawal=withdrawal, actor=finance_user, reason="gave up", idempotency_key=f"fail-{withdrawal.pk}"
        )

    scenarios = {
        "same success twice": lambda w: [callback(w, "e1"), callback(w, "e1"), callback(w, "e2")],
        "success against failure": lambda w: [callback(w, "e1"), callback(w, "e2", succeeded=False)],
        "query against callback": lambda w: [payouts.query_stuck_transfers.call, callback(w, "e1")],
        "staff fail against callback": lambda w: [staff_fail(w), callback(w, "e1")],
    }
    for name, racers in scenarios.items():
        for round_number in range(PAYOUT_ROUNDS):
            withdrawal = TransactionService.initiate_withdrawal(wallet, account, Decimal("1000.00"))
            sent = staff_actions.complete_withdrawal(
                withdrawal=withdrawal, actor=finance_user, idempotency_key=f"{name}-{round_number}"
            ).result
            Withdrawal.objects.filter(pk=sent.pk).update(payout_sent_at=timezone.now() - timedelta(minutes=5))
            sent.refresh_from_db()
            moves = [
                lambda: TransactionService.credit_wallet(wallet, Decimal("10.00")),
                lambda: TransactionService.debit_wallet(wallet, Decimal("5.00")),
            ]
            operations = [*racers(sent), *moves]
            barrier = threading.Barrier(len(operations))
            errors = []

            def run(operation, barrier=barrier, errors=errors):
                try:
                    barrier.wait(timeout=30)
                    operation()
                except RefusedError as refused:
                    if refused.code not in ("transfer_in_flight", "invalid_state"):
                        errors.append(repr(refused))
                except Exception as error:  # a deadlock or IntegrityError would land here
                    errors.append(repr(error))
                finally:
                    connection.close()

            threads = [threading.Thread(target=run, args=(op,)) for op in operations]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not any(t.is_alive() for t in threads), f"{name}: a thread hung"
            assert errors == [], f"{name} round {round_number}: {errors}"
            settled = Withdrawal.objects.select_related("transaction").get(pk=sent.pk)
            assert settled.status in ("completed", "failed"), f"{name}: left {settled.status}"
            assert settled.transaction.status == settled.status
            expected_balance += Decimal("5.00")  # the credit and the debit
            if settled.status == "completed":
                expected_balance -= settled.amount
            wallet.refresh_from_db()
            assert (wallet.balance, wallet.held_balance) == (expected_balance, Decimal("0.00")), (
                f"{name} round {round_number}: money moved more than once"
            )
    call_command("check_ledger", stdout=open("/dev/null", "w"))


# --- refunds after withdrawal: negative balances and their receivables (issue 18) -----------------


@pytest.mark.django_db(transaction=True)
def test_refunds_after_withdrawal_race_payouts_and_withdrawals_and_money_moves_once(settings, make_user):
    """Two hosts withdrew nearly everything (their withdrawals still open). Threads at once:
    two refunders both try to refund every booking in full, a payer pays new bookings into the
    same wallets, a settler completes or fails the open withdrawals, and a requester keeps asking
    for new withdrawals. Afterwards: each booking refunded exactly once, every wallet's balance
    is what the successful calls imply, no withdrawal was taken from a negative wallet, each
    wallet's receivables were recovered oldest first, and every ledger check passes."""
    from finance.models import HostReceivable, LedgerAudit, ReceivableRecovery, WalletTransaction, Withdrawal

    settings.MINIMUM_WITHDRAWAL = {}
    finance, guest = make_user(groups=["Finance"]), make_user("guest")
    hosts = [make_user("host") for _ in range(2)]
    properties = {h.pk: Property.objects.create(host=h, title="Villa", country="NG", currency="NGN") for h in hosts}
    accounts = {
        h.pk: BankAccount.objects.create(owner=h, bank_name="GTBank", account_name="h", account_number_last4="0001")
        for h in hosts
    }

    def paid_booking(host, total=Decimal("1000.00")):
        booking = Booking.objects.create(
            guest=guest,
            rental_property=properties[host.pk],
            check_in=date.today(),
            check_out=date.today() + timedelta(days=2),
            grand_total=total,
            commission_fee=(total * Decimal("0.15")).quantize(Decimal("0.01")),
            currency="NGN",
        )
        payment = booking.payments.create(provider="sandbox", amount=total, currency="NGN")
        return booking, TransactionService.process_booking_payment(booking, payment)

    refundable, open_withdrawals = [], []
    for host in hosts:
        refundable += [paid_booking(host)[0] for _ in range(6)]  # 6 × 850.00 = 5,100.00 each
        wallet = Wallet.objects.get(user=host)
        open_withdrawals += [
            TransactionService.initiate_withdrawal(wallet, accounts[host.pk], Decimal("1000.00")) for _ in range(5)
        ]
    start = {w.pk: w.balance for w in Wallet.objects.filter(user__in=hosts)}

    barrier = threading.Barrier(5)
    lock = threading.Lock()
    balance_delta, unexpected, new_withdrawals, refunds = defaultdict(Decimal), [], [], []

    def worker(body):
        def run():
            try:
                barrier.wait(timeout=60)
                body()
            except Exception as error:  # a deadlock or an integrity error
                unexpected.append(repr(error))
            finally:
                connection.close()

        return run

    def refunder(order):
        def body():
            for booking in order:
                try:
                    txn = TransactionService.process_refund(booking, "1000.00", "Flooded", actor=finance)
                except TransactionError:
                    continue  # the other refunder got there first
                with lock:
                    refunds.append(txn.reference)
                    balance_delta[txn.wallet_id] -= txn.amount

        return body

    def payer():
        for round_ in range(8):
            host = hosts[round_ % 2]
            _, txn = paid_booking(host, Decimal("400.00") + round_)
            with lock:
                balance_delta[txn.wallet_id] += txn.amount

    def settler():
        for n, withdrawal in enumerate(open_withdrawals):
            if n % 2:
                TransactionService.fail_withdrawal(withdrawal, "Bank rejected the account", actor=finance)
            else:
                TransactionService.complete_withdrawal(withdrawal, actor=finance)
                with lock:
                    balance_delta[withdrawal.wallet_id] -= withdrawal.amount

    def requester():
        for round_ in range(20):
            host = hosts[round_ % 2]
            try:
                withdrawal = TransactionService.initiate_withdrawal(
                    Wallet.objects.get(user=host), accounts[host.pk], Decimal("40.00")
                )
            except TransactionError:
                continue
            new_withdrawals.append(withdrawal)

    bodies = [refunder(refundable), refunder(refundable[::-1]), payer, settler, requester]
    threads = [threading.Thread(target=worker(body)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert unexpected == [], unexpected[:5]

    # Each booking refunded exactly once, in full.
    refund_txns = WalletTransaction.objects.filter(type="refund")
    assert sorted(refund_txns.values_list("booking_id", flat=True)) == sorted(b.pk for b in refundable)
    assert len(refunds) == len(refundable)
    for wallet in Wallet.objects.filter(pk__in=start):
        assert wallet.balance == start[wallet.pk] + balance_delta[wallet.pk], f"wallet {wallet.pk}"
        open_total = sum(
            (w.amount for w in wallet.withdrawals.all() if w.status in Withdrawal.OPEN_STATUSES), Decimal(0)
        )
        assert wallet.held_balance == open_total
    # No withdrawal was requested from a wallet that could not cover it (negative or short).
    for audit in LedgerAudit.objects.filter(action="transaction.withdrawal"):
        assert audit.balance_after - audit.held_after >= 0, f"{audit.transaction_id} left available negative"
    # The hosts went negative and got recovered, oldest receivable first.
    assert HostReceivable.objects.exists()
    for wallet_id in start:
        receivables = list(HostReceivable.objects.filter(wallet_id=wallet_id).order_by("id"))
        touched = [r for r in receivables if r.recovered]
        assert receivables[: len(touched)] == touched, "a younger receivable was recovered before an older one"
        assert all(r.recovered == r.amount for r in touched[:-1])
        for older, younger in zip(touched, touched[1:], strict=False):
            last_of_older = ReceivableRecovery.objects.filter(receivable=older).order_by("-id").first()
            first_of_younger = ReceivableRecovery.objects.filter(receivable=younger).order_by("id").first()
            assert last_of_older.pk < first_of_younger.pk
    assert failing_ledger_checks() == []
    print(
        "refunds:",
        len(refunds),
        "new withdrawals:",
        len(new_withdrawals),
        "receivables:",
        HostReceivable.objects.count(),
        "recoveries:",
        ReceivableRecovery.objects.count(),
    )
