"""The idempotency store of the money operations: one IdempotencyRecord per key.

A money operation called with an idempotency key claims the key before it moves
anything, in its own database transaction. The first call with a key runs and records
its result (a transaction or a withdrawal) on the key; a replay with the same parameters
gets that first result back and moves nothing; the same key with other parameters is
refused with IdempotencyConflictError. A refused operation rolls back its claim with
everything else, so its key can be used again.

`fingerprint` is also the API's request hash (`finance.api.idempotency`), so both
stores hash parameters the same way.
"""

import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder

from . import db
from .errors import IdempotencyConflictError
from .models import IdempotencyRecord, WalletTransaction, Withdrawal


def digest(data, *, separators: tuple[str, str] = (", ", ": ")) -> str:
    """SHA-256 (hex) of `data` as JSON with sorted keys: equal data, equal digest.

    `separators` is part of the digest; stored digests were made with json.dumps' default
    (", ", ": ") for operation parameters and (",", ":") for API request bodies.
    """
    canonical = json.dumps(data, sort_keys=True, cls=DjangoJSONEncoder, separators=separators)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(operation: str, params: dict) -> str:
    """What a key remembers of the call that claimed it: the operation and its parameters."""
    return digest({"op": operation, **{name: str(value) for name, value in params.items()}})


def claim(key: str | None, operation: str, params: dict) -> tuple[IdempotencyRecord | None, object]:
    """Return (record, previous_result); previous_result is set when this call is a replay.

    Without a key there is nothing to claim: (None, None). The key row is inserted first,
    so a concurrent caller with the same key waits on the unique index until the first
    commits, then sees its result.
    """
    if not key:
        return None, None
    expected = fingerprint(operation, params)
    record = IdempotencyRecord(key=key, operation=operation, fingerprint=expected)
    if db.insert_once(record, unique=("key", "operation")):
        return record, None
    record = IdempotencyRecord.objects.select_related("transaction", "withdrawal").get(key=key, operation=operation)
    if record.fingerprint != expected:
        raise IdempotencyConflictError("This idempotency key was already used with different parameters.")
    return record, record.withdrawal or record.transaction


def remember(
    record: IdempotencyRecord | None,
    *,
    transaction: WalletTransaction | None = None,
    withdrawal: Withdrawal | None = None,
) -> None:
    """Store the operation's result on its claimed key (nothing to do without a key)."""
    if record is not None:
        record.transaction = transaction
        record.withdrawal = withdrawal
        record.save(update_fields=["transaction", "withdrawal"])
