"""`Idempotency-Key` for API POSTs that move money, as Stripe does it.

The first request with a key runs and its status and body are stored with the key, in
the same transaction as whatever it changed. A retry with the same key and body gets that
stored answer (header `Idempotent-Replayed: true`) and moves nothing; the same key with a
different body or path is a 409. Keys are per user. A concurrent retry waits on the
key's unique index until the first request commits, then replays its answer.
"""

import functools
import hashlib
import json
import uuid
from datetime import timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from rest_framework.response import Response

from finance import db
from finance.idempotency import digest
from finance.models import ApiIdempotencyRecord

from .errors import error_body

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _request_key(request) -> tuple[str, Response | None]:
    """The request's Idempotency-Key ('' without one), and the 400 answer when it is too long."""
    key = request.headers.get(HEADER, "").strip()
    if len(key) > MAX_KEY_LENGTH:
        return key, Response(error_body("invalid", f"{HEADER} is longer than {MAX_KEY_LENGTH} characters."), 400)
    return key, None


def idempotent(view_method):
    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key, refusal = _request_key(request)
        if refusal is not None:
            return refusal
        if not key:
            return view_method(view, request, *args, **kwargs)
        method_path, body_hash = f"{request.method} {request.path}", _body_hash(request.data)
        with transaction.atomic():
            record = ApiIdempotencyRecord(user=request.user, key=key, method_path=method_path, body_hash=body_hash)
            if not db.insert_once(record, unique=("user", "key")):
                return _replay(ApiIdempotencyRecord.objects.get(user=request.user, key=key), method_path, body_hash)
            response = _run_view(view_method, view, request, key, args, kwargs)
            if response.status_code >= 500:
                transaction.set_rollback(True)  # forget the key: a retry may succeed
                return response
            _remember(record, response)
        return response

    return wrapper


def idempotent_outside_transaction(view_method):
    """`Idempotency-Key` for a view that commits its own steps and calls out between them
    (paying: the provider's checkout runs outside any transaction, holding no lock).

    The key is claimed in a transaction of its own before the view runs, and the answer stored
    after it. A concurrent request with the same key answers 409 `request_in_progress` at once;
    a claim older than a request can last (its process died) is taken over. An answer that is
    not final (5xx, or one with Retry-After) is not stored: the retry really runs."""

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key, refusal = _request_key(request)
        if refusal is not None:
            return refusal
        if not key:
            return view_method(view, request, *args, **kwargs)
        method_path, body_hash = f"{request.method} {request.path}", _body_hash(request.data)
        record, earlier = _claim_key(request.user, key, method_path, body_hash)
        if earlier is not None:
            return earlier
        response = _run_view(view_method, view, request, key, args, kwargs)
        if response.status_code >= 500 or response.has_header("Retry-After"):
            record.delete()  # forget the key: a retry may succeed
            return response
        _remember(record, response)
        return response

    return wrapper


def _run_view(view_method, view, request, key: str, args, kwargs) -> Response:
    """The view's answer under its claimed key; an exception becomes its 4xx answer, stored like any other."""
    request.idempotency_key = key
    try:
        return view_method(view, request, *args, **kwargs)
    except Exception as exc:
        return view.handle_exception(exc)


def _remember(record: ApiIdempotencyRecord, response: Response) -> None:
    """Store the final answer on the claimed key, for replays."""
    record.status_code = response.status_code
    record.response_body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
    record.save(update_fields=["status_code", "response_body"])


# A claimed key whose request never stored an answer for this long belonged to a process that died.
CLAIM_ABANDONED_AFTER = timedelta(minutes=2)
CLAIM_RETRY_AFTER_SECONDS = 2


def _claim_key(user, key: str, method_path: str, body_hash: str):
    """(the new record, None), or (None, the answer to give instead: a replay or a 409)."""
    abandoned = timezone.now() - CLAIM_ABANDONED_AFTER
    ApiIdempotencyRecord.objects.filter(user=user, key=key, status_code__isnull=True, created_at__lt=abandoned).delete()
    record = ApiIdempotencyRecord(user=user, key=key, method_path=method_path, body_hash=body_hash)
    if db.insert_once(record, unique=("user", "key")):
        return record, None
    earlier = ApiIdempotencyRecord.objects.filter(user=user, key=key).first()
    if earlier is None or earlier.status_code is None:
        in_progress = Response(
            error_body("request_in_progress", f"A request with this {HEADER} is still running; ask again in a moment."),
            status=409,
            headers={"Retry-After": str(CLAIM_RETRY_AFTER_SECONDS)},
        )
        return None, in_progress
    return None, _replay(earlier, method_path, body_hash)


def _replay(record: ApiIdempotencyRecord, method_path: str, body_hash: str) -> Response:
    if record.method_path != method_path or record.body_hash != body_hash:
        return Response(
            error_body(
                "idempotency_conflict",
                f"This {HEADER} was already used for a different request; use a new key for a new request.",
            ),
            status=409,
        )
    return Response(record.response_body, status=record.status_code, headers={"Idempotent-Replayed": "true"})


def _body_hash(data) -> str:
    """The request body's digest, over compact JSON: stored records depend on this exact form."""
    return digest(data, separators=(",", ":"))


def service_key(request, operation: str) -> str:
    """The key handed to the service layer: the client's, scoped to the user, or a fresh one."""
    client_key = getattr(request, "idempotency_key", "")
    if client_key:
        return f"api-{request.user.pk}-{operation}-" + hashlib.sha256(client_key.encode()).hexdigest()[:32]
    return f"api-{uuid.uuid4().hex}"
