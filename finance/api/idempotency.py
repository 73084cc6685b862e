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

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from rest_framework.response import Response

from finance.idempotency import digest
from finance.models import ApiIdempotencyRecord

from .errors import error_body

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def idempotent(view_method):
    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER, "").strip()
        if not key:
            return view_method(view, request, *args, **kwargs)
        if len(key) > MAX_KEY_LENGTH:
            return Response(error_body("invalid", f"{HEADER} is longer than {MAX_KEY_LENGTH} characters."), 400)
        method_path = f"{request.method} {request.path}"
        body_hash = _body_hash(request.data)
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = ApiIdempotencyRecord.objects.create(
                        user=request.user, key=key, method_path=method_path, body_hash=body_hash
                    )
            except IntegrityError:
                record = ApiIdempotencyRecord.objects.get(user=request.user, key=key)
                return _replay(record, method_path, body_hash)
            request.idempotency_key = key
            try:
                response = view_method(view, request, *args, **kwargs)
            except Exception as exc:  # turned into its 4xx answer, which is stored like any other
                response = view.handle_exception(exc)
            if response.status_code >= 500:
                transaction.set_rollback(True)  # forget the key: a retry may succeed
                return response
            record.status_code = response.status_code
            record.response_body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
            record.save(update_fields=["status_code", "response_body"])
        return response

    return wrapper


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
