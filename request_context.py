"""What is being served right now: the request id (or a background job's id) and the request.

Every log line carries the id (portal/log_format.py), and every call to the messaging service
sends it as X-Request-Id (messaging/erlang.py), so one grep for it finds what a request did
in every process it reached. portal.middleware.RequestIdMiddleware sets it for each HTTP
request, jobs.worker for each job it runs.

Context variables, not thread-locals: a value set while serving one request is never seen by
another thread. This module sits below every app and imports none of them, because finance,
messaging and jobs read it and must not import portal.
"""

import contextvars
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

# What we accept from a proxy or a client as a request id (nginx's $request_id is 32 hex
# digits): short, and nothing that could break a log line or a header.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_request: contextvars.ContextVar[object | None] = contextvars.ContextVar("request", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value) -> str | None:
    """`value` if it is an acceptable request id, else None."""
    return value if isinstance(value, str) and REQUEST_ID.fullmatch(value) else None


def current_request_id() -> str | None:
    return _request_id.get()


def current_request():
    """The Django HttpRequest being served (for the signed-in user's id), or None."""
    return _request.get()


def begin(request_id: str, request=None) -> None:
    """From now on, in this thread (or task), log lines and outgoing calls carry `request_id`."""
    _request_id.set(request_id)
    _request.set(request)


def end() -> None:
    _request_id.set(None)
    _request.set(None)


@contextmanager
def serving(request_id: str) -> Iterator[None]:
    """`with serving(id):` the lines logged and calls made inside carry `id`; afterwards, what was before."""
    id_token, request_token = _request_id.set(request_id), _request.set(None)
    try:
        yield
    finally:
        _request_id.reset(id_token)
        _request.reset(request_token)
