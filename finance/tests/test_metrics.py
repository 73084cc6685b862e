"""What the money domain counts (finance/metrics.py): each TransactionService operation once, by
its outcome, with one log line; each webhook delivery once, by its outcome."""

import hashlib
import hmac
import json
import logging
from decimal import Decimal

import pytest
import requests
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from finance.errors import InsufficientBalanceError, NotFoundError
from finance.services import TransactionService
from testing.paystack import answer_paystack_charge_verify, paystack_verify_url


def operations(operation: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("ledger_operations_total", {"operation": operation, "outcome": outcome}) or 0.0


def webhooks(provider: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("webhook_events_total", {"provider": provider, "outcome": outcome}) or 0.0


# --- ledger_operations_total -------------------------------------------------------------------


def test_every_operation_and_enabled_provider_is_exposed_at_zero_before_its_first_event():
    """So a scrape finds every series the alerts read, and increase() sees the first error."""
    from finance.providers import PROVIDERS, is_enabled
    from finance.services import MONEY_OPERATIONS

    assert {"credit_wallet", "debit_wallet", "complete_withdrawal", "process_refund"} <= set(MONEY_OPERATIONS)
    for operation in MONEY_OPERATIONS:
        for outcome in ("ok", "error"):
            assert (
                REGISTRY.get_sample_value("ledger_operations_total", {"operation": operation, "outcome": outcome})
                is not None
            )
    enabled = [name for name in PROVIDERS if is_enabled(name)]
    assert enabled
    for provider in enabled:
        for outcome in ("processed", "duplicate", "invalid_signature", "rejected", "provider_unavailable", "error"):
            assert (
                REGISTRY.get_sample_value("webhook_events_total", {"provider": provider, "outcome": outcome})
                is not None
            )


def test_a_refused_debit_counts_under_its_error_code_and_a_credit_as_ok(funded_wallet):
    refused_before, ok_before = operations("debit_wallet", "insufficient_balance"), operations("credit_wallet", "ok")

    TransactionService.credit_wallet(funded_wallet, Decimal("5.00"))
    with pytest.raises(InsufficientBalanceError):
        TransactionService.debit_wallet(funded_wallet, Decimal("50000.00"))

    assert operations("debit_wallet", "insufficient_balance") == refused_before + 1
    assert operations("credit_wallet", "ok") == ok_before + 1


def test_an_operation_that_calls_another_counts_once(host, guest, make_booking, make_payment):
    """A keyed payout runs the payout again without the key, and creates the host's wallet:
    to the metrics it is one process_booking_payment."""
    booking = make_booking(host, guest)
    payouts, wallets = operations("process_booking_payment", "ok"), operations("create_wallet", "ok")

    TransactionService.process_booking_payment(booking, make_payment(booking), idempotency_key="payout-once")

    assert operations("process_booking_payment", "ok") == payouts + 1
    assert operations("create_wallet", "ok") == wallets


def test_every_public_operation_is_counted(host, funded_wallet, bank_account, paid_booking):
    names = [
        "create_wallet",
        "credit_wallet",
        "debit_wallet",
        "reverse_transaction",
        "process_refund",
        "initiate_withdrawal",
        "complete_withdrawal",
        "fail_withdrawal",
    ]
    before = {name: operations(name, "ok") for name in names}

    TransactionService.create_wallet(host, "KES")
    credit = TransactionService.credit_wallet(funded_wallet, Decimal("10.00"))
    TransactionService.debit_wallet(funded_wallet, Decimal("1.00"))
    TransactionService.reverse_transaction(credit.reference, "entered twice")
    TransactionService.process_refund(paid_booking, Decimal("100.00"), "guest left early")
    first = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("2000.00"))
    second = TransactionService.initiate_withdrawal(funded_wallet, bank_account, Decimal("1500.00"))
    TransactionService.complete_withdrawal(first)
    TransactionService.fail_withdrawal(second, "bank refused")

    assert {name: operations(name, "ok") - before[name] for name in names} == {
        "create_wallet": 1,
        "credit_wallet": 1,
        "debit_wallet": 1,
        "reverse_transaction": 1,
        "process_refund": 1,
        "initiate_withdrawal": 2,
        "complete_withdrawal": 1,
        "fail_withdrawal": 1,
    }


def test_a_refusal_raised_inside_the_transaction_is_counted_and_nothing_is_written(unchanged):
    before = operations("reverse_transaction", "not_found")

    with unchanged(), pytest.raises(NotFoundError):
        TransactionService.reverse_transaction("TXN-DOES-NOT-EXIST", "typo")

    assert operations("reverse_transaction", "not_found") == before + 1


def test_each_operation_logs_one_human_line_with_its_fields(funded_wallet, caplog):
    with caplog.at_level(logging.INFO, logger="finance"):
        txn = TransactionService.credit_wallet(funded_wallet, Decimal("10.00"))
        with pytest.raises(InsufficientBalanceError):
            TransactionService.debit_wallet(funded_wallet, Decimal("50000.00"))

    ok, refused = [record for record in caplog.records if record.name == "finance"]
    assert ok.levelname == "INFO"
    assert ok.getMessage() == f"credit_wallet ok {txn.reference} NGN 10.00"
    assert (ok.reference, ok.amount, ok.operation, ok.outcome) == (txn.reference, "10.00", "credit_wallet", "ok")
    assert refused.levelname == "WARNING"
    expected = f"debit_wallet insufficient_balance wallet {funded_wallet.pk} NGN 50,000.00: Insufficient balance"
    assert refused.getMessage().startswith(expected)
    assert (refused.operation, refused.outcome, refused.amount) == ("debit_wallet", "insufficient_balance", "50000.00")


# --- webhook_events_total ----------------------------------------------------------------------

SECRET = "sk_test_paystack"


@pytest.fixture(autouse=True)
def _paystack(settings):
    settings.PAYSTACK_SECRET_KEY = SECRET
    settings.WEBHOOK_FAILED_VERIFICATION_LIMIT = 100


def deliver(body: bytes, *, secret: str = SECRET) -> int:
    signature = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
    response = APIClient().generic(
        "POST",
        "/api/payments/webhooks/paystack/",
        body,
        content_type="application/json",
        HTTP_X_PAYSTACK_SIGNATURE=signature,
    )
    return response.status_code


def test_each_webhook_delivery_is_counted_once_by_its_outcome(provider_http, host, guest, make_booking, make_payment):
    payment = make_payment(make_booking(host, guest), provider="paystack")
    body = {
        "event": "charge.success",
        "data": {"id": 77, "reference": payment.reference, "amount": 100000, "currency": "NGN"},
    }
    event = json.dumps(body).encode()
    outcomes = ["processed", "duplicate", "invalid_signature", "rejected", "provider_unavailable"]
    before = {outcome: webhooks("paystack", outcome) for outcome in outcomes}
    verify = ("GET", paystack_verify_url(payment))

    provider_http.answers[verify] = requests.Timeout("Paystack's verify endpoint is down")
    statuses = [deliver(event)]  # 503: nothing stored, Paystack delivers it again
    answer_paystack_charge_verify(provider_http, body)
    statuses += [
        deliver(event),
        deliver(event),  # the provider retries: the inbox already has it
        deliver(event, secret="someone-else"),
        deliver(b'{"event": "charge.success", "data": "not an object"}'),
    ]

    assert statuses == [503, 200, 200, 401, 400]
    assert {outcome: webhooks("paystack", outcome) - before[outcome] for outcome in outcomes} == dict.fromkeys(
        outcomes, 1
    )


def test_a_webhook_for_an_unknown_provider_adds_no_label_value():
    status = APIClient().post("/api/payments/webhooks/made-up/", {}, format="json").status_code

    assert status == 404
    assert all(
        sample.labels["provider"] != "made-up"
        for family in REGISTRY.collect()
        if family.name == "webhook_events"
        for sample in family.samples
    )
